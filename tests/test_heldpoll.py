"""Held polls (flwr_internals.heldpoll) and where fedgc installs them: the SuperLink's Fleet PullMessages
(flwr_internals.superlink) and the SuperNode's Runtime AcquireTask (flwr_internals.supernode).

A held poll must answer exactly what the stock handler answers, only later: at once when there is
something, once a delivery is complete (never while it is half-stored: a message's header without
its objects), and after `hold` seconds when nothing comes. The deployed tests run the real
processes with these patches; here each rule is pinned with fakes and threads."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from flwr_internals.heldpoll import Arrivals, held


class _Poll(threading.Thread):
    """Runs one held poll in the background and records what it answered, and when."""

    def __init__(self, poll):
        super().__init__(daemon=True)
        self.poll, self.answer, self.at = poll, None, None
        self.start()

    def run(self):
        self.answer = self.poll()
        self.at = time.monotonic()

    def result(self, timeout=5.0):
        self.join(timeout)
        assert not self.is_alive(), "the held poll never answered"
        return self.answer


def _looks(box: dict, key="answer"):
    box["looks"] = 0

    def look():
        box["looks"] += 1
        return box.get(key)

    return look


def test_an_answer_that_is_there_is_given_at_once():
    box = {"answer": "message"}
    t0 = time.monotonic()
    assert held(_looks(box), bool, Arrivals(), 1, hold=5.0) == "message"
    assert time.monotonic() - t0 < 1.0 and box["looks"] == 1


def test_an_empty_poll_is_answered_after_hold_with_one_look():
    box = {"answer": None}
    t0 = time.monotonic()
    assert held(_looks(box), bool, Arrivals(), 1, hold=0.3) is None
    assert 0.3 <= time.monotonic() - t0 < 2.0 and box["looks"] == 1


def test_a_delivery_wakes_the_poll_only_once_it_is_complete():
    arrivals, box = Arrivals(), {"answer": None}
    poll = _Poll(lambda: held(_looks(box), bool, arrivals, 7, hold=10.0))
    time.sleep(0.1)
    arrivals.started(7)  # the header is stored, its objects are not
    box["answer"] = "header without objects"
    time.sleep(0.2)
    assert poll.is_alive() and box["looks"] == 1
    box["answer"] = "message"
    done = time.monotonic()
    arrivals.finished(7)
    assert poll.result() == "message"
    assert poll.at - done < 1.0 and box["looks"] == 2


def test_a_poll_waits_for_a_half_stored_delivery_before_it_looks():
    arrivals, box = Arrivals(), {"answer": "header without objects"}
    arrivals.started(3)
    poll = _Poll(lambda: held(_looks(box), bool, arrivals, 3, hold=10.0))
    time.sleep(0.2)
    assert box["looks"] == 0
    box["answer"] = "message"
    arrivals.finished(3)
    assert poll.result() == "message" and box["looks"] == 1


def test_a_delivery_that_never_completes_holds_a_poll_no_longer_than_hold():
    arrivals, box = Arrivals(), {"answer": "header without objects"}
    arrivals.started(6)  # e.g. the ServerApp died between a message's header and its objects
    t0 = time.monotonic()
    assert held(_looks(box), bool, arrivals, 6, hold=0.3) == "header without objects"
    assert 0.3 <= time.monotonic() - t0 < 2.0 and box["looks"] == 1


def test_a_delivery_completed_during_the_look_is_not_missed():
    arrivals = Arrivals()
    answers = iter([None, "message"])

    def look():
        answer = next(answers)
        if answer is None:  # the message completes between this look and the wait
            arrivals.started(5)
            arrivals.finished(5)
        return answer

    t0 = time.monotonic()
    assert held(look, bool, arrivals, 5, hold=10.0) == "message"
    assert time.monotonic() - t0 < 1.0


def test_another_nodes_delivery_does_not_answer_this_poll():
    arrivals, box = Arrivals(), {"answer": None}
    poll = _Poll(lambda: held(_looks(box), bool, arrivals, 1, hold=0.4))
    time.sleep(0.1)
    arrivals.started(2)
    arrivals.finished(2)
    assert poll.result() is None and box["looks"] == 1
    assert arrivals.settled(2, time.monotonic()) == 1


# ------------------------------------------------------------------ the SuperLink's Fleet API


class _Store:
    """ObjectStore.get as Flower defines it: None unknown, b"" preregistered, bytes once pushed."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def get(self, object_id):
        return self.objects.get(object_id)


def _tree(object_id, *children):
    from flwr.proto.message_pb2 import ObjectTree  # pylint: disable=E0611

    return ObjectTree(object_id=object_id, children=list(children))


@pytest.fixture
def superlink_handlers(monkeypatch):
    """Flower's Fleet/Runtime handlers replaced by fakes over one queue and store, then wrapped by
    flwr_internals.superlink.hold_message_polls by `.hold(seconds)` (monkeypatch restores Flower's own)."""
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    from flwr_internals.superlink import hold_message_polls

    store, queue, calls = _Store(), {}, []
    state = SimpleNamespace(object_store=store)

    def pull_messages(request, state, store):
        calls.append("pull")
        got = queue.pop(request.node.node_id, [])
        return SimpleNamespace(messages_list=got)

    def push_messages(request, state, task):
        for proto, tree in zip(request.messages_list, request.message_object_trees):
            queue.setdefault(proto.metadata.dst_node_id, []).append(tree.object_id)
            for oid in _ids(tree):
                store.objects.setdefault(oid, b"")
        return SimpleNamespace(message_ids=[t.object_id for t in request.message_object_trees])

    def push_object(request, state, task):
        store.objects[request.object_id] = request.object_content
        return SimpleNamespace(stored=True)

    monkeypatch.setattr(fleet_handlers, "pull_messages", pull_messages)
    monkeypatch.setattr(runtime_handlers, "push_messages", push_messages)
    monkeypatch.setattr(runtime_handlers, "push_object", push_object)
    return SimpleNamespace(
        fleet=fleet_handlers, runtime=runtime_handlers, state=state, store=store, calls=calls,
        hold=lambda seconds, slots=24: hold_message_polls(hold=seconds, slots=slots),
    )  # fmt: skip


def _ids(tree):
    yield tree.object_id
    for child in tree.children:
        yield from _ids(child)


def _server_pushes(link, node_id, tree):
    from flwr.proto.message_pb2 import Message as MessageProto  # pylint: disable=E0611
    from flwr.proto.message_pb2 import Metadata  # pylint: disable=E0611
    from flwr.proto.runtime_pb2 import PushAppMessagesRequest  # pylint: disable=E0611

    request = PushAppMessagesRequest(
        messages_list=[MessageProto(metadata=Metadata(dst_node_id=node_id))], message_object_trees=[tree]
    )
    link.runtime.push_messages(request, link.state, None)


def _node_polls(link, node_id):
    from flwr.proto.fleet_pb2 import PullMessagesRequest  # pylint: disable=E0611
    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611

    request = PullMessagesRequest(node=Node(node_id=node_id))
    return _Poll(lambda: link.fleet.pull_messages(request=request, state=link.state, store=link.store))


def _object_arrives(link, object_id):
    from flwr.proto.message_pb2 import PushObjectRequest  # pylint: disable=E0611

    link.runtime.push_object(PushObjectRequest(object_id=object_id, object_content=b"content"), link.state, None)


def test_superlink_answers_a_node_once_its_message_and_every_object_are_there(superlink_handlers):
    link = superlink_handlers
    link.hold(10.0)
    poll = _node_polls(link, 4)
    time.sleep(0.1)
    _server_pushes(link, 4, _tree("msg", _tree("content", _tree("config"))))
    for oid in ("config", "content"):
        _object_arrives(link, oid)
        time.sleep(0.15)
        assert poll.is_alive(), f"answered before object 'msg' came (after {oid!r})"
    _object_arrives(link, "msg")
    assert list(poll.result().messages_list) == ["msg"]
    assert link.calls == ["pull", "pull"]


def test_superlink_poll_of_another_node_keeps_waiting(superlink_handlers):
    link = superlink_handlers
    link.hold(0.4)
    poll = _node_polls(link, 1)
    _server_pushes(link, 2, _tree("only"))
    _object_arrives(link, "only")
    assert list(poll.result().messages_list) == []


def test_superlink_answers_at_once_when_every_hold_slot_is_taken(superlink_handlers):
    link = superlink_handlers
    link.hold(10.0, slots=1)
    first = _node_polls(link, 1)  # takes the only slot
    time.sleep(0.1)
    t0 = time.monotonic()
    assert list(_node_polls(link, 2).result().messages_list) == []
    assert time.monotonic() - t0 < 1.0 and first.is_alive()
    _server_pushes(link, 1, _tree("m1"))
    _object_arrives(link, "m1")
    assert list(first.result().messages_list) == ["m1"]


def test_superlink_forgets_a_message_whose_objects_never_come():
    from flwr_internals.superlink import PushedMessages

    arrivals, store = Arrivals(), _Store()
    store.objects.update({"msg": b"", "config": b"x"})
    pushed = PushedMessages(arrivals, patience=0.2)
    pushed.pushed("msg", 9, ["msg", "config"], store)
    assert arrivals.settled(9, time.monotonic()) == 0  # still half-stored
    time.sleep(0.25)
    pushed.check(store)
    assert arrivals.settled(9, time.monotonic() + 1.0) == 1


def test_superlink_refuses_flower_handlers_it_does_not_know(monkeypatch):
    from flwr.superlink.servicer.runtime import runtime_handlers

    from flwr_internals.superlink import hold_message_polls

    monkeypatch.delattr(runtime_handlers, "push_object")
    with pytest.raises(RuntimeError, match=r"flwr_internals.superlink needs updating"):
        hold_message_polls()


def test_launchers_take_their_flags_and_pass_the_rest_to_flower():
    from flwr_internals import supernode
    from flwr_internals.superlink import MESSAGE_HOLD, split_args

    assert split_args(["--insecure", "--fedgc-message-hold", "0.5", "--port", "8000"]) == (
        0.5,
        ["--insecure", "--port", "8000"],
    )
    assert split_args(["--fedgc-message-hold=0", "--insecure"]) == (0.0, ["--insecure"])
    assert split_args(["--insecure"]) == (MESSAGE_HOLD, ["--insecure"])
    flags, rest = supernode.split_args(
        ["--insecure", "--fedgc-task-hold=0", "--node-config", "a=1", "--fedgc-poll-interval", "0.02"]
    )
    assert flags == {"poll_interval": 0.02, "idle_interval": 1.0, "task_hold": 0.0}
    assert rest == ["--insecure", "--node-config", "a=1"]
    assert supernode.split_args(["--fedgc-other=1"])[1] == ["--fedgc-other=1"]  # not ours: Flower's parser refuses it


@pytest.mark.parametrize(
    "argv, problem", [(["--fedgc-message-hold"], "needs a value"), (["--fedgc-message-hold=soon"], "not a number")]
)
def test_launcher_flags_with_a_bad_value_are_refused_by_name(argv, problem):
    from flwr_internals.superlink import split_args

    with pytest.raises(SystemExit, match=f"--fedgc-message-hold.*{problem}"):
        split_args(argv)


# ------------------------------------------------------------------ the SuperNode's Runtime API


def test_supernode_gives_the_runtime_a_task_only_once_its_message_is_stored(monkeypatch):
    from flwr.supernode.servicer.runtime import runtime_handlers

    from flwr_internals.supernode import hold_task_polls

    tasks: list[str] = []

    def acquire_task(request, state):
        return SimpleNamespace(HasField=lambda field: bool(tasks), task=tasks[0] if tasks else None)

    monkeypatch.setattr(runtime_handlers, "acquire_task", acquire_task)
    arrivals = Arrivals()
    hold_task_polls(arrivals, hold=10.0)
    poll = _Poll(lambda: runtime_handlers.acquire_task(None, None))
    time.sleep(0.1)
    arrivals.started()  # Flower creates the task, then pulls the message's objects
    tasks.append("task")
    time.sleep(0.2)
    assert poll.is_alive()
    arrivals.finished()
    assert poll.result().task == "task"


def test_supernode_marks_a_message_from_its_receipt_to_its_objects(monkeypatch):
    """patch_poll wraps Flower's receive step: a message received starts a delivery that ends when
    _pull_and_store_message returns (objects pulled), and an empty poll the SuperLink held makes
    the clock skip its sleep."""
    import flwr.supernode.start_client_internal as sci
    from flwr.supernode.servicer.runtime import runtime_handlers

    import flwr_internals.heldpoll as heldpoll
    from flwr_internals import supernode

    seen = []

    def pull_and_store(*, receive, **kwargs):
        got = receive()
        seen.append(("received", got, dict(arrivals_of[0]._storing)))
        return None if got is None else 11

    arrivals_of = []
    real_arrivals = heldpoll.Arrivals

    def recording_arrivals():
        arrivals_of.append(real_arrivals())
        return arrivals_of[-1]

    for name in ("time", "pull_objects"):
        monkeypatch.setattr(sci, name, getattr(sci, name))
    monkeypatch.setattr(sci, "_pull_and_store_message", pull_and_store)
    monkeypatch.setattr(runtime_handlers, "acquire_task", runtime_handlers.acquire_task)
    monkeypatch.setattr(supernode, "Arrivals", recording_arrivals)
    monkeypatch.setattr(supernode, "HELD_AFTER", 0.1)
    clock = supernode.patch_poll(0.01, 1.0, task_hold=1.0)
    assert sci._pull_and_store_message(receive=lambda: "message") == 11
    assert seen[-1] == ("received", "message", {None: 1})
    assert arrivals_of[0].settled(None, time.monotonic()) == 1
    sci._pull_and_store_message(receive=lambda: time.sleep(0.15))  # an empty poll the SuperLink held
    assert clock.held
    sci._pull_and_store_message(receive=lambda: None)  # an empty poll answered at once
    assert not clock.held and arrivals_of[0].settled(None, time.monotonic()) == 1


def test_runtime_asks_again_at_once_after_a_held_empty_poll(monkeypatch):
    import flwr_internals.runtime as runtime

    answers = iter([0.3, 0.3, 0.0, "task"])  # two held empty answers, one quick one, then a task
    clock_sleeps = []
    answer_after = time.sleep  # the fake SuperNode's own wait, not one of the clock's

    class Acquirer:
        def AcquireTask(self, request):
            answer = next(answers)
            if answer == "task":
                return SimpleNamespace(HasField=lambda field: True, token="token", task=SimpleNamespace(run_id=1))
            answer_after(answer)
            return SimpleNamespace(HasField=lambda field: False, token="", task=None)

        def close(self):
            pass

    monkeypatch.setattr(runtime, "_runtime_client", lambda *a, **k: Acquirer())
    monkeypatch.setattr(runtime, "run_task", lambda *a, **k: "completed")
    monkeypatch.setattr("flwr_internals.supernode._time.sleep", clock_sleeps.append)
    runtime.serve("127.0.0.1:9094", insecure=True, max_tasks=1)
    assert len(clock_sleeps) == 1  # only after the quick (stock) empty answer
