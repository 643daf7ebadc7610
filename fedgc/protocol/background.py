"""Work on a thread of its own while a run goes on (a file's hash, the SIV test during the rounds)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def in_background(work: Callable[[], T]) -> Future[T]:
    """work() on a daemon thread: a run that fails meanwhile reports its error at once, without waiting for it."""
    future: Future[T] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to whoever waits for the result
                future.set_exception(exc)

    threading.Thread(target=run, name="fedgc-background", daemon=True).start()
    return future
