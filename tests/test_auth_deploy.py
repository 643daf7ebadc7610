"""TLS and SuperNode authentication on a real deployment on 127.0.0.1 (docker-compose.tls.yml's
command lines, server/deploy.py): certificates and keys from scripts/make_certs.py, a SuperLink with
--ssl-* and --enable-supernode-auth, registered SuperNodes that sign with their keys.

Checked: registered nodes are admitted and a run over them matches the local engine; a node with
an unregistered key and a node without a key are refused (they exit, the SuperLink logs why, they
never get work); the ServerApp's wait for nodes then names the client nobody serves; a CLI without
the CA certificate cannot talk to the SuperLink. Every process is stopped at the end."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedgc.app.clients import build_session, simulate_scenario, write_scenario_files
from fedgc.app.config import parse_config
from fedgc.app.runner import EngineOptions, run_batch
from fedgc.errors import FedGCError
from fedgc.protocol.transport import LocalTransport
from server.app import node_overrides
from server.engine import DeployedEngine
from server.local_deployment import LocalDeployment

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore")
CLIENTS = ("client0", "client1", "client2")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    cmd = [sys.executable, str(ROOT / "scripts" / "make_certs.py"), "--out", str(out), "--clients", *CLIENTS]
    subprocess.run(cmd, check=True, capture_output=True)
    # a second run must not replace keys that may already be registered somewhere
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "already exist" in again.stderr
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    return out


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Three clients' files (given models); the run config for all three and for client0 + client1."""
    raw = {
        "name": "auth",
        "seed": 4,
        "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 5, "n_steps": 300, "edge_density": 0.5},
        "server": {"max_rounds": 4, "tol": 1e-9},
        "evaluation": {"oracle": False},
    }
    cfg = parse_config(raw)
    files = write_scenario_files(cfg, simulate_scenario(cfg), tmp_path_factory.mktemp("auth") / "clients")
    three = replace(files, engine="flower", synthetic=None)
    two = replace(three, clients=three.clients[:2])
    return three, two


@pytest.fixture(scope="module")
def deployment(certs, scenario, tmp_path_factory):
    """client0 and client1 registered and running; client2's key exists but is not registered."""
    three, _ = scenario
    nodes = [node_overrides(three)[i] for i in range(2)]
    dep = LocalDeployment(nodes, tmp_path_factory.mktemp("work"), certs=certs, supernode_auth=True,
                          registered=["client0", "client1"])  # fmt: skip
    with dep:
        yield dep
    assert all(p.poll() is not None for p in dep.procs.values()), "a deployment process outlived the test"


def _exit(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.args} was not refused within {timeout:g} s")


def test_registered_nodes_complete_a_run_over_tls(deployment, scenario, tmp_path):
    _, two = scenario
    assert set(deployment.node_ids) == {"client0", "client1"}
    options = EngineOptions(superlink=deployment.address, root_certificates=deployment.root_certificates)
    result = DeployedEngine(wait_timeout=30.0)(two, out_dir=tmp_path, options=options, on_round=None, resume=False)
    sessions = [build_session(s, two.client, seed=two.seed + i) for i, s in enumerate(two.clients)]
    local = run_batch(two, LocalTransport(sessions))
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert result.fit.rounds == local.fit.rounds
    assert (tmp_path / "result.json").is_file()


@pytest.mark.parametrize("key", ["unregistered", "none"])
def test_unregistered_or_keyless_node_is_refused(deployment, scenario, key):
    three, _ = scenario
    name = f"intruder-{key}"
    auth_key = deployment.auth_key("client2") if key == "unregistered" else None  # a valid key pair, never registered
    deployment.start_supernode(name, node_overrides(three)[2], auth_key=auth_key)
    assert _exit(deployment.procs[name]) != 0
    log = deployment.logs(name)
    assert "Failed to initialize the connection to the SuperLink" in log
    if key == "unregistered":
        assert "Failed to activate SuperNode" in log
        assert "No SuperNode found with the given public key" in deployment.logs("superlink")
    else:
        assert "All SuperNodes must be registered" in log
        assert '/v1/fleet/register-node HTTP/1.1" 412' in deployment.logs("superlink")


def test_wait_for_nodes_names_the_refused_client(deployment, scenario, tmp_path):
    three, _ = scenario
    t0 = time.monotonic()
    with pytest.raises(FedGCError) as info:
        options = EngineOptions(superlink=deployment.address, root_certificates=deployment.root_certificates)
        DeployedEngine(wait_timeout=2.0)(three, out_dir=tmp_path, options=options, on_round=None, resume=False)
    message = str(info.value)
    assert "waited 2 s for 3 SuperNodes, 2 connected: no SuperNode serves client(s) 'client2'" in message, message
    for name in ("client0", "client1"):
        assert f"'{name}' (node {deployment.node_ids[name]})" in message
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "result.json").exists()


def test_cli_refuses_a_wrong_or_missing_ca_and_keeps_earlier_files(deployment, scenario, tmp_path, capsys):
    import yaml

    from fedgc.app.checkpoint import CHECKPOINT_JSON
    from fedgc.app.config import to_plain
    from fedgc.cli import main

    _, two = scenario
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(to_plain(two)))
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT_JSON).write_text('{"kept": "from an earlier run"}')
    other = tmp_path / "other-ca"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_certs.py"), "--out", str(other), "--clients", "x"],
                   check=True, capture_output=True)  # fmt: skip
    base = [
        "run",
        str(config),
        "--engine",
        "flower",
        "--superlink",
        deployment.address,
        "--out",
        str(out),
        "--quiet",
        "--overwrite",
    ]  # the folder holds an earlier run's file: replaced only by a run that succeeds
    cases = [
        ([], "a SuperLink with TLS needs --root-certificates"),
        (["--root-certificates", str(other / "ca.crt")], f"is its TLS certificate signed by {other / 'ca.crt'}"),
        (["--root-certificates", str(tmp_path / "nowhere.crt")], "nowhere.crt: no such file"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_JSON] and sorted(tmp_path.iterdir()) == sorted(
        tmp_path / name for name in ("other-ca", "out", "run.yaml")
    )  # and no staging folder left beside it
    assert (out / CHECKPOINT_JSON).read_text() == '{"kept": "from an earlier run"}'
