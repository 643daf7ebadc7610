"""fedgc.data.tep: the Braatz-file loader and splits (on small fake files, and on the real data when present),
the `tep:` config section, per-client CSVs, and `fedgc simulate simulations/tep.yaml` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.analysis.tep import flowsheet_comparison
from fedgc.app.config import load_config, parse_config
from fedgc.cli import main
from fedgc.data.csv import read_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.data.tep import load_tep, write_client_csvs
from fedgc.data.tep_layout import FLOWSHEET_EDGES, TEP_UNITS, VARIABLES, default_data_path, resolve_split
from fedgc.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
UNIT_SIZES = {"feed": 8, "reactor": 13, "separator": 19, "stripper": 12}


@pytest.fixture(scope="module")
def real_data() -> Path:
    folder = default_data_path()
    assert (folder / "d00_te.dat").is_file(), f"the repository's TEP copy is missing at {folder}"
    assert (folder / "LICENSE").is_file(), "the Braatz files must travel with their LICENSE"
    return folder


def _unit_data(rng: np.random.Generator, T: int) -> np.ndarray:
    """(T, 52) plant-like data: a synthetic system whose clients are the TEP units, columns in file order."""
    sizes = [len(v) for v in TEP_UNITS.values()]
    data = simulate(SystemSpec(n_clients=4, state_dims=2, obs_dims=sizes, edge_density=0.5, n_steps=T), rng)
    out = np.empty((T, len(VARIABLES)))
    index = {v: j for j, v in enumerate(VARIABLES)}
    for names, y in zip(TEP_UNITS.values(), data.y):
        out[:, [index[v] for v in names]] = y
    return out + 50.0


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory) -> Path:
    """A Braatz-like folder: d00.dat stored transposed (52 x T), d00_te and d03_te as (T, 52)."""
    folder = tmp_path_factory.mktemp("tep")
    rng = np.random.default_rng(0)
    np.savetxt(folder / "d00.dat", _unit_data(rng, 400).T, fmt="%.7e")
    np.savetxt(folder / "d00_te.dat", _unit_data(rng, 600), fmt="%.7e")
    fault = _unit_data(rng, 600)
    fault[160:, :8] += 3.0  # a step in the feed unit
    np.savetxt(folder / "d03_te.dat", fault, fmt="%.7e")
    return folder


def test_units_cover_the_52_variables_once():
    names = [v for unit in TEP_UNITS.values() for v in unit]
    assert sorted(names) == sorted(VARIABLES) and len(names) == 52
    assert {u: len(v) for u, v in TEP_UNITS.items()} == UNIT_SIZES
    assert {u for e in FLOWSHEET_EDGES for u in e} == set(TEP_UNITS)


def test_loader_on_fake_files(fake_folder):
    raw = np.loadtxt(fake_folder / "d00_te.dat")
    run = load_tep(fake_folder, run="d00_te")
    assert run.fault is None and run.fault_start is None and run.n_steps == 600
    assert {u: v.shape for u, v in run.clients.items()} == {u: (600, p) for u, p in UNIT_SIZES.items()}
    assert run.columns["reactor"][:2] == ["XMEAS(5)", "XMEAS(6)"] and run.columns["reactor"][-1] == "XMV(10)"
    np.testing.assert_array_equal(run.clients["reactor"][:, 0], raw[:, 4])  # XMEAS(5) is file column 5
    np.testing.assert_array_equal(run.clients["separator"][:, -1], raw[:, 41 + 10])  # XMV(11) is column 52
    train = load_tep(fake_folder, run="d00")  # stored transposed
    assert train.n_steps == 400
    np.testing.assert_array_equal(train.clients["feed"][:, 0], np.loadtxt(fake_folder / "d00.dat")[0])
    fault = load_tep(fake_folder, run="d03_te")
    assert fault.fault == 3 and fault.fault_start == 160


def test_user_split(fake_folder):
    raw = np.loadtxt(fake_folder / "d00_te.dat")
    run = load_tep(fake_folder, split={"a": ["XMEAS(1)", " xmv( 2 ) "], "b": ["XMEAS(7)", "XMEAS(8)", "XMV(11)"]})
    assert run.columns == {"a": ["XMEAS(1)", "XMV(2)"], "b": ["XMEAS(7)", "XMEAS(8)", "XMV(11)"]}
    np.testing.assert_array_equal(run.clients["a"], raw[:, [0, 42]])
    np.testing.assert_array_equal(run.clients["b"], raw[:, [6, 7, 51]])


@pytest.mark.parametrize(
    "split, words",
    [
        ({"a": ["XMEAS(1)", "XMEAS(42)"], "b": ["XMV(1)", "XMV(2)"]}, ["'a'", "XMEAS(42)", "unknown"]),
        ({"a": ["XMEAS(1)", "XMEAS(2)"], "b": ["XMEAS(2)", "XMV(1)"]}, ["XMEAS(2)", "'a'", "'b'", "overlap"]),
        ({"a": ["XMEAS(1)", "XMEAS(1)"], "b": ["XMV(1)", "XMV(2)"]}, ["XMEAS(1)", "twice"]),
        ({"a": ["XMEAS(1)"], "b": ["XMV(1)", "XMV(2)"]}, ["'a'", "at least 2"]),
        ({"a": ["XMEAS(1)", "XMEAS(2)"]}, ["two units"]),
        ({"a": "XMEAS(1)", "b": ["XMV(1)", "XMV(2)"]}, ["'a'", "list"]),
    ],
)
def test_bad_split_names_the_problem(split, words):
    with pytest.raises(ConfigError) as info:
        resolve_split(split)
    for word in words:
        assert word in str(info.value)


def test_bad_runs_and_folders(fake_folder, tmp_path):
    with pytest.raises(DataError, match=r"d05_te.*runs in .*d00_te"):
        load_tep(fake_folder, run="d05_te")
    with pytest.raises(ConfigError, match="run name"):
        load_tep(fake_folder, run="normal")
    with pytest.raises(DataError, match=r"does not exist.*FEDGC_TEP_DATA"):
        load_tep(tmp_path / "missing")
    (tmp_path / "d00_te.dat").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DataError, match=r"shape \(2, 3\)"):
        load_tep(tmp_path)


def test_default_path_follows_the_environment(monkeypatch, fake_folder):
    monkeypatch.setenv("FEDGC_TEP_DATA", str(fake_folder))
    assert default_data_path() == fake_folder
    assert load_tep(run="d03_te").fault == 3


def test_client_csvs_read_back(fake_folder, tmp_path):
    run = load_tep(fake_folder, run="d00_te")
    paths = write_client_csvs(run, tmp_path / "csv")
    for unit, path in paths.items():
        table = read_client_csv(path, client=unit)
        assert list(table.columns) == run.columns[unit]
        np.testing.assert_array_equal(table.values, run.clients[unit])


def test_config_section(fake_folder, tmp_path):
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    rel = Path("..") / fake_folder.name
    shutil.copytree(fake_folder, tmp_path / fake_folder.name)
    (cfg_dir / "t.yaml").write_text(yaml.safe_dump({"tep": {"path": str(rel), "fault_runs": ["d03_te"]}}))
    cfg = load_config(cfg_dir / "t.yaml")
    assert cfg.tep.folder == cfg_dir / rel and cfg.tep.run == "d00_te" and cfg.tep.fault_runs == ("d03_te",)
    assert cfg.tep.split is None and cfg.tep.origin.quantile == 0.99
    custom = parse_config({"tep": {"split": {"a": ["XMEAS(1)", "XMEAS(2)"], "b": ["XMV(1)", "XMV(2)"]}}})
    assert custom.tep.split == {"a": ("XMEAS(1)", "XMEAS(2)"), "b": ("XMV(1)", "XMV(2)")}
    for bad, word in (
        ({"runs": "d00"}, "unknown key"),
        ({"run": "d01_te"}, "normal-operation"),
        ({"fault_runs": ["d00_te"]}, "not a fault run"),
        ({"fault_runs": "d01_te"}, "list"),
        ({"split": {"a": ["XMEAS(99)", "XMV(1)"], "b": ["XMV(2)", "XMV(3)"]}}, "tep.split.*XMEAS\\(99\\)"),
        ({"origin": {"quantile": 2}}, "quantile"),
        ({"origin": {"q": 0.9}}, "origin"),
    ):
        with pytest.raises(ConfigError, match=word):
            parse_config({"tep": bad})


def test_flowsheet_comparison_counts():
    clients = ["feed", "reactor", "separator", "stripper"]
    edges = np.zeros((4, 4), dtype=bool)
    edges[1, 0] = edges[0, 1] = True  # feed -> reactor (a flow), reactor -> feed (feedback)
    logp = np.full((4, 4), -0.1)
    logp[1, 0], logp[0, 1] = -20.0, -5.0
    out = flowsheet_comparison(clients, edges, np.ones((4, 4)), logp)
    assert out["counts"] == {
        "pairs": 12,
        "both": 1,
        "flowsheet_only": 5,
        "learned_only": 1,
        "neither": 5,
        "agreement": 0.5,
    }
    pair = next(p for p in out["pairs"] if p["source"] == "feed" and p["target"] == "reactor")
    assert pair["flowsheet"] and pair["learned"] and pair["pvalue"] == pytest.approx(1e-20)
    assert 0.5 < out["auroc"] <= 1.0
    other = flowsheet_comparison(["feed", "reactor", "x"], np.zeros((3, 3), bool), np.ones((3, 3)), np.zeros((3, 3)))
    assert other["counts"]["pairs"] == 2 and ["x", "feed"] in other["not_compared"]


def _simulate_cli(config: Path, out: Path) -> dict:
    assert main(["simulate", str(config), "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "result.json").read_text())


def test_end_to_end_on_fake_files(fake_folder, tmp_path):
    config = tmp_path / "t.yaml"
    config.write_text(
        yaml.safe_dump(
            {"name": "fake", "tep": {"path": str(fake_folder), "identify_on": "d00", "fault_runs": ["d03_te"]},
             "server": {"max_rounds": 1}, "evaluation": {"oracle": False}}
        )
    )  # fmt: skip
    result = _simulate_cli(config, tmp_path / "out")
    assert result["clients"] == list(TEP_UNITS)
    assert result["flowsheet"]["counts"]["pairs"] == 12
    origin = result["origin"]["d03_te"]
    assert origin["known_origin"] is None and origin["start"] == 160 and origin["threshold"] == 1.0
    assert origin["ranking"][0] == "feed"  # the step is in the feed unit's columns
    assert len(origin["clients"]["feed"]["score"]) == 600
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Learned unit graph vs the flowsheet" in report and "| d03_te | 160 |" in report
    # fedgc inspect reads the per-run origin records and draws them
    assert main(["inspect", str(tmp_path / "out"), "--figures", "--out", str(tmp_path / "inspect")]) == 0
    assert (tmp_path / "inspect" / "inspect_origin.png").stat().st_size > 0


def test_simulate_tep_yaml(real_data, tmp_path):
    """The shipped scenario on the real data: the flowsheet comparison and one origin record per fault run."""
    result = _simulate_cli(REPO / "simulations" / "tep.yaml", tmp_path / "out")
    fs = result["flowsheet"]
    assert len(fs["pairs"]) == 12 and sum(p["flowsheet"] for p in fs["pairs"]) == len(FLOWSHEET_EDGES)
    c = fs["counts"]
    assert c["both"] + c["flowsheet_only"] + c["learned_only"] + c["neither"] == 12
    assert set(result["origin"]) == {"d01_te", "d02_te", "d04_te", "d06_te", "d07_te", "d11_te"}
    for _run, rec in result["origin"].items():
        assert rec["start"] == 160 and sorted(rec["ranking"]) == sorted(TEP_UNITS)
        assert rec["known_origin"] in ("feed", "reactor")
        assert all(len(v["score"]) == 960 for v in rec["clients"].values())
    # the full protocol with identified models: the fixed point is reached and agrees with the oracle
    assert result["converged"] and result["rounds"] > 1
    assert result["evaluation"]["relative_error_vs_oracle"] < 0.15  # measured 0.10: misspecified models
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Learned unit graph vs the flowsheet" in report and "## Fault origin" in report


def test_real_loader(real_data):
    run = load_tep(real_data, run="d00_te")
    assert run.n_steps == 960 and {u: v.shape[1] for u, v in run.clients.items()} == UNIT_SIZES
    assert load_tep(real_data, run="d00").n_steps == 500
    fault = load_tep(real_data, run="d04_te")
    assert fault.fault == 4 and fault.fault_start == 160 and fault.n_steps == 960


def test_client_files_reproduce_the_in_process_run(fake_folder, tmp_path):
    """What Flower nodes (and `fedgc run`) read: per-client CSVs plus each unit's identified model as .npz."""
    from fedgc.app.runner import run_local
    from fedgc.app.tep import TEPClients

    cfg = parse_config({"tep": {"path": str(fake_folder), "identify_on": "d00"}, "server": {"max_rounds": 1},
                        "evaluation": {"oracle": False}})  # fmt: skip
    files = TEPClients.of(cfg).write(cfg, tmp_path / "clients")
    assert files.tep is None and [c.name for c in files.clients] == list(TEP_UNITS)
    assert all(Path(c.model).suffix == ".npz" and Path(c.data).is_file() for c in files.clients)
    direct, via_files = run_local(cfg, mode="run", out_dir=None), run_local(files, mode="run", out_dir=None)
    np.testing.assert_allclose(via_files.fit.A_s, direct.fit.A_s, rtol=1e-10, atol=1e-12)
    # the files' models are given, but the config they come with keeps the units' test: SIV, the same p-values
    assert files.server.test == direct.fit.gc.test == via_files.fit.gc.test == "siv"
    np.testing.assert_allclose(via_files.fit.gc.log10_pvalue, direct.fit.gc.log10_pvalue, rtol=1e-9, atol=1e-12)


def test_fault_run_streams_with_alerts_against_the_fault_start(real_data, tmp_path):
    """simulations/tep_fault_stream.yaml: models from normal operation, GC per window over fault 1."""
    result = _simulate_cli(REPO / "simulations" / "tep_fault_stream.yaml", tmp_path / "out")
    stream, fs = result["streaming"], result["fault_stream"]
    assert [w["end"] for w in stream["windows"]] == list(range(80, 961, 80))
    assert fs["run"] == "d01_te" and fs["fault_start"] == 160 and fs["known_origin"] == "feed"
    times = [a["time"] for a in stream["alerts"]]
    assert fs["alerts_before_fault"] == sum(t <= 160 for t in times)
    assert fs["alerts_after_fault"] == sum(t > 160 for t in times)
    if fs["first_alert_after_fault"] is not None:
        first = fs["first_alert_after_fault"]
        assert first["time"] == min(t for t in times if t > 160) and first["delay"] == first["time"] - 160
    assert "## Fault run, streaming" in (tmp_path / "out" / "report.md").read_text()


def test_streaming_a_normal_operation_run_counts_every_alert_as_false(fake_folder, tmp_path):
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({
        "tep": {"path": str(fake_folder), "run": "d00_te", "identify_on": "d00"},
        "streaming": {"window": 100, "max_rounds": 1}, "evaluation": {"oracle": False},
    }))  # fmt: skip
    result = _simulate_cli(config, tmp_path / "out")
    fs = result["fault_stream"]
    assert fs["fault"] is None and fs["fault_start"] is None and fs["first_alert_after_fault"] is None
    assert fs["alerts_before_fault"] == len(result["streaming"]["alerts"]) and fs["alerts_after_fault"] == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"Run d00_te (no fault): {fs['alerts_before_fault']} alert(s), all false alerts." in report


def test_a_fault_run_needs_streaming_and_a_separate_identification_run(fake_folder):
    with pytest.raises(ConfigError, match="a fault run can be streamed"):
        parse_config({"tep": {"path": str(fake_folder), "run": "d03_te"}})
    from fedgc.app.runner import run_local

    cfg = parse_config({"tep": {"path": str(fake_folder), "run": "d03_te"}, "streaming": {"window": 200},
                        "evaluation": {"oracle": False}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"needs tep.identify_on"):
        run_local(cfg, mode="run", out_dir=None)
