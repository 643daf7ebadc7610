"""The typed view of a result.json that every consumer of a run reads: the Markdown report, the terminal
table, the exports and the figures (fedgc.report.result_json.load_result builds it, also for the run
that has just written the file).

Every matrix is (M, M) indexed [target m, source n] in the order of `clients`, read-only; numbers are
float with NaN where result.json has null (the diagonal, pairs not estimated); edges, unknown and truth
are bool with False on the diagonal. `inspected_from_json` takes a dict that passed the schema
(fedgc.report.schema) and checks what the schema cannot: sizes against the number of clients, null
diagonals, names that refer to clients.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fedgc.analysis.origin_settings import OriginSettings
from fedgc.errors import FedGCError
from fedgc.report.records import (
    DataNotes,
    FaultStream,
    Flowsheet,
    Metrics,
    Resilience,
    Round,
    ServerSettings,
    StreamEvaluation,
)  # fmt: skip

ALERT_KINDS = ("appeared", "disappeared", "changed")
_NUMBER_MATRICES = ("strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue")


class Window(NamedTuple):
    """One streaming window over samples [start, end); (M, M) matrices indexed [target, source];
    change_log10_pvalue: the change test against the forgotten estimate (None in the first window)."""

    index: int
    start: int
    end: int
    strength: np.ndarray
    pvalue: np.ndarray
    edges: np.ndarray
    log10_pvalue: np.ndarray
    effective_sample_size: float
    rounds: int
    exchanges: int
    converged: bool
    reset: bool
    change_log10_pvalue: np.ndarray | None


class Alert(NamedTuple):
    """A change of the pair source -> target at `time` (the end of window `window`); NaN where null."""

    window: int
    time: int
    target: str
    source: str
    kind: str
    strength_before: float
    strength_after: float
    pvalue: float
    log10_pvalue: float


@dataclass(frozen=True, eq=False)
class Streaming:
    """result.json "streaming": windows of `window` samples every `step`, forgetting factor per step,
    alert level, per-window round limits; evaluation: the alerts against known switches, or None."""

    window: int
    step: int
    forgetting: float
    alert_alpha: float
    reset_on_alert: bool
    max_rounds: int
    tol: float
    steady_effective_sample_size: float
    n_steps: int
    unprocessed_steps: int
    windows: tuple[Window, ...]
    alerts: tuple[Alert, ...]
    evaluation: StreamEvaluation | None


class OriginScores(NamedTuple):
    """A client's per-step innovation score (T,), normalised by its threshold; its first step above the
    threshold after the fault start and before it (false alarm); None: never."""

    first_crossing: int | None
    score: np.ndarray
    false_alarm: int | None


@dataclass(frozen=True, eq=False)
class Origin:
    """One fault run's origin record: scores per client, ranking most likely origin first, the fault's
    first step and known origin when known; settings: the crossing rule."""

    run: str
    threshold: float
    clients: dict[str, OriginScores]
    ranking: tuple[str, ...]
    start: int | None
    known_origin: str | None
    settings: OriginSettings


@dataclass(frozen=True, eq=False)
class Inspected:
    """A result.json as arrays and records. strength ||A_s^{mn}||_F, statistic, dof, pvalue, log10_pvalue:
    (M, M) float; edges, unknown: (M, M) bool; truth: (M, M) bool or None when unknown. run_alpha is the
    level the run used, alpha the one `edges` are decided at (fedgc.report.ranking.with_alpha).
    timings (stage -> seconds), communication (bytes on the wire; a transport may add keys) and privacy
    (the accounting record of fedgc.privacy.accounting, or {"enabled": False}) are result.json's records
    as read; origins: one record per fault run (empty without); flowsheet, fault_stream, streaming: None
    when the run has none."""

    path: Path
    name: str
    engine: str
    seed: int
    fedgc_version: str
    clients: tuple[str, ...]
    dims: tuple[int, ...]
    strength: np.ndarray
    statistic: np.ndarray
    dof: np.ndarray
    pvalue: np.ndarray
    log10_pvalue: np.ndarray
    edges: np.ndarray
    unknown: np.ndarray
    alpha: float
    run_alpha: float
    truth: np.ndarray | None
    server: ServerSettings
    rounds: int
    converged: bool
    history: tuple[Round, ...]
    evaluation: Metrics
    timings: Mapping[str, float | None]
    communication: Mapping[str, Any]
    raw_data_bytes: int
    privacy: Mapping[str, Any]
    client_data: DataNotes
    resilience: Resilience
    streaming: Streaming | None
    origins: tuple[Origin, ...]
    flowsheet: Flowsheet | None
    fault_stream: FaultStream | None
    test: str = "lr"  # the test behind statistic, dof and the p-values: 'lr' or 'siv'

    @property
    def tested(self) -> np.ndarray:
        """(M, M) bool: the ordered pairs that were tested (off the diagonal, not unknown)."""
        return ~np.eye(len(self.clients), dtype=bool) & ~self.unknown


# ---------------------------------------------------------------------------------------------- building


class _Sizes:
    """Checks of a schema-valid dict against its own sizes; every failure names the file and the key."""

    def __init__(self, file: Path, clients: tuple[str, ...]) -> None:
        self.file, self.clients, self.M = file, clients, len(clients)

    def fail(self, where: str, problem: str) -> None:
        raise FedGCError(f"{self.file}: {where}: {problem}")

    def square(self, rows: list, where: str, size: int, unit: str = " (one per client)") -> None:
        """rows is `size` rows of `size` entries."""
        if len(rows) != size:
            self.fail(where, f"has {len(rows)} rows, expected {size}{unit}")
        for m, row in enumerate(rows):
            if len(row) != size:
                self.fail(where, f"row {m} has {len(row)} entries, expected {size}{unit}")

    def matrix(self, rows: list, where: str, *, boolean: bool = False) -> np.ndarray:
        """(M, M) read-only: floats with NaN for null (null diagonal required), or bools (null and the
        diagonal: False)."""
        M = self.M
        self.square(rows, where, M)
        if boolean:
            out = np.array([[bool(v) for v in row] for row in rows], dtype=bool).reshape(M, M)
            np.fill_diagonal(out, False)
        else:
            for m in range(M):
                if rows[m][m] is not None:
                    self.fail(
                        f"{where}[{m}][{m}]", f"a client is not tested against itself: expected null, got {rows[m][m]}"
                    )
            out = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float).reshape(
                M, M
            )
        out.setflags(write=False)
        return out

    def client(self, name: str, where: str) -> str:
        if name not in self.clients:
            self.fail(where, f"{json.dumps(name)[:40]} is not one of the clients")
        return name


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)


def inspected_from_json(data: Mapping[str, Any], file: Path) -> Inspected:
    """The typed view of `data`, a result.json dict that passed fedgc.report.schema.check_result (or that
    result_json.write_outputs has just written)."""
    clients = tuple(data["clients"])
    c = _Sizes(file, clients)
    M = c.M
    dims = tuple(int(d) for d in data["dims"])
    if len(dims) != M:
        c.fail("dims", f"expected {M} positive integers (one per client), got {data['dims']}")
    matrices = {k: c.matrix(data[k], k) for k in _NUMBER_MATRICES}
    unknown = c.matrix(data["unknown"], "unknown", boolean=True)
    for m, n in zip(*np.nonzero(np.array([[v is None for v in row] for row in data["edges"]]).reshape(M, M))):
        if m != n and not unknown[m, n]:
            c.fail(f"edges[{m}][{n}]", "is null but the pair is not marked in 'unknown'")
    edges = c.matrix(data["edges"], "edges", boolean=True)
    c.square(data["A_s"], "A_s", sum(dims), " (the total state dimension, the sum of dims)")
    truth_rows = data["evaluation"]["truth_edges"]
    truth = None if truth_rows is None else c.matrix(truth_rows, "evaluation.truth_edges", boolean=True)
    resilience = Resilience.of(data["resilience"])
    for i, d in enumerate(resilience.dropouts):
        c.client(d.client, f"resilience.dropouts[{i}].client")
    return Inspected(
        path=file, name=str(data["name"] or file.parent.name), engine=data["engine"], seed=data["seed"],
        fedgc_version=data["fedgc_version"], clients=clients, dims=dims,
        strength=matrices["strength"], statistic=matrices["statistic"], dof=matrices["dof"], pvalue=matrices["pvalue"],
        log10_pvalue=matrices["log10_pvalue"], edges=edges, unknown=unknown, alpha=float(data["alpha"]),
        run_alpha=float(data["alpha"]), truth=truth, server=ServerSettings(**data["server"]), rounds=data["rounds"],
        converged=data["converged"], history=tuple(Round(h["round"], _nan(h["loss"]), _nan(h["change"])) for h in data["history"]),
        evaluation=Metrics.of(data["evaluation"]), timings=data["timings"], communication=data["communication"],
        raw_data_bytes=data["raw_data_bytes"], privacy=data["privacy"], client_data=DataNotes.of(data["data"]),
        resilience=resilience,
        streaming=_streaming(c, data["streaming"]) if "streaming" in data else None,
        origins=tuple(_origin(c, rec, run) for run, rec in (data.get("origin") or {}).items()),
        flowsheet=Flowsheet.of(data["flowsheet"]) if "flowsheet" in data else None,
        fault_stream=FaultStream.of(data["fault_stream"]) if "fault_stream" in data else None,
        test=str(data.get("test", "lr")),
    )  # fmt: skip


def _streaming(c: _Sizes, s: Mapping[str, Any]) -> Streaming:
    windows = []
    for i, w in enumerate(s["windows"]):
        where = f"streaming.windows[{i}]"
        change = w["change_log10_pvalue"]
        windows.append(Window(
            index=w["index"], start=w["start"], end=w["end"], strength=c.matrix(w["strength"], f"{where}.strength"),
            pvalue=c.matrix(w["pvalue"], f"{where}.pvalue"), edges=c.matrix(w["edges"], f"{where}.edges", boolean=True),
            log10_pvalue=c.matrix(w["log10_pvalue"], f"{where}.log10_pvalue"),
            effective_sample_size=_nan(w["effective_sample_size"]), rounds=w["rounds"], exchanges=w["exchanges"],
            converged=w["converged"], reset=w["reset"],
            change_log10_pvalue=None if change is None else c.matrix(change, f"{where}.change_log10_pvalue"),
        ))  # fmt: skip
    indices = {w.index for w in windows}
    alerts = []
    for i, a in enumerate(s["alerts"]):
        where = f"streaming.alerts[{i}]"
        for key in ("target", "source"):
            c.client(a[key], f"{where}.{key}")
        if a["window"] not in indices:
            c.fail(f"{where}.window", f"no window has index {a['window']}")
        alerts.append(Alert(
            window=a["window"], time=a["time"], target=a["target"], source=a["source"], kind=a["kind"],
            **{k: _nan(a[k]) for k in ("strength_before", "strength_after", "pvalue", "log10_pvalue")},
        ))  # fmt: skip
    evaluation = None if s["evaluation"] is None else StreamEvaluation.of(s["evaluation"])
    for i, sw in enumerate(evaluation.switches if evaluation is not None else ()):
        for key in ("target", "source"):
            c.client(getattr(sw, key), f"streaming.evaluation.switches[{i}].{key}")
    return Streaming(
        window=s["window"], step=s["step"], forgetting=float(s["forgetting"]), alert_alpha=float(s["alert_alpha"]),
        reset_on_alert=s["reset_on_alert"], max_rounds=s["max_rounds"], tol=float(s["tol"]),
        steady_effective_sample_size=_nan(s["steady_effective_sample_size"]), n_steps=s["n_steps"],
        unprocessed_steps=s["unprocessed_steps"], windows=tuple(sorted(windows, key=lambda w: w.index)),
        alerts=tuple(alerts), evaluation=evaluation,
    )  # fmt: skip


def _origin(c: _Sizes, o: Mapping[str, Any], run: str) -> Origin:
    where = f"origin[{json.dumps(run)}]"
    scores = {
        name: OriginScores(entry["first_crossing"], np.array([_nan(v) for v in entry["score"]], dtype=float), entry["false_alarm"])
        for name, entry in o["clients"].items()
    }  # fmt: skip
    unknown = [r for r in o["ranking"] if r not in scores]
    if unknown:
        c.fail(f"{where}.ranking", f"names {unknown} have no scores in {where}.clients")
    return Origin(
        run=run, threshold=float(o["threshold"]), clients=scores, ranking=tuple(o["ranking"]), start=o["start"],
        known_origin=o["known_origin"], settings=OriginSettings(**o["settings"]),
    )  # fmt: skip
