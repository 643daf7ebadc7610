"""A streaming run's record, and its alerts scored against the edge switches a synthetic scenario knows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fedgc.core.forgetting import AlertKind
from fedgc.data.synthetic import Perturbation, SyntheticData
from fedgc.protocol.settings import StreamingConfig
from fedgc.protocol.streaming import Alert, StreamResult


class Switch(NamedTuple):
    """A true change of block (target, source) at sample `time` (0-based, first sample under the new A)."""

    time: int
    target: int
    source: int
    kind: AlertKind


def true_switches(data: SyntheticData, perturbations: Sequence[Perturbation] = ()) -> list[Switch]:
    """Edge appearances and disappearances from the generator's edge timeline, plus 'scale'
    perturbations of a block that stays an edge ('changed'); changes at t = 0 only set the start."""
    out = []
    starts, edges = data.segment_starts, data.edges_over_time
    for i in range(1, len(starts)):
        t = int(starts[i])
        for m, n in np.argwhere(edges[i] & ~edges[i - 1]):
            out.append(Switch(t, int(m), int(n), "appeared"))
        for m, n in np.argwhere(edges[i - 1] & ~edges[i]):
            out.append(Switch(t, int(m), int(n), "disappeared"))
        for p in perturbations:
            stays = edges[i - 1][p.target, p.source] and edges[i][p.target, p.source]
            if p.time == t and p.action == "scale" and p.factor != 1 and stays:
                out.append(Switch(t, p.target, p.source, "changed"))
    return sorted(out)


def score_alerts(
    alerts: Sequence[Alert], switches: Sequence[Switch], bounds: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """Detection delay of every switch and the false alerts.

    A switch at time t is first visible in window k0, the first window ending after t; it is detected by
    the first alert on its pair raised after t (at a window end > t): delay in samples = alert time - t,
    in windows = k_alert - k0 + 1 (1: caught by the first window holding post-switch samples).
    An alert is false when no switch of its pair happened before it."""
    ends = np.array([b for _, b in bounds])
    rows = []
    for s in switches:
        k0 = int(np.searchsorted(ends, s.time, side="right"))
        hits = [a for a in alerts if (a.target, a.source) == (s.target, s.source) and a.time > s.time]
        first = hits[0] if hits else None
        rows.append({
            "time": s.time, "target": s.target, "source": s.source, "kind": s.kind, "first_window": k0,
            "detected": first is not None,
            "alert_window": None if first is None else first.window,
            "alert_time": None if first is None else first.time,
            "alert_kind": None if first is None else first.kind,
            "delay_samples": None if first is None else first.time - s.time,
            "delay_windows": None if first is None else first.window - k0 + 1,
        })  # fmt: skip
    false = [i for i, a in enumerate(alerts)
             if not any((s.target, s.source) == (a.target, a.source) and s.time < a.time for s in switches)]  # fmt: skip
    return {"switches": rows, "false_alerts": len(false), "false_alert_indices": false,
            "alerts_on_switched_pairs": len(alerts) - len(false)}  # fmt: skip


@dataclass(frozen=True)
class StreamRecord:
    """A streaming run: its settings, every window and alert, and (known switches) the alerts scored."""

    settings: StreamingConfig
    result: StreamResult
    evaluation: dict[str, Any] | None = None

    @classmethod
    def scored(cls, settings: StreamingConfig, result: StreamResult, switches: Sequence[Switch] | None) -> StreamRecord:
        """The record with its alerts scored against known switches (endpoints named by client)."""
        if switches is None:
            return cls(settings, result)
        scored = score_alerts(result.alerts, switches, [(w.start, w.end) for w in result.windows])
        names = result.clients
        rows = [{**s, "target": names[s["target"]], "source": names[s["source"]]} for s in scored["switches"]]
        return cls(settings, result, {**scored, "switches": rows})
