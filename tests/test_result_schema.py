"""result.json against the shipped JSON Schema (fedgc/report/result.schema.json): the writer's output for
the shipped default, TEP and mean_shift (streaming) scenarios, a private run, and a run on CSV files with
data-quality notes and a client dropping out (unknown pairs); report.md regenerated from result.json
alone; and the report layer's shape (no import cycles, small modules, no matplotlib to read a result)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from fedgc.app.clients import local_clients
from fedgc.app.config import parse_config
from fedgc.app.runner import run_batch
from fedgc.cli import main
from fedgc.data.csv import write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.protocol.transport import LocalTransport
from fedgc.report.markdown import markdown_report
from fedgc.report.result_json import ADDED_KEYS, KEYS, RESULT_FILE, load_result, write_outputs
from fedgc.report.schema import SCHEMA_FILE, result_schema

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "fedgc" / "report"
OPTIONAL_SECTIONS = {"flowsheet", "origin", "fault_stream", "streaming"}


def _validate(out: Path) -> dict:
    """The written result.json, validated with jsonschema directly (not through fedgc's reader)."""
    data = json.loads((out / RESULT_FILE).read_text())
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    problems = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(data)]
    assert not problems, problems
    return data


def test_the_schema_is_draft_2020_12_and_names_every_key_the_writer_writes():
    schema = result_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert (
        tuple(schema["required"]) == tuple(k for k in KEYS if k not in ADDED_KEYS)
        and not schema["additionalProperties"]
    )
    assert set(ADDED_KEYS) <= set(schema["properties"])
    assert set(schema["properties"]) - set(KEYS) == OPTIONAL_SECTIONS


@pytest.mark.parametrize("scenario, sections", [
    ("default", set()),
    ("tep", {"flowsheet", "origin"}),
    ("mean_shift", {"streaming"}),
])  # fmt: skip
def test_shipped_scenarios_write_valid_results(scenario, sections, tmp_path):
    out = tmp_path / scenario
    assert main(["simulate", str(REPO / "simulations" / f"{scenario}.yaml"), "--out", str(out), "--quiet"]) == 0
    data = _validate(out)
    assert set(data) & OPTIONAL_SECTIONS == sections
    assert markdown_report(load_result(out)) == (out / "report.md").read_text()  # regenerated from result.json alone


def test_private_run_writes_a_valid_privacy_section(tmp_path):
    cfg = {"name": "private", "seed": 1, "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 400},
           "server": {"max_rounds": 3}, "privacy": {"epsilon": 5, "delta": 1e-5, "clip": 5.0, "augmentation_noise": True}}  # fmt: skip
    (tmp_path / "private.yaml").write_text(json.dumps(cfg))
    assert main(["simulate", str(tmp_path / "private.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    privacy = _validate(tmp_path / "out")["privacy"]
    assert privacy["enabled"] and set(privacy["per_client"]) == {"client0", "client1", "client2"}
    assert "## Differential privacy" in (tmp_path / "out" / "report.md").read_text()


class _DropsClient1:
    """A transport whose client 1 answers round 3 with states one row short: it is dropped (continue)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def clients(self):
        return self.inner.clients()

    def exchange(self, augs, request, round_index=None):
        out = list(self.inner.exchange(augs, request, round_index=round_index))
        if round_index == 3 and out[1] is not None:
            out[1] = out[1]._replace(states=out[1].states[:-1])
        return out


def test_csv_run_with_data_notes_and_a_dropout_writes_a_valid_result(tmp_path):
    spec = SystemSpec(n_clients=4, state_dims=2, obs_dims=6, edge_density=0.4, n_steps=600)
    data = simulate(spec, np.random.default_rng(21))
    rng = np.random.default_rng(4)
    clients = []
    for m, y in enumerate(data.y):
        y = np.where(rng.random(y.shape) < 0.05, np.nan, y)  # missing measurements
        path = tmp_path / f"site{m}.csv"
        write_client_csv(
            path, np.hstack([y, np.full((len(y), 1), 3.25)]), columns=[*(f"x{j}" for j in range(6)), "stuck"]
        )
        clients.append({"name": f"c{m}", "data": str(path), "state_dim": 2, "timestamp_column": "none"})
    cfg = parse_config({"name": "dropout", "clients": clients, "evaluation": {"oracle": False},
                        "server": {"max_rounds": 8, "tol": 1e-12, "on_dropout": "continue"}})  # fmt: skip
    with pytest.warns(UserWarning, match="stuck"):
        sites = local_clients(cfg, mode="run", plan=None)
    result = run_batch(cfg, _DropsClient1(LocalTransport(sites.sessions)), sessions=sites.sessions)
    result.data, result.align = sites.data, sites.align
    write_outputs(result, tmp_path / "out")
    data = _validate(tmp_path / "out")
    assert data["data"]["clients"]["c0"]["dropped_constant_columns"] == ["stuck"]
    assert data["resilience"]["dropouts"][0]["client"] == "c1" and data["edges"][0][1] is None and data["unknown"][0][1]
    assert data["dof"][0][1] is None and data["dof"][0][2] == 4  # unknown pairs: null in every matrix (dof was 0)
    res = load_result(tmp_path / "out")
    assert res.unknown[0, 1] and not res.edges[0, 1] and int(res.unknown.sum()) == 6
    text = (tmp_path / "out" / "report.md").read_text()
    assert markdown_report(res) == text and "## Data" in text and "## Dropouts and resume" in text


# ---------------------------------------------------------------------------------------------- layer


def _report_imports() -> dict[str, set[str]]:
    """fedgc.report module -> the fedgc.report modules it imports (at any level of the file)."""
    graph = {}
    for path in REPORT.glob("*.py"):
        name = f"fedgc.report.{path.stem}"
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedgc.report"):
                graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("fedgc.report")}
    return graph


def test_report_layer_has_no_import_cycles_and_small_modules():
    graph = _report_imports()
    done: set[str] = set()

    def visit(module: str, stack: tuple[str, ...]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join((*stack, module))}"
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*stack, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    for path in REPORT.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, f"{path.name} is over 400 lines"


def test_reading_a_result_and_its_table_needs_no_matplotlib(tmp_path):
    cfg = {"name": "tiny", "seed": 3, "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 400},
           "server": {"max_rounds": 5}, "evaluation": {"oracle": False}}  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(json.dumps(cfg))
    assert main(["simulate", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    code = (
        "import sys\n"
        "from fedgc.report.result_json import load_result\n"
        "from fedgc.report.table import format_table\n"
        "from fedgc.report.markdown import markdown_report\n"
        "import fedgc.report.exports  # the figure modules import matplotlib: tests/test_imports.py\n"
        f"r = load_result({str(tmp_path / 'out')!r})\n"
        "format_table(r); markdown_report(r)\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_result_written_before_the_test_key_is_still_read(tmp_path):
    """`test` was added to result.json later: an older file without it validates and reads as the LR test."""
    out = tmp_path / "run"
    assert main(["simulate", str(REPO / "simulations" / "default.yaml"), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / RESULT_FILE).read_text())
    assert data["test"] == "lr"
    del data["test"]
    (out / RESULT_FILE).write_text(json.dumps(data))
    assert load_result(out).test == "lr"
