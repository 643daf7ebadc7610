"""A one-line progress bar for the rounds of a run, or of the oracle (stderr; a line per round when not a
terminal)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


class RoundProgress:
    """Callable per round: shows rounds done, the relative change against the tolerance, and time (label:
    what the rounds are, 'round' or 'oracle')."""

    def __init__(self, max_rounds: int, tol: float, *, stream: TextIO | None = None, width: int = 30,
                 label: str = "round") -> None:  # fmt: skip
        self.max_rounds, self.tol, self.width, self.label = max_rounds, tol, width, label
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open = False

    def __call__(self, record) -> None:
        # Progress towards the tolerance on a log scale: change 1 -> 0 %, change tol -> 100 %.
        done = 1.0 if record.change <= self.tol else min(1.0, math.log(max(record.change, 1e-300)) / math.log(self.tol))
        done = max(done, record.round / self.max_rounds)
        filled = round(done * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        line = (
            f"{self.label} {record.round:>3}/{self.max_rounds} [{bar}] change {record.change:.2e} (tol {self.tol:.0e})"
            f"  loss {record.loss:.6g}  {time.perf_counter() - self.start:5.1f}s"
        )
        if self.interactive:
            self.stream.write("\r" + line)
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
