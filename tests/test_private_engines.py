"""Private runs on the Flower engines: the same guarantee and the same result as the local engine.

flower-sim with reproducible noise gives the local engine's private A_s; a deployment on 127.0.0.1
(SuperLink, SuperExec, one SuperNode and ClientApp runtime per client, server.local_deployment) runs a
private `fedgc run` whose nodes draw fresh noise and keep their ledgers beside their own data files
(the submitter's config names files it does not have), refuses a run past the budget naming the client
and its ledger, and draws new noise once the ledgers are gone. The oracle of a private `fedgc run` is
refused on every engine before anything is written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.app.clients import deployment_files, simulate_scenario, write_scenario_files
from fedgc.app.config import EvaluationSettings, PrivacySettings, load_config, parse_config
from fedgc.app.runner import EngineOptions, check_run, run, with_oracle_decided
from fedgc.cli import main
from fedgc.errors import ConfigError, FedGCError
from server.local_deployment import LocalDeployment

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore")
PRIVACY = {"epsilon": 4.0, "delta": 1e-5, "clip": 5.0}


def test_flower_sim_private_run_matches_the_local_engine(tmp_path):
    """Reproducible noise (NOT private: tests only): each simulated node derives its noise from the run seed
    exactly as the local engine's in-process client does, so A_s agrees, and so does the privacy section."""
    base = load_config(ROOT / "simulations" / "private.yaml")
    cfg = replace(
        base, synthetic=replace(base.synthetic, n_clients=4, state_dims=3, obs_dims=20, n_steps=1500),
        server=replace(base.server, max_rounds=8), evaluation=EvaluationSettings(oracle=False),
        privacy=replace(base.privacy, reproducible_noise=True),
    )  # fmt: skip
    local = run(replace(cfg, engine="local"), mode="simulate", out_dir=tmp_path / "local")
    sim = run(replace(cfg, engine="flower-sim"), mode="simulate", out_dir=tmp_path / "sim")
    np.testing.assert_allclose(sim.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert sim.fit.rounds == local.fit.rounds
    assert sim.privacy == local.privacy and sim.privacy["private"] is False
    assert "NOT PRIVATE" in sim.privacy["notes"]
    noise = [c["client_noise_std"] for c in sim.privacy["per_client"].values()]
    assert len(noise) == 4 and all(s > 0 for s in noise)


@pytest.mark.parametrize("engine", ["flower-sim", "flower"])
def test_the_oracle_is_never_computed_on_flower_engines(tmp_path, engine, capsys):
    """A private run on a Flower engine runs without the oracle by default (it would pool raw data outside
    the guarantee), and asking for it is refused before anything is read or written."""
    raw = {
        "name": "p", "engine": engine, "privacy": PRIVACY,
        "clients": [{"name": n, "data": f"{n}.csv", "model": f"{n}.npz"} for n in ("a", "b")],
    }  # fmt: skip
    decided = with_oracle_decided(parse_config(raw), mode="run")
    assert decided.evaluation.oracle is False
    check_run(decided, mode="run", resume=False)  # the default is no obstacle to a private deployed run
    asked = {**raw, "evaluation": {"oracle": True}}
    refusal = r"oracle pools every client's raw data"  # the privacy refusal, or the Flower engines'
    with pytest.raises(ConfigError, match=refusal):
        run(parse_config(asked), mode="run", out_dir=tmp_path / "out", options=EngineOptions(superlink="127.0.0.1:1"))
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(asked))
    assert main(["run", str(config), "--out", str(tmp_path / "cli"), "--superlink", "127.0.0.1:1", "--quiet"]) == 2
    assert "oracle pools every client's raw data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cli").exists()


def test_deployed_private_run_with_ledgers_on_the_nodes(tmp_path):
    """A private `fedgc run` on a loopback deployment. The submitter's config names its clients' files at
    paths it does not have: each node reads its own (its node config), privatises there with fresh noise
    and keeps its ledger beside its data file. A run past privacy.budget is refused, naming each client and
    its ledger; once the ledgers are gone the noise is new (that a rerun with its ledger redraws the same
    release is tests/test_flower_apps.py's)."""
    scenario = parse_config({
        "name": "plant", "seed": 1, "evaluation": {"oracle": False},
        "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 600, "edge_density": 0.5},
    })  # fmt: skip
    nodes = tmp_path / "nodes"
    written = write_scenario_files(scenario, simulate_scenario(scenario), nodes)  # each node's own files
    clients = [{"name": c.name, "data": f"/nowhere/{c.name}.csv", "model": f"/nowhere/{c.name}_model.npz"}
               for c in written.clients]  # fmt: skip
    cfg = parse_config({
        "name": "plant", "seed": 1, "engine": "flower", "clients": clients, "evaluation": {"oracle": False},
        "server": {"max_rounds": 5, "tol": 1e-9}, "privacy": PRIVACY,
    })  # fmt: skip
    ledgers = [nodes / f"{c.name}.csv.fedgc-privacy.json" for c in written.clients]
    with LocalDeployment([c.to_node_config() for c in written.clients], tmp_path / "work") as dep:
        options = EngineOptions(superlink=dep.address)
        first = run(cfg, mode="run", out_dir=tmp_path / "first", options=options)
        assert all(path.is_file() for path in ledgers)
        over = replace(cfg, privacy=PrivacySettings(**PRIVACY, budget=5.0))  # two runs at epsilon 4 compose to 5.9
        with pytest.raises(FedGCError) as refused:
            run(over, mode="run", out_dir=tmp_path / "over", options=options)
        for path in ledgers:
            path.unlink()
        fresh = run(cfg, mode="run", out_dir=tmp_path / "fresh", options=options)
    assert all(p.poll() is not None for p in dep.procs.values()), "a deployment process outlived the test"

    privacy = json.loads((tmp_path / "first" / "result.json").read_text())["privacy"]
    assert privacy == first.privacy and privacy["enabled"] and privacy["private"] is True
    assert set(privacy["per_client"]) == {"client0", "client1", "client2"}
    for entry in privacy["per_client"].values():
        assert 0 < entry["whole_run"]["epsilon"] <= 4.0 and entry["client_noise_std"] > 0 and entry["clip"] == 5.0
    entries = [json.loads(path.read_text())["files"] for path in ledgers]
    assert all(len(next(iter(e.values()))) == 1 for e in entries)  # one release recorded per file: the fresh run's

    message = str(refused.value)
    for name, path in zip(("client0", "client1", "client2"), ledgers, strict=True):
        assert f"client '{name}': this run would take the privacy spent on its data file" in message
        assert f"(ledger {path})" in message
    assert "over its budget of 5" in message and not (tmp_path / "over" / "fit.npz").exists()
    assert np.abs(fresh.fit.A_s - first.fit.A_s).max() > 1e-3  # fresh noise: not reproducible


def test_a_deployed_submitter_needs_only_the_config(tmp_path):
    """The submitter of a deployed run reads no client file: the clients' files are on their nodes, and
    the oracle, which would need them all in one place, is off on the Flower engines."""
    scenario = parse_config({"synthetic": {"n_clients": 2, "state_dims": 2, "obs_dims": 4, "n_steps": 200}})
    here = write_scenario_files(scenario, simulate_scenario(scenario), tmp_path / "here")
    elsewhere = replace(
        here, engine="flower", clients=tuple(replace(c, data=tmp_path / "node" / "x.csv") for c in here.clients)
    )
    decided = with_oracle_decided(elsewhere, mode="run")
    clients = deployment_files(decided, mode="run", directory=tmp_path / "b")
    assert clients.oracle_windows is None and clients.config.clients == elsewhere.clients


@pytest.mark.slow  # about three minutes on a loaded 2-core machine: four deployed runs, two stopped by a dead node
def test_deployed_resume_under_continue_goes_on_without_a_dead_node(tmp_path, monkeypatch):
    """`fedgc run --resume` with server.on_dropout: continue while a client's SuperNode is still dead: the
    client counts as dropped, by name, and the run goes on without it at once (not after --wait-timeout).
    Its node stopped (SIGTERM: the SuperLink forgets it) or killed (SIGKILL: still listed, silent until its
    heartbeats are missed). The submitter runs from a folder with the configs only: every client's data
    file is read on its node, from its node config."""
    import os
    import signal
    import threading
    import time

    from fedgc.app.checkpoint import CHECKPOINT_FILE, CHECKPOINT_JSON

    scenario = parse_config({
        "name": "plant", "seed": 2, "synthetic": {"n_clients": 4, "state_dims": 2, "obs_dims": 6, "n_steps": 600},
    })  # fmt: skip
    written = write_scenario_files(scenario, simulate_scenario(scenario), tmp_path / "nodes")
    submitter = tmp_path / "submitter"
    submitter.mkdir()
    monkeypatch.chdir(submitter)

    def config(name: str, clients: tuple[int, ...], on_dropout: str) -> str:
        raw = {
            "name": name, "engine": "flower",  # evaluation.oracle left on: the submitter has no data, so none
            "clients": [
                {"name": f"client{m}", "data": f"client{m}.csv", "model": f"client{m}_model.npz"} for m in clients
            ],
            "server": {"max_rounds": 6, "tol": 1e-300, "on_dropout": on_dropout},
        }  # fmt: skip
        path = submitter / f"{name}-{on_dropout}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path.name

    assert not list(submitter.glob("*.csv"))
    with LocalDeployment([c.to_node_config() for c in written.clients], tmp_path / "work") as dep:
        flags = ["--superlink", dep.address, "--round-timeout", "8", "--quiet"]

        def stopped_by_a_dead_node(name: str, clients: tuple[int, ...], dead: int, sig: int) -> Path:
            out = tmp_path / name
            codes: list[int] = []
            argv = ["run", config(name, clients, "stop"), "--out", str(out), *flags]
            worker = threading.Thread(target=lambda: codes.append(main(argv)))
            worker.start()
            deadline = time.monotonic() + 240
            while not (out / CHECKPOINT_FILE).is_file() and time.monotonic() < deadline and worker.is_alive():
                time.sleep(0.02)
            for proc in (f"clientapp-{dead}", f"supernode-{dead}"):
                os.killpg(dep.procs[proc].pid, sig)
                dep.procs[proc].wait(timeout=20)
            worker.join(timeout=300)
            assert codes == [2]
            assert f"'client{dead}'" in json.loads((out / CHECKPOINT_JSON).read_text())["error"]
            return out

        def resumed(name: str, clients: tuple[int, ...], out: Path) -> dict:
            assert main(["run", config(name, clients, "continue"), "--resume", str(out), *flags]) == 0
            return json.loads((out / "result.json").read_text())

        stopped = stopped_by_a_dead_node("a", (0, 1, 2), 2, signal.SIGTERM)
        gone = resumed("a", (0, 1, 2), stopped)
        killed = stopped_by_a_dead_node("b", (0, 1, 3), 3, signal.SIGKILL)
        silent = resumed("b", (0, 1, 3), killed)
    assert all(p.poll() is not None for p in dep.procs.values()), "a deployment process outlived the test"

    for result, name in ((gone, "client2"), (silent, "client3")):
        [dropout] = result["resilience"]["dropouts"]
        assert dropout["client"] == name and "no SuperNode answered its setup when the run resumed" in dropout["reason"]
        assert result["resilience"]["resumed_from_round"] >= 1 and result["rounds"] == 6
        assert result["timings"]["setup_s"] < 40.0  # not the 120 s wait for a node that will not come
        i = result["clients"].index(name)
        assert all(v is None for j, v in enumerate(result["edges"][i]) if j != i)
        assert result["evaluation"].get("oracle_rounds") is None  # the submitter had no data for it
    # killed: still listed by the SuperLink, silent; named by its client, its node id beside
    assert "silent for 8 s" in silent["resilience"]["dropouts"][0]["reason"]
