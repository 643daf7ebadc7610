"""The three engines on simulations/default.yaml: the same A_s to 1e-9 (privacy off, same seed).

`flower` runs against a real deployment on 127.0.0.1: a SuperLink, the ServerApp SuperExec, and
per client a SuperNode and its ClientApp runtime, started as processes with docker-compose.yml's
command lines (server/deploy.py, server/local_deployment.py) on free ports; every process is stopped at the end. The
deployed run also checks a node that stops answering mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedgc.app.checkpoint import CHECKPOINT_FILE, CHECKPOINT_JSON, load_checkpoint
from fedgc.app.config import EvaluationSettings, load_config
from fedgc.app.runner import EngineOptions, run
from fedgc.errors import FedGCError
from server.engine import DeployedEngine
from server.job import FIT_FILE
from server.local_deployment import LocalDeployment

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "simulations" / "default.yaml"
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def cfg():
    return replace(load_config(SCENARIO), evaluation=EvaluationSettings(oracle=False))


@pytest.fixture(scope="module")
def local(cfg, tmp_path_factory):
    return run(replace(cfg, engine="local"), mode="simulate", out_dir=tmp_path_factory.mktemp("local"))


def _node_configs(out: Path, n: int):
    clients = out / "clients"  # where `simulate` writes each client's files (fedgc.app.clients.write_scenario_files)
    return [
        {
            "data-path": str(clients / f"client{i}.csv"),
            "client-name": f"client{i}",
            "model-path": str(clients / f"client{i}_model.npz"),
        }
        for i in range(n)
    ]


def test_flower_sim_matches_local(cfg, local, tmp_path):
    result = run(replace(cfg, engine="flower-sim"), mode="simulate", out_dir=tmp_path)
    assert result.engine == "flower-sim"
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert result.fit.rounds == local.fit.rounds and result.fit.converged
    np.testing.assert_array_equal(result.fit.gc.edges, local.fit.gc.edges)
    assert result.communication["bytes_total"] >= local.communication["bytes_total"]
    assert result.raw_data_bytes == local.raw_data_bytes


@pytest.fixture(scope="module")
def deployment(cfg, tmp_path_factory):
    base = tmp_path_factory.mktemp("deployed")
    out = base / "out"
    dep = LocalDeployment(_node_configs(out, cfg.synthetic.n_clients), base / "work")
    with dep:
        yield dep, out
    assert all(p.poll() is not None for p in dep.procs.values()), "a deployment process outlived the test"


@pytest.mark.parametrize("message_format", ["arrays", "compact"])
def test_flower_deployed_matches_local(cfg, local, deployment, message_format):
    dep, out = deployment
    options = EngineOptions(superlink=dep.address, message_format=message_format)
    progress = []  # (round, whether the ServerApp had written its result yet) as the CLI's progress bar sees them
    result = run(replace(cfg, engine="flower"), mode="simulate", out_dir=out, options=options,
                 on_round=lambda record: progress.append((record.round, (out / FIT_FILE).is_file())))  # fmt: skip
    assert result.engine == "flower" and result.communication["message_format"] == message_format
    # every round reported once, in order, and the rounds came while the run ran, not all at its end
    assert [r for r, _ in progress] == [r.round for r in result.fit.history] == list(range(1, local.fit.rounds + 1))
    assert not any(written for _, written in progress[: len(progress) // 2])
    # the ServerApp process of the run is reaped by the SuperExec launcher (no <defunct> flwr-serverapp)
    deadline = time.monotonic() + 15
    while dep.zombies() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dep.zombies() == []
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert result.fit.rounds == local.fit.rounds
    np.testing.assert_array_equal(result.fit.gc.edges, local.fit.gc.edges)
    assert result.evaluation.scores is not None and result.evaluation.scores.auroc > 0.9  # truth: added by the CLI side
    # the ServerApp wrote the output folder itself
    written = json.loads((out / "result.json").read_text())
    np.testing.assert_allclose(np.asarray(written["A_s"]), local.fit.A_s, rtol=0, atol=1e-9)
    assert (out / FIT_FILE).is_file() and json.loads((out / CHECKPOINT_JSON).read_text())["complete"]
    comm = result.communication
    assert comm["raw_data_bytes_kept"] == local.raw_data_bytes
    assert len(comm["round_latency_s"]) == comm["exchanges"] == local.communication["exchanges"]


def test_flower_deployed_silent_node(cfg, deployment):
    dep, out = deployment
    out = out.parent / "out-timeout"
    long_cfg = replace(cfg, engine="flower", server=replace(cfg.server, tol=1e-300, max_rounds=40))
    stalled = dep.procs["clientapp-5"]
    errors: list[BaseException] = []

    def go():
        try:
            run(long_cfg, mode="simulate", out_dir=out, options=EngineOptions(superlink=dep.address),
                flower=DeployedEngine(round_timeout=10.0))  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=go)
    worker.start()
    try:
        deadline = time.monotonic() + 240
        while not (out / CHECKPOINT_FILE).is_file() and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.02)
        os.kill(stalled.pid, signal.SIGSTOP)  # client5's ClientApp stops answering
        worker.join(timeout=240)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    assert not worker.is_alive()
    assert errors and isinstance(errors[0], FedGCError), errors
    message = str(errors[0])
    assert "'client5'" in message and "no reply within 10 s" in message
    assert str(out / CHECKPOINT_FILE) in message
    kept = json.loads((out / CHECKPOINT_JSON).read_text())
    assert not kept["complete"] and kept["round"] >= 1 and "client5" in kept["error"]
    assert load_checkpoint(out).state.A_s.shape == (24, 24)


@pytest.mark.slow  # about a minute on a loaded 2-core machine: its own deployment, a run and one round timeout
def test_flower_deployed_killed_supernode_under_continue(cfg, tmp_path):
    """SIGKILL one client's SuperNode and ClientApp mid-run: with on_dropout continue the run finishes
    without it, says so, and the checkpoint on disk is intact. Its own deployment: the node stays dead."""
    from fedgc.app.clients import simulate_scenario, write_scenario_files

    spec = replace(cfg.synthetic, n_clients=4, state_dims=3, obs_dims=20, n_steps=1000)
    server = replace(cfg.server, tol=1e-300, max_rounds=5, on_dropout="continue")
    run_cfg = replace(cfg, synthetic=spec, engine="flower", server=server)
    out = tmp_path / "out"
    write_scenario_files(run_cfg, simulate_scenario(run_cfg), out / "clients")  # what the nodes read
    results: list = []
    dep = LocalDeployment(_node_configs(out, 4), tmp_path / "work")
    with dep:

        def go():
            try:
                results.append(run(run_cfg, mode="simulate", out_dir=out, options=EngineOptions(superlink=dep.address),
                                   flower=DeployedEngine(round_timeout=15.0)))  # fmt: skip
            except BaseException as exc:
                results.append(exc)

        worker = threading.Thread(target=go)
        worker.start()
        deadline = time.monotonic() + 240
        while not (out / CHECKPOINT_FILE).is_file() and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.02)
        for name in ("clientapp-2", "supernode-2"):
            os.killpg(dep.procs[name].pid, signal.SIGKILL)
            dep.procs[name].wait(timeout=10)
        worker.join(timeout=300)
    assert all(p.poll() is not None for p in dep.procs.values()), "a deployment process outlived the test"
    assert not worker.is_alive() and results, "the run did not finish"
    result = results[0]
    assert not isinstance(result, BaseException), result
    assert [d.client for d in result.fit.dropouts] == ["client2"] and "no reply within 15 s" in result.fit.dropouts[
        0
    ].reason
    assert result.fit.rounds == 5
    gc = result.fit.gc
    assert gc.unknown[2, [0, 1, 3]].all() and gc.unknown[[0, 1, 3], 2].all() and np.isnan(gc.strength[2, 0])
    assert np.isfinite(gc.pvalue[0, 1]) and np.isnan(result.fit.A_s[6:9]).all()
    kept = load_checkpoint(out).state
    assert kept.round == 5 and kept.finished and kept.active == (True, True, False, True)
    np.testing.assert_array_equal(kept.A_s, result.fit.A_s)
