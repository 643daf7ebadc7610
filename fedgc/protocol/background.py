"""Work on a thread of its own while a run goes on (a file's hash, the SIV test during the rounds)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def in_background(work: Callable[[], T]) -> Future[T]:
    """work() on a daemon thread: a run that fails meanwhile reports its error at once, without waiting for it.
    The process may then exit while work() runs: CPython ends a daemon thread by unwinding it where it next
    takes the GIL, and compiled code that catches that unwinding (pydantic-core's Rust, C++ libraries such as
    pyarrow) aborts the process. So work() runs plain Python, C and Fortran only (sha256, numpy, LAPACK)."""
    future: Future[T] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to whoever waits for the result
                future.set_exception(exc)

    threading.Thread(target=run, name="fedgc-background", daemon=True).start()
    return future
