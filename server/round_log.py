"""Progress of a deployed run while it runs: the ServerApp appends every round to OUT/rounds.jsonl
(one JSON object per line: round, loss, change), and the process that submitted the run tails the
file and reports each round as it arrives (server.engine.DeployedEngine; the CLI's progress bar).

A line is written whole and flushed; the reader takes complete lines only, so it never sees half
of one. The file is started empty by each run of the ServerApp.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedgc.protocol.state import RoundRecord

ROUNDS_FILE = "rounds.jsonl"


class RoundLog:
    """Callable per round (an on_round): appends the record to `path`, emptied on creation."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, record: RoundRecord) -> None:
        line = json.dumps({"round": int(record.round), "loss": float(record.loss), "change": float(record.change)})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()


class RoundTail:
    """The records appended to `path` since the last call of `new()` (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self.seen = 0

    def new(self) -> list[RoundRecord]:
        try:
            with self.path.open("rb") as f:
                if f.seek(0, 2) < self._offset:  # started again (a new run of the ServerApp)
                    self._offset = 0
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        records = []
        for line in chunk[:end].splitlines():
            if line.strip():
                item = json.loads(line)
                records.append(RoundRecord(int(item["round"]), float(item["loss"]), float(item["change"])))
        self.seen += len(records)
        return records
