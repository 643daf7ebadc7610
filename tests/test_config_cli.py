"""Config parsing and the `fedgc` command line, end to end on small data, including the bad cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.cli import main
from fedgc.app.config import load_config, parse_config
from fedgc.data.csv import write_client_csv
from fedgc.errors import ConfigError
from fedgc.core.local_model import save_npz
from fedgc.data.synthetic import SystemSpec, simulate

SMALL = {
    "name": "small",
    "seed": 3,
    "synthetic": {"n_clients": 4, "state_dims": 2, "obs_dims": 8, "edge_density": 0.34, "n_steps": 1500},
    "server": {"max_rounds": 15},
}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def plant_csvs(tmp_path_factory) -> tuple[Path, list[Path], object]:
    """Four clients' CSV files from a simulated system with known edges."""
    folder = tmp_path_factory.mktemp("plant")
    data = simulate(SystemSpec(n_clients=4, state_dims=2, obs_dims=8, edge_density=0.34, n_steps=2000),
                    np.random.default_rng(11))
    paths = []
    for m, y in enumerate(data.y):
        p = folder / f"site{m}.csv"
        write_client_csv(p, y, columns=[f"sensor{j}" for j in range(y.shape[1])])
        paths.append(p)
    return folder, paths, data


def test_simulate_cli_writes_the_output_folder(tmp_path):
    cfg = write_yaml(tmp_path / "small.yaml", SMALL)
    out = tmp_path / "out"
    assert main(["simulate", str(cfg), "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["clients"] == [f"client{m}" for m in range(4)]
    assert result["dims"] == [2, 2, 2, 2]
    assert len(result["pvalue"]) == 4 and result["pvalue"][0][0] is None
    assert result["converged"] and result["rounds"] <= 15
    assert result["evaluation"]["auroc"] > 0.9
    assert result["evaluation"]["relative_error_vs_oracle"] < 0.05
    for name in ("gc_heatmap.png", "convergence.png", "report.md"):
        assert (out / name).stat().st_size > 1000


def test_seed_override_changes_the_draw_and_same_seed_repeats(tmp_path):
    cfg = write_yaml(tmp_path / "small.yaml", SMALL)
    runs = {}
    for label, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path / label
        assert main(["simulate", str(cfg), "--out", str(out), "--quiet", "--seed", seed]) == 0
        runs[label] = np.array(json.loads((out / "result.json").read_text())["A_s"])
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["c"])


def test_run_from_data_files_names_clients_after_files(plant_csvs, tmp_path):
    _, paths, data = plant_csvs
    out = tmp_path / "out"
    args = ["run", *sum((["--data", str(p)] for p in paths), []), "--out", str(out), "--quiet"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["clients"] == ["site0", "site1", "site2", "site3"]
    assert result["dims"] == [2, 2, 2, 2]  # chosen from the data by parallel analysis
    edges = np.array(result["edges"])
    truth = data.system.edges
    assert (edges & truth).sum() >= truth.sum() - 1


def test_run_config_with_given_models_matches_in_memory_truth(plant_csvs, tmp_path):
    folder, paths, data = plant_csvs
    clients = []
    for m, p in enumerate(paths):
        model = tmp_path / f"site{m}.npz"
        save_npz(model, data.system.local_model(m))
        clients.append({"name": f"site{m}", "data": str(p), "model": model.name, "timestamp_column": "none"})
    cfg = write_yaml(tmp_path / "plant.yaml", {"name": "plant", "clients": clients})
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert np.array(result["edges"]).sum() >= 1
    assert result["evaluation"]["relative_error_vs_oracle"] < 0.05


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="red"), "unknown key(s) ['colour']"),
        (lambda c: c["server"].update(rull="gd"), "server: unknown key(s) ['rull']"),
        (lambda c: c["server"].update(rule="adam"), "server.rule must be 'newton' or 'gd'"),
        (lambda c: c["server"].update(tol=-1), "server.tol must be > 0"),
        (lambda c: c["server"].update(max_rounds=0), "max_rounds must be a positive integer"),
        (lambda c: c["synthetic"].update(edge_density=2), "edge_density must lie in [0, 1]"),
        (lambda c: c["synthetic"].update(obs_dims=1), "more sensors than states"),
        (lambda c: c.update(engine="spark"), "engine must be one of"),
        (lambda c: c.update(seed="abc"), "seed must be an integer"),
        (lambda c: c.update(local_models="guess"), "local_models must be 'given' or 'identify'"),
        (lambda c: c["synthetic"].update(perturbations=[{"time": 5, "target": 0, "source": 0, "action": "on"}]),
         "outside the system"),
    ],
)
def test_config_errors_are_clear(tmp_path, mutate, message):
    raw = json.loads(json.dumps(SMALL))
    mutate(raw)
    path = write_yaml(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_yaml_scientific_notation_without_dot_is_a_number():
    cfg = parse_config({"server": {"tol": "1e-8"}})
    assert cfg.server.tol == 1e-8


def test_client_entry_errors_name_the_client(tmp_path):
    with pytest.raises(ConfigError, match=r"clients\[0\] needs 'name' and 'data'"):
        parse_config({"clients": [{"name": "feed"}]})
    with pytest.raises(ConfigError, match=r"\(feed\): state_dim must be 'auto' or a positive integer"):
        parse_config({"clients": [{"name": "feed", "data": "f.csv", "state_dim": -2}]})
    with pytest.raises(ConfigError, match="client names must be unique"):
        parse_config({"clients": [{"name": "a", "data": "1.csv"}, {"name": "a", "data": "2.csv"}]})


def test_cli_errors_exit_2_and_name_the_problem(plant_csvs, tmp_path, capsys):
    _, paths, _ = plant_csvs
    assert main(["simulate", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    assert main(["run", "--data", str(paths[0]), "--out", str(tmp_path / "o")]) == 2
    assert "at least two client files" in capsys.readouterr().err
    missing = tmp_path / "nowhere.csv"
    assert main(["run", "--data", str(paths[0]), "--data", str(missing), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "nowhere.csv" in err


def test_bad_file_of_one_client_names_it_and_keeps_earlier_results(plant_csvs, tmp_path, capsys):
    _, paths, _ = plant_csvs
    out = tmp_path / "out"
    good = ["run", "--data", str(paths[0]), "--data", str(paths[1]), "--out", str(out), "--quiet"]
    assert main(good) == 0
    before = (out / "result.json").read_bytes()
    ragged = tmp_path / "ragged.csv"
    lines = paths[2].read_text().splitlines()
    lines[5] = lines[5] + ",1.0"
    ragged.write_text("\n".join(lines) + "\n")
    assert main(["run", "--data", str(paths[0]), "--data", str(ragged), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "client 'ragged'" in err and "ragged.csv" in err and "row 6" in err
    assert (out / "result.json").read_bytes() == before


def test_model_file_with_wrong_sensor_count_names_client(plant_csvs, tmp_path, capsys):
    _, paths, data = plant_csvs
    model = tmp_path / "m.npz"
    m = data.system.local_model(0)
    save_npz(model, type(m)(A=m.A, C=m.C[:5], Q=m.Q, R=m.R[:5, :5]))
    cfg = write_yaml(tmp_path / "c.yaml", {"clients": [
        {"name": "site0", "data": str(paths[0]), "model": str(model)},
        {"name": "site1", "data": str(paths[1])},
    ]})  # fmt: skip
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "client 'site0'" in err and "5 sensors" in err and "8 columns" in err
