"""Streaming mode: carried filter states, forgotten statistics and their effective sample size, calibrated
per-window tests, change alerts, config and CLI (fedgc.protocol.streaming, fedgc.app.runner.run_streaming)."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import numpy as np
import pytest
import scipy.linalg
import yaml

from fedgc.analysis.stream import Switch, score_alerts, true_switches
from fedgc.app.clients import write_scenario_files
from fedgc.app.config import load_config, parse_config
from fedgc.app.runner import run, run_local
from fedgc.cli import main
from fedgc.core.forgetting import ForgottenStats, classify
from fedgc.core.kalman import filter_scan
from fedgc.core.regression import Blocks, augmentations, regression_stats
from fedgc.data.synthetic import Perturbation, SystemSpec, simulate
from fedgc.errors import ConfigError, FedGCError
from fedgc.protocol.loop import run_protocol
from fedgc.protocol.session import ClientSession, StreamingSession
from fedgc.protocol.settings import ServerConfig, StreamingConfig
from fedgc.protocol.streaming import Alert, run_stream, window_bounds
from fedgc.protocol.transport import LocalTransport
from fedgc.report.inspected import Alert as InspectedAlert
from fedgc.report.inspected import Streaming, Window
from fedgc.report.schema import result_schema
from fedgc.report.streaming_markdown import streaming_section


def _data(seed: int, *, M: int = 3, T: int = 1500, density: float = 0.34, perturbations=(), strength: float = 0.3):
    spec = SystemSpec(n_clients=M, state_dims=2, obs_dims=12, edge_density=density, edge_strength=strength,
                      n_steps=T, perturbations=tuple(perturbations))  # fmt: skip
    return simulate(spec, np.random.default_rng(seed))


def _stream_sessions(data) -> list[StreamingSession]:
    return [StreamingSession(f"c{m}", data.system.local_model(m), y) for m, y in enumerate(data.y)]


# ---------------------------------------------------------------------------------------------- windows and states


def test_window_bounds():
    assert window_bounds(1000, 400, 300) == [(0, 400), (300, 700), (600, 1000)]
    assert window_bounds(1050, 500, 500) == [(0, 500), (500, 1000)]
    with pytest.raises(ConfigError, match="longer than the data"):
        window_bounds(100, 500, 500)


@pytest.mark.parametrize("window, step", [(300, 300), (400, 250)])
def test_carried_state_equals_one_long_filter_run(window, step):
    """Without augmentation each client's windows continue its filter exactly (overlapping windows too)."""
    data = _data(0, T=1400)
    for m, y in enumerate(data.y):
        model = data.system.local_model(m)
        long_run = ClientSession("c", model, y).states  # h_{1:T} from h_0 = 0, no augmentation
        s = StreamingSession("c", model, y)
        for a, b in window_bounds(len(y), window, step):
            s.open_window(a, b)
            s.round(np.zeros((b - a, model.state_dim)))
            np.testing.assert_allclose(s.states, long_run[a:b], rtol=0, atol=1e-10 * np.abs(long_run).max())


def test_carried_state_with_fixed_coupling_equals_the_joint_long_run():
    """With A_s fixed, rounds within each window converge to the coupled filters, and the windows chain into
    one long run of h_t = (blockdiag F + blockdiag G A_s) h_{t-1} + blockdiag(Sigma) ytil_t."""
    data = _data(1, T=900)
    sessions = _stream_sessions(data)
    dims = [s.state_dim for s in sessions]
    blocks = Blocks.of(dims)
    rng = np.random.default_rng(5)
    A_s = 0.15 * rng.standard_normal((blocks.total, blocks.total))
    for m in range(len(dims)):
        A_s[blocks.slice(m), blocks.slice(m)] = 0.0
    F = (
        scipy.linalg.block_diag(*[s.stream.F for s in sessions])
        + scipy.linalg.block_diag(*[s.stream.G for s in sessions]) @ A_s
    )
    drive = (
        np.hstack([s.stream.ytil for s in sessions]) @ scipy.linalg.block_diag(*[s.stream.Sigma for s in sessions]).T
    )
    joint = filter_scan(F, drive)
    transport = LocalTransport(sessions)
    h0 = None
    for a, b in window_bounds(900, 300, 300):
        transport.open_window(a, b)
        replies = transport.exchange([np.zeros((b - a, d)) for d in dims], "newton")
        for _ in range(80):
            replies = transport.exchange(augmentations(A_s, [r.states for r in replies], blocks, h0), "newton")
        states = np.hstack([r.states for r in replies])
        np.testing.assert_allclose(states, joint[a:b], rtol=0, atol=1e-10 * np.abs(joint).max())
        h0 = [r.states[-1] for r in replies]


def test_window_must_follow_the_previous_one():
    data = _data(0, T=600)
    s = StreamingSession("c0", data.system.local_model(0), data.y[0])
    s.open_window(0, 200)
    with pytest.raises(FedGCError, match="does not follow"):
        s.open_window(300, 500)
    with pytest.raises(FedGCError, match="outside"):
        s.open_window(500, 700)


# ---------------------------------------------------------------------------------------------- forgotten statistics


def test_forgetting_one_equals_the_batch_statistics():
    """lambda = 1 over successive windows (states carried) sums to the whole series' statistics, N_eff = n."""
    data = _data(2, T=1200)
    sessions = [ClientSession(f"c{m}", data.system.local_model(m), y) for m, y in enumerate(data.y)]
    replies = LocalTransport(sessions).exchange([np.zeros((1200, s.state_dim)) for s in sessions], "newton")
    states, z = [r.states for r in replies], [r.pseudo_obs for r in replies]
    batch = regression_stats(states, z, burn_in=1)
    memory = ForgottenStats.empty(batch.gram.shape[0])
    for k, (a, b) in enumerate(window_bounds(1200, 400, 400)):
        h0 = None if a == 0 else [s[a - 1] for s in states]
        new = regression_stats([s[a:b] for s in states], [x[a:b] for x in z], burn_in=1 if k == 0 else 0, h0=h0)
        memory = memory.plus(new).forget(1.0)
    for got, want in zip(memory.stats[:3], batch[:3]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
    assert memory.weight == memory.weight_sq == memory.stats.n == batch.n
    assert memory.effective_size == pytest.approx(batch.n)


def test_one_window_equals_the_batch_protocol():
    """A single window of the whole series is the batch protocol: same rounds, same A_s and p-values."""
    data = _data(3, T=800)
    server = ServerConfig(max_rounds=15, tol=1e-6)
    batch = run_protocol(
        LocalTransport([ClientSession(f"c{m}", data.system.local_model(m), y) for m, y in enumerate(data.y)]), server
    )
    stream = run_stream(LocalTransport(_stream_sessions(data)), server,
                        StreamingConfig(window=800, step=800, max_rounds=15, tol=1e-6))  # fmt: skip
    (w,) = stream.windows
    assert w.rounds == batch.rounds and w.effective_size == pytest.approx(799)
    np.testing.assert_allclose(stream.A_s, batch.A_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w.gc.log10_pvalue, batch.gc.log10_pvalue, rtol=1e-10)


@pytest.mark.parametrize("window, step, lam", [(300, 300, 0.8), (400, 200, 0.6)])
def test_memory_weights_count_every_sample_once(window, step, lam):
    """Each window's sum w and N_eff equal those of the explicit per-sample weights: 1 inside the window,
    lambda^j for samples that left it j steps ago (window 0 drops its burn-in sample)."""
    data = _data(4, T=1500)
    result = run_stream(LocalTransport(_stream_sessions(data)), ServerConfig(),
                        StreamingConfig(window=window, step=step, forgetting=lam, alert_alpha=1e-12))  # fmt: skip
    for w in result.windows:
        t = np.arange(1, w.end)  # sample 0 is window 0's burn-in
        left = np.ceil((w.start - t) / step).clip(min=0)  # steps since sample t left the window
        weights = lam**left
        assert w.memory == pytest.approx(weights.sum(), rel=1e-12)
        assert w.effective_size == pytest.approx(weights.sum() ** 2 / (weights**2).sum(), rel=1e-12)
    cfg = StreamingConfig(window=300, step=300, forgetting=0.8)
    assert cfg.steady_effective_size() == pytest.approx(300 * 1.8 / 0.2)


# ---------------------------------------------------------------------------------------------- calibration, alerts


@pytest.fixture(scope="module")
def null_runs():
    """Streams on systems without cross edges, lambda = 0.5 (N_eff = 3 S, a quarter of the sample count
    after 12 windows: a test using the count would reject far too often), alerts off (no memory restarts)."""
    runs = []
    for seed in range(8):
        data = _data(100 + seed, M=4, T=4800, density=0.0)
        runs.append(run_stream(LocalTransport(_stream_sessions(data)), ServerConfig(),
                               StreamingConfig(window=400, step=400, forgetting=0.5, alert_alpha=1e-12)))  # fmt: skip
    return runs


def test_window_tests_are_calibrated_with_the_effective_sample_size(null_runs):
    off = ~np.eye(4, dtype=bool)
    p = np.concatenate([w.gc.pvalue[off] for r in null_runs for w in r.windows[3:]])
    rate = float(np.mean(p < 0.05))
    assert 0.02 <= rate <= 0.08, rate  # measured 0.043; the sample count instead of N_eff gives 0.44, sum w gives 0.005


def test_change_tests_are_calibrated(null_runs):
    off = ~np.eye(4, dtype=bool)
    p = np.concatenate([10 ** w.change.log10_pvalue[off] for r in null_runs for w in r.windows[1:]])
    assert 0.03 <= float(np.mean(p < 0.05)) <= 0.075
    assert float(np.mean(p < 0.01)) <= 0.02


def test_true_switches_and_alert_scoring():
    perturbations = [Perturbation(0, 0, 1, "on"), Perturbation(300, 0, 1, "scale", factor=0.5),
                     Perturbation(600, 2, 0, "on"), Perturbation(800, 0, 1, "off")]  # fmt: skip
    data = _data(0, T=1000, density=0.0, perturbations=perturbations)
    switches = true_switches(data, perturbations)
    assert switches == [Switch(300, 0, 1, "changed"), Switch(600, 2, 0, "appeared"), Switch(800, 0, 1, "disappeared")]
    bounds = window_bounds(1000, 200, 200)
    alert = lambda k, m, n: Alert(k, bounds[k][1], m, n, "changed", 0.0, 0.0, -5.0)
    alerts = [alert(0, 2, 0), alert(3, 2, 0), alert(4, 0, 1), alert(4, 1, 2)]
    scored = score_alerts(alerts, switches, bounds)
    rows = {(r["target"], r["source"], r["time"]): r for r in scored["switches"]}
    assert (
        rows[(0, 1, 300)]["delay_samples"] == 1000 - 300 and rows[(0, 1, 300)]["delay_windows"] == 4
    )  # from window 1 = [200, 400)
    assert rows[(2, 0, 600)]["alert_window"] == 3 and rows[(2, 0, 600)]["delay_windows"] == 1
    assert rows[(0, 1, 800)]["delay_windows"] == 1  # window 4 = [800, 1000) holds the switch
    assert scored["false_alerts"] == 2 and scored["false_alert_indices"] == [0, 3]  # before its switch; never switched


def test_classify():
    assert classify(False, 0.05, 0.4, True) == "appeared"
    assert classify(False, 0.4, 0.05, False) == "changed"
    assert classify(True, 0.4, 0.05, False) == "disappeared"
    assert classify(True, 0.4, 0.8, True) == "changed"


def test_an_edge_switching_off_alerts_as_disappeared():
    data = _data(7, M=3, T=4000, density=0.0, strength=0.4,
                 perturbations=[Perturbation(0, 0, 1, "on"), Perturbation(2000, 0, 1, "off")])  # fmt: skip
    result = run_stream(LocalTransport(_stream_sessions(data)), ServerConfig(), StreamingConfig(window=500, step=500))
    hits = [a for a in result.alerts if (a.target, a.source) == (0, 1)]
    assert hits and hits[0].kind == "disappeared" and hits[0].window in (4, 5)
    assert hits[0].strength_before > 0.2 > hits[0].strength_after
    assert result.windows[hits[0].window].reset
    assert all((a.target, a.source) == (0, 1) for a in result.alerts)
    assert result.windows[0].gc.edges[0, 1] and not result.windows[-1].gc.edges[0, 1]


# ---------------------------------------------------------------------------------------------- config, engines, CLI


SMALL_STREAM = {
    "name": "small_stream",
    "seed": 1,
    "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 12, "edge_density": 0.0, "edge_strength": 0.4,
                  "n_steps": 2000, "perturbations": [{"time": 1000, "target": 2, "source": 0, "action": "on"}]},
    "streaming": {"window": 250, "step": 250, "forgetting": 0.8},
    "evaluation": {"oracle": False},
}  # fmt: skip


def test_streaming_config_defaults_and_off():
    assert parse_config({"streaming": "off"}).streaming is None
    assert parse_config({}).streaming is None
    cfg = parse_config({"streaming": {"window": 300}})
    assert cfg.streaming == StreamingConfig(window=300, step=300, forgetting=0.9)
    assert parse_config({"streaming": True}).streaming == StreamingConfig(window=500, step=500)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"window": 100, "step": 200}, "must not exceed streaming.window"),
        ({"forgetting": 0}, "forgetting must lie in (0, 1]"),
        ({"forgetting": 1.5}, "forgetting must lie in (0, 1]"),
        ({"window": 0}, "window must be a positive integer"),
        ({"alert_alpha": 1}, "alert_alpha must lie in (0, 1)"),
        ({"windw": 10}, "streaming: unknown key(s) ['windw']"),
        ({"reset_on_alert": "yes"}, "reset_on_alert must be true or false"),
    ],
)
def test_streaming_config_errors(section, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"streaming": section})
    assert message in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"engine": "flower-sim"}, "streaming mode runs on the local engine only"),
        ({"privacy": {"epsilon": 5, "delta": 1e-5, "clip": 5.0}}, "does not support privacy"),
        ({"server": {"rule": "gd"}}, "streaming mode needs server.rule: newton"),
        ({"streaming": {"window": 5000}}, "longer than the data"),
        ({"streaming": {"window": 5, "step": 5}}, "too short for 6 stacked states"),
    ],
)
def test_unsupported_streaming_runs_fail_clearly(tmp_path, change, message):
    raw = {**json.loads(json.dumps(SMALL_STREAM)), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(load_config(path), mode="simulate", out_dir=tmp_path / "out")


def _check_schema(record: dict, clients: list[str]) -> None:
    """The shared interface (owned by stream, read by inspect), and its part of fedgc/report/result.schema.json."""
    schema = result_schema()
    jsonschema.validate(record, {"$defs": schema["$defs"], **schema["properties"]["streaming"]})
    M = len(clients)
    assert {"window", "step", "forgetting", "windows", "alerts"} <= set(record)
    for w in record["windows"]:
        assert isinstance(w["index"], int) and w["start"] < w["end"]
        for key in ("strength", "pvalue", "edges"):
            assert len(w[key]) == M and all(len(row) == M for row in w[key])
        assert all(isinstance(v, bool) for row in w["edges"] for v in row)
        assert w["pvalue"][0][0] is None
    for a in record["alerts"]:
        assert a["kind"] in ("appeared", "disappeared", "changed")
        assert a["target"] in clients and a["source"] in clients
        assert {"window", "time", "strength_before", "strength_after", "pvalue"} <= set(a)


def test_simulate_cli_streaming_writes_windows_alerts_and_report(tmp_path):
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(SMALL_STREAM))
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "result.json").read_text())
    record = data["streaming"]
    _check_schema(record, data["clients"])
    assert len(record["windows"]) == 8
    (switch,) = record["evaluation"]["switches"]
    assert (switch["source"], switch["target"], switch["time"]) == ("client0", "client2", 1000)
    assert switch["detected"] and switch["delay_windows"] <= 2
    report = (out / "report.md").read_text()
    assert "## Streaming" in report and "### Detection of the true switches" in report
    assert "**client0 -> client2**" in report
    # the header states the per-window rounds, not the batch settings
    done = sum(w["converged"] for w in record["windows"])
    assert f"| rounds | {data['rounds']} over 8 windows ({done} of 8 windows converged) |" in report
    assert f"max_rounds {record['max_rounds']} per window |" in report
    assert data["rounds"] == sum(w["rounds"] for w in record["windows"])


def test_run_cli_streaming_on_client_csv_files(tmp_path):
    """`fedgc run` streams per-client CSV files (identified models), as it would a plant's exports."""
    cfg = parse_config(SMALL_STREAM)
    data = simulate(cfg.synthetic, np.random.default_rng(cfg.seed))
    files = write_scenario_files(replace(cfg, local_models="identify"), data, tmp_path / "data")
    clients = [{"name": c.name, "data": str(c.data), "timestamp_column": "none", "state_dim": 2} for c in files.clients]
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump({"name": "plant", "clients": clients, "streaming": SMALL_STREAM["streaming"],
                                    "evaluation": {"oracle": False}}))  # fmt: skip
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    data_out = json.loads((out / "result.json").read_text())
    record = data_out["streaming"]
    _check_schema(record, data_out["clients"])
    assert record["evaluation"] is None
    assert [(a["source"], a["target"]) for a in record["alerts"]] == [("client0", "client2")]
    assert "## Streaming" in (out / "report.md").read_text()


def test_report_section_elides_long_timelines():
    M, K = 3, 50
    matrix = np.where(np.eye(M, dtype=bool), np.nan, 0.1)
    windows = tuple(Window(index=k, start=10 * k, end=10 * k + 10, strength=matrix, pvalue=matrix, log10_pvalue=matrix,
                           edges=np.zeros((M, M), dtype=bool), effective_sample_size=10.0, rounds=3, exchanges=4,
                           converged=True, reset=False, change_log10_pvalue=None if k == 0 else matrix)
                    for k in range(K))  # fmt: skip
    alert = InspectedAlert(window=20, time=210, target="b", source="a", kind="appeared", strength_before=0.0,
                           strength_after=0.5, pvalue=1e-9, log10_pvalue=-9.0)  # fmt: skip
    record = Streaming(window=10, step=10, forgetting=0.9, alert_alpha=0.01, reset_on_alert=True, max_rounds=10, tol=1e-4,
                       steady_effective_sample_size=190.0, n_steps=10 * K, unprocessed_steps=0, windows=windows,
                       alerts=(alert,), evaluation=None)  # fmt: skip
    text = "\n".join(streaming_section(record, ["a", "b", "c"]))
    assert "**a -> b**" in text and "| ... |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1") or line.startswith("| 2")]
    assert any(line.startswith("| 20 |") for line in rows) and not any(line.startswith("| 10 |") for line in rows)


def test_streaming_refuses_data_with_missing_values(tmp_path):
    from fedgc.app.config import load_config
    from fedgc.data.csv import write_client_csv
    from fedgc.errors import DataError

    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        y = rng.normal(size=(400, 4))
        if name == "b":
            y[10, 1] = np.nan
        write_client_csv(tmp_path / f"{name}.csv", y, columns=[f"s{j}" for j in range(4)])
    (tmp_path / "run.yaml").write_text(
        "clients:\n  - {name: a, data: a.csv, state_dim: 1}\n  - {name: b, data: b.csv, state_dim: 1}\n"
        "streaming: {window: 200, step: 200}\n"
    )
    with pytest.raises(DataError, match="client 'b': streaming mode needs complete measurements"):
        run_local(load_config(tmp_path / "run.yaml"), mode="run", out_dir=None)
