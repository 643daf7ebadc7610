"""Independent pieces of a run's setup on worker processes, results in order, warnings passed on.

Building a client from a small CSV file (reading, cleaning, identification, snapshot, window) is hundreds of
small numpy and scipy calls, each holding the GIL: two threads built 100 clients of 4000 x 20 values barely
faster than one (setup 4.8-5.3 s against 5.8-6.0 s), two forked processes in about half the time
(docs/performance.md). The workers are forked, so they start in milliseconds with everything imported; what
a piece returns is pickled back (a built client: its window, states and snapshot, ~0.3 MB).

A warning raised in a worker (FedGCWarning: a dropped column, held analyser values) is recorded there and
raised again here, piece by piece in order, as each result is taken; an error is raised here as the piece's
result is taken, so with several faulty pieces the first one's error is the one seen, as on threads. The
workers ignore Ctrl-C: it reaches this process, which finishes the pieces under way and stops.
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

Result = TypeVar("Result")


def can_fork() -> bool:
    """Whether worker processes can be forked here (POSIX; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def map_in_processes(job: Callable[..., Result], items: Sequence[Any], *, workers: int) -> list[Result]:
    """[job(item) for item in items] on `workers` forked processes. job and the items must pickle (a
    module-level function, functools.partial of one); so must the results and the warnings."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_ignore_ctrl_c)
    try:
        futures = [pool.submit(_recording_warnings, job, item) for item in items]
        results = []
        for future in futures:
            result, caught = future.result()
            for message in caught:
                warnings.warn(message, stacklevel=2)
            results.append(result)
        return results
    finally:
        pool.shutdown(cancel_futures=True)


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _recording_warnings(job: Callable[..., Result], item: Any) -> tuple[Result, list[Warning]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the parent's filters decide when the warning is raised again there
        result = job(item)
    return result, [w.message for w in caught if isinstance(w.message, Warning)]
