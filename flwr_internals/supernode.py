"""`flower-supernode` with short waits, and a held task poll for its ClientApp runtime.

    python -m flwr_internals.supernode [--fedgc-poll-interval 0.01] [--fedgc-idle-interval 1.0]
                                       [--fedgc-task-hold 1.0] <flower-supernode arguments>

Flower 1.41's SuperNode asks the SuperLink for a message, and when there is none sleeps 3 s;
after handing a message to the ClientApp it checks for the reply every 0.5 s. A fedgc round
costs tens of milliseconds, so those sleeps would be the round time. This launcher runs the
stock SuperNode (same arguments, same behaviour otherwise) with:
- the message poll: against fedgc's SuperLink (flwr_internals.superlink), which holds an empty poll until
  the node's message is there, the node asks again at once; against a SuperLink that answers at
  once it learns the round period during a run and polls shortly before the next round is due
  (PollClock), at the start of a run it polls --fedgc-poll-interval seconds after a message and
  backs off (x1.5 per empty poll) to 0.25 s, and idle to --fedgc-idle-interval seconds;
- the ClientApp runtime's task poll (Runtime API AcquireTask) held until a message is stored
  whole, header and objects, or --fedgc-task-hold seconds (flwr_internals.heldpoll; 0 turns it off);
- the local reply check every 5 ms, and object pulls retried after 5 ms instead of 1 s
  (flwr_internals.timing).
Flower 1.41 only (the package's version guard); `patch_poll` fails loudly if the SuperNode's loop
or handlers change.
"""

from __future__ import annotations

import inspect
import sys
import time as _time
from collections import deque
from collections.abc import Sequence

import flwr.supernode.start_client_internal as sci
from flwr.supercore.logger import update_console_handler
from flwr.supernode.cli.flower_supernode import flower_supernode
from flwr.supernode.servicer.runtime import runtime_handlers

from flwr_internals.heldpoll import HELD_AFTER, Arrivals, held
from flwr_internals.launch import split_flags
from flwr_internals.timing import SUPERNODE_MODULE, fast_object_pulls

IDLE_SLEEP = 3  # what flwr.supernode.start_client_internal sleeps when no message is waiting
TASK_HOLD = 1.0  # s: longest wait of the ClientApp runtime's AcquireTask for a message (flwr_internals.heldpoll)


class PollClock:
    """Stands in for the `time` module inside flwr.supernode.start_client_internal.

    During a run messages come once per round, and every empty poll is a request the SuperLink
    serves while it moves the round's messages. So the clock learns the round period P of the
    run: the shortest of the last three gaps between its messages, from the run's third message
    on (the setup exchange and a pause between runs do not count). After a message the node does
    not poll again before `lead` * P, then polls every `step` * P (at least `poll`) until 1.5 P,
    after which the wait grows by `growth` per empty poll up to `busy`. A message found by the
    first poll after that silent wait may have waited for it (the rounds got faster), so the next
    round is polled without the wait, which measures the new period. Without a period (a run's
    first messages) it polls after `poll`, growing the same way. Idle (no message for `busy_for`
    seconds) the wait grows to `idle` (stock Flower: 3 s). Flower's other waits (the local reply
    checks) are shortened to `local`."""

    def __init__(
        self, poll: float, idle: float, growth: float = 1.5, local: float = 0.005, busy: float = 0.25,
        busy_for: float = 30.0, lead: float = 0.85, step: float = 0.04,
    ) -> None:  # fmt: skip
        self.poll, self.idle, self.growth, self.local = poll, idle, growth, local
        self.busy, self.busy_for = min(busy, idle), busy_for
        self.lead, self.step = lead, step
        self.delay = idle
        self.last_activity = -float("inf")
        self.periods: deque[float] = deque(maxlen=3)
        self.run_id: object = None
        self.in_run = 0  # messages of this run so far
        self.due = self.hold_until = -float("inf")
        self.waited = False  # slept until `due` and have not polled empty since
        self.held = False  # the last empty poll was held by the server (flwr_internals.heldpoll)
        self.last_empty = self.last_arrival = -float("inf")  # times of the last empty poll, of the last message

    def __getattr__(self, name: str):
        return getattr(_time, name)

    def activity(self, run_id: object = None) -> None:
        now = _time.monotonic()
        if run_id != self.run_id or now - self.last_activity >= self.busy_for:
            self.run_id, self.in_run = run_id, 0
            self.periods.clear()
        self.in_run += 1
        # The message came after the last empty poll: that is when it arrived, to within the poll
        # interval. Found by the first poll after a message or after the silent wait, its arrival
        # is not known: no period from it, and no silent wait before the next one.
        known = self.last_empty > self.last_activity and not self.waited
        arrival = self.last_empty if known else now
        if known and self.in_run >= 3:
            self.periods.append(arrival - self.last_arrival)
        self.last_activity, self.last_arrival = now, arrival
        period = min(self.periods) if known and self.periods else 0.0
        self.delay = max(self.poll, self.step * period)
        self.due = arrival + self.lead * period
        self.hold_until = arrival + 1.5 * period
        self.waited = False

    def answered_empty(self, asked: float) -> None:
        """A poll sent at `asked` (monotonic) came back empty. If that took HELD_AFTER or more, the
        server held it until its hold ran out (flwr_internals.heldpoll) and the next sleep is skipped."""
        self.held = _time.monotonic() - asked >= HELD_AFTER

    def cap(self) -> float:
        return self.busy if _time.monotonic() - self.last_activity < self.busy_for else self.idle

    def sleep(self, seconds: float) -> None:
        if seconds != IDLE_SLEEP:
            _time.sleep(min(seconds, self.local))
            return
        self.last_empty = _time.monotonic()
        if self.held:  # the server held the poll (flwr_internals.superlink, .supernode): ask again at once
            self.held = False
            return
        early = self.due - self.last_empty
        if early > 0:  # the next round cannot be here yet
            _time.sleep(early)
            self.waited = True
            return
        self.waited = False
        _time.sleep(self.delay)
        if _time.monotonic() >= self.hold_until:
            self.delay = min(self.delay * self.growth, max(self.cap(), self.delay))


def hold_task_polls(arrivals: Arrivals, hold: float) -> None:
    """The SuperNode's Runtime API AcquireTask answers no-task only after `hold` seconds, and a
    task only once its message is stored whole (Flower creates the task before it pulls the
    message's objects from the SuperLink, and a runtime that claims it early retries its object
    pulls): flwr_internals.heldpoll."""
    acquire = getattr(runtime_handlers, "acquire_task", None)
    if acquire is None:
        raise RuntimeError(
            "flwr.supernode.servicer.runtime.runtime_handlers changed; flwr_internals.supernode needs updating"
        )

    def acquire_task(request, state):
        return held(lambda: acquire(request, state), lambda res: res.HasField("task"), arrivals, None, hold)

    runtime_handlers.acquire_task = acquire_task


def patch_poll(poll: float = 0.01, idle: float = 1.0, task_hold: float = TASK_HOLD) -> PollClock:
    """Install the poll clock, the held task poll and the fast object pulls into Flower's SuperNode."""
    if not (hasattr(sci, "time") and hasattr(sci, "_pull_and_store_message") and hasattr(sci, "_push_messages")):
        raise RuntimeError("flwr.supernode.start_client_internal changed; flwr_internals.supernode needs updating")
    clock = PollClock(poll, idle)
    pull = sci._pull_and_store_message
    signature = inspect.signature(pull)
    if "receive" not in signature.parameters:
        raise RuntimeError("flwr.supernode.start_client_internal changed; flwr_internals.supernode needs updating")
    arrivals = Arrivals()
    if task_hold > 0:
        hold_task_polls(arrivals, task_hold)

    def pull_and_store(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        receive, storing = call.arguments["receive"], []

        def receive_and_mark():
            asked = _time.monotonic()
            got = receive()
            if got is None:
                clock.answered_empty(asked)
            else:
                arrivals.started()
                storing.append(True)
            return got

        call.arguments["receive"] = receive_and_mark
        try:
            run_id = pull(*call.args, **call.kwargs)
        finally:
            if storing:
                arrivals.finished()
        if run_id is not None:
            clock.activity(run_id)
        return run_id

    fast_object_pulls(SUPERNODE_MODULE)
    sci.time = clock  # type: ignore[assignment]
    sci._pull_and_store_message = pull_and_store
    return clock


def split_args(argv: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    return split_flags(argv, {"poll-interval": 0.01, "idle-interval": 1.0, "task-hold": TASK_HOLD})


def main(argv: Sequence[str] | None = None) -> None:
    opts, rest = split_args(sys.argv[1:] if argv is None else argv)
    patch_poll(opts["poll_interval"], opts["idle_interval"], opts["task_hold"])
    update_console_handler(timestamps=True, colored=False)
    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
