"""Held polls: a server answers an empty poll only when something arrived or `hold` passed.

Flower 1.41's runtimes and SuperNodes poll: a ClientApp runtime asks its SuperNode for a task, a
SuperNode asks the SuperLink for a message, and an empty answer is followed by a sleep. Between
two rounds of a fedgc run those empty polls are most of the requests the SuperLink and the
SuperNodes serve (about 140 of 400 per round with 8 clients), and the sleep before the poll that
finds the message is added to the round. A held poll answers the same request with the same
response, only later: the handler waits until a new delivery is complete, or `hold` seconds,
before it looks. A client that knows nothing of the hold just sees slow empty answers.

`Arrivals` is the signal between the code that stores a delivery (which may take several steps:
a message's header, then its objects) and the held handlers that wait for it. This module imports
nothing of Flower; flwr_internals.superlink and .supernode install it into Flower's handlers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

R = TypeVar("R")

HELD_AFTER = 0.2  # s: an empty answer slower than this came from a held poll (a stock one takes ms)


class Arrivals:
    """Deliveries per key (a node id, or one key for a SuperNode's own tasks).

    `started(key)` when a delivery begins, `finished(key)` when it is complete (or abandoned): a
    held poll neither looks while a delivery for its key is half-stored, nor misses one completed
    between its look and its wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._complete: dict[Hashable, int] = {}
        self._storing: dict[Hashable, int] = {}

    def started(self, key: Hashable = None) -> None:
        with self._cond:
            self._storing[key] = self._storing.get(key, 0) + 1

    def finished(self, key: Hashable = None) -> None:
        with self._cond:
            left = self._storing.get(key, 0) - 1
            if left > 0:
                self._storing[key] = left
            else:
                self._storing.pop(key, None)
            self._complete[key] = self._complete.get(key, 0) + 1
            self._cond.notify_all()

    def settled(self, key: Hashable, deadline: float) -> int:
        """Wait (at most until `deadline`) until no delivery for `key` is half-stored; returns the
        count of completed deliveries, for `wait_for_new`."""
        with self._cond:
            self._cond.wait_for(lambda: key not in self._storing, timeout=max(0.0, deadline - time.monotonic()))
            return self._complete.get(key, 0)

    def wait_for_new(self, key: Hashable, seen: int, deadline: float) -> bool:
        """Wait (at most until `deadline`) for a delivery for `key` completed after `seen`."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._complete.get(key, 0) != seen, timeout=max(0.0, deadline - time.monotonic())
            )


def held(look: Callable[[], R], found: Callable[[R], bool], arrivals: Arrivals, key: Hashable, hold: float) -> R:
    """`look()` once nothing for `key` is half-stored; if it finds nothing, wait for the next
    complete delivery (at most `hold` seconds in all) and look again."""
    deadline = time.monotonic() + hold
    seen = arrivals.settled(key, deadline)
    answer = look()
    if found(answer) or not arrivals.wait_for_new(key, seen, deadline):
        return answer
    arrivals.settled(key, deadline)
    return look()
