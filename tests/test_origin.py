"""fedgc.analysis.origin: innovation scores against a direct computation, the crossing rule, the ranking,
and on a synthetic system with a perturbation on one client, that client ranked first."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from fedgc.analysis.origin import (
    OriginSettings,
    calibrate,
    first_crossing,
    innovation_scores,
    monitor,
    origin_dict,
    origin_runs,
    rank_origins,
)
from fedgc.core.kalman import filter_scan
from fedgc.core.local_model import LocalModel
from fedgc.data.synthetic import SystemSpec, make_system
from fedgc.errors import ConfigError
from fedgc.protocol.settings import ServerConfig


def test_scores_match_a_textbook_filter_and_are_chi2_under_the_true_model(gen):
    rng = np.random.default_rng(5)
    sys = gen.random_lgss(rng, D=3, P=7)
    _, y = gen.simulate_lgss(sys, 3000, rng)
    model = LocalModel(A=sys.A, C=sys.C, Q=sys.Q, R=sys.R, mean=np.zeros(7), scale=np.ones(7))
    P = scipy.linalg.solve_discrete_are(sys.A.T, sys.C.T, sys.Q, sys.R)  # steady prior covariance
    post, _ = gen.textbook_filter(sys, y, np.zeros((3000, 3)), np.zeros(3), P)
    priors = np.vstack([np.zeros(3), post[:-1]]) @ sys.A.T
    e = y - priors @ sys.C.T
    S = sys.C @ P @ sys.C.T + sys.R
    direct = np.array([et @ np.linalg.solve(S, et) for et in e])
    np.testing.assert_allclose(innovation_scores(model, y, client="c"), direct, rtol=1e-8, atol=1e-10)
    # Under the true model e_t ~ N(0, S): score ~ chi2(P), mean P, variance 2P.
    assert abs(direct[50:].mean() - 7) < 4 * np.sqrt(2 * 7 / 2950) * 3  # loose: scores are independent here


def test_standardisation_is_applied_to_raw_data(gen):
    rng = np.random.default_rng(6)
    sys = gen.random_lgss(rng, D=2, P=5)
    _, y = gen.simulate_lgss(sys, 400, rng)
    mean, scale = rng.normal(size=5) * 10, rng.uniform(0.5, 3.0, 5)
    plain = LocalModel(A=sys.A, C=sys.C, Q=sys.Q, R=sys.R)
    scaled = LocalModel(A=sys.A, C=sys.C, Q=sys.Q, R=sys.R, mean=mean, scale=scale)
    np.testing.assert_allclose(
        innovation_scores(scaled, y * scale + mean, client="c"), innovation_scores(plain, y, client="c")
    )


def test_first_crossing_needs_a_run_of_exceedances():
    exceed = np.zeros(30, dtype=bool)
    exceed[[3, 7, 8, 12, 13, 14, 20, 21, 22, 23]] = True
    assert first_crossing(exceed, run_length=1) == 3
    assert first_crossing(exceed, run_length=2) == 7
    assert first_crossing(exceed, run_length=3) == 12
    assert first_crossing(exceed, run_length=4) == 20
    assert first_crossing(exceed, run_length=5) is None
    assert first_crossing(exceed, start=13, run_length=2) == 13
    assert first_crossing(exceed, start=15, run_length=3) == 20
    assert first_crossing(exceed, start=0, stop=12, run_length=3) is None
    assert first_crossing(exceed, start=0, stop=13, run_length=3) == 12  # the run may end past stop


def test_ranking_time_first_then_graph_then_onset():
    clients = ["a", "b", "c", "d"]
    edges = np.zeros((4, 4), dtype=bool)  # [target, source]
    peaks = {"a": 5.0, "b": 5.0, "c": 5.0, "d": 0.9}
    # b and c tie; b -> c is learned and c -> b is not, so b is upstream even with the weaker onset.
    edges[2, 1] = True
    crossings = {"a": 30, "b": 10, "c": 11, "d": None}
    onsets = {"a": 2.0, "b": 1.5, "c": 9.0, "d": np.nan}
    assert rank_origins(crossings, onsets, peaks, clients=clients, edges=edges, tie_window=2) == ["b", "c", "a", "d"]
    # Without the edge the stronger onset wins the tie; outside the tie window time decides.
    no_edges = np.zeros((4, 4), dtype=bool)
    assert rank_origins(crossings, onsets, peaks, clients=clients, edges=no_edges, tie_window=2)[:2] == ["c", "b"]
    assert rank_origins(crossings, onsets, peaks, clients=clients, edges=no_edges, tie_window=0)[:2] == ["b", "c"]
    # A feedback pair (edges both ways) is no evidence of direction.
    both = edges.copy()
    both[1, 2] = True
    assert rank_origins(crossings, onsets, peaks, clients=clients, edges=both, tie_window=2)[:2] == ["c", "b"]
    # Clients that never crossed come last, by peak.
    silent = {"a": None, "b": None, "c": 4, "d": None}
    ranked = rank_origins(
        silent, onsets, {"a": 0.5, "b": 0.95, "c": 3.0, "d": 0.7}, clients=clients, edges=edges, tie_window=2
    )
    assert ranked == ["c", "b", "d", "a"]


def test_settings_are_validated():
    assert OriginSettings() == OriginSettings(0.99, 3, 2)
    for bad, word in (
        ({"quantile": 1.0}, "quantile"),
        ({"run_length": 0}, "run_length"),
        ({"tie_window": -1}, "tie_window"),
    ):
        with pytest.raises(ConfigError, match=word):
            OriginSettings(**bad)


def _mean_shift_data(seed: int, t0: int, T: int, size: float):
    """A fedgc.data.synthetic system with edges, driven from t0 on by a constant input `size` on the state of the
    client with the most outgoing edges: that client's mean shifts at once, its neighbours' later through A."""
    rng = np.random.default_rng(seed)
    system = make_system(SystemSpec(n_clients=4, state_dims=2, obs_dims=10, edge_density=0.34, edge_strength=0.5), rng)
    target = int(np.argmax(system.edges.sum(axis=0)))
    o = system.offsets
    drive = rng.standard_normal((T, o[-1]))  # Q = I
    direction = rng.standard_normal(o[target + 1] - o[target])
    drive[t0:, o[target] : o[target + 1]] += size * direction / np.linalg.norm(direction)
    states = filter_scan(system.A, drive)
    y = [
        states[:, o[m] : o[m + 1]] @ system.C[m].T
        + rng.standard_normal((T, system.C[m].shape[0])) @ np.linalg.cholesky(system.R[m]).T
        for m in range(4)
    ]
    return system, y, target


def test_the_perturbed_client_is_ranked_first():
    """Thresholds and the GC graph from t < t0 (true local models); the client whose state shifts at t0 ranks
    first, ahead of the neighbours the shift reaches through the learned edges. The input is 5 process-noise
    standard deviations per step: the score pools all P_m = 10 innovations, and with SNR 1 a shift of 1.5 or 3
    raises the mean normalised score only from about 0.47 to 0.5-0.8 (no crossing; measured, seeds 0-2)."""
    from fedgc.protocol.loop import run_protocol
    from fedgc.protocol.session import ClientSession
    from fedgc.protocol.transport import LocalTransport

    t0, T = 1500, 2000
    settings = OriginSettings()
    names = [f"c{m}" for m in range(4)]
    for seed in (0, 1, 2):
        system, y, target = _mean_shift_data(seed, t0, T, size=5.0)
        assert system.edges[:, target].any()  # the shift propagates
        models = [system.local_model(m) for m in range(4)]
        sessions = [ClientSession(n, mod, ym[:t0]) for n, mod, ym in zip(names, models, y)]
        gc = run_protocol(LocalTransport(sessions), ServerConfig(max_rounds=10)).gc
        results = {}
        for n, mod, ym in zip(names, models, y):
            results[n] = monitor(calibrate(mod, ym[:t0], client=n, settings=settings), ym, start=t0)
        crossings = {n: r.first_crossing for n, r in results.items()}
        ranking = rank_origins(
            crossings, {n: r.onset for n, r in results.items()}, {n: r.peak for n, r in results.items()},
            clients=names, edges=gc.edges, tie_window=settings.tie_window,
        )  # fmt: skip
        assert ranking[0] == names[target], (seed, target, ranking, crossings)
        assert crossings[names[target]] < t0 + 10
        record = origin_dict(results, ranking, start=t0)
        assert record["threshold"] == 1.0 and record["ranking"] == ranking
        assert len(record["clients"]["c0"]["score"]) == T
        assert origin_runs({"origin": record}) == {"run": record}
        assert origin_runs({"origin": {"x": record}}) == {"x": record}


def test_calibration_needs_enough_normal_samples(gen):
    rng = np.random.default_rng(1)
    sys = gen.random_lgss(rng, D=2, P=4, radius=0.5)
    _, y = gen.simulate_lgss(sys, 12, rng)
    model = LocalModel(A=sys.A, C=sys.C, Q=sys.Q, R=sys.R)
    with pytest.raises(ConfigError, match=r"client 'x'.*too few"):
        calibrate(model, y, client="x", settings=OriginSettings())
