"""Tennessee Eastman analyses of a learned unit graph: against the flowsheet's material flows, fault
origin per fault run (fedgc.analysis.origin), and a stream's alerts against a fault's known start.

Records are the result.json shapes (plain mappings), kept together in TEPSections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedgc.analysis.metrics import auroc
from fedgc.analysis.origin import ClientMonitor, monitor, origin_dict, rank_origins
from fedgc.analysis.origin_settings import OriginSettings
from fedgc.core.granger import GCResult
from fedgc.data.tep import TEPRun
from fedgc.data.tep_layout import FAULT_ORIGINS, FLOWSHEET_EDGES
from fedgc.errors import ConfigError
from fedgc.protocol.streaming import Alert


@dataclass
class TEPSections:
    """flowsheet: flowsheet_comparison's record plus the data it came from; origin: {fault run: origin
    record} (tep.fault_runs); fault_stream: a streamed run's alerts against its fault (streaming mode)."""

    flowsheet: dict[str, Any]
    origin: dict[str, dict[str, Any]] = field(default_factory=dict)
    fault_stream: dict[str, Any] | None = None


def flowsheet_comparison(
    clients: Sequence[str],
    edges: np.ndarray,
    strength: np.ndarray,
    log10_pvalue: np.ndarray,
    *,
    flowsheet: Sequence[tuple[str, str]] = FLOWSHEET_EDGES,
) -> dict[str, Any]:
    """Every ordered pair (source, target) of units: flowsheet edge yes/no next to the learned edge,
    strength and p-value; counts and the AUROC of the p-value ranking against the flowsheet.

    Matrices are (M, M) indexed [target, source] (fedgc.core.granger.GCResult). Pairs of units the
    flowsheet does not name (a user-given split) are left out and listed under "not_compared".
    """
    known = {u for pair in flowsheet for u in pair}
    flows = set(map(tuple, flowsheet))
    pairs, outside = [], []
    for m, target in enumerate(clients):
        for n, source in enumerate(clients):
            if m == n:
                continue
            if source not in known or target not in known:
                outside.append([source, target])
                continue
            logp = float(log10_pvalue[m, n])
            pairs.append(
                {
                    "source": source,
                    "target": target,
                    "flowsheet": (source, target) in flows,
                    "learned": bool(edges[m, n]),
                    "strength": float(strength[m, n]),
                    "pvalue": 10.0**logp,
                    "log10_pvalue": logp,
                }
            )
    flow = np.array([p["flowsheet"] for p in pairs], dtype=bool)
    learned = np.array([p["learned"] for p in pairs], dtype=bool)
    counts = {
        "pairs": len(pairs),
        "both": int((flow & learned).sum()),
        "flowsheet_only": int((flow & ~learned).sum()),
        "learned_only": int((~flow & learned).sum()),
        "neither": int((~flow & ~learned).sum()),
    }
    counts["agreement"] = (counts["both"] + counts["neither"]) / len(pairs) if pairs else None
    score = -np.array([p["log10_pvalue"] for p in pairs], dtype=float)
    return {
        "pairs": pairs,
        "counts": counts,
        "auroc": auroc(score, flow) if pairs else None,
        "not_compared": outside,
        "note": (
            "Flowsheet edges are the material flows between units; closed-loop control adds feedback "
            "paths (a controller in one unit acting on a valve in another), so learned edges that are not "
            "material flows are expected and are not errors of the test."
        ),
    }


def locate(
    fault: TEPRun, normal: TEPRun, monitors: dict[str, ClientMonitor], gc: GCResult, settings: OriginSettings
) -> dict:
    """The origin record of one fault run: each client scores its own data with its calibrated monitor;
    the server ranks from the crossing scalars and the learned graph."""
    if fault.columns != normal.columns:
        raise ConfigError(f"TEP run {fault.name} is split differently from {normal.name}")
    start = fault.fault_start if fault.fault_start is not None else 0
    results = {unit: monitor(mon, fault.clients[unit], start=start) for unit, mon in monitors.items()}
    ranking = rank_origins(
        {u: r.first_crossing for u, r in results.items()},
        {u: r.onset for u, r in results.items()},
        {u: r.peak for u, r in results.items()},
        clients=list(gc.clients),
        edges=np.asarray(gc.edges, dtype=bool),
        tie_window=settings.tie_window,
    )
    return origin_dict(
        results, ranking, start=start, fault=fault.fault, known_origin=FAULT_ORIGINS.get(fault.fault),
        calibration_run=normal.name, settings=asdict(settings),
    )  # fmt: skip


def fault_stream_summary(alerts: Sequence[Alert], clients: Sequence[str], run: TEPRun) -> dict[str, Any]:
    """Alerts of a TEP stream against the fault: how many came before the fault started (false
    alerts, the process being in normal operation; every alert of a run without a fault), and the
    first after it with its delay in samples."""
    start = run.fault_start
    # a normal-operation run (no fault) has only false alerts
    before = [a for a in alerts if start is None or a.time <= start]
    after = [a for a in alerts if start is not None and a.time > start]
    first = after[0] if after else None
    return {
        "run": run.name, "fault": run.fault, "fault_start": start, "known_origin": FAULT_ORIGINS.get(run.fault),
        "alerts_before_fault": len(before), "alerts_after_fault": len(after),
        "first_alert_after_fault": None if first is None else {
            "time": first.time, "delay": None if start is None else first.time - start,
            "source": clients[first.source], "target": clients[first.target], "kind": first.kind,
        },
        "sources_after_fault": sorted({clients[a.source] for a in after}),
    }  # fmt: skip
