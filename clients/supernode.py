"""`flower-supernode` with a short message poll.

    python -m clients.supernode [--fedgc-poll-interval 0.02] <flower-supernode arguments>

Flower 1.41's SuperNode asks the SuperLink for a message, and when there is none sleeps 3 s;
after handing a message to the ClientApp it checks for the reply every 0.5 s. A fedgc round
costs tens of milliseconds, so those sleeps would be the round time. This launcher runs the
stock SuperNode (same arguments, same behaviour otherwise) with both waits shortened: during a
run the node learns the round period and polls shortly before the next round is due (see
_PollClock), at the start of a run it polls --fedgc-poll-interval seconds after a message and
backs off (x1.5 per empty poll) to 0.25 s, and idle to --fedgc-idle-interval seconds; the local
reply check runs every 5 ms, and object pulls retry after 5 ms instead of 1 s
(clients.flwrtiming). Without the --fedgc-* flags it is exactly flower-supernode
apart from those intervals. Pinned to flwr 1.41 (fedgc's dependency); `patch_poll` fails loudly
if the SuperNode's loop changes.
"""

from __future__ import annotations

import sys
import time as _time
from collections import deque
from typing import Sequence

IDLE_SLEEP = 3  # what flwr.supernode.start_client_internal sleeps when no message is waiting


class _PollClock:
    """Stands in for the `time` module inside flwr.supernode.start_client_internal.

    During a run (a message within the last `busy_for` seconds) messages come once per round, and
    every empty poll is a request the SuperLink serves while it moves the round's messages. So
    the clock learns the round period P (the median of the last three gaps between messages):
    after a message the node does not poll again before `lead` * P, then polls every `step` * P
    (at least `poll`) until 1.5 P, and after that the wait grows by `growth` per empty poll up to
    `busy`. Without a known period (a run's first messages) it polls after `poll`, growing the
    same way. Idle (no message for `busy_for` seconds) the wait grows to `idle` (stock Flower:
    3 s). Flower's other waits (the local reply checks) are shortened to `local`."""

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
        self.due = self.hold_until = -float("inf")

    def __getattr__(self, name: str):
        return getattr(_time, name)

    def activity(self) -> None:
        now = _time.monotonic()
        if now - self.last_activity < self.busy_for:
            self.periods.append(now - self.last_activity)
        self.last_activity = now
        period = sorted(self.periods)[(len(self.periods) - 1) // 2] if self.periods else 0.0  # lower median
        self.delay = max(self.poll, self.step * period)
        self.due = now + self.lead * period
        self.hold_until = now + 1.5 * period

    def cap(self) -> float:
        return self.busy if _time.monotonic() - self.last_activity < self.busy_for else self.idle

    def sleep(self, seconds: float) -> None:
        if seconds != IDLE_SLEEP:
            _time.sleep(min(seconds, self.local))
            return
        early = self.due - _time.monotonic()
        if early > 0:  # the next round cannot be here yet
            _time.sleep(early)
            return
        _time.sleep(self.delay)
        if _time.monotonic() >= self.hold_until:
            self.delay = min(self.delay * self.growth, max(self.cap(), self.delay))


def patch_poll(poll: float = 0.01, idle: float = 1.0) -> _PollClock:
    import flwr.supernode.start_client_internal as sci

    if not (hasattr(sci, "time") and hasattr(sci, "_pull_and_store_message") and hasattr(sci, "_push_messages")):
        raise RuntimeError("flwr.supernode.start_client_internal changed; clients.supernode needs updating")
    clock = _PollClock(poll, idle)
    pull = sci._pull_and_store_message

    def pull_and_store(*args, **kwargs):
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            clock.activity()
        return run_id

    from clients.flwrtiming import SUPERNODE_MODULE, fast_object_pulls

    fast_object_pulls(SUPERNODE_MODULE)
    sci.time = clock  # type: ignore[assignment]
    sci._pull_and_store_message = pull_and_store
    return clock


def split_args(argv: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    ours = {"--fedgc-poll-interval": 0.01, "--fedgc-idle-interval": 1.0}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        key, _, value = arg.partition("=")
        if key in ours:
            ours[key] = float(value if value else next(it))
        else:
            rest.append(arg)
    return {k[len("--fedgc-"):].replace("-", "_"): v for k, v in ours.items()}, rest


def main(argv: Sequence[str] | None = None) -> None:
    opts, rest = split_args(sys.argv[1:] if argv is None else argv)
    patch_poll(opts["poll_interval"], opts["idle_interval"])
    from flwr.supercore.logger import update_console_handler

    update_console_handler(timestamps=True, colored=False)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
