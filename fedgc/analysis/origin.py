"""Where a fault starts: per-client innovation scores, first crossings, and a ranking with the GC graph.

Client side (each client, on its own data, with its own local model A, C, Q, R and steady-state prior
covariance P from the DARE, fedgc.core.kalman.steady_state):

    e_t     = y_t - C A h_{t-1}                   innovation of the client's own (unaugmented) filter
    S       = C P C^T + R                         its steady-state covariance, (P_m, P_m)
    score_t = e_t^T S^{-1} e_t                    chi2(P_m) when the model is right

An identified model of a real plant is not right (coloured, heavy-tailed innovations; analysers that
hold their value), so chi2(P_m) quantiles would raise false alarms. The threshold is calibrated
instead: c_m = the `quantile` (default 0.99) empirical quantile of the client's score over a window of
normal operation it holds (after the filter's start-up transient). A crossing is `run_length`
(default 3) consecutive samples above c_m, so one outlier never triggers it: were exceedances of the
99 % quantile independent, three in a row would happen with probability 1e-6 per sample; they are
positively correlated, so the rate is higher, and `false_alarm` reports what happened before the fault.
The first crossing is the first sample of the first such run at or after `start`. Scores are reported
normalised, score_t / c_m, so every client's threshold is 1.

Server side: it receives only each client's first crossing (a time) and peak normalised score (a
scalars) and ranks likely origins with the learned GC graph (`rank_origins`): earliest crossing first;
clients crossing within `tie_window` samples of the group's earliest form a near-tie group, ordered by
how upstream they are inside the group in the learned graph (learned edges to group members with no
edge back, minus the reverse), then by onset strength (mean normalised score over the crossing run:
where a fault enters, its first deviation is largest); clients that never crossed come last, by peak
normalised score. A fault is
seen first where it enters; its effect reaches the units downstream later, which is why time leads
and the graph only breaks near-ties. Closed-loop control can move a fault's first visible effect to
a controller's unit (a valve that compensates), which this ranking cannot tell apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg

from fedgc.analysis.origin_settings import OriginSettings
from fedgc.core.kalman import SteadyState, filter_scan, project_measurements
from fedgc.core.local_model import LocalModel, validate
from fedgc.core.regression import lagged_stack
from fedgc.errors import ConfigError


class ClientOrigin(NamedTuple):
    """One client's result. score: (T,) normalised score_t / threshold; threshold: c_m on the chi2 scale;
    dof: P_m; first_crossing: sample index or None; false_alarm: first crossing in [burn_in, start) or None;
    onset: mean normalised score over the crossing run [first_crossing, first_crossing + run_length) (nan if none);
    peak: max normalised score from start on."""

    score: np.ndarray
    threshold: float
    dof: int
    first_crossing: int | None
    false_alarm: int | None
    onset: float
    peak: float


class ClientMonitor(NamedTuple):
    """A client's calibrated detector: its model, the model's steady state, threshold c_m (chi2 scale),
    the samples skipped for the filter's start-up (burn_in) and the crossing rule's run length."""

    client: str
    model: LocalModel
    steady: SteadyState
    threshold: float
    skip: int
    run_length: int


def innovation_scores(
    model: LocalModel, raw: np.ndarray, *, client: str, steady: SteadyState | None = None
) -> np.ndarray:
    """score_t = e_t^T S^{-1} e_t for t = 1..T (T,) from the client's raw data (T, P), filter started at h_0 = 0.
    steady: the model's validated steady state (computed when not given)."""
    steady = validate(model, client) if steady is None else steady
    y = model.standardise(np.asarray(raw, dtype=float))
    # Posterior h_t = F h_{t-1} + Sigma C^T R^{-1} y_t (fedgc.protocol.session.run_filter with no augmentation).
    states = filter_scan(steady.transition, project_measurements(y, model.C, model.R) @ steady.posterior_cov.T)
    e = y - lagged_stack([states]) @ (model.C @ model.A).T  # y_t - C A h_{t-1}, h_0 = 0
    S = model.C @ steady.prior_cov @ model.C.T + model.R
    factor = scipy.linalg.cho_factor(0.5 * (S + S.T), lower=True)
    return np.einsum("tp,tp->t", e, scipy.linalg.cho_solve(factor, e.T).T)


def burn_in(steady: SteadyState, *, decay: float = 0.01) -> int:
    """Samples until the filter's start-up transient from h_0 = 0 has decayed to `decay`: rho(F)^n <= decay."""
    rho = float(np.max(np.abs(np.linalg.eigvals(steady.transition))))
    return 1 if rho < decay else math.ceil(math.log(decay) / math.log(rho))


def calibrate_threshold(scores: np.ndarray, *, quantile: float, skip: int = 0) -> float:
    """The `quantile` empirical quantile of scores[skip:] (normal operation)."""
    tail = np.asarray(scores, dtype=float)[skip:]
    if tail.size < 10:
        raise ConfigError(f"{tail.size} normal-operation samples after the filter's start-up are too few to calibrate")
    return float(np.quantile(tail, quantile))


def calibrate(model: LocalModel, normal: np.ndarray, *, client: str, settings: OriginSettings) -> ClientMonitor:
    """Client m's detector from a window of normal operation it holds (T, P_m)."""
    steady = validate(model, client)
    skip = burn_in(steady)
    if normal.shape[0] - skip < 10:
        raise ConfigError(
            f"client '{client}': {normal.shape[0]} normal-operation samples leave {normal.shape[0] - skip} after the "
            f"filter's start-up ({skip} samples); too few to calibrate a threshold"
        )
    scores = innovation_scores(model, normal, client=client, steady=steady)
    threshold = calibrate_threshold(scores, quantile=settings.quantile, skip=skip)
    return ClientMonitor(client, model, steady, threshold, skip, settings.run_length)


def first_crossing(exceed: np.ndarray, *, start: int = 0, stop: int | None = None, run_length: int = 1) -> int | None:
    """First t in [start, stop) with exceed[t : t + run_length] all true (the run may end past stop), else None."""
    exceed = np.asarray(exceed, dtype=bool)
    stop = len(exceed) if stop is None else min(stop, len(exceed))
    if run_length < 1:
        raise ValueError("run_length must be >= 1")
    # ok[t]: exceed[t .. t + run_length - 1] all true, from a sliding count of exceedances.
    counts = np.convolve(exceed.astype(int), np.ones(run_length, dtype=int), mode="valid")
    ok = counts[start:stop] == run_length
    return int(start + np.argmax(ok)) if ok.any() else None


def monitor(mon: ClientMonitor, raw: np.ndarray, *, start: int) -> ClientOrigin:
    """Client m's normalised score over a run (T, P_m) and its first crossing at or after `start`."""
    score = innovation_scores(mon.model, raw, client=mon.client, steady=mon.steady) / mon.threshold
    exceed = score > 1.0
    crossing = first_crossing(exceed, start=start, run_length=mon.run_length)
    false_alarm = (
        first_crossing(exceed, start=mon.skip, stop=start, run_length=mon.run_length) if start > mon.skip else None
    )
    peak = float(score[start:].max()) if start < len(score) else float("nan")
    onset = float("nan") if crossing is None else float(score[crossing : crossing + mon.run_length].mean())
    return ClientOrigin(score, mon.threshold, int(mon.model.obs_dim), crossing, false_alarm, onset, peak)


def rank_origins(
    crossings: Mapping[str, int | None],
    onsets: Mapping[str, float],
    peaks: Mapping[str, float],
    *,
    clients: Sequence[str],
    edges: np.ndarray,
    tie_window: int,
) -> list[str]:
    """Likely origins, most likely first (rule in the module docstring). edges: (M, M) bool [target, source]
    over `clients`."""
    index = {c: i for i, c in enumerate(clients)}
    crossed = sorted((t, c) for c, t in crossings.items() if t is not None)
    ranking: list[str] = []
    while crossed:
        t0 = crossed[0][0]
        group = [(t, c) for t, c in crossed if t <= t0 + tie_window]
        crossed = crossed[len(group) :]
        members = [c for _, c in group]

        def upstream(c: str, members: list[str] = members) -> int:
            n = index[c]
            out = sum(bool(edges[index[k], n]) and not edges[n, index[k]] for k in members if k != c)
            into = sum(bool(edges[n, index[k]]) and not edges[index[k], n] for k in members if k != c)
            return out - into

        ranking += sorted(members, key=lambda c: (-upstream(c), -np.nan_to_num(onsets.get(c, np.nan), nan=-np.inf), c))
    silent = [c for c in clients if crossings.get(c) is None]
    ranking += sorted(silent, key=lambda c: (-np.nan_to_num(peaks.get(c, 0.0), nan=-np.inf), c))
    return ranking


def origin_dict(results: Mapping[str, ClientOrigin], ranking: Sequence[str], **extra) -> dict:
    """The result.json "origin" record (shared interface): threshold 1 on the normalised scores."""
    return {
        "threshold": 1.0,
        "clients": {
            name: {
                "first_crossing": r.first_crossing,
                "score": [float(x) for x in r.score],
                "threshold_chi2_scale": r.threshold,
                "dof": r.dof,
                "false_alarm": r.false_alarm,
                "onset": r.onset,
                "peak": r.peak,
            }
            for name, r in results.items()
        },
        "ranking": list(ranking),
        **extra,
    }


def holds_one_record(origin: Mapping) -> bool:
    """result.json's "origin" is one origin record (it has a ranking), not {run name: record}."""
    return "ranking" in origin


def origin_runs(data: Mapping) -> dict[str, dict]:
    """result.json's "origin" as {run: origin record}: it holds either one record or one per run."""
    origin = data.get("origin") if isinstance(data, Mapping) else None
    if not origin:
        return {}
    return {"run": dict(origin)} if holds_one_record(origin) else {str(k): dict(v) for k, v in origin.items()}
