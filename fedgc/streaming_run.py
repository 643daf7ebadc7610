"""Streaming runs: build the streaming clients, run the stream, score alerts against known switches,
and shape the "streaming" record of result.json.

The record (matrices [target][source], client names for alert endpoints):

    {"window", "step", "forgetting", "alert_alpha", "reset_on_alert", "max_rounds", "tol",
     "steady_effective_sample_size", "n_steps", "unprocessed_steps",
     "windows": [{"index", "start", "end", "strength", "pvalue", "edges", "log10_pvalue",
                  "effective_sample_size", "memory", "rounds", "exchanges", "converged", "reset",
                  "change_log10_pvalue"}],
     "alerts": [{"window", "time", "target", "source", "kind", "strength_before", "strength_after",
                 "pvalue", "log10_pvalue"}],
     "evaluation": null | {"switches": [...], "false_alerts", "false_alert_indices", "alerts_on_switched_pairs"}}
"""

from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import numpy as np

from fedgc.config import RunConfig
from fedgc.errors import ConfigError
from fedgc.messages import CountingTransport
from fedgc.protocol import FitResult
from fedgc.run import RunResult, Truth, build_session, evaluate, read_tables, scenario_sessions, simulate_scenario
from fedgc.streaming import Alert, AlertKind, LocalStreamTransport, StreamResult, StreamingSession, run_stream
from fedgc.synthetic import SyntheticData
from fedgc.webreport.live import snapshots_for


class Switch(NamedTuple):
    """A true change of block (target, source) at sample `time` (0-based, first sample under the new A)."""

    time: int
    target: int
    source: int
    kind: AlertKind


def true_switches(data: SyntheticData, perturbations: Sequence = ()) -> list[Switch]:
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


def score_alerts(alerts: Sequence[Alert], switches: Sequence[Switch], bounds: Sequence[tuple[int, int]]) -> dict:
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


def streaming_record(cfg: RunConfig, stream: StreamResult, evaluation: dict | None) -> dict:
    """The "streaming" key of result.json (numpy arrays; the report writer makes them JSON)."""
    sc = cfg.streaming
    names = stream.clients
    windows = [
        {
            "index": w.index, "start": w.start, "end": w.end,
            "strength": w.gc.strength, "pvalue": w.gc.pvalue, "edges": w.gc.edges,
            "log10_pvalue": w.gc.log10_pvalue, "effective_sample_size": w.effective_size, "memory": w.memory,
            "rounds": w.rounds, "exchanges": w.exchanges, "converged": w.converged, "reset": w.reset,
            "change_log10_pvalue": None if w.change is None else w.change.log10_pvalue,
        }  # fmt: skip
        for w in stream.windows
    ]
    alerts = [
        {
            "window": a.window, "time": a.time, "target": names[a.target], "source": names[a.source], "kind": a.kind,
            "strength_before": a.strength_before, "strength_after": a.strength_after,
            "pvalue": 10.0**a.log10_pvalue, "log10_pvalue": a.log10_pvalue,
        }  # fmt: skip
        for a in stream.alerts
    ]
    if evaluation is not None:
        evaluation = {**evaluation, "switches": [{**s, "target": names[s["target"]], "source": names[s["source"]]}
                                                 for s in evaluation["switches"]]}  # fmt: skip
    last_end = stream.windows[-1].end if stream.windows else 0
    return {
        "window": sc.window, "step": sc.step, "forgetting": sc.forgetting, "alert_alpha": sc.alert_alpha,
        "reset_on_alert": sc.reset_on_alert, "max_rounds": sc.max_rounds, "tol": sc.tol,
        "steady_effective_sample_size": sc.steady_effective_size(),
        "n_steps": stream.n_steps, "unprocessed_steps": stream.n_steps - last_end,
        "windows": windows, "alerts": alerts, "evaluation": evaluation,
    }  # fmt: skip


class CountingStreamTransport(CountingTransport):
    """CountingTransport for a stream: counts every exchange's bytes and moves the clients' windows."""

    def open_window(self, start: int, end: int) -> None:
        self.inner.open_window(start, end)


def execute_streaming(cfg: RunConfig, sessions: Sequence[StreamingSession], *, truth: Truth | None = None,
                      switches: Sequence[Switch] | None = None, on_round=None, out_dir=None) -> RunResult:  # fmt: skip
    """Run the stream over in-process clients; the last window's result is the run's main result."""
    t0 = time.perf_counter()
    counting = CountingStreamTransport(LocalStreamTransport(sessions))
    snapshots = snapshots_for(out_dir, cfg, sessions)  # OUT/stream.json after every window (fedgc serve)
    stream = run_stream(counting, cfg.server, cfg.streaming, on_round=on_round, on_window=snapshots)
    last = stream.windows[-1]
    fit = FitResult(last.gc, stream.A_s, list(stream.history), last.converged)
    result = RunResult(cfg, fit, "local", truth=truth)
    result.timings["protocol_s"] = time.perf_counter() - t0
    result.communication = counting.log.summary()
    bounds = [(w.start, w.end) for w in stream.windows]
    evaluation = None if switches is None else score_alerts(stream.alerts, switches, bounds)
    result.streaming = streaming_record(cfg, stream, evaluation)
    if snapshots is not None:
        snapshots.finish(result.streaming)
    return evaluate(result, windows=None, truth=truth)


def refuse_privacy(cfg: RunConfig) -> None:
    if cfg.privacy is not None:
        raise ConfigError(f"{cfg.source or 'config'}: streaming mode does not support privacy yet "
                          "(its accounting composes over windows); turn one of them off")  # fmt: skip


def simulate_streaming(cfg: RunConfig, *, on_round=None, out_dir=None) -> RunResult:
    """`fedgc simulate` in streaming mode: truth is the edge set at the end, switches from the generator."""
    refuse_privacy(cfg)
    data = simulate_scenario(cfg)
    sessions = scenario_sessions(cfg, data, None, session_class=StreamingSession)
    truth = Truth(np.asarray(data.edges_over_time[-1], dtype=bool), None)
    switches = true_switches(data, cfg.synthetic.perturbations)
    result = execute_streaming(cfg, sessions, truth=truth, switches=switches, on_round=on_round, out_dir=out_dir)
    result.raw_data_bytes = int(sum(y.nbytes for y in data.y))
    return result


def run_streaming_real(cfg: RunConfig, *, on_round=None, out_dir=None) -> RunResult:
    """`fedgc run` in streaming mode on per-client CSV files (each client reads only its own file)."""
    refuse_privacy(cfg)
    tables, data = read_tables(cfg)  # lengths checked or aligned, column policies applied
    sessions = [
        build_session(spec, cfg.client, seed=cfg.seed + i, session_class=StreamingSession, table=table)
        for i, (spec, table) in enumerate(zip(cfg.clients, tables))
    ]
    result = execute_streaming(cfg, sessions, on_round=on_round, out_dir=out_dir)
    result.raw_data_bytes = int(sum(s.stream_steps * s.model.obs_dim * 8 for s in sessions))
    result.data = data
    return result
