"""fedgc.report.result_json: result.json round trip, valid PNGs, the Markdown report."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from fedgc.analysis.metrics import EdgeScores
from fedgc.app.config import parse_config
from fedgc.app.results import Evaluation, RunResult, Truth
from fedgc.app.runner import run_local
from fedgc.core.granger import GCResult
from fedgc.errors import FedGCError
from fedgc.protocol.loop import FitResult
from fedgc.protocol.state import RoundRecord
from fedgc.report.result_json import EVALUATION_KEYS, KEYS, read_result, result_dict, write_outputs

MATRICES = ("strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue")


@pytest.fixture(scope="module")
def result() -> RunResult:
    cfg = parse_config(
        {
            "name": "tiny",
            "seed": 3,
            "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 400, "edge_density": 0.5},
            "server": {"max_rounds": 10},
        }
    )
    return run_local(cfg, mode="simulate", out_dir=None)


@pytest.fixture(scope="module")
def written(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_outputs(result, out / "nested")


def _strict_loads(text: str):
    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_writes_every_file(written):
    out, paths = written
    assert set(paths) == {"json", "heatmap", "convergence", "report"}
    names = {p.name for p in paths.values()}
    assert names == {"result.json", "gc_heatmap.png", "convergence.png", "report.md"}
    for path in paths.values():
        assert path.is_file() and path.parent == out / "nested"


@pytest.mark.parametrize("kind", ["heatmap", "convergence"])
def test_pngs_are_valid_images(written, kind):
    path = written[1][kind]
    assert path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_json_round_trip(result, written):
    paths = written[1]
    text = paths["json"].read_text()
    data = _strict_loads(text)
    assert tuple(data) == KEYS
    assert read_result(paths["json"]) == data
    assert read_result(paths["json"].parent) == data  # the folder works as well
    assert data == _strict_loads(json.dumps(result_dict(result)))

    gc = result.fit.gc
    M = len(gc.clients)
    assert data["clients"] == list(gc.clients) and data["dims"] == list(gc.dims) == [2, 2, 2]
    assert data["name"] == "tiny" and data["engine"] == "local" and data["seed"] == 3
    for key in MATRICES:
        matrix = data[key]
        assert len(matrix) == M and all(len(row) == M for row in matrix)
        for m in range(M):
            assert matrix[m][m] is None
            for n in range(M):
                if m != n:
                    assert matrix[m][n] == pytest.approx(float(getattr(gc, key)[m, n]), rel=1e-12, abs=1e-300)
    assert all(isinstance(v, int) for m, row in enumerate(data["dof"]) for n, v in enumerate(row) if m != n)
    assert data["edges"] == gc.edges.tolist()
    assert all(isinstance(v, bool) for row in data["edges"] for v in row)
    assert not any(data["edges"][m][m] for m in range(M))
    assert data["alpha"] == gc.alpha
    np.testing.assert_array_equal(np.array(data["A_s"]), result.fit.A_s)
    assert "diagonal blocks" in data["A_s_note"]


def test_json_run_fields(result, written):
    data = read_result(written[0] / "nested")
    assert data["server"] == {
        "rule": "newton", "max_rounds": 10, "tol": 1e-6, "penalty": 0.0, "diagonal": "fixed",
        "learning_rate": None, "alpha": 0.05, "burn_in": 1, "test": "auto", "on_dropout": "stop",
        "acceleration": "secant", "siv_instruments": "both",
    }  # fmt: skip
    assert data["test"] == "lr"  # given models: 'auto' keeps the likelihood-ratio test
    assert data["siv_via_source"] is None
    assert data["rounds"] == result.fit.rounds == len(data["history"]) >= 1
    assert data["converged"] is result.fit.converged
    assert [h["round"] for h in data["history"]] == list(range(1, data["rounds"] + 1))
    assert set(data["history"][0]) == {"round", "loss", "change"}
    ev = data["evaluation"]
    assert tuple(ev) == EVALUATION_KEYS
    assert ev["auroc"] == pytest.approx(result.evaluation.scores.auroc)
    assert ev["relative_error_vs_truth"] == pytest.approx(result.evaluation.error_vs_truth)
    assert ev["relative_error_vs_oracle"] == pytest.approx(result.evaluation.error_vs_oracle)
    assert ev["oracle_rounds"] == len(result.evaluation.oracle_history) >= 1
    assert ev["truth_edges"] == result.evaluation.truth.edges.tolist()
    assert data["timings"]["protocol_s"] > 0 and "oracle_s" in data["timings"]
    assert data["communication"] == json.loads(json.dumps(result.communication))
    assert data["raw_data_bytes"] == 3 * 400 * 6 * 8


def test_report_markdown(result, written):
    text = written[1]["report"].read_text()
    gc = result.fit.gc
    assert text.startswith("# fedgc report: tiny")
    assert "| source -> target | strength | statistic | dof | p-value | FDR edge | true edge |" in text
    table = [line for line in text.splitlines() if " -> " in line and line.startswith("| client")]
    assert len(table) == 6  # every ordered pair of 3 clients
    m, n = np.unravel_index(np.nanargmin(gc.log10_pvalue), gc.log10_pvalue.shape)
    assert table[0].startswith(f"| {gc.clients[n]} -> {gc.clients[m]} |")  # most significant first
    assert f"| AUROC (ranking by p-value) | {result.evaluation.scores.auroc:.3f} |" in text
    assert "relative error of A_s vs oracle" in text
    assert "![Granger causality heatmap](gc_heatmap.png)" in text
    assert "![Convergence](convergence.png)" in text
    assert "local" in text and "converged" in text
    # bytes each way per exchange, one row each (every exchange of this short run), never a JSON blob
    per = result.communication["per_exchange"]
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \| \w+ \| [\d.]+ k?B \| [\d.]+ k?B \| ", line)]
    assert len(rows) == len(per) >= 2 and "per_exchange" not in text
    assert rows[0].startswith(f"| {per[0]['exchange']} | {per[0]['request']} | ")


def test_per_exchange_table_of_a_long_run_shows_both_ends():
    from fedgc.report.markdown_sections import per_exchange_table

    rows = [
        {"exchange": i, "request": "newton", "to_clients": 1000 * i, "to_server": 5, "seconds": 0.01} for i in range(40)
    ]
    table = per_exchange_table(rows)
    body = table[2:-1]
    assert len(body) == 15 + 1 + 5 and body[15] == "| ... | 20 more in result.json | | | |"
    assert body[0].startswith("| 0 | newton | 0 B | 5 B |") and body[-1].startswith("| 39 | newton | 39.0 kB |")


def test_without_truth_or_oracle(result, tmp_path):
    bare = replace(result, evaluation=Evaluation(), communication={"bytes_up": 12345, "messages": 7})
    paths = write_outputs(bare, tmp_path)
    data = read_result(tmp_path)
    assert tuple(data["evaluation"]) == EVALUATION_KEYS
    assert all(v is None for v in data["evaluation"].values())
    assert data["communication"] == {"bytes_up": 12345, "messages": 7}
    text = paths["report"].read_text()
    assert "true edge" not in text and "No ground truth or oracle" in text
    assert "| bytes_up | 12.3 kB |" in text and "| messages | 7 |" in text
    assert matplotlib.image.imread(paths["heatmap"]).shape[0] > 300


def _fake_result(M: int, *, with_truth: bool, seed: int = 0) -> RunResult:
    """A RunResult without a run, to draw many clients quickly."""
    rng = np.random.default_rng(seed)
    dims = (2,) * M
    off = ~np.eye(M, dtype=bool)
    truth = (rng.random((M, M)) < 0.2) & off
    logp = np.where(off, -rng.exponential(1.0, (M, M)) - 30 * truth * rng.random((M, M)), np.nan)
    logp[0, 1] = -400.0  # p underflows to 0.0 in float; log10 keeps it
    edges = (logp < -3) & off
    strength = np.where(off, np.abs(rng.normal(0.05, 0.05, (M, M))) + 0.3 * truth, np.nan)
    stat = np.where(off, -logp * 2.0, np.nan)
    dof = np.where(off, 4, 0)
    gc = GCResult(tuple(f"unit{i}" for i in range(M)), dims, strength, stat / 400, stat, dof, 10.0**logp, logp,
                  edges, 0.05, rng.normal(0, 0.1, (2 * M, 2 * M)))  # fmt: skip
    history = [RoundRecord(r, 1000.0 / r, 10.0**-r) for r in range(1, 8)] + [RoundRecord(8, 125.0, 0.0)]
    fit = FitResult(gc, gc.A_s, history, converged=True)
    scores = EdgeScores(0.9, 0.8, 0.7, 0.6, float("nan")) if with_truth else None
    return RunResult(
        parse_config({"name": f"fake{M}"}), fit, "local",
        evaluation=Evaluation(truth=Truth(truth, None) if with_truth else None, scores=scores),
        timings={"protocol_s": 1.5, "total_s": 2.0},
    )  # fmt: skip


@pytest.mark.parametrize("M, with_truth", [(12, True), (40, True), (40, False)])
def test_many_clients(M, with_truth, tmp_path):
    paths = write_outputs(_fake_result(M, with_truth=with_truth), tmp_path)
    data = _strict_loads(paths["json"].read_text())
    assert data["pvalue"][0][1] == 0.0 and data["log10_pvalue"][0][1] == -400.0
    assert data["evaluation"]["f1"] is None  # NaN -> null
    text = paths["report"].read_text()
    assert "| unit1 -> unit0 |" in text and "1.0e-400" in text
    table = [line for line in text.splitlines() if line.startswith("| unit")]
    assert len(table) == 20
    for kind in ("heatmap", "convergence"):
        assert matplotlib.image.imread(paths[kind])[..., :3].std() > 0.05


def test_read_result_errors(tmp_path):
    with pytest.raises(FedGCError, match="no result"):
        read_result(tmp_path)
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(FedGCError, match="invalid JSON"):
        read_result(tmp_path)
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(FedGCError, match="missing"):
        read_result(tmp_path / "result.json")


def test_json_values_of_arrays_are_those_of_each_entry():
    """jsonable and matrix_rows take numeric arrays whole: the same values as entry by entry (non-finite
    floats and the diagonal: null; ints, bools, float32 as Python's), bit for bit."""
    from fedgc.report.jsonable import jsonable, matrix_rows

    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 6))
    a[1, 2], a[3, 0], a[4, 4], a[5, 1] = np.nan, np.inf, -np.inf, -0.0
    each = lambda x: [each(v) for v in x] if isinstance(x, list) else (float(x) if np.isfinite(x) else None)
    for value in (a, a[0], a.astype(np.float32), np.nan_to_num(a)):
        got = jsonable(value)
        assert json.dumps(got) == json.dumps(each(value.tolist())) and json.dumps(got, allow_nan=False)
    assert jsonable(np.arange(4)) == [0, 1, 2, 3] and type(jsonable(np.arange(4))[0]) is int
    assert jsonable(np.array([True, False])) == [True, False] and jsonable(np.array(["x"])) == ["x"]
    for kind in (float, int):
        want = [[None if m == n or not np.isfinite(a[m, n]) else kind(a[m, n]) for n in range(6)] for m in range(6)]
        assert json.dumps(matrix_rows(a, kind=kind)) == json.dumps(want)


def test_the_ranking_is_the_sort_by_p_then_strength():
    """ranked_pairs (numpy's stable sort) orders the pairs as sorting them by (log10 p, missing last; then
    strength descending, non-finite as 0) keeps them, ties in target-major order; top: its first rows."""
    from fedgc.report.inspected import inspected_from_json
    from fedgc.report.jsonable import dumps
    from fedgc.report.ranking import ranked_pairs

    result = _fake_result(9, with_truth=True, seed=4)
    gc = result.fit.gc
    logp, strength = gc.log10_pvalue.copy(), gc.strength.copy()
    logp[2, 3] = logp[4, 5] = logp[6, 7] = -2.0  # ties in p ...
    strength[4, 5] = strength[6, 7]  # ... and in strength
    logp[1, 0] = logp[8, 2] = np.nan  # missing p: last
    strength[3, 1], strength[5, 6] = np.nan, np.inf  # non-finite strength counts as 0
    gc = gc._replace(log10_pvalue=logp, strength=strength)
    fake = replace(result, fit=replace(result.fit, gc=gc))
    view = inspected_from_json(json.loads(dumps(result_dict(fake))), Path("result.json"))
    pairs = [(m, n) for m in range(9) for n in range(9) if m != n]
    key = lambda p: (
        view.log10_pvalue[p] if not np.isnan(view.log10_pvalue[p]) else np.inf,
        -(view.strength[p] if np.isfinite(view.strength[p]) else 0.0),
    )
    want = [(view.clients[m], view.clients[n]) for m, n in sorted(pairs, key=key)]
    got = ranked_pairs(view)
    assert [(p.target, p.source) for p in got] == want
    names = lambda ps: [(p.target, p.source) for p in ps]
    assert names(ranked_pairs(view, top=7)) == want[:7] and names(ranked_pairs(view, top=500)) == want
