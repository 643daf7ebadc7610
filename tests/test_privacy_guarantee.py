"""What a private run may and may not do: regression tests for the ways the guarantee broke before, the
client's ledger and budget, events longer than one step, and the user-facing figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.app.clients import build_session, read_tables
from fedgc.app.config import ClientOptions, PrivacySettings, parse_config
from fedgc.app.privacy import client_privacy, privacy_plan
from fedgc.app.runner import run, run_local
from fedgc.cli import main
from fedgc.core.kalman import information_matrix
from fedgc.core.local_model import LocalModel, save_npz
from fedgc.data.csv import write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ConfigError, DataError
from fedgc.privacy.accounting import PrivacyAccountant
from fedgc.privacy.ledger import PrivacyBudgetError, ledger_path
from fedgc.privacy.local import ClientPrivacy, clipped_projection, privatise_window
from fedgc.privacy.sensitivity import inverse_sqrt
from fedgc.report.text import fmt

PRIVACY = {"epsilon": 10.0, "delta": 1e-5, "clip": 7.0}


@pytest.fixture(scope="module")
def plant(tmp_path_factory) -> Path:
    """Three sites' CSV files with named columns and their true models (.npz naming the columns): what a
    user brings to a private run (the models identified on other, public data)."""
    folder = tmp_path_factory.mktemp("plant")
    data = simulate(SystemSpec(n_clients=3, state_dims=2, obs_dims=6, edge_density=0.5, n_steps=1500),
                    np.random.default_rng(8))  # fmt: skip
    clients = []
    for m, y in enumerate(data.y):
        columns = [f"site{m}_s{j}" for j in range(y.shape[1])]
        write_client_csv(folder / f"site{m}.csv", y, columns=columns)
        model = data.system.local_model(m)
        save_npz(folder / f"site{m}.npz", LocalModel(model.A, model.C, model.Q, model.R, columns=tuple(columns)))
        clients.append({"name": f"site{m}", "data": f"site{m}.csv", "model": f"site{m}.npz"})
    (folder / "private.yaml").write_text(yaml.safe_dump({
        "name": "private", "clients": clients, "server": {"max_rounds": 4}, "privacy": PRIVACY,
        "evaluation": {"oracle": False},
    }))  # fmt: skip
    return folder


def _mechanism(cfg, plan, index, **kwargs):
    """Client `index`'s mechanism as the local engine builds it."""
    return client_privacy(cfg.privacy, plan, index, seed=cfg.seed, **kwargs)


def _cfg(plant: Path, **privacy):
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["privacy"] = {**raw["privacy"], **privacy}
    return parse_config(raw, base_dir=plant)


def _release(session) -> np.ndarray:
    return session.window.ytil.copy()


def _clean(folder: Path) -> None:
    for f in folder.glob("*.fedgc-privacy.json"):
        f.unlink()


# ------------------------------------------------------------------------------------ finding 1: noise


def test_noise_is_not_derived_from_the_run_seed(plant):
    """Two builds of the same client from the same data and seed release different noise, and neither is
    the noise a seed-derived Generator would draw (the attack that recovered projections to 1e-14)."""
    cfg = _cfg(plant)
    plan = privacy_plan(cfg)
    spec = cfg.clients[0]
    tables, _ = read_tables(cfg)
    first = build_session(spec, cfg.client, privacy=_mechanism(cfg, plan, 0, client=spec.name), table=tables[0])
    second = build_session(spec, cfg.client, privacy=_mechanism(cfg, plan, 0, client=spec.name), table=tables[0])
    a, b = _release(first), _release(second)
    assert not np.allclose(a, b)
    model = first.model
    v = clipped_projection(model, tables[0].values, clip=7.0, clip_space="whitened")
    kappa = 1.0 + first.release.noise_std**2
    noise = a * kappa @ inverse_sqrt(information_matrix(model.C, model.R)).T - v
    for seed in ([cfg.seed, 1, 0], cfg.seed, 0):
        guess = np.random.default_rng(seed).standard_normal(noise.shape) * first.release.noise_std
        assert np.abs(noise - guess).max() > 1.0
    assert noise.std() == pytest.approx(first.release.noise_std, rel=0.05)


def test_reproducible_noise_is_reported_as_not_private(plant, tmp_path, capsys):
    cfg = _cfg(plant, reproducible_noise=True)
    plan = privacy_plan(cfg)
    spec = cfg.clients[0]
    pair = [build_session(spec, cfg.client, privacy=_mechanism(cfg, plan, 0, client=spec.name)) for _ in range(2)]
    np.testing.assert_array_equal(_release(pair[0]), _release(pair[1]))
    path = tmp_path / "repro.yaml"
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["privacy"]["reproducible_noise"] = True
    raw["clients"] = [{**c, "data": str(plant / c["data"]), "model": str(plant / c["model"])} for c in raw["clients"]]
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "NOT PRIVATE" in capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["privacy"]["private"] is False and result["privacy"]["epsilon_guaranteed"] is False
    assert "NOT PRIVATE" in result["privacy"]["notes"]
    assert "NOT PRIVATE" in (tmp_path / "out" / "report.md").read_text()


# ------------------------------------------------------------------------------------ finding 2: cleaning


def test_private_runs_refuse_data_dependent_cleaning(plant):
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["clients"][1]["constant_columns"] = "error"
    with pytest.raises(ConfigError, match=r"clients \['site1'\] set column cleaning"):
        privacy_plan(parse_config(raw, base_dir=plant))
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["clients"][2]["model"] = "identify"
    with pytest.raises(ConfigError, match=r"clients \['site2'\] would identify"):
        privacy_plan(parse_config(raw, base_dir=plant))


def test_a_stuck_sensor_does_not_change_what_a_private_run_uses(plant, tmp_path):
    """Before: a constant column was dropped from the data, which changed the model and J and showed in
    result.json. Now the columns and the standardisation are the model file's, whatever the data."""
    y = np.loadtxt(plant / "site0.csv", delimiter=",", skiprows=1)
    columns = (plant / "site0.csv").read_text().splitlines()[0].split(",")
    stuck, changed = y.copy(), y.copy()
    stuck[:, 3] = 1.25  # a stuck sensor
    changed[:, 3] = 1.25
    changed[10, 3] = 1.5  # the same data with one cell changed
    infos = []
    for name, values in (("stuck", stuck), ("changed", changed)):
        write_client_csv(tmp_path / f"{name}.csv", values, columns=columns)
        raw = yaml.safe_load((plant / "private.yaml").read_text())
        raw["clients"][0]["data"] = str(tmp_path / f"{name}.csv")
        cfg = parse_config(raw, base_dir=plant)
        tables, summary = read_tables(cfg)
        session = build_session(cfg.clients[0], ClientOptions(), privacy=_mechanism(cfg, privacy_plan(cfg), 0))
        infos.append((tables[0].columns, session.window.J, summary["site0"]))
    assert infos[0][0] == infos[1][0] == tuple(columns)
    np.testing.assert_array_equal(infos[0][1], infos[1][1])
    assert infos[0][2].dropped_constant_columns == infos[1][2].dropped_constant_columns == []


def test_model_columns_are_taken_by_name(plant, tmp_path):
    y = np.loadtxt(plant / "site1.csv", delimiter=",", skiprows=1)
    columns = (plant / "site1.csv").read_text().splitlines()[0].split(",")
    order = [3, 0, 5, 1, 4, 2]
    write_client_csv(tmp_path / "shuffled.csv", y[:, order], columns=[columns[j] for j in order])
    cfg = _cfg(plant, reproducible_noise=True)  # the same noise on both sides: only the column order differs
    spec = cfg.clients[1]
    direct = build_session(spec, cfg.client, privacy=_mechanism(cfg, privacy_plan(cfg), 1))
    shuffled = build_session(replace(spec, data=tmp_path / "shuffled.csv"), cfg.client,
                             privacy=_mechanism(cfg, privacy_plan(cfg), 1))  # fmt: skip
    np.testing.assert_array_equal(direct.window.ytil, shuffled.window.ytil)
    write_client_csv(tmp_path / "missing.csv", y[:, :5], columns=columns[:5])
    with pytest.raises(DataError, match=r"lacks the model's column\(s\) 'site1_s5'"):
        build_session(replace(spec, data=tmp_path / "missing.csv"), cfg.client)


# ------------------------------------------------------------------------------------ finding 3: oracle


def test_a_model_identified_on_the_protected_file_is_refused(plant, tmp_path):
    """`fedgc identify` records the sha256 of the data it identified on; a private run on that same data
    refuses the model (it would carry the data outside the release), one identified on other data runs."""
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    history = tmp_path / "history.csv"
    data = simulate(SystemSpec(n_clients=2, state_dims=2, obs_dims=6, n_steps=1500), np.random.default_rng(3))
    write_client_csv(history, data.y[0], columns=[f"site0_s{j}" for j in range(6)])
    for source, refused in ((plant / "site0.csv", True), (history, False)):
        model = tmp_path / f"site0_{source.stem}.npz"
        assert (
            main(["identify", "--data", str(source), "--name", "site0", "--state-dim", "2", "--out", str(model)]) == 0
        )
        raw["clients"][0]["model"] = str(model)
        cfg = parse_config(raw, base_dir=plant)
        if refused:
            with pytest.raises(
                ConfigError, match=r"client 'site0': model file .* was identified on .*site0.csv itself"
            ):
                run(cfg, mode="run", out_dir=tmp_path / "refused")
        else:
            assert run(cfg, mode="run", out_dir=tmp_path / "ok").fit.gc.pvalue.shape == (3, 3)
        _clean(plant)


def test_private_fedgc_run_refuses_the_oracle(plant, tmp_path):
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["evaluation"] = {"oracle": True}
    with pytest.raises(ConfigError, match="oracle pools every client's raw data"):
        run(parse_config(raw, base_dir=plant), mode="run", out_dir=tmp_path)


def test_private_simulation_marks_its_oracle_as_outside_the_guarantee(tmp_path):
    raw = {"name": "s", "seed": 2, "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 800},
           "server": {"max_rounds": 3}, "privacy": PRIVACY, "evaluation": {"oracle": True}}  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["simulate", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["evaluation"]["oracle_outside_privacy_guarantee"] is True
    assert "outside the privacy guarantee" in (tmp_path / "out" / "report.md").read_text()


def test_a_private_run_with_the_default_clip_writes_its_whole_report(tmp_path):
    """clip: auto (the default) once crashed the Markdown report after result.json was written and the
    spend recorded: the run-wide clip is the word 'auto', each client's own clip is in its row."""
    privacy = {k: v for k, v in PRIVACY.items() if k != "clip"}
    raw = {"name": "s", "seed": 2, "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 800},
           "server": {"max_rounds": 2}, "privacy": privacy}  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["simulate", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["privacy"]["clip"] == "auto"
    clips = {name: c["clip"] for name, c in result["privacy"]["per_client"].items()}
    assert len(clips) == 3 and all(isinstance(c, float) and c > 0 for c in clips.values())
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Clip norm c = auto" in report
    for c in clips.values():
        assert fmt(c) in report


# ------------------------------------------------------------------------------------ finding 4: clipping


def test_extreme_values_are_clipped_safely():
    """A finite cell of 1e308 once made NaN states and dropped the client: its row is now clipped to the
    ball's edge along the direction it points, and a row with a non-finite cell is zero."""
    C = np.array([[1.0, 0.0], [0.5, 1.0], [0.2, -0.3]])
    model = LocalModel(A=0.5 * np.eye(2), C=C, Q=np.eye(2), R=np.eye(3), mean=np.array([1.0, 2.0, 3.0]),
                       scale=np.array([0.5, 2.0, 1.0]))  # fmt: skip
    raw = np.ones((6, 3))
    raw[1, 0] = 1e308
    raw[2, 1] = -1.7e308
    raw[3, 2] = np.inf
    raw[4] = [1e300, 1e300, -1e300]
    v = clipped_projection(model, raw, clip=3.0, clip_space="whitened")
    norms = np.linalg.norm(v, axis=1)
    assert (
        np.isfinite(v).all() and norms[[1, 2, 4]] == pytest.approx(3.0) and norms[3] == 0.0 and norms[0] <= 3.0 + 1e-12
    )
    # measurement space: ||y_t|| <= c before projecting, so ||v_t|| <= c ||J^{-1/2} C^T R^{-1}||_2
    bound = 3.0 * np.linalg.norm(inverse_sqrt(information_matrix(C, model.R)) @ np.linalg.solve(model.R, C).T, 2)
    v = clipped_projection(model, raw, clip=3.0, clip_space="measurement")
    norms = np.linalg.norm(v, axis=1)
    assert np.isfinite(v).all() and (norms <= bound * (1 + 1e-12)).all() and norms[3] == 0.0 and norms[1] > 0
    pw = privatise_window(model, raw, ClientPrivacy(1.0, 3.0), client="glitchy")
    assert np.isfinite(pw.window.ytil).all()


def test_private_clients_refuse_missing_cells_when_their_data_is_loaded(plant, tmp_path):
    y = np.loadtxt(plant / "site2.csv", delimiter=",", skiprows=1)
    y[7, 2] = np.nan
    columns = (plant / "site2.csv").read_text().splitlines()[0].split(",")
    write_client_csv(tmp_path / "gap.csv", y, columns=columns)
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["clients"][2]["data"] = str(tmp_path / "gap.csv")
    with pytest.raises(DataError, match=r"client 'site2'.*gap.csv.*1 missing cell"):
        run_local(parse_config(raw, base_dir=plant), mode="run", out_dir=None)


def test_a_huge_value_in_a_private_csv_is_read_and_clipped(plant, tmp_path):
    y = np.loadtxt(plant / "site0.csv", delimiter=",", skiprows=1)
    y[5, 1] = 1e308
    columns = (plant / "site0.csv").read_text().splitlines()[0].split(",")
    write_client_csv(tmp_path / "glitch.csv", y, columns=columns)
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["clients"][0]["data"] = str(tmp_path / "glitch.csv")
    result = run_local(parse_config(raw, base_dir=plant), mode="run", out_dir=None)
    assert np.isfinite(result.fit.A_s).all() and not result.fit.dropouts


# ------------------------------------------------------------------------------------ ledger and budget


def test_ledger_records_spends_and_refuses_past_the_budget(plant, tmp_path):
    _clean(plant)
    one = run_local(_cfg(plant, budget=15.0), mode="run", out_dir=tmp_path / "one")
    spent = one.privacy["per_client"]["site0"]["whole_run"]["epsilon"]
    book = json.loads(ledger_path(plant / "site0.csv").read_text())
    (entries,) = book["files"].values()
    assert len(entries) == 1 and entries[0]["epsilon"] == pytest.approx(spent)
    assert ledger_path(plant / "site0.csv").stat().st_mode & 0o777 == 0o600
    with pytest.raises(
        PrivacyBudgetError, match=r"client 'site0'.*over its budget of 15.*1 earlier run\(s\) spent 9\.9"
    ):
        run_local(_cfg(plant, budget=15.0, max_noise_multiplier=90.0), mode="run", out_dir=tmp_path / "two")
    _clean(plant)


def test_a_resumed_private_run_redraws_the_same_release(plant, tmp_path):
    """The client keeps its noise seed in its ledger: resuming re-privatises to the same bits (no second
    release, no second spend)."""
    cfg = _cfg(plant, budget=12.0)

    class Crash(Exception):
        pass

    def crash(record):
        if record.round == 3:
            raise Crash

    # The noise is fresh in every run (never from the seed): in ~5 % of draws the shrinkage sets every block
    # to 0 in round 1, which then is the fixed point (change 0, converged) and round 3 never comes.
    for attempt in range(6):
        _clean(plant)
        out = tmp_path / f"attempt{attempt}"
        try:
            run_local(cfg, mode="run", out_dir=out, on_round=crash)
        except Crash:
            break
    else:
        pytest.fail("no run reached round 3 in 6 draws of the noise")
    resumed = run_local(cfg, mode="run", out_dir=out, resume=True)
    (entries,) = json.loads(ledger_path(plant / "site1.csv").read_text())["files"].values()
    assert len(entries) == 1 and resumed.fit.resumed_from == 2
    _clean(plant)


# ------------------------------------------------------------------------------------ events


def test_event_steps_scale_the_noise_and_both_epsilons_are_reported(plant):
    _clean(plant)
    one = run_local(_cfg(plant), mode="run", out_dir=None)
    four = run_local(_cfg(plant, event_steps=4), mode="run", out_dir=None)
    s1 = one.privacy["per_client"]["site0"]
    s4 = four.privacy["per_client"]["site0"]
    assert s4["client_noise_std"] == pytest.approx(2.0 * s1["client_noise_std"], rel=1e-9)  # sqrt(4)
    assert s4["whole_run"]["epsilon"] == pytest.approx(s1["whole_run"]["epsilon"], rel=1e-6)
    assert s4["one_step"]["epsilon"] < 0.6 * s4["whole_run"]["epsilon"]
    assert "up to 4 consecutive time steps" in four.privacy["neighbouring_relation"]
    acc = PrivacyAccountant(10.0, 1e-5)
    sigma = four.privacy["noise_multiplier"]["client_to_server"]
    assert s4["one_step"]["epsilon"] == pytest.approx(acc.spent(noise_multiplier=2 * sigma, steps=1), rel=1e-9)
    _clean(plant)


def test_auto_clip_comes_from_the_model_and_is_reported(plant):
    _clean(plant)
    result = run_local(_cfg(plant, clip="auto"), mode="run", out_dir=None)
    clips = [c["clip"] for c in result.privacy["per_client"].values()]
    assert all(np.isfinite(clips)) and min(clips) > 1.0 and len(set(clips)) == 3
    _clean(plant)


def test_privacy_settings_defaults():
    p = PrivacySettings(epsilon=1.0, delta=1e-5)
    assert p.clip == "auto" and p.event_steps == 1 and p.budget is None and not p.reproducible_noise


# ------------------------------------------------------------------------------------ models for private runs


def test_identify_makes_the_model_file_a_private_run_reads(plant, tmp_path, capsys):
    """`fedgc identify --data history.csv --out model.npz` on data the user may spend; the private run then
    reads its columns by name, and the config form (identify_on) does the same inside the run."""
    _clean(plant)
    data = simulate(
        SystemSpec(n_clients=3, state_dims=2, obs_dims=6, edge_density=0.5, n_steps=1500), np.random.default_rng(9)
    )  # fmt: skip  (other data from a similar plant: the "history")
    columns = (plant / "site0.csv").read_text().splitlines()[0].split(",")
    write_client_csv(tmp_path / "history0.csv", data.y[0], columns=columns)
    assert main(["identify", "--data", str(tmp_path / "history0.csv"), "--out", str(tmp_path / "m0.npz")]) == 0
    assert "-> " in capsys.readouterr().err
    with np.load(tmp_path / "m0.npz") as f:
        assert list(f["columns"]) == columns
    raw = yaml.safe_load((plant / "private.yaml").read_text())
    raw["clients"][0]["model"] = str(tmp_path / "m0.npz")
    result = run_local(parse_config(raw, base_dir=plant), mode="run", out_dir=None)
    assert np.isfinite(result.fit.A_s).all()
    raw["clients"][0].pop("model")
    raw["clients"][0]["identify_on"] = str(tmp_path / "history0.csv")
    via_config = run_local(parse_config(raw, base_dir=plant), mode="run", out_dir=None)
    assert via_config.fit.gc.dims == result.fit.gc.dims
    assert main(["identify", "--data", str(tmp_path / "history0.csv"), "--out", str(tmp_path / "m0.npz")]) == 2
    assert "exists" in capsys.readouterr().err
    _clean(plant)
