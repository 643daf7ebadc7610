"""The small typed records of a result.json (its keys as result.schema.json fixes them), each built from a
dict that passed the schema with `Record.of(dict)`. Numbers stay as result.json holds them: None where
it has null. The records with matrices (the result itself, streaming windows, fault origin) are in
fedgc.report.inspected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class Round(NamedTuple):
    """One server round: summed client loss and relative change of A_s (NaN where null)."""

    round: int
    loss: float
    change: float


class Dropped(NamedTuple):
    """A client that dropped out at `round` (server.on_dropout: continue)."""

    client: str
    round: int
    reason: str


class Resilience(NamedTuple):
    """ "resilience": the dropout policy, the clients that dropped, the checkpoint resumed from."""

    on_dropout: str
    dropouts: tuple[Dropped, ...]
    resumed_from_round: int | None

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> Resilience:
        return cls(r["on_dropout"], tuple(Dropped(**d) for d in r["dropouts"]), r["resumed_from_round"])


class ServerSettings(NamedTuple):
    """ "server": the server settings of the run (fedgc.protocol.settings.ServerConfig)."""

    rule: str
    max_rounds: int
    tol: float
    penalty: float
    diagonal: str
    learning_rate: float | None
    alpha: float
    burn_in: int
    on_dropout: str
    acceleration: str = "none"  # results written before server.acceleration existed ran the plain rounds
    test: str = "auto"
    siv_instruments: str = "lagged"  # results written before server.siv_instruments existed: the lagged test alone


class Metrics(NamedTuple):
    """ "evaluation" without truth_edges: edge scores against known truth, relative errors of A_s
    against truth and the oracle, the oracle's rounds, and whether that oracle lies outside a private
    run's guarantee; None when unknown."""

    auroc: float | None
    auprc: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    relative_error_vs_truth: float | None
    relative_error_vs_oracle: float | None
    oracle_relative_error_vs_truth: float | None
    oracle_rounds: int | None
    oracle_outside_privacy_guarantee: bool | None

    @classmethod
    def of(cls, evaluation: Mapping[str, Any]) -> Metrics:
        return cls(**{k: evaluation[k] for k in cls._fields})


class RowAlignment(NamedTuple):
    """A client's rows in its file, dropped outside the common time span, inserted, and after alignment."""

    rows_in_file: int
    dropped: int
    inserted: int
    rows: int


class HeldColumn(NamedTuple):
    """An analyser column held between samples: sample period and phase, values masked."""

    period: int
    phase: int
    masked: int


class ClientFile(NamedTuple):
    """What was done to one client's data file (fedgc.app.results.ClientData)."""

    file: str
    columns: int
    rows: int
    rows_sorted: bool
    dropped_missing_columns: Mapping[str, float]
    dropped_constant_columns: tuple[str, ...]
    held_columns: Mapping[str, HeldColumn]
    missing_values: int
    empty_rows: int
    missing_fraction: float
    alignment: RowAlignment | None

    @classmethod
    def of(cls, c: Mapping[str, Any]) -> ClientFile:
        return cls(**{
            **c, "dropped_constant_columns": tuple(c["dropped_constant_columns"]),
            "held_columns": {k: HeldColumn(**h) for k, h in c["held_columns"].items()},
            "alignment": None if c["alignment"] is None else RowAlignment(**c["alignment"]),
        })  # fmt: skip


class DataNotes(NamedTuple):
    """ "data": the clients' time axis (`align`) and, per client read from a file, what was done to it;
    empty (align None) for synthetic clients."""

    align: str | None
    clients: Mapping[str, ClientFile]

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> DataNotes:
        if not d:
            return cls(None, {})
        return cls(d["align"], {name: ClientFile.of(c) for name, c in d["clients"].items()})


class FlowsheetPair(NamedTuple):
    """One ordered pair of units: a material flow of the flowsheet or not, learned as an edge or not."""

    source: str
    target: str
    flowsheet: bool
    learned: bool
    strength: float | None
    pvalue: float | None
    log10_pvalue: float | None


class FlowsheetCounts(NamedTuple):
    """How the learned edges and the flowsheet's flows agree over the compared pairs."""

    pairs: int
    both: int
    flowsheet_only: int
    learned_only: int
    neither: int
    agreement: float | None


class Flowsheet(NamedTuple):
    """ "flowsheet" (fedgc.analysis.tep.flowsheet_comparison): every compared pair, the counts, the AUROC of
    the p-value ranking against the flowsheet, pairs of units it does not name, and the data it came from."""

    pairs: tuple[FlowsheetPair, ...]
    counts: FlowsheetCounts
    auroc: float | None
    not_compared: tuple[tuple[str, str], ...]
    note: str
    data: Mapping[str, str]

    @classmethod
    def of(cls, f: Mapping[str, Any]) -> Flowsheet:
        return cls(
            tuple(FlowsheetPair(**p) for p in f["pairs"]), FlowsheetCounts(**f["counts"]), f["auroc"],
            tuple((a, b) for a, b in f["not_compared"]), f["note"], f["data"],
        )  # fmt: skip


class FirstAlert(NamedTuple):
    """The first alert after a fault's start: when, how long after the start, which pair, which kind."""

    time: int
    delay: int | None
    source: str
    target: str
    kind: str


class FaultStream(NamedTuple):
    """ "fault_stream" (fedgc.analysis.tep.fault_stream_summary): a streamed TEP run's alerts against its
    fault (fault None: a normal-operation run, every alert false)."""

    run: str
    fault: int | None
    fault_start: int | None
    known_origin: str | None
    alerts_before_fault: int
    alerts_after_fault: int
    first_alert_after_fault: FirstAlert | None
    sources_after_fault: tuple[str, ...]

    @classmethod
    def of(cls, f: Mapping[str, Any]) -> FaultStream:
        first = f["first_alert_after_fault"]
        return cls(**{**f, "first_alert_after_fault": None if first is None else FirstAlert(**first),
                      "sources_after_fault": tuple(f["sources_after_fault"])})  # fmt: skip


class Switch(NamedTuple):
    """A known edge switch of a synthetic stream and the first alert on its pair after it (None: missed)."""

    time: int
    target: str
    source: str
    kind: str
    first_window: int
    detected: bool
    alert_window: int | None
    alert_time: int | None
    alert_kind: str | None
    delay_samples: int | None
    delay_windows: int | None


class StreamEvaluation(NamedTuple):
    """A stream's alerts against the known switches (fedgc.analysis.stream.score_alerts)."""

    switches: tuple[Switch, ...]
    false_alerts: int
    false_alert_indices: tuple[int, ...]
    alerts_on_switched_pairs: int

    @classmethod
    def of(cls, e: Mapping[str, Any]) -> StreamEvaluation:
        return cls(tuple(Switch(**s) for s in e["switches"]), e["false_alerts"], tuple(e["false_alert_indices"]),
                   e["alerts_on_switched_pairs"])  # fmt: skip
