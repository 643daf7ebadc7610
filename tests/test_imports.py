"""A run imports only what it uses (issue 17). Each check runs in a fresh interpreter and reads its sys.modules.

- The command line and a run config (`fedgc --help`, config errors) load no numeric library at all.
- `fedgc run` on CSV files, up to the end of its first round, loads none of the optional dependencies
  (torch: clients that learn f_theta; opacus: private runs; flwr and ray: the Flower engines; matplotlib:
  figures) nor the statistics packages fedgc no longer needs (statsmodels, scipy.stats, scipy.signal).
- A whole plain run in process with its figures off loads none of them either, and `fedgc run --data ...`
  loads none of what only optional features use (LAZY: the oracle, the YAML parser, the schema check of the
  readers); `fedgc --help` does not look up the installed version (importlib.metadata: only --version).
- Choosing each optional feature does load its dependency, through the module names the run looks up
  (so these checks can fail, and a renamed module cannot go unnoticed).

Wall times are measured by benchmarks/import_costs.py --table, not here.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedgc.app.config import YAML_MODULE
from fedgc.app.evaluation import ORACLE_MODULE
from fedgc.app.privacy import ACCOUNTING_MODULE, LEDGER_MODULE
from fedgc.data.csv import FAST_PARSER, write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.protocol.rules import RULES
from fedgc.protocol.session import THETA_MODULES
from fedgc.protocol.settings import RULE_NAMES
from fedgc.report.result_json import FIGURES_MODULE, SCHEMA_MODULE

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("torch", "opacus", "flwr", "ray", "matplotlib")
SLOW = ("statsmodels", "scipy.stats", "scipy.signal")
NUMERIC = ("numpy", "scipy", "pandas")
# Loaded only by the features that use them: the centralized oracle (opt-in for `fedgc run`), a YAML config,
# reading a result.json back (its schema check).
LAZY = (ORACLE_MODULE, YAML_MODULE, "jsonschema", SCHEMA_MODULE)


def _fresh(code: str) -> tuple[set[str], list[str]]:
    """Run `code` in a fresh interpreter (it must exit cleanly): the modules loaded at its end, and its stdout lines."""
    script = (
        textwrap.dedent(code) + "\nimport json as _j, sys as _s\nprint('MODULES=' + _j.dumps(sorted(_s.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    modules = next(x for x in reversed(lines) if x.startswith("MODULES="))
    return set(json.loads(modules[len("MODULES=") :])), lines


def _present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in modules]


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory) -> list[Path]:
    """Three plant CSV files with a header (a small synthetic scenario)."""
    folder = tmp_path_factory.mktemp("csv")
    data = simulate(SystemSpec(n_clients=3, state_dims=2, obs_dims=6, n_steps=600, edge_density=0.5),
                    np.random.default_rng(4))  # fmt: skip
    paths = [folder / f"site{m}.csv" for m in range(len(data.y))]
    for path, y in zip(paths, data.y):
        write_client_csv(path, y, columns=[f"s{j}" for j in range(y.shape[1])])
    return paths


def test_the_command_line_and_a_config_load_no_numeric_library(tmp_path):
    """`fedgc --help`, `fedgc run missing.yaml`, a misspelt section, `fedgc run` with one --data file, and a
    config with every section: all done before any numeric library loads."""
    (tmp_path / "typo.yaml").write_text("clients:\n  - {name: a, data: a.csv}\n  - {name: b, data: b.csv}\n"
                                        "sever: {max_rounds: 5}\n")  # fmt: skip
    (tmp_path / "full.yaml").write_text(
        "clients:\n  - {name: a, data: a.csv}\n  - {name: b, data: b.csv, model: m.npz}\n"
        "server: {rule: gd, max_rounds: 5, on_dropout: continue}\nclient: {learn_theta: true, theta: mlp}\n"
        "privacy: {epsilon: 1.0, delta: 1.0e-5}\nstreaming: on\ntep: {fault_runs: [d01_te], origin: {quantile: 0.9}}\n"
        "synthetic: {n_clients: 3, perturbations: [{time: 5, target: 0, source: 1, action: 'off'}]}\n"
    )  # every section, so that every settings class is built
    out = str(tmp_path / "out")
    modules, _ = _fresh(f"""
        import contextlib, io
        from fedgc.cli import main
        from fedgc.app.config import load_config
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["--help"])
            except SystemExit:
                pass
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert main(["run", {str(tmp_path / "missing.yaml")!r}, "--out", {out!r}]) == 2
            assert main(["run", {str(tmp_path / "typo.yaml")!r}, "--out", {out!r}]) == 2
            assert main(["run", "--data", "one.csv", "--out", {out!r}]) == 2
        said = err.getvalue()
        assert "does not exist" in said and "sever" in said and "at least two" in said, said
        cfg = load_config({str(tmp_path / "full.yaml")!r})
        assert cfg.client.theta == "mlp" and cfg.privacy.epsilon == 1.0 and cfg.tep.origin.quantile == 0.9
    """)
    assert _present(modules, OPTIONAL + SLOW + NUMERIC) == []


@pytest.mark.parametrize("figures", [False, True])
def test_a_plain_run_loads_no_optional_dependency_up_to_its_first_round(figures, csv_files, tmp_path):
    """`fedgc run --data ...` as the command line runs it: the modules loaded when round 1 ends. Without
    --figures the whole run loads none of them and writes no PNG; with --figures it draws its figures, and
    matplotlib is there at its end (the check can tell)."""
    args = ["run", *(a for f in csv_files for a in ("--data", str(f))), "--out", str(tmp_path / "run")]
    args += ["--figures"] if figures else []
    modules, lines = _fresh(f"""
        import sys
        import fedgc.cli
        from fedgc.app.progress import RoundProgress

        class FirstRound(RoundProgress):
            def __call__(self, record):
                if record.round == 1:
                    print("FIRST_ROUND=" + " ".join(sorted(sys.modules)))
                super().__call__(record)

        fedgc.cli.RoundProgress = FirstRound
        assert fedgc.cli.main({args!r}) == 0
    """)
    first = set(next(x for x in lines if x.startswith("FIRST_ROUND=")).split("=", 1)[1].split())
    assert _present(first, OPTIONAL + SLOW) == []
    # the CSV files went through the fast path (its readers are looked up by name): pyarrow's, without pandas
    assert "fedgc.data.csv_fast" in first and "pandas" not in first
    assert (tmp_path / "run" / "gc_heatmap.png").is_file() == figures and ("matplotlib" in modules) == figures
    assert _present(modules, ("torch", "opacus", "flwr", "ray", *SLOW, *LAZY)) == []
    report = (tmp_path / "run" / "report.md").read_text()
    assert ("![Granger causality heatmap](gc_heatmap.png)" in report) == figures
    assert ("fedgc inspect DIR --figures" in report) != figures


def test_a_plain_run_with_figures_off_loads_no_optional_dependency(csv_files, tmp_path):
    out = tmp_path / "run"
    modules, _ = _fresh(f"""
        from fedgc.app.config import config_from_files
        from fedgc.app.runner import run
        from fedgc.report.result_json import write_outputs

        result = run(config_from_files({[str(f) for f in csv_files]!r}), mode="run", out_dir={str(out)!r})
        paths = write_outputs(result, {str(out)!r}, figures=False)
        assert sorted(paths) == ["json", "report"] and result.fit.rounds >= 1, paths
    """)
    assert _present(modules, OPTIONAL + SLOW + LAZY) == []
    assert not list(out.glob("*.png")) and "![" not in (out / "report.md").read_text()


@pytest.mark.parametrize("feature, dependency", [
    ("theta", "torch"), ("privacy", "opacus"), ("figures", "matplotlib"), ("flower", "flwr"),
])  # fmt: skip
def test_choosing_a_feature_loads_its_dependency(feature, dependency, csv_files, tmp_path):
    code = {
        "theta": f"""
            from pathlib import Path
            from fedgc.app.clients import build_session
            from fedgc.app.config import ClientOptions, ClientSpec
            session = build_session(ClientSpec("a", Path({str(csv_files[0])!r})), ClientOptions(learn_theta=True, theta="mlp"))
            assert session.theta is not None and session.theta.mlp is not None
        """,
        "privacy": """
            from fedgc.app.config import parse_config
            from fedgc.app.privacy import privacy_plan
            cfg = parse_config({"synthetic": {"n_clients": 3}, "privacy": {"epsilon": 2.0, "delta": 1.0e-5}})
            assert privacy_plan(cfg).noise_multiplier > 0
        """,
        "figures": f"""
            from fedgc.app.config import config_from_files
            from fedgc.app.runner import run
            from fedgc.report.result_json import write_outputs
            cfg = config_from_files({[str(f) for f in csv_files]!r})
            result = run(cfg, mode="run", out_dir={str(tmp_path)!r})
            assert "heatmap" in write_outputs(result, {str(tmp_path)!r})
        """,
        "flower": """
            from fedgc.app.runner import flower_engine
            flower_engine("flower-sim")
        """,
    }[feature]
    modules, _ = _fresh(code)
    assert dependency in modules
    others = {"theta": ("opacus", "flwr", "matplotlib"), "privacy": ("flwr", "matplotlib"),  # opacus needs torch
              "figures": ("torch", "opacus", "flwr"), "flower": ()}[feature]  # fmt: skip
    assert _present(modules, others) == []


def test_the_features_that_use_them_load_the_lazy_modules(csv_files, tmp_path):
    """A YAML config loads the YAML parser, a run with the oracle on loads the oracle, reading its result.json
    back loads the schema check (jsonschema)."""
    out = tmp_path / "run"
    (tmp_path / "plant.yaml").write_text(
        "evaluation: {oracle: true}\nserver: {max_rounds: 3}\nclients:\n"
        + "".join(f"  - {{name: c{i}, data: {f}}}\n" for i, f in enumerate(csv_files))
    )
    modules, _ = _fresh(f"""
        import contextlib, io
        from fedgc.cli import main
        assert {YAML_MODULE!r} not in __import__("sys").modules
        assert main(["run", {str(tmp_path / "plant.yaml")!r}, "--out", {str(out)!r}, "--quiet"]) == 0
        import sys
        assert {ORACLE_MODULE!r} in sys.modules and {YAML_MODULE!r} in sys.modules
        assert "jsonschema" not in sys.modules
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["inspect", {str(out)!r}]) == 0
        assert "jsonschema" in sys.modules
    """)
    assert _present(modules, LAZY) == list(LAZY)


def test_help_does_not_look_up_the_version():
    """importlib.metadata (about 20 ms) is loaded by --version, not by --help."""
    code = """
        import contextlib, io, sys
        from fedgc.cli import main
        for argv in (["--help"], ["--version"]):
            with contextlib.redirect_stdout(io.StringIO()) as said:
                try:
                    main(argv)
                except SystemExit:
                    pass
            print(argv[0], "importlib.metadata" in sys.modules, said.getvalue().split()[0])
    """
    _, lines = _fresh(code)
    assert lines[:2] == ["--help False usage:", "--version True fedgc"]


def test_the_modules_looked_up_by_name_exist():
    """Every module a run resolves by name at the point it chooses a feature, with what the run takes from it."""
    wanted = {
        **{module: ("ThetaFunction",) for module in THETA_MODULES.values()},
        ACCOUNTING_MODULE: ("PrivacyAccountant", "plan_privacy", "privacy_report"),
        LEDGER_MODULE: ("Ledger",),
        FIGURES_MODULE: ("plot_heatmap", "plot_convergence"),
        FAST_PARSER: ("read_values",),
        ORACLE_MODULE: ("oracle_fit",),
        SCHEMA_MODULE: ("check_result",),
        YAML_MODULE: ("safe_load",),
    }
    for module, names in wanted.items():
        loaded = importlib.import_module(module)
        assert all(callable(getattr(loaded, n, None)) for n in names), (module, names)
    assert set(THETA_MODULES) == {"linear", "mlp"}


def test_the_settings_name_the_rules_there_are():
    """protocol.settings names the update rules without importing them (so a config loads no maths)."""
    assert tuple(RULES) == RULE_NAMES
