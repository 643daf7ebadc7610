"""The inspect figures with many clients and the inspect command's edges: the graph's strength labels never
overlap (renderer text extents) up to 30 sites, its nodes are apart; the convergence panels show a round
at exactly 0; the heatmap is not drawn again when it is the run's own; `inspect | head` ends quietly."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedgc.cli import main
from fedgc.report.figures import FIGURE_FILES, convergence_figure
from fedgc.report.graph_figure import MAX_STRENGTH_LABELS, graph_figure, graph_layout
from fedgc.report.jsonable import dumps, matrix_rows
from fedgc.report.plots import run_convergence_figure
from fedgc.report.result_json import RESULT_FILE, parse_result

REPO = Path(__file__).resolve().parents[1]


def fake_result(M: int, *, seed: int = 0, density: float = 0.25, name: str = "fake") -> dict:
    """A complete result.json of M sites with random edges (about density of the pairs) and known truth."""
    rng = np.random.default_rng(seed)
    off = ~np.eye(M, dtype=bool)
    truth = (rng.random((M, M)) < density) & off
    log10_p = np.where(off, -rng.exponential(1.0, (M, M)) - 30 * truth * rng.random((M, M)), np.nan)
    strength = np.where(off, np.abs(rng.normal(0.05, 0.03, (M, M))) + 0.4 * truth * rng.random((M, M)), np.nan)
    edges = (log10_p < -3) & off
    history = [{"round": r, "loss": 100.0 + 1000.0 / r**3, "change": 10.0**-r} for r in range(1, 8)]
    history.append({"round": 8, "loss": 100.0 + 1000.0 / 8**3, "change": 0.0})
    return {
        "fedgc_version": "0.1.0", "name": name, "engine": "local", "seed": seed,
        "clients": [f"site{k}" for k in range(M)], "dims": [2] * M,
        "strength": matrix_rows(strength), "statistic": matrix_rows(-2 * log10_p), "gc": matrix_rows(strength / 10),
        "dof": matrix_rows(np.full((M, M), 4), kind=int), "pvalue": matrix_rows(10.0**log10_p),
        "log10_pvalue": matrix_rows(log10_p), "edges": edges.tolist(), "alpha": 0.05, "test": "lr",
        "A_s": np.zeros((2 * M, 2 * M)).tolist(), "A_s_note": "",
        "server": {"rule": "newton", "max_rounds": 10, "tol": 1e-6, "penalty": 0.0, "diagonal": "fixed",
                   "learning_rate": None, "alpha": 0.05, "burn_in": 1, "on_dropout": "stop"},
        "rounds": len(history), "converged": True, "history": history,
        "evaluation": {"auroc": 0.9, "auprc": 0.8, "precision": 0.7, "recall": 0.6, "f1": 0.65,
                       "relative_error_vs_truth": None, "relative_error_vs_oracle": None,
                       "oracle_relative_error_vs_truth": None, "oracle_rounds": None, "truth_edges": truth.tolist(),
                       "oracle_outside_privacy_guarantee": None},
        "timings": {"total_s": 1.0}, "communication": {}, "raw_data_bytes": 0, "privacy": {"enabled": False},
        "data": {}, "unknown": np.zeros((M, M), dtype=bool).tolist(),
        "resilience": {"on_dropout": "stop", "dropouts": [], "resumed_from_round": None},
    }  # fmt: skip


@pytest.mark.parametrize("M", [8, 15, 30])
def test_graph_strength_labels_never_overlap(M, tmp_path):
    result = parse_result(fake_result(M, seed=M), tmp_path / RESULT_FILE)
    assert int(result.edges.sum()) >= M  # enough edges to crowd a circle's centre
    fig = graph_figure(result)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == "strength"]
    assert 1 <= len(labels) <= MAX_STRENGTH_LABELS
    strongest = sorted(result.strength[result.edges], reverse=True)[:MAX_STRENGTH_LABELS]
    assert {t.get_text() for t in labels} <= {f"{s:.2f}" for s in strongest}
    boxes = [t.get_window_extent(renderer) for t in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "two strength labels overlap"
    nodes = [p for p in ax.patches if type(p).__name__ == "Circle"]
    assert len(nodes) == M
    for a, b in itertools.combinations(nodes, 2):  # no two nodes touch
        assert np.hypot(*np.subtract(a.center, b.center)) > a.radius + b.radius
    for box in boxes:  # and no label sits on a node
        assert not any(box.overlaps(n.get_window_extent(renderer)) for n in nodes)
    names = [t for t in ax.texts if t.get_text().startswith("site")]
    assert len(names) == M
    name_boxes = [t.get_window_extent(renderer) for t in names]
    for a, b in itertools.combinations(name_boxes, 2):
        assert not a.overlaps(b), "two site names overlap"
    for k, box in enumerate(name_boxes):  # a name sits by its own node, on no other
        assert not any(box.overlaps(n.get_window_extent(renderer)) for j, n in enumerate(nodes) if j != k)
    # the edges do not all run through the middle of the figure (as every chord of a circle layout nearly did)
    pos = graph_layout(result)
    through = [_passes_within(pos[n], pos[m], 0.2) for m, n in np.argwhere(result.edges)]
    assert np.mean(through) < 0.5


def _passes_within(a: np.ndarray, b: np.ndarray, radius: float) -> bool:
    """Whether the segment a-b passes within `radius` of the layout's centre (0, 0)."""
    d = b - a
    t = float(np.clip(-a @ d / max(d @ d, 1e-12), 0.0, 1.0))
    return float(np.hypot(*(a + t * d))) < radius


def test_graph_layout_is_deterministic_and_puts_causes_left(tmp_path):
    data = fake_result(6, density=0.0)
    chain = np.zeros((6, 6), dtype=bool)
    for k in range(5):
        chain[k + 1, k] = True  # site0 -> site1 -> ... -> site5
    data["edges"] = chain.tolist()
    data["evaluation"]["truth_edges"] = chain.tolist()
    result = parse_result(data, tmp_path / RESULT_FILE)
    pos = graph_layout(result)
    np.testing.assert_array_equal(pos, graph_layout(result))
    assert pos[0, 0] < pos[5, 0] and np.abs(pos).max() == pytest.approx(1.0)


def test_convergence_shows_rounds_at_exactly_zero(tmp_path):
    result = parse_result(fake_result(4), tmp_path / RESULT_FILE)
    ax_change, ax_loss = convergence_figure(result).axes[:2]
    best = int(np.argmin([h.loss for h in result.history]))
    for ax, zero_round in ((ax_change, 8), (ax_loss, result.history[best].round)):
        floor = [line for line in ax.lines if line.get_marker() == "v"]
        assert len(floor) == 1 and list(floor[0].get_xdata()) == [zero_round]
        assert floor[0].get_ydata()[0] > 0  # on the log axis, under every other point
        assert any(f"round {zero_round}: exactly 0" in t.get_text() for t in ax.texts)


def test_run_convergence_png_marks_a_change_of_exactly_zero(tmp_path):
    """convergence.png of the run (not only inspect's figure): a round whose change is 0 cannot sit on the log
    axis; it is drawn on the floor and named, not silently clamped or dropped."""
    from fedgc.protocol.state import RoundRecord

    result = parse_result(fake_result(4), tmp_path / RESULT_FILE)
    oracle = [RoundRecord(1, 10.0, 0.5), RoundRecord(2, 9.0, 0.0)]
    ax_change = run_convergence_figure(result, oracle_history=oracle).axes[0]
    floor = [line for line in ax_change.lines if line.get_marker() == "v"]
    assert sorted(float(line.get_xdata()[0]) for line in floor) == [2.0, 8.0]  # the oracle's round 2, the run's 8
    positive = [y for line in ax_change.lines if line.get_marker() in ("o", "s") for y in line.get_ydata()]
    assert all(0 < line.get_ydata()[0] < min(positive) for line in floor)
    note = " ".join(t.get_text() for t in ax_change.texts)
    assert "federated round 8: exactly 0" in note and "oracle round 2: exactly 0" in note


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = out / "tiny.yaml"
    cfg.write_text('{"name": "tiny", "seed": 2, "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, '
                   '"n_steps": 400}, "server": {"max_rounds": 5}, "evaluation": {"oracle": false}}')  # fmt: skip
    assert main(["simulate", str(cfg), "--out", str(out / "out"), "--quiet"]) == 0
    return out / "out"


def test_inspect_heatmap_only_when_it_differs_from_the_runs(run_dir, tmp_path, capsys):
    same = tmp_path / "same"
    assert main(["inspect", str(run_dir), "--figures", "--out", str(same)]) == 0
    err = capsys.readouterr().err
    assert not (same / FIGURE_FILES["heatmap"]).exists() and (same / FIGURE_FILES["graph"]).is_file()
    assert f"heatmap: the run's own {run_dir / 'gc_heatmap.png'}" in err and "--alpha" in err
    other = tmp_path / "other"
    assert main(["inspect", str(run_dir), "--figures", "--alpha", "0.3", "--out", str(other)]) == 0
    err = capsys.readouterr().err
    # drawn at another level than the run's: named with it, beside the files at the run's own level
    assert (other / "inspect_heatmap.alpha-0.3.png").is_file() and "heatmap: the run's own" not in err
    assert (other / "inspect_graph.alpha-0.3.png").is_file() and (other / FIGURE_FILES["convergence"]).is_file()
    assert not (other / FIGURE_FILES["heatmap"]).exists() and not (other / FIGURE_FILES["graph"]).exists()


def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / RESULT_FILE).write_text(dumps(fake_result(60, seed=1)))  # 3540 rows, more than a pipe holds
    command = (
        f"set -o pipefail; {sys.executable} -m fedgc.cli inspect {tmp_path / 'big'} --all --export csv | head -n 3"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert len(done.stdout.splitlines()) == 3 and (tmp_path / "big" / "edges.csv").is_file()  # exports still written
