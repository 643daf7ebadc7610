"""fedgc's launchers are an optimisation, not a requirement: Flower's own programs (flower-superlink,
flower-supernode, and flower-superexec for the ServerApp and next to each SuperNode) started as plain
processes on 127.0.0.1 with the same arguments run the app from its FAB alone (the project folder is on
no process's path) and give the same A_s as the local engine. The ServerApp does not opt in to fedgc's
faster object pulls either, so no module of flwr_internals/ runs in any process of the deployment.

Slow by nature: a stock SuperNode sleeps 3 s between empty polls and its SuperExec starts a new Python
process (Flower, fedgc, numpy, scipy imports) for every message, so a round takes several seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedgc.app.clients import build_session, simulate_scenario, write_scenario_files
from fedgc.app.config import parse_config
from fedgc.app.runner import EngineOptions, run_batch
from fedgc.protocol.transport import LocalTransport
from server.app import node_overrides
from server.deploy import STOCK
from server.engine import DeployedEngine
from server.local_deployment import PROJECT_DIR, LocalDeployment

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    raw = {
        "name": "stock",
        "seed": 5,
        "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 5, "n_steps": 300, "edge_density": 0.5},
        "server": {"max_rounds": 3, "tol": 1e-12},
        "evaluation": {"oracle": False},
    }
    cfg = parse_config(raw)
    files = write_scenario_files(cfg, simulate_scenario(cfg), tmp_path_factory.mktemp("stock") / "clients")
    return replace(files, engine="flower", synthetic=None)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def test_stock_flower_components_run_the_app_with_the_same_result(scenario, tmp_path):
    nodes = [node_overrides(scenario)[i] for i in range(len(scenario.clients))]
    dep = LocalDeployment(nodes, tmp_path / "work", stock=True)
    with dep:
        programs = {name: Path(proc.args[0]).name for name, proc in dep.procs.items()}
        assert set(programs.values()) == {argv[0] for argv in STOCK.values()}, programs
        assert not any(Path(p).resolve().is_relative_to(PROJECT_DIR) for p in dep.env()["PYTHONPATH"].split(":") if p)
        engine = DeployedEngine(wait_timeout=120.0, round_timeout=300.0, fast_object_pulls=False)
        result = engine(scenario, out_dir=tmp_path / "out", options=EngineOptions(superlink=dep.address),
                        on_round=None, resume=False)  # fmt: skip
        # no process of the deployment (the ServerApp and ClientApp processes included) ran fedgc's internals
        commands = [" ".join(_cmdline(pid)) for pid, *_ in dep._session_processes()]
        assert commands and not any("flwr_internals" in c for c in commands)
    assert all(p.poll() is not None for p in dep.procs.values()), "a deployment process outlived the test"
    sessions = [build_session(s, scenario.client, seed=scenario.seed + i) for i, s in enumerate(scenario.clients)]
    local = run_batch(scenario, LocalTransport(sessions))
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert result.fit.rounds == local.fit.rounds == 3
    np.testing.assert_array_equal(result.fit.gc.edges, local.fit.gc.edges)
    assert (tmp_path / "out" / "result.json").is_file()
