"""The warm ClientApp runtime (flwr_internals.runtime) outlives every task, whatever happens to one.

Flower's own flwr-clientapp runs one task per process, so its HTTP retry policy answers a refused
task token (401) by interrupting its own process. A warm runtime that did so stopped for good when
its task heartbeat raced the task's end: a heartbeat sent after the task output carries a spent
token, the runtime exited, and its node never answered another round (seen on loopback as
"no reply within 120 s" about once in 700 tasks). These tests pin the guards: the heartbeat stops
before the output is pushed (and a task shorter than LateHeartbeat's delay sends none), a refused
token raises instead of interrupting, and a task that cannot report back costs that task only."""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import httpx
import pytest

import flwr_internals.runtime as runtime


def _refused(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        401, request=request, json={"code": 1008, "message": "Runtime task-token authentication failed."}
    )


def test_refused_token_raises_and_does_not_interrupt_the_process(monkeypatch):
    import flwr.supercore.retry.http_retry as http_retry

    interrupts = []
    monkeypatch.setattr(http_retry, "time", SimpleNamespace(sleep=lambda s: None, monotonic=http_retry.time.monotonic))
    previous = signal.signal(signal.SIGINT, lambda *_: interrupts.append("SIGINT"))
    try:
        invoker = runtime.runtime_retry_invoker()
        with httpx.Client(transport=httpx.MockTransport(_refused)) as client:

            def send():
                return client.post("http://supernode/v1/runtime/send-task-heartbeat").raise_for_status()

            with pytest.raises(httpx.HTTPStatusError) as refused:
                invoker.invoke(send)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert refused.value.response.status_code == 401
    assert interrupts == []


def test_retryable_errors_are_still_retried(monkeypatch):
    import flwr.supercore.retry.http_retry as http_retry

    monkeypatch.setattr(http_retry, "time", SimpleNamespace(sleep=lambda s: None, monotonic=http_retry.time.monotonic))
    invoker = runtime.runtime_retry_invoker()
    invoker.wait_function = lambda seconds: None
    answers = iter([503, 503, 200])
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(next(answers), request=r))) as client:
        response = invoker.invoke(lambda: client.post("http://supernode/v1/runtime/pull-messages").raise_for_status())
    assert response.status_code == 200


def _fake_task_io(monkeypatch, events: list[str]):
    """run_task's Flower I/O replaced by recorders: the order of heartbeat and pushes is what is tested."""
    import flwr.supernode.runtime.run_clientapp as run_clientapp

    class Heartbeat:
        def __init__(self, fn):
            pass

        def start(self):
            events.append("heartbeat start")

        def stop(self):
            events.append("heartbeat stop")

    class Client:
        def close(self):
            events.append("close")

    monkeypatch.setattr(runtime, "_runtime_client", lambda *a, **k: Client())
    monkeypatch.setattr(runtime, "LateHeartbeat", Heartbeat)
    monkeypatch.setattr(run_clientapp, "push_message", lambda client, reply, context: events.append("push reply"))
    monkeypatch.setattr(
        run_clientapp,
        "push_task_output",
        lambda client, context, status, details: events.append(f"push output {status}"),
    )
    from flwr.app import Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    for field, value in (("_task_id", 1), ("_run_id", 7), ("_node_id", 1)):  # what a runtime's task has
        monkeypatch.setattr(TaskIdentity, field, value)
    message = Message(RecordDict(), dst_node_id=1, message_type="query.round")
    run = SimpleNamespace(fab_id=runtime.FEDGC_FAB_ID)
    monkeypatch.setattr(runtime, "pull_task_input", lambda client: (message, object(), run, None))


@pytest.mark.parametrize("fails", [False, True], ids=["answers", "raises"])
def test_heartbeat_stops_before_the_task_output(monkeypatch, fails):
    events: list[str] = []
    _fake_task_io(monkeypatch, events)

    def app(message, context):
        events.append("app")
        if fails:
            raise ValueError("bad augmentation")
        return object()

    status = runtime.run_task("127.0.0.1:9094", "token", insecure=True, root_certificates=None, client_app=app)
    assert events == ["heartbeat start", "app", "push reply", "heartbeat stop", f"push output {status}", "close"]
    assert (status == "failed") == fails, status


def test_a_task_that_cannot_report_back_does_not_stop_the_runtime(monkeypatch):
    tasks = iter(range(3))

    class Acquirer:
        def AcquireTask(self, request):
            k = next(tasks)
            return SimpleNamespace(HasField=lambda field: True, token=f"token-{k}", task=SimpleNamespace(run_id=7))

        def close(self):
            pass

    ran = []

    def run_task(address, token, **kwargs):
        ran.append(token)
        if token == "token-0":
            request = httpx.Request("POST", "http://supernode/v1/runtime/push-task-output")
            raise httpx.HTTPStatusError("refused", request=request, response=_refused(request))
        return "completed"

    monkeypatch.setattr(runtime, "_runtime_client", lambda *a, **k: Acquirer())
    monkeypatch.setattr(runtime, "run_task", run_task)
    runtime.serve("127.0.0.1:9094", insecure=True, max_tasks=3)
    assert ran == ["token-0", "token-1", "token-2"]


def _wait_for(condition, seconds=10.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()


def test_a_short_task_sends_no_heartbeat():
    beats = []
    heartbeat = runtime.LateHeartbeat(lambda: beats.append(time.monotonic()) or True, after=0.3)
    heartbeat.start()
    heartbeat.stop()
    time.sleep(0.6)
    assert beats == [] and not heartbeat.started


def test_a_long_task_gets_heartbeats_and_none_after_stop():
    beats = []
    heartbeat = runtime.LateHeartbeat(lambda: beats.append(time.monotonic()) or True, after=0.05)
    t0 = time.monotonic()
    heartbeat.start()
    assert _wait_for(lambda: len(beats) >= 1)
    assert beats[0] - t0 >= 0.05
    heartbeat.stop()
    sent = len(beats)
    time.sleep(0.2)
    assert len(beats) == sent and not heartbeat.started
