"""Checkpoint and resume: a run interrupted after any round and resumed reaches the uninterrupted result.

In-process runs are interrupted by an on_round hook that raises (the checkpoint of the previous round
is then the last one on disk); the CLI run is killed for real (SIGKILL, fedgc.app.checkpoint.KILL_ENV)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.app.checkpoint import CHECKPOINT_FILE, CHECKPOINT_JSON, KILL_ENV, CheckpointError, load_checkpoint
from fedgc.app.clients import simulate_scenario, write_scenario_files
from fedgc.app.config import EvaluationSettings, PrivacySettings, RunConfig
from fedgc.app.runner import run_local
from fedgc.cli import main
from fedgc.data.synthetic import SystemSpec
from fedgc.protocol.settings import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore")


class Interrupt(Exception):
    """Stands in for a crash in the middle of a round."""


def small_cfg(**server) -> RunConfig:
    """Plain rounds unless server says otherwise: at tol 1e-12 every one of the 8 rounds runs."""
    spec = SystemSpec(n_clients=4, state_dims=2, obs_dims=6, edge_density=0.4, n_steps=600)
    server = {"max_rounds": 8, "tol": 1e-12, "acceleration": "none", **server}
    return RunConfig(
        name="ckpt", seed=5, synthetic=spec, server=ServerConfig(**server), evaluation=EvaluationSettings(oracle=False)
    )


def crash_after(k: int):
    """on_round hook: raises in round k + 1, before its checkpoint: round k is the last one saved."""

    def hook(record) -> None:
        if record.round == k + 1:
            raise Interrupt(f"crash in round {k + 1}")

    return hook


def interrupted_then_resumed(mode: str, cfg, out: Path, k: int):
    with pytest.raises(Interrupt):
        run_local(cfg, mode=mode, on_round=crash_after(k), out_dir=out)
    assert load_checkpoint(out).state.round == k
    return run_local(cfg, mode=mode, out_dir=out, resume=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = small_cfg()
    return cfg, run_local(cfg, mode="simulate", out_dir=tmp_path_factory.mktemp("full"))


def test_resume_at_a_random_round_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    cfg, full = uninterrupted
    assert full.fit.rounds == 8  # tol 1e-12: every round runs, so every k below is mid-run
    k = int(np.random.default_rng(2024).integers(1, full.fit.rounds))
    resumed = interrupted_then_resumed("simulate", cfg, tmp_path, k)
    np.testing.assert_allclose(resumed.fit.A_s, full.fit.A_s, rtol=0, atol=1e-9)
    assert resumed.fit.history == full.fit.history and resumed.fit.resumed_from == k
    np.testing.assert_array_equal(resumed.fit.gc.edges, full.fit.gc.edges)
    np.testing.assert_allclose(resumed.fit.gc.pvalue, full.fit.gc.pvalue, rtol=1e-9, equal_nan=True)
    saved = load_checkpoint(tmp_path)
    assert saved.state.round == 8 and saved.state.finished
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    meta = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    assert meta["round"] == 8 and meta["version"] == 1 and len(meta["history"]) == 8


def test_accelerated_run_resumed_after_any_round_matches_the_uninterrupted_run(tmp_path):
    """server.acceleration keeps a snapshot (after round 1) and then the response models and a predicted A_s
    and states (after round 2) in the checkpoint: resuming from either gives the uninterrupted run."""
    cfg = small_cfg(acceleration="secant")
    full = run_local(cfg, mode="simulate", out_dir=tmp_path / "full")
    assert 3 <= full.fit.rounds < 8 and full.fit.converged
    for k in range(1, full.fit.rounds):
        saved = None
        resumed = interrupted_then_resumed("simulate", cfg, tmp_path / f"cut{k}", k)
        assert resumed.fit.history == full.fit.history and resumed.fit.resumed_from == k
        np.testing.assert_array_equal(resumed.fit.A_s, full.fit.A_s)
        np.testing.assert_array_equal(resumed.fit.gc.pvalue, full.fit.gc.pvalue)
    with pytest.raises(Interrupt):
        run_local(cfg, mode="simulate", on_round=crash_after(2), out_dir=tmp_path / "look")
    saved = load_checkpoint(tmp_path / "look").state.secant
    assert saved is not None and saved.status == "ready" and saved.predicted
    assert all(m is not None and m.residual < 1e-8 for m in saved.models)  # exact linear responses


def test_resume_of_a_finished_checkpoint_recomputes_the_same_result(uninterrupted, tmp_path):
    cfg, full = uninterrupted
    run_local(cfg, mode="simulate", out_dir=tmp_path)
    again = run_local(cfg, mode="simulate", out_dir=tmp_path, resume=True)
    assert again.fit.resumed_from == 8 and again.communication["exchanges"] == 0
    np.testing.assert_array_equal(again.fit.A_s, full.fit.A_s)


def test_private_run_resumed_spends_the_same_epsilon(tmp_path):
    """Augmentation noise makes every round a release and theta client state: both must survive."""
    # A private simulated run resumes only with reproducible noise (its clients have no ledger to keep their
    # noise seed in); test_privacy covers the ledger of clients with data files.
    privacy = PrivacySettings(epsilon=20.0, delta=1e-5, clip=7.0, augmentation_noise=True, reproducible_noise=True)
    cfg = replace(small_cfg(max_rounds=6), privacy=privacy)
    full = run_local(cfg, mode="simulate", out_dir=tmp_path / "full")
    k = int(np.random.default_rng(7).integers(2, 6))
    resumed = interrupted_then_resumed("simulate", cfg, tmp_path / "resumed", k)
    eps = lambda r: r.privacy["per_client"]["client0"]["whole_run"]
    assert eps(resumed) == eps(full) and eps(full)["releases"] == 1 + (6 - 1)
    assert resumed.privacy["server_noise_std_per_round"] == full.privacy["server_noise_std_per_round"]
    np.testing.assert_allclose(resumed.fit.A_s, full.fit.A_s, rtol=0, atol=1e-9)
    record = load_checkpoint(tmp_path / "full").privacy
    assert record["server_releases"] == 5 and record["epsilon_spent"] == pytest.approx(eps(full)["epsilon"])


def test_fedgc_run_resumes_from_client_files(tmp_path):
    cfg = small_cfg(max_rounds=6)
    files_cfg = replace(write_scenario_files(cfg, simulate_scenario(cfg), tmp_path / "clients"), synthetic=None)
    full = run_local(files_cfg, mode="run", out_dir=tmp_path / "full")
    resumed = interrupted_then_resumed("run", files_cfg, tmp_path / "resumed", 3)
    np.testing.assert_allclose(resumed.fit.A_s, full.fit.A_s, rtol=0, atol=1e-9)


def test_resume_refuses_another_config_or_changed_files(uninterrupted, tmp_path):
    cfg, _ = uninterrupted
    with pytest.raises(Interrupt):
        run_local(cfg, mode="simulate", on_round=crash_after(2), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="different config"):
        run_local(replace(cfg, seed=6), mode="simulate", out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="different config"):
        run_local(replace(cfg, server=replace(cfg.server, penalty=0.1)), mode="simulate", out_dir=tmp_path, resume=True)
    # what happens after a dropout is not part of the fingerprint: a stopped run may go on with `continue`
    run_local(
        replace(cfg, server=replace(cfg.server, on_dropout="continue")), mode="simulate", out_dir=tmp_path, resume=True
    )

    files_cfg = replace(write_scenario_files(cfg, simulate_scenario(cfg), tmp_path / "clients"), synthetic=None)
    with pytest.raises(Interrupt):
        run_local(files_cfg, mode="run", on_round=crash_after(1), out_dir=tmp_path / "run")
    csv = files_cfg.clients[1].data
    csv.write_text(csv.read_text().replace("\n1", "\n2", 1))  # one value of one client's file changed
    with pytest.raises(CheckpointError, match="different client files"):
        run_local(files_cfg, mode="run", out_dir=tmp_path / "run", resume=True)


def test_missing_torn_or_foreign_checkpoints_are_clear_errors(uninterrupted, tmp_path):
    cfg, _ = uninterrupted
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_local(cfg, mode="simulate", out_dir=tmp_path, resume=True)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)
    np.savez(tmp_path / CHECKPOINT_FILE, meta=np.asarray(json.dumps({"format": "fedgc-checkpoint", "version": 99})))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path)


def test_cli_killed_with_sigkill_resumes_to_the_same_result(tmp_path, capsys):
    """Only the killed run is a subprocess (it must die for real); the others go through the same CLI in-process."""
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "small", "seed": 5,
        "synthetic": {"n_clients": 4, "state_dims": 2, "obs_dims": 6, "edge_density": 0.4, "n_steps": 600},
        "server": {"max_rounds": 8, "tol": 1.0e-12},
        "evaluation": {"oracle": False},
    }))  # fmt: skip
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["simulate", str(scenario), "--out", str(full), "--quiet"]) == 0
    rounds = json.loads((full / "result.json").read_text())["rounds"]  # accelerated (the default): 3
    k = int(np.random.default_rng(11).integers(1, rounds))
    killed = subprocess.run(
        [sys.executable, "-m", "fedgc.cli", "simulate", str(scenario), "--out", str(cut), "--quiet"],
        env={**os.environ, "PYTHONPATH": str(ROOT), KILL_ENV: str(k)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # no cleanup ran
    assert json.loads((cut / CHECKPOINT_JSON).read_text())["round"] == k and not (cut / "result.json").exists()
    assert main(["simulate", str(scenario), "--resume", str(cut), "--quiet"]) == 0
    a, b = (json.loads((d / "result.json").read_text()) for d in (full, cut))
    np.testing.assert_allclose(np.asarray(b["A_s"]), np.asarray(a["A_s"]), rtol=0, atol=1e-9)
    assert b["resilience"]["resumed_from_round"] == k and b["history"] == a["history"]
    capsys.readouterr()
    assert main(["simulate", str(scenario), "--resume", str(cut), "--seed", "9", "--quiet"]) == 2
    assert "different config" in capsys.readouterr().err
