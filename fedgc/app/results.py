"""What a run produced, in typed containers, and the npz form of a fit (the ServerApp hands its fit to
the submitting command through it; fedgc.report turns a RunResult into result.json and the figures)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgc.analysis.metrics import EdgeScores
from fedgc.analysis.stream import StreamRecord
from fedgc.analysis.tep import TEPSections
from fedgc.app.config import RunConfig
from fedgc.core.granger import GCResult
from fedgc.data.align import AlignedRows
from fedgc.data.csv import ClientTable
from fedgc.files import ctrl_c_deferred, replacing
from fedgc.protocol.loop import FitResult
from fedgc.protocol.state import Dropout, RoundRecord


@dataclass(frozen=True)
class Truth:
    """Known ground truth of a simulated run. edges: (M, M) [target, source];
    A: (D, D) true joint transition, comparable with A_s only when clients were given the true models."""

    edges: np.ndarray
    A: np.ndarray | None


@dataclass
class Evaluation:
    """The run against known truth and the centralized oracle (evaluation only: the oracle pools every
    client's data). Relative errors are ||X - reference||_F / ||reference||_F over the off-diagonal blocks."""

    truth: Truth | None = None
    scores: EdgeScores | None = None
    error_vs_truth: float | None = None
    error_vs_oracle: float | None = None
    oracle_error_vs_truth: float | None = None
    oracle_A: np.ndarray | None = None
    oracle_history: list[RoundRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ClientData:
    """What was done to one client's data file before the run (fedgc.data.cleaning, fedgc.data.align)."""

    file: str
    columns: int
    rows: int
    rows_sorted: bool
    dropped_missing_columns: dict[str, float]
    dropped_constant_columns: list[str]
    held_columns: dict[str, dict[str, int]]
    missing_values: int
    empty_rows: int
    missing_fraction: float
    alignment: AlignedRows | None = None

    @classmethod
    def of(cls, table: ClientTable, alignment: AlignedRows | None = None) -> ClientData:
        c = table.cleaning
        return cls(
            file=str(table.path), columns=len(table.columns), rows=int(table.values.shape[0]),
            rows_sorted=bool(table.rows_sorted), dropped_missing_columns={col: f for col, f in c.dropped_missing},
            dropped_constant_columns=list(c.dropped_constant),
            held_columns={h.column: {"period": h.period, "phase": h.phase, "masked": h.n_masked} for h in c.held},
            missing_values=int(c.missing_values), empty_rows=int(c.empty_rows),
            missing_fraction=float(np.count_nonzero(np.isnan(table.values)) / max(table.values.size, 1)),
            alignment=alignment,
        )  # fmt: skip


@dataclass
class RunResult:
    """Everything a run produced; fedgc.report turns it into result.json, report.md and the figures.

    timings: stage -> seconds; communication: the bytes each exchange put on the wire and their totals
    (fedgc.protocol.transport.CommunicationLog.summary, plus what a Flower transport adds about its wire);
    raw_data_bytes: raw client data that never left the clients; privacy: the accounting record
    (fedgc.privacy.accounting.privacy_report), or {"enabled": False}; data: per client, what was done to
    its file (CSV clients) on the time axis `align`; streaming: the windows and alerts of a streaming run;
    tep: the flowsheet comparison and fault-origin records of a Tennessee Eastman run."""

    config: RunConfig
    fit: FitResult
    engine: str
    evaluation: Evaluation = field(default_factory=Evaluation)
    timings: dict[str, float] = field(default_factory=dict)
    communication: dict[str, Any] = field(default_factory=dict)
    raw_data_bytes: int = 0
    privacy: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    data: dict[str, ClientData] | None = None
    align: str = "none"
    streaming: StreamRecord | None = None
    tep: TEPSections | None = None


_GC_ARRAYS = ("strength", "gc", "statistic", "dof", "pvalue", "log10_pvalue", "edges", "A_s")
_DROPOUT_FIELDS = ("client", "round", "reason")


def encode_fit(fit: FitResult) -> dict[str, np.ndarray]:
    """A FitResult as named arrays (np.savez-able without pickles)."""
    gc = fit.gc
    out = {f"gc_{k}": np.asarray(getattr(gc, k)) for k in _GC_ARRAYS}
    out["gc_clients"] = np.asarray(list(gc.clients), dtype=str)
    out["gc_dims"] = np.asarray(gc.dims, dtype=np.int64)
    out["gc_alpha"] = np.asarray(float(gc.alpha))
    out["gc_test"] = np.asarray(str(gc.test))
    out["A_s"] = np.asarray(fit.A_s, dtype=np.float64)
    out["history"] = np.asarray([[r.round, r.loss, r.change] for r in fit.history], dtype=np.float64).reshape(-1, 3)
    out["converged"] = np.asarray(bool(fit.converged))
    if gc.unknown is not None:
        out["gc_unknown"] = np.asarray(gc.unknown, dtype=bool)
    if gc.via_source is not None:
        out["gc_via_source"] = np.asarray(gc.via_source, dtype=bool)
    out["dropouts"] = np.asarray([[d.client, str(d.round), d.reason] for d in fit.dropouts], dtype=str).reshape(-1, 3)
    if fit.resumed_from is not None:  # a deployed submitter reads the fit from this file: keep the resume in it
        out["resumed_from"] = np.asarray(int(fit.resumed_from))
    return out


def decode_fit(arrays: Mapping[str, np.ndarray]) -> FitResult:
    gc = GCResult(
        clients=tuple(str(c) for c in arrays["gc_clients"].tolist()),
        dims=tuple(int(d) for d in arrays["gc_dims"].tolist()),
        alpha=float(arrays["gc_alpha"]),
        **{k: np.asarray(arrays[f"gc_{k}"]) for k in _GC_ARRAYS},
        unknown=np.asarray(arrays["gc_unknown"], dtype=bool) if "gc_unknown" in arrays else None,
        test=str(arrays["gc_test"]) if "gc_test" in arrays else "lr",
        via_source=np.asarray(arrays["gc_via_source"], dtype=bool) if "gc_via_source" in arrays else None,
    )
    history = [
        RoundRecord(int(r), float(loss), float(c)) for r, loss, c in np.asarray(arrays["history"]).reshape(-1, 3)
    ]
    dropouts = [
        Dropout(str(c), int(r), str(why))
        for c, r, why in np.asarray(arrays.get("dropouts", np.empty((0, 3)))).reshape(-1, 3)
    ]
    resumed = int(arrays["resumed_from"]) if "resumed_from" in arrays else None
    A_s = np.asarray(arrays["A_s"], dtype=np.float64)
    return FitResult(gc, A_s, history, bool(arrays["converged"]), dropouts, resumed)


def save_fit(path: str | Path, fit: FitResult) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ctrl_c_deferred(), replacing(path) as tmp, open(tmp, "wb") as f:  # np.savez's zip must not be cut short
        np.savez(f, **encode_fit(fit))
    return path


def load_fit(path: str | Path) -> FitResult:
    with np.load(Path(path), allow_pickle=False) as data:
        return decode_fit({k: data[k] for k in data.files})
