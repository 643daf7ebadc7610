"""server.acceleration 'secant' (fedgc.protocol.acceleration, fedgc.core.response): fewer rounds, the same A_s.

The shipped scenarios, accelerated (the default), against the stored references of the plain rounds
(tests/reference/*.json; tests/test_reference_runs.py checks those with acceleration off); the response model
identified exactly from two rounds; the safeguard when a client's response is not linear; the cases that
are not accelerated (augmentation noise, the gd rule) left exactly as they were."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedgc.app.config import EvaluationSettings, PrivacySettings, RunConfig, parse_config
from fedgc.app.runner import run_local
from fedgc.cli import main
from fedgc.core.regression import Blocks, newton_update, regression_stats, relative_change
from fedgc.core.response import BaseRound, anderson_fixed_point, identify_response, joint_pass
from fedgc.core.window import lagged, pseudo_observations, run_filter
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ConfigError
from fedgc.protocol import acceleration
from fedgc.protocol.loop import run_protocol
from fedgc.protocol.session import ClientSession
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.transport import LocalTransport

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "reference"
SPEC = SystemSpec(n_clients=4, state_dims=2, obs_dims=6, edge_density=0.4, n_steps=800)
pytestmark = pytest.mark.filterwarnings("ignore")


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------------- the scenarios


@pytest.mark.parametrize("scenario", ["default", "tep"])
def test_accelerated_scenario_reaches_the_reference_in_at_most_six_rounds(scenario, tmp_path):
    """The shipped YAML as it is (acceleration on by default): the plain rounds' A_s within 1e-6 relative, the
    same edges and p-values, to the same tol, in at most 6 rounds (plain: 8 on default, 25 on TEP)."""
    out = tmp_path / scenario
    assert main(["simulate", str(REPO / "simulations" / f"{scenario}.yaml"), "--out", str(out), "--quiet"]) == 0
    got = json.loads((out / "result.json").read_text())
    ref = json.loads((REFERENCE / f"{scenario}.json").read_text())
    assert got["server"]["acceleration"] == "secant"
    assert got["converged"] and got["rounds"] <= 6 < ref["rounds"], (got["rounds"], ref["rounds"])
    assert got["history"][-1]["change"] < got["server"]["tol"]
    assert relative(got["A_s"], ref["A_s"]) < 1e-6
    assert got["edges"] == ref["edges"]
    floats = lambda x: np.asarray(x, dtype=float)  # null on the diagonal
    np.testing.assert_allclose(floats(got["log10_pvalue"]), floats(ref["log10_pvalue"]), rtol=1e-4, atol=1e-4)


def test_accelerated_stream_raises_the_same_alerts_with_fewer_rounds(tmp_path):
    """mean_shift.yaml: a warm-started window identifies the response from its zero and warm exchanges, so
    its first update already predicts; every window's edges and the alerts are those of the plain rounds."""
    out = tmp_path / "mean_shift"
    assert main(["simulate", str(REPO / "simulations" / "mean_shift.yaml"), "--out", str(out), "--quiet"]) == 0
    got = json.loads((out / "result.json").read_text())["streaming"]
    ref = json.loads((REFERENCE / "mean_shift.json").read_text())["streaming"]
    rounds = [w["rounds"] for w in got["windows"]]
    assert rounds[0] <= 3 and max(rounds[1:]) <= 2
    assert sum(rounds) < sum(w["rounds"] for w in ref["windows"])
    for w, r in zip(got["windows"], ref["windows"], strict=True):
        assert w["edges"] == r["edges"]
        strength = lambda x: np.asarray(x, dtype=float)  # null on the diagonal
        np.testing.assert_allclose(strength(w["strength"]), strength(r["strength"]), rtol=1e-3, atol=1e-6)  # tol 1e-4
    key = lambda a: (a["window"], a["target"], a["source"], a["kind"])
    assert [key(a) for a in got["alerts"]] == [key(a) for a in ref["alerts"]]


# ---------------------------------------------------------------------------------------------- the maths


@pytest.fixture(scope="module")
def data():
    return simulate(SPEC, np.random.default_rng(3))


def sessions(data, **kw):
    return [ClientSession(f"c{m}", data.system.local_model(m), data.y[m], **kw) for m in range(len(data.y))]


def test_two_rounds_identify_a_clients_response_exactly(data):
    """The differences of two rounds give F = (I - K C) A, G = I - K C and P = J A to rounding."""
    window = sessions(data)[0].window
    rng = np.random.default_rng(0)
    T, D = window.ytil.shape
    s1, s2 = rng.standard_normal((T, D)), rng.standard_normal((T, D))
    h1, h2 = run_filter(window, s1), run_filter(window, s2)
    z1, z2 = pseudo_observations(window, lagged(h1)), pseudo_observations(window, lagged(h2))
    model = identify_response(h2 - h1, s2 - s1, z2 - z1)
    assert model.residual < 1e-12
    np.testing.assert_allclose(model.transition, window.F, atol=1e-10)
    np.testing.assert_allclose(model.input_gain, window.G, atol=1e-10)
    np.testing.assert_allclose(model.lag_gain, window.J @ window.A, atol=1e-10)


@pytest.fixture(scope="module")
def mixed_data():
    """Clients of state dimensions 2, 3, 2, 1: the lag gains of one dimension sit in separate columns."""
    return simulate(replace(SPEC, state_dims=(2, 3, 2, 1)), np.random.default_rng(4))


@pytest.mark.parametrize(
    "rows, systems, burn_in",
    [
        (None, "data", 3),
        (97, "data", 3),
        (97, "data", 97),
        (97, "data", 150),
        (None, "mixed_data", 3),
        (97, "mixed_data", 3),
    ],
)
def test_the_joint_pass_is_what_the_clients_return(rows, systems, burn_in, request, monkeypatch):
    """Sent an A_s with the states the joint pass predicts for it (from any earlier round), the clients'
    filters return exactly those states, and the pass's sums are the replies' regression sums, however
    the window is cut into blocks, wherever the burn-in ends (in the first block, at its end, in the
    second) and whatever the clients' state dimensions."""
    data = request.getfixturevalue(systems)
    if rows is not None:
        monkeypatch.setattr("fedgc.core.response.BLOCK_ROWS", rows)
    windows = [s.window for s in sessions(data)]
    T = windows[0].ytil.shape[0]
    dims = [w.F.shape[0] for w in windows]
    off = np.concatenate([[0], np.cumsum(dims)])
    rng = np.random.default_rng(1)
    A_s = 0.2 * rng.standard_normal((off[-1], off[-1]))
    for m in range(len(dims)):
        A_s[off[m] : off[m + 1], off[m] : off[m + 1]] = 0.0
    models = [identify_response(
        run_filter(w, s) - run_filter(w, np.zeros_like(s)), s,
        pseudo_observations(w, lagged(run_filter(w, s))) - pseudo_observations(w, lagged(run_filter(w, 0 * s))),
    ) for w, s in ((w, rng.standard_normal((T, w.F.shape[0]))) for w in windows)]  # fmt: skip
    inputs = [rng.standard_normal((T, d)) for d in dims]  # any earlier round's augmentations
    states = [run_filter(w, s) for w, s in zip(windows, inputs, strict=True)]
    pseudo = [pseudo_observations(w, lagged(h)) for w, h in zip(windows, states, strict=True)]
    base = BaseRound(states, pseudo, inputs, [np.zeros(d) for d in dims])
    sums, H = joint_pass(A_s, models, base, burn_in=burn_in, keep=True)
    assert H is not None
    S = lagged(H) @ A_s.T
    back = [run_filter(w, S[:, off[m] : off[m + 1]]) for m, w in enumerate(windows)]
    np.testing.assert_allclose(np.hstack(back), H, rtol=0, atol=1e-9 * np.abs(H).max())
    expected = regression_stats(back, [pseudo_observations(w, lagged(h)) for w, h in zip(windows, back, strict=True)],
                                burn_in=burn_in)  # fmt: skip
    for got, want in zip(sums[:3], expected[:3], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    assert sums.n == expected.n == T - burn_in


def _response_round(data, rng):
    """Each client's response model (from two rounds with random augmentations) and one more round (BaseRound)."""
    windows = [s.window for s in sessions(data)]
    T = windows[0].ytil.shape[0]
    models = [identify_response(
        run_filter(w, s) - run_filter(w, np.zeros_like(s)), s,
        pseudo_observations(w, lagged(run_filter(w, s))) - pseudo_observations(w, lagged(run_filter(w, 0 * s))),
    ) for w, s in ((w, rng.standard_normal((T, w.F.shape[0]))) for w in windows)]  # fmt: skip
    inputs = [0.3 * rng.standard_normal((T, w.F.shape[0])) for w in windows]
    states = [run_filter(w, s) for w, s in zip(windows, inputs, strict=True)]
    pseudo = [pseudo_observations(w, lagged(h)) for w, h in zip(windows, states, strict=True)]
    return models, BaseRound(states, pseudo, inputs, [np.zeros(w.F.shape[0]) for w in windows]), windows


@pytest.mark.parametrize("rows", [None, 97])
def test_a_prediction_sends_the_states_of_the_pass_at_its_A_s(data, rows, monkeypatch):
    """predict keeps the states of the last A_s it tried: they are exactly those of a fresh joint pass at the
    A_s it returns, and a converged solve runs no pass beyond its evaluations (before: one more, for the
    states)."""
    if rows is not None:
        monkeypatch.setattr("fedgc.core.response.BLOCK_ROWS", rows)
    models, base, windows = _response_round(data, np.random.default_rng(5))
    blocks = Blocks.of([w.F.shape[0] for w in windows])
    informations = [w.J for w in windows]
    passes = []
    counted = acceleration.prepared_pass
    monkeypatch.setattr(acceleration, "prepared_pass", lambda *a, **k: passes.append(1) or counted(*a, **k))
    newton = lambda sums, A: newton_update(sums, informations, blocks)
    # fails at every A_s but the start: the solve gives up on the start, which was not the last A_s tried
    failing = lambda sums, A: newton(sums, A) if not A.any() else np.full_like(A, np.nan)
    for image, converges in ((newton, True), (failing, False)):
        passes.clear()
        step = acceleration.predict(models, base, blocks, image, np.zeros((blocks.total, blocks.total)),
                                    burn_in=3, tol=1e-6)  # fmt: skip
        assert step is not None and step.converged == converges
        _, states = joint_pass(step.A_s, models, base, burn_in=3, keep=True)
        assert states is not None
        assert all(np.array_equal(got, states[:, blocks.slice(m)]) for m, got in enumerate(step.states))
        assert len(passes) == step.evaluations + (0 if converges else 1)


def test_anderson_solves_a_contraction_and_survives_failures():
    rng = np.random.default_rng(4)
    M = rng.standard_normal((6, 6))
    M *= 0.9 / np.max(np.abs(np.linalg.eigvals(M)))
    c = rng.standard_normal(6)
    fixed = anderson_fixed_point(lambda x: M @ x + c, np.zeros(6), tol=1e-12, max_evaluations=40)
    assert fixed is not None and fixed.converged and fixed.evaluations < 20
    np.testing.assert_allclose(fixed.x, np.linalg.solve(np.eye(6) - M, c), rtol=1e-10)
    # a map that fails away from its fixed point: candidates there are dropped, the step shrinks
    target = np.linalg.solve(np.eye(6) - M, c)

    def fragile(x):
        if np.linalg.norm(x - target) > 2.0 * np.linalg.norm(target):
            raise np.linalg.LinAlgError("not positive definite")
        return target - 1.5 * (x - target)  # overshoots: plain steps diverge, relaxed ones converge

    got = anderson_fixed_point(fragile, np.zeros(6), tol=1e-10, max_evaluations=60)
    assert got is not None and got.converged
    assert anderson_fixed_point(lambda x: np.full_like(x, np.nan), np.zeros(6), tol=1e-6, max_evaluations=5) is None


# ---------------------------------------------------------------------------------------------- safeguard


def plain_fixed_point(data, **kw):
    return run_protocol(
        LocalTransport(sessions(data, **kw)), ServerConfig(max_rounds=200, tol=1e-12, acceleration="none")
    )


def test_missing_measurements_are_predicted_approximately_and_still_converge(data):
    """Gaps make the response time varying: predictions are inexact but still cut the rounds, and the fit
    ends at the plain fixed point."""
    rng = np.random.default_rng(9)
    gappy = replace(data, y=tuple(np.where(rng.random(y.shape) < 0.03, np.nan, y) for y in data.y))
    fixed = plain_fixed_point(gappy)
    plain = run_protocol(LocalTransport(sessions(gappy)), ServerConfig(acceleration="none"))
    fast = run_protocol(LocalTransport(sessions(gappy)), ServerConfig())
    assert fast.converged and fast.rounds < plain.rounds
    assert relative(fast.A_s, fixed.A_s) < 1e-6


def test_a_prediction_that_fails_falls_back_to_plain_rounds(data):
    """A learned f_theta changes the clients' response between rounds: a prediction that does not lower the
    change switches the accelerator off for the rest of the fit; the plain rounds then converge."""
    states = []
    transport = LocalTransport(sessions(data, learn_theta=True))
    fit = run_protocol(transport, ServerConfig(max_rounds=40), on_checkpoint=states.append)
    assert fit.converged
    assert states[-1].secant is not None and states[-1].secant.status == "off"
    off = next(i for i, st in enumerate(states) if st.secant.status == "off")
    assert fit.history[off].change >= fit.history[off - 1].change  # the judged prediction did not help
    assert all(not st.secant.predicted for st in states[off:])


# ---------------------------------------------------------------------------------------------- not accelerated


def small_cfg(**server) -> RunConfig:
    return RunConfig(name="acc", seed=5, synthetic=SPEC, server=ServerConfig(**{"max_rounds": 6, **server}),
                     evaluation=EvaluationSettings(oracle=False))  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        lambda c: replace(c, server=replace(c.server, rule="gd")),
        lambda c: replace(
            c,
            privacy=PrivacySettings(
                epsilon=20.0, delta=1e-5, clip=7.0, augmentation_noise=True, reproducible_noise=True
            ),
        ),
    ],
    ids=["gd rule", "augmentation noise"],
)
def test_runs_that_are_not_accelerated_are_unchanged(change):
    """The gd rule, and augmentation noise (whose calibration covers released states, not predicted ones),
    run the plain rounds whatever server.acceleration says; the privacy accounting is the same."""
    on, off = (run_local(change(small_cfg(acceleration=a)), mode="simulate", out_dir=None)
               for a in ("secant", "none"))  # fmt: skip
    np.testing.assert_array_equal(on.fit.A_s, off.fit.A_s)
    assert on.fit.history == off.fit.history
    assert (on.privacy or {}).get("per_client") == (off.privacy or {}).get("per_client")


def test_private_run_is_accelerated_and_spends_no_more(tmp_path):
    """Without augmentation noise every reply is post-processing of each client's one release: the
    accelerated run makes the same single release per client, in fewer rounds."""
    privacy = PrivacySettings(epsilon=10.0, delta=1e-5, clip=7.0, reproducible_noise=True)
    on, off = (run_local(replace(small_cfg(acceleration=a, max_rounds=20, tol=1e-6), privacy=privacy),
                         mode="simulate", out_dir=None) for a in ("secant", "none"))  # fmt: skip
    assert on.fit.converged and on.fit.rounds < off.fit.rounds
    whole = lambda r: r.privacy["per_client"]["client0"]["whole_run"]
    assert whole(on) == whole(off) and whole(on)["releases"] == 1


def test_acceleration_setting_is_validated():
    assert ServerConfig().acceleration == "secant"
    with pytest.raises(ConfigError, match=r"server\.acceleration must be one of"):
        ServerConfig(acceleration="anderson")
    with pytest.raises(ConfigError, match=r"server\.acceleration"):
        parse_config({"synthetic": {"n_clients": 2}, "server": {"acceleration": "fast"}})
    plain = parse_config({"synthetic": {"n_clients": 2}, "server": {"acceleration": "none"}})
    assert plain.server.acceleration == "none"


def test_plain_rounds_are_checked_against_the_fixed_point(data):
    """Sanity of the comparison above: the accelerated default lands closer to the plain fixed point than the
    plain rounds at the same tol do."""
    fixed = plain_fixed_point(data)
    plain = run_protocol(LocalTransport(sessions(data)), ServerConfig(acceleration="none"))
    fast = run_protocol(LocalTransport(sessions(data)), ServerConfig())
    assert fast.rounds == 3 and fast.rounds < plain.rounds
    assert relative_change(fast.A_s, fixed.A_s) <= relative_change(plain.A_s, fixed.A_s) < 1e-6
