"""A client's own privacy ledger: what it has spent on each of its data files, over all runs.

The ledger lives beside the data file (`<file>.fedgc-privacy.json`), where only the client reads it.
Entries are keyed by the sha256 of the file's bytes: a changed file is other data. Each entry is one
run's release: its noise multiplier, releases, event size, delta, accountant, and the seed its noise
was drawn from (128 bits of the operating system's entropy, kept here so that a resumed run redraws the
same noise: the same release, not a second one). Before a private run releases anything, the client
composes every earlier release on the file with this run's (RDP over Gaussian mechanisms of different
multipliers, at this run's event size) and refuses when the total would exceed the budget.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedgc.errors import FedGCError
from fedgc.files import file_digest, replacing
from fedgc.privacy.accounting import PrivacyAccountant
from fedgc.privacy.budget import PrivacyPlan

LEDGER_SUFFIX = ".fedgc-privacy.json"
FORMAT = "fedgc-privacy-ledger"
VERSION = 1


class PrivacyBudgetError(FedGCError):
    """A client refuses a run that would take it past its privacy budget on a data file."""


@dataclass(frozen=True)
class Spend:
    """One run's release on a data file. noise_multiplier: sigma per event of event_steps steps;
    releases: Gaussian mechanisms of the run (sample rate 1); noise_seed: the entropy its noise came from."""

    run: str
    time: str
    noise_multiplier: float
    releases: int
    event_steps: int
    delta: float
    accountant: str
    epsilon: float
    noise_seed: int

    def multiplier_at(self, event_steps: int) -> float:
        """This release's noise multiplier for events of `event_steps` steps: sigma sqrt(k_run / k)."""
        return self.noise_multiplier * (self.event_steps / event_steps) ** 0.5


def ledger_path(data_file: str | Path) -> Path:
    data_file = Path(data_file)
    return data_file.with_name(data_file.name + LEDGER_SUFFIX)


@dataclass
class Ledger:
    """The ledger of one data file (all files' entries are kept; `spends` are this file's)."""

    path: Path
    digest: str
    book: dict[str, list[dict[str, Any]]]

    @classmethod
    def open(cls, data_file: str | Path, *, client: str) -> Ledger:
        path = ledger_path(data_file)
        book: dict[str, list[dict[str, Any]]] = {}
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
                if raw.get("format") != FORMAT or raw.get("version") != VERSION:
                    raise ValueError(f"format {raw.get('format')!r} version {raw.get('version')!r}")
                book = {str(k): list(v) for k, v in raw["files"].items()}
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
                raise PrivacyBudgetError(
                    f"client '{client}': its privacy ledger {path} is unreadable ({exc}); it records what was spent "
                    "on this data and cannot be skipped: restore it, or remove it knowingly"
                ) from None
        return cls(path, file_digest(data_file), book)

    @property
    def spends(self) -> list[Spend]:
        return [Spend(**e) for e in self.book.get(self.digest, [])]

    def spent(self, acc: PrivacyAccountant, *, event_steps: int, extra: Spend | None = None) -> float:
        """Epsilon of every release on this file (and `extra`), composed at `event_steps`-step events."""
        spends = [*self.spends, *([extra] if extra is not None else [])]
        return acc.spent_mixture([(s.multiplier_at(event_steps), s.releases) for s in spends])

    def admit(
        self, *, client: str, run: str, plan: PrivacyPlan, acc: PrivacyAccountant, event_steps: int,
        budget: float | None,
    ) -> int:  # fmt: skip
        """The noise seed for run `run` on this file: a resumed run's own (the same release again), else a
        fresh one from the operating system's entropy, recorded before anything is released. Refuses with
        PrivacyBudgetError when the budget would be exceeded."""
        for s in self.spends:
            if s.run == run:
                return s.noise_seed
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        this = Spend(
            run=run, time=now, noise_multiplier=float(plan.noise_multiplier), releases=int(plan.steps),
            event_steps=int(event_steps), delta=float(acc.delta), accountant=acc.accountant,
            epsilon=float(acc.spent(noise_multiplier=plan.noise_multiplier, steps=plan.steps)),
            noise_seed=secrets.randbits(128),
        )  # fmt: skip
        if budget is not None:
            before = self.spent(acc, event_steps=event_steps)
            total = self.spent(acc, event_steps=event_steps, extra=this)
            if total > budget:
                raise PrivacyBudgetError(
                    f"client '{client}': this run would take the privacy spent on its data file to epsilon "
                    f"{total:.3g} (delta {acc.delta:g}, {event_steps}-step events), over its budget of {budget:g}: "
                    f"{len(self.spends)} earlier run(s) spent {before:.3g} (ledger {self.path}); it releases nothing"
                )
        self.book.setdefault(self.digest, []).append(asdict(this))
        self._write()
        return this.noise_seed

    def _write(self) -> None:
        text = json.dumps({"format": FORMAT, "version": VERSION, "files": self.book}, indent=1)
        with replacing(self.path) as tmp:
            tmp.write_text(text)
            os.chmod(tmp, 0o600)
