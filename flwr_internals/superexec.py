"""`flower-superexec` that reaps the task processes it starts.

    python -m flwr_internals.superexec <flower-superexec arguments>

Flower 1.41's SuperExec starts every task (a ServerApp for each run: `flwr-serverapp`) with
`subprocess.Popen(args)` in SubprocessExecutor.launch and drops the handle. Python reaps a dropped
child only when the next one is started, so after a run its finished ServerApp stays behind as a
`[flwr-serverapp] <defunct>` zombie until the next run (for good after the last one). This
launcher runs the stock SuperExec (same arguments, same behaviour otherwise) with the executor's
processes kept, and reaps the finished ones in SubprocessExecutor.reconcile, which the SuperExec's
loop calls before every task poll (about once a second).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from flwr.supercore.cli.flower_superexec import flower_superexec
from flwr.supercore.superexec.executor import subprocess_executor


class TaskProcesses:
    """Stands in for the `subprocess` module inside flwr's subprocess_executor: Popen keeps each
    process it starts, `reap()` collects the finished ones; every other name is subprocess's own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: list[subprocess.Popen] = []

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(*args, **kwargs)  # pylint: disable=consider-using-with
        with self._lock:
            self.running.append(proc)
        return proc

    def reap(self) -> int:
        """Wait for every finished process (no zombie left); returns how many are still running."""
        with self._lock:
            self.running = [p for p in self.running if p.poll() is None]
            return len(self.running)

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def reap_task_processes() -> TaskProcesses:
    """Install TaskProcesses into Flower's SubprocessExecutor (fails loudly if it changed)."""
    executor = getattr(subprocess_executor, "SubprocessExecutor", None)
    if not (
        getattr(subprocess_executor, "subprocess", None) is subprocess
        and callable(getattr(executor, "launch", None))
        and callable(getattr(executor, "reconcile", None))
    ):
        raise RuntimeError(
            "flwr.supercore.superexec.executor.subprocess_executor changed; flwr_internals.superexec needs updating"
        )
    processes = TaskProcesses()
    reconcile = executor.reconcile

    def reconcile_and_reap(self) -> None:
        reconcile(self)
        processes.reap()

    subprocess_executor.subprocess = processes  # type: ignore[assignment]
    executor.reconcile = reconcile_and_reap
    return processes


def main(argv: Sequence[str] | None = None) -> None:
    reap_task_processes()
    sys.argv = ["flower-superexec", *(sys.argv[1:] if argv is None else argv)]
    flower_superexec()


if __name__ == "__main__":
    main()
