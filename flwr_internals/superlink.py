"""`flower-superlink` whose Fleet API holds a SuperNode's empty message poll.

    python -m flwr_internals.superlink [--fedgc-message-hold 1.0] <flower-superlink arguments>

Flower 1.41's SuperNodes ask the SuperLink for a message and, finding none, sleep and ask again.
Between the rounds of a fedgc run those empty polls were a third of the SuperLink's requests
(~65 of ~210 per round with 8 clients, ~4 ms of its CPU each), and each node found its message
only at its next poll. Here the Fleet API's PullMessages, when the node has no message waiting,
waits until the ServerApp has pushed one for that node *with all its objects* (Flower pushes a
message's header before its objects), or --fedgc-message-hold seconds, and then answers as
Flower does (flwr_internals.heldpoll). Nothing else changes: the same arguments, responses and state,
and a SuperNode that knows nothing of the hold (stock flower-supernode) just gets slower empty
answers. At most HOLD_SLOTS polls are held at once (they each take a thread of the server's
pool); further ones are answered at once. Flower 1.41 only (the package's version guard);
`hold_message_polls` fails loudly if the handlers it wraps change.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence

from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
from flwr.superlink.cli.flower_superlink import flower_superlink
from flwr.superlink.servicer.fleet import fleet_handlers
from flwr.superlink.servicer.runtime import runtime_handlers

from flwr_internals.heldpoll import Arrivals, held
from flwr_internals.launch import split_flags

MESSAGE_HOLD = 1.0  # s
HOLD_SLOTS = 24  # polls held at once: each holds one of the 40 threads (anyio's default) that run sync handlers
PUSH_PATIENCE = 60.0  # s: a message whose objects have not all come by then no longer holds polls


class PushedMessages:
    """Messages the ServerApp pushed whose objects are not all in the SuperLink's ObjectStore
    yet, by destination node: a delivery `started` at the header, `finished` once every object
    of its tree has content (or after `patience` seconds, if the ServerApp never sends them)."""

    def __init__(self, arrivals: Arrivals, *, patience: float = PUSH_PATIENCE) -> None:
        self.arrivals = arrivals
        self.patience = float(patience)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, list[str], float]] = {}  # message id -> (node, object ids, pushed at)

    def pushed(self, message_id: str, node_id: int, object_ids: Sequence[str], store) -> None:
        with self._lock:
            self._pending[message_id] = (int(node_id), list(object_ids), time.monotonic())
        self.arrivals.started(int(node_id))
        self.check(store)

    def check(self, store) -> None:
        now = time.monotonic()
        with self._lock:
            done = [
                mid for mid, (_, ids, at) in self._pending.items()
                if now - at > self.patience or all(store.get(oid) for oid in ids)
            ]  # fmt: skip
            nodes = [self._pending.pop(mid)[0] for mid in done]
        for node in nodes:
            self.arrivals.finished(node)


def hold_message_polls(hold: float = MESSAGE_HOLD, *, slots: int = HOLD_SLOTS) -> PushedMessages:
    """Wrap the Fleet API's PullMessages (held) and the Runtime API's PushMessages/PushObject (they
    report each message's delivery, header to last object)."""
    wrapped = [
        (fleet_handlers, "pull_messages"),
        (runtime_handlers, "push_messages"),
        (runtime_handlers, "push_object"),
    ]
    if not all(callable(getattr(module, name, None)) for module, name in wrapped):
        raise RuntimeError("flwr.superlink's Fleet/Runtime handlers changed; flwr_internals.superlink needs updating")
    pull, push, push_object = (getattr(module, name) for module, name in wrapped)
    arrivals = Arrivals()
    pushed = PushedMessages(arrivals)
    free = threading.BoundedSemaphore(slots)

    def pull_messages(request, state, store):
        look = lambda: pull(request=request, state=state, store=store)
        if not free.acquire(blocking=False):
            return look()
        try:
            return held(look, lambda res: len(res.messages_list) > 0, arrivals, int(request.node.node_id), hold)
        finally:
            free.release()

    def push_messages(request, state, task):
        res = push(request, state, task)
        for proto, tree, message_id in zip(request.messages_list, request.message_object_trees, res.message_ids):
            if message_id and not proto.metadata.reply_to_message_id:
                ids = [t.object_id for t in iterate_object_tree(tree)]
                pushed.pushed(message_id, proto.metadata.dst_node_id, ids, state.object_store)
        return res

    def push_object_then_check(request, state, task):
        res = push_object(request, state, task)
        pushed.check(state.object_store)
        return res

    fleet_handlers.pull_messages = pull_messages
    runtime_handlers.push_messages = push_messages
    runtime_handlers.push_object = push_object_then_check
    return pushed


def split_args(argv: Sequence[str]) -> tuple[float, list[str]]:
    flags, rest = split_flags(argv, {"message-hold": MESSAGE_HOLD})
    return flags["message_hold"], rest


def main(argv: Sequence[str] | None = None) -> None:
    hold, rest = split_args(sys.argv[1:] if argv is None else argv)
    if hold > 0:
        hold_message_polls(hold)
    sys.argv = ["flower-superlink", *rest]
    flower_superlink()


if __name__ == "__main__":
    main()
