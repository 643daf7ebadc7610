"""Config parsing and the `fedgc` command line, end to end on small data, including the bad cases."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import operator
import threading
import typing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.app import checkpoint
from fedgc.app.checkpoint import config_fingerprint
from fedgc.app.config import (
    ClientSpec,
    EvaluationSettings,
    RunConfig,
    config_reference,
    load_config,
    parse_config,
    to_plain,
)
from fedgc.app.config_schema import codec_for
from fedgc.cli import main
from fedgc.core.local_model import save_npz
from fedgc.data.csv import write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
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
    data = simulate(
        SystemSpec(n_clients=4, state_dims=2, obs_dims=8, edge_density=0.34, n_steps=2000), np.random.default_rng(11)
    )
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
    args = [
        "run",
        *functools.reduce(operator.iadd, (["--data", str(p)] for p in paths), []),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["clients"] == ["site0", "site1", "site2", "site3"]
    assert result["dims"] == [2, 2, 2, 2]  # chosen from the data by parallel analysis
    edges = np.array(result["edges"])
    truth = data.system.edges
    assert (edges & truth).sum() >= truth.sum() - 1


def test_run_config_with_given_models_matches_in_memory_truth(plant_csvs, tmp_path):
    _folder, paths, data = plant_csvs
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
    # `fedgc run` pools no raw data by default: no oracle, and nothing in result.json pretends there was one
    assert result["evaluation"]["relative_error_vs_oracle"] is None and result["evaluation"]["oracle_rounds"] is None
    assert "oracle_s" not in result["timings"] and "vs oracle" not in (out / "report.md").read_text()
    asked = write_yaml(tmp_path / "oracle.yaml", {"name": "plant", "clients": clients, "evaluation": {"oracle": True}})
    assert main(["run", str(asked), "--out", str(tmp_path / "with_oracle"), "--quiet"]) == 0
    result = json.loads((tmp_path / "with_oracle" / "result.json").read_text())
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
        (
            lambda c: c["synthetic"].update(perturbations=[{"time": 5, "target": 0, "source": 0, "action": "on"}]),
            "outside the system",
        ),
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
    listing = sorted(p.name for p in out.iterdir())
    bad = ["run", "--data", str(paths[0]), "--data", str(ragged), "--out", str(out), "--quiet"]
    assert main(bad) == 2  # refused: the folder holds a result
    assert "is not empty" in capsys.readouterr().err
    assert main([*bad, "--overwrite"]) == 2  # the failed run leaves the folder as it was, no staging folder behind
    err = capsys.readouterr().err
    assert "client 'ragged'" in err and "ragged.csv" in err and "row 6" in err
    assert (out / "result.json").read_bytes() == before and sorted(p.name for p in out.iterdir()) == listing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ragged.csv"]


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


# ---------------------------------------------------------------------------------------------- the typed model


@pytest.mark.parametrize("raw, message", [
    ({"server": {"tol": True}}, "server.tol must be a finite number, got True"),  # a bool is never a number
    ({"server": {"max_rounds": 5.0}}, "server.max_rounds must be an integer, got 5.0"),
    ({"seed": "5"}, "seed must be an integer, got '5'"),  # nor a string one
    ({"streaming": {"reset_on_alert": 1}}, "streaming.reset_on_alert must be true or false, got 1"),
    ({"synthetic": {"n_clients": 3, "snr": ".inf"}}, "synthetic.snr must be a finite number, got '.inf'"),
    ({"source": "elsewhere.yaml"}, "unknown key(s) ['source']"),  # set by load_config, never by the file
    ({"clients": [{"name": "a", "data": ""}]}, "clients[0] (a): data must be a file path, got ''"),
    ({"server": {"rule": "adam"}, "streaming": 5}, "2 problems:\n  server.rule must be 'newton' or 'gd', got 'adam'\n  streaming"),
])  # fmt: skip
def test_config_types_are_strict_and_every_problem_is_named(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith("config: ") and message in str(info.value)


def test_yaml_spellings_of_unset_settings():
    cfg = parse_config({
        "server": None, "privacy": "off", "streaming": "on", "evaluation": {"oracle": False},
        "clients": [{"name": 2024, "data": "a.csv", "state_dim": "auto", "timestamp_column": "none"}],
    })  # fmt: skip
    assert cfg.server == RunConfig().server and cfg.privacy is None and cfg.streaming.step == 500
    assert cfg.evaluation == EvaluationSettings(oracle=False)
    spec = cfg.clients[0]
    assert spec.name == "2024" and spec.state_dim is None and spec.timestamp_column is None
    for off in (False, None, "off"):
        assert parse_config({"privacy": off, "streaming": off}).streaming is None
    assert parse_config({"streaming": True}).streaming is not None
    assert math.isinf(parse_config({"privacy": {"epsilon": math.inf, "delta": "1e-5", "clip": 1}}).privacy.epsilon)


def _shipped(path: Path) -> RunConfig:
    raw = yaml.safe_load(path.read_text())
    raw.pop("sweep", None)  # privacy_sweep.yaml's own section, read by simulations/privacy_sweep.py
    return parse_config(raw, base_dir=path.parent, source=path)


@pytest.mark.parametrize("scenario", sorted((REPO / "simulations").glob("*.yaml")), ids=lambda p: p.stem)
def test_plain_mapping_of_a_shipped_scenario_reads_back(scenario):
    cfg = _shipped(scenario)
    plain = to_plain(cfg)
    back = parse_config(json.loads(json.dumps(plain)))  # as the deployed engine's run config travels
    assert to_plain(back) == plain and back.source is None
    tep = cfg.tep and replace(cfg.tep, path=cfg.tep.path and cfg.tep.path.resolve())  # '../data/tep' written absolute
    assert back == replace(cfg, source=None, tep=tep)
    assert to_plain(cfg.server) == dataclasses.asdict(cfg.server)  # result.json's "server", as before


def test_plain_mapping_of_a_clients_config_reads_back(tmp_path):
    base = tmp_path.resolve()
    (base / "models").mkdir()
    path = write_yaml(base / "plant.yaml", {"name": "plant", "align": "timestamp", "clients": [
        {"name": "feed", "data": "feed.csv", "timestamp_column": 0, "model": "models/feed.npz", "max_missing": 0.2},
        {"name": "reactor", "data": str(base / "reactor.csv"), "timestamp_column": "none", "state_dim": 3,
         "constant_columns": "error", "held_values": "keep"},
        {"name": "strip", "data": "strip.csv", "timestamp_column": "time", "explained_variance": 0.9},
    ], "server": {"rule": "gd", "learning_rate": 1e-3, "on_dropout": "continue"}, "client": {"learn_theta": True},
        "privacy": {"epsilon": math.inf, "delta": 1e-5, "clip": 5}})  # fmt: skip
    cfg = load_config(path)
    assert cfg.clients[0].data == base / "feed.csv" and cfg.clients[0].model == base / "models" / "feed.npz"
    plain = to_plain(cfg)
    assert plain["clients"][1]["timestamp_column"] == "none" and plain["privacy"]["epsilon"] == math.inf
    back = parse_config(json.loads(json.dumps(plain)), base_dir=Path("/elsewhere"))  # paths are absolute
    assert back == replace(cfg, source=None)


def test_client_spec_and_node_config_map_one_to_one(tmp_path):
    spec = ClientSpec("feed", tmp_path / "feed.csv", 0, tmp_path / "feed.npz", state_dim=3, constant_columns="error",
                      held_values="keep", max_missing=0.2)  # fmt: skip
    node = spec.to_node_config()
    assert node == {
        "client-name": "feed", "data-path": str(tmp_path.resolve() / "feed.csv"), "timestamp-column": 0,
        "model-path": str(tmp_path.resolve() / "feed.npz"), "state-dim": 3, "constant-columns": "error",
        "held-values": "keep", "max-missing": 0.2,
    }  # fmt: skip
    assert ClientSpec.from_node_config(node) == replace(spec, data=spec.data.resolve(), model=spec.model.resolve())
    assert ClientSpec.from_node_config({"data-path": "/data/site.csv"}) == ClientSpec("site", Path("/data/site.csv"))
    unset = ClientSpec("x", Path("/d/x.csv"), None).to_node_config()
    assert unset["timestamp-column"] == "none" and "state-dim" not in unset and unset["model-path"] == "identify"
    with pytest.raises(ConfigError, match=r"node config: unknown key\(s\) \['colour'\]; allowed: \['client-name'"):
        ClientSpec.from_node_config({"data-path": "a.csv", "colour": "red"})
    with pytest.raises(ConfigError, match="node config: state-dim must be 'auto' or a positive integer, got 'three'"):
        ClientSpec.from_node_config({"data-path": "a.csv", "state-dim": "three"})
    with pytest.raises(ConfigError, match="state_dim must be 'auto' or a positive integer, got 0"):
        ClientSpec("x", Path("x.csv"), state_dim=0)  # the same invariant when built in Python


def test_fingerprint_follows_what_determines_the_messages():
    cfg = _shipped(REPO / "simulations" / "default.yaml")
    same = config_fingerprint(cfg)
    assert config_fingerprint(_shipped(REPO / "simulations" / "default.yaml")) == same
    assert config_fingerprint(parse_config(to_plain(cfg))) == same
    for unchanged in (dict(name="x"), dict(engine="flower-sim"), dict(evaluation=EvaluationSettings(oracle=False)),
                      dict(server=replace(cfg.server, on_dropout="continue"))):  # fmt: skip
        assert config_fingerprint(replace(cfg, **unchanged)) == same
    for changed in (dict(seed=1), dict(server=replace(cfg.server, tol=1e-7)),
                    dict(synthetic=replace(cfg.synthetic, n_steps=4001)), dict(align="timestamp")):  # fmt: skip
        assert config_fingerprint(replace(cfg, **changed)) != same


def _settings_keys(cls: type, prefix: str = "") -> set[str]:
    """Every key of the model by walking its dataclasses (independently of config_reference)."""
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if cls is RunConfig and f.name == "source":
            continue
        tp = hints[f.name]
        listed = typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0])
        key = f"{prefix}{f.name}{'[]' if listed else ''}"
        keys.add(key)
        inner = typing.get_args(tp)[0] if listed else tp
        for t in (inner, *typing.get_args(inner)):
            if dataclasses.is_dataclass(t):
                keys |= _settings_keys(t, key + ".")
    return keys


def test_config_reference_documents_every_key():
    lines = config_reference().splitlines()
    assert lines[0] == "| key | type | default | meaning |"
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 4 and all(cells[1:2]) and cells[3], line  # a type and a meaning for every key
        rows[cells[0].strip("`")] = cells
    assert set(rows) == _settings_keys(RunConfig) and len(rows) == len(lines) - 2
    assert rows["server.rule"][1:3] == ["'newton' or 'gd'", "newton"]
    assert rows["clients[].state_dim"][1] == "'auto' or a positive integer"
    assert rows["synthetic.n_clients"][2] == "required"


def test_parsing_a_config_reads_no_source_code(monkeypatch):
    """The fields' docstrings are read from the source for the reference only: building the run's validator
    and serialiser does not parse source files (pydantic's use_attribute_docstrings cost every run 0.1 s)."""

    def no_source(obj):
        raise AssertionError(f"source of {obj!r} read")

    monkeypatch.setattr(inspect, "getsource", no_source)
    monkeypatch.setattr(inspect, "getsourcelines", no_source)
    codec_for.cache_clear()
    try:
        cfg = parse_config(SMALL)
        assert to_plain(cfg)["synthetic"]["n_clients"] == 4
    finally:
        codec_for.cache_clear()
    with pytest.raises(AssertionError, match="source of"):
        config_reference()


def test_a_sweep_file_is_named_as_a_sweep_not_a_bad_config():
    path = Path(__file__).resolve().parents[1] / "simulations" / "privacy_sweep.yaml"
    with pytest.raises(ConfigError, match=r"is a sweep .* simulations/privacy_sweep.py"):
        load_config(path)


def test_one_data_flag_takes_several_files_and_refuses_a_config(plant_csvs, tmp_path, capsys):
    """`--data a.csv b.csv c.csv` (what a shell glob gives) is one client per file, as repeated --data are; a
    run config among the data files, or a data file where the config goes, is refused with the command to type."""
    _, paths, _ = plant_csvs
    out = tmp_path / "out"
    assert main(["run", "--data", *map(str, paths), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "result.json").read_text())["clients"] == [p.stem for p in paths]
    assert main(["run", "--data", str(paths[0]), "plant.yaml", "--out", str(tmp_path / "o2")]) == 2
    assert "plant.yaml is a run config, not a data file" in capsys.readouterr().err
    assert main(["run", str(paths[1]), "--data", str(paths[0]), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert f"{paths[1]} is a data file, not a run config" in err and f"(--data {paths[0]} {paths[1]})" in err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_docs_config_table_is_the_generated_reference():
    """docs/config.md's key table is `fedgc config-reference` verbatim (regenerate it when a key changes)."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text().splitlines()
    generated = [line for line in config_reference().splitlines() if line.startswith("|")]
    start = docs.index(generated[0])
    assert docs[start : start + len(generated)] == generated


def test_the_background_fingerprint_runs_no_pydantic(tmp_path, monkeypatch):
    """A run hashes its files on a daemon thread; the config's part (pydantic) is done before, on the
    caller's thread: CPython unwinds a daemon thread when the process exits (a bad file ends the run at
    once), and pydantic-core's compiled code on that thread aborted the process ('exception not rethrown')."""
    threads: list[str] = []
    real = checkpoint.to_plain
    monkeypatch.setattr(
        checkpoint, "to_plain", lambda cfg: threads.append(threading.current_thread().name) or real(cfg)
    )
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        write_client_csv(tmp_path / f"{name}.csv", rng.standard_normal((300, 4)), columns=["s0", "s1", "s2", "s3"])
    assert main(["run", "--data", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0  # fmt: skip
    assert threads and "fedgc-background" not in threads
