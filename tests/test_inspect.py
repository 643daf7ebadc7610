"""fedgc inspect: loading result.json (and its bad cases), the ranked table, exports that round-trip,
figures, and the CLI subcommand."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil

import matplotlib.image
import numpy as np
import pytest

from fedgc.app.config import parse_config
from fedgc.cli import main
from fedgc.errors import FedGCError
from fedgc.report.exports import CSV_COLUMNS, EXPORT_FILES, export, parse_formats
from fedgc.report.figures import FIGURE_FILES, write_figures
from fedgc.report.graph_figure import graph_figure, graph_layout
from fedgc.report.jsonable import dumps
from fedgc.report.ranking import ranked_pairs, with_alpha
from fedgc.report.result_json import RESULT_FILE, load_result, write_outputs
from fedgc.report.table import format_table

# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real tiny simulation written the way `fedgc simulate` writes it."""
    from fedgc.app.runner import run_local

    cfg = parse_config(
        {
            "name": "tiny",
            "seed": 5,
            "synthetic": {"n_clients": 4, "state_dims": 2, "obs_dims": 5, "n_steps": 500, "edge_density": 0.4},
            "server": {"max_rounds": 10},
        }
    )
    result = run_local(cfg, mode="simulate", out_dir=None)
    out = tmp_path_factory.mktemp("run")
    write_outputs(result, out)
    return result, out


def _rows(a: np.ndarray, *, boolean: bool = False) -> list[list]:
    M = a.shape[0]
    if boolean:
        return [[bool(a[m, n]) and m != n for n in range(M)] for m in range(M)]
    return [[None if m == n or not np.isfinite(a[m, n]) else float(a[m, n]) for n in range(M)] for m in range(M)]


def streaming_section(clients, rng: np.random.Generator, *, n_windows: int = 24, window: int = 400, step: int = 100):
    """A "streaming" key in the agreed schema: client 0 -> 1 throughout, 1 -> 2 appears at window 12,
    3 -> 0 disappears at window 16; alerts are the changes of the edge sets between windows."""
    M = len(clients)
    base = np.abs(rng.normal(0.04, 0.01, (M, M)))
    windows, alerts, previous = [], [], None
    for i in range(n_windows):
        strength = base + np.abs(rng.normal(0.0, 0.01, (M, M)))
        strength[1, 0] += 0.3
        strength[2, 1] += 0.25 * min(1.0, max(0.0, (i - 11) / 2))
        strength[0, 3 % M] += 0.2 * (i < 16)
        np.fill_diagonal(strength, np.nan)
        log10_p = -((strength / 0.04) ** 2)
        edges = np.nan_to_num(log10_p, nan=0.0) < -6
        end = window + i * step
        windows.append({"index": i, "start": end - window, "end": end, "strength": _rows(strength),
                        "pvalue": _rows(10.0**log10_p), "edges": _rows(edges, boolean=True),
                        "log10_pvalue": _rows(log10_p), "effective_sample_size": 900.0, "memory": 0.99,
                        "rounds": 3, "exchanges": 4, "converged": True, "reset": False,
                        "change_log10_pvalue": None if i == 0 else _rows(log10_p / 2)})  # fmt: skip
        if previous is not None:
            for m, n in zip(*np.nonzero(edges != previous[0])):
                alerts.append({
                    "window": i, "time": end, "target": clients[m], "source": clients[n],
                    "kind": "appeared" if edges[m, n] else "disappeared",
                    "strength_before": float(previous[1][m, n]), "strength_after": float(strength[m, n]),
                    "pvalue": float(10.0 ** log10_p[m, n]), "log10_pvalue": float(log10_p[m, n]),
                })  # fmt: skip
        previous = (edges, strength)
    return stream_record(windows, alerts, window=window, step=step, forgetting=0.99)


def stream_record(windows: list, alerts: list, *, window: int = 10, step: int = 5, forgetting: float = 1.0) -> dict:
    """A "streaming" key with these windows and alerts, the settings filled in as a run writes them."""
    return {"window": window, "step": step, "forgetting": forgetting, "alert_alpha": 0.01, "reset_on_alert": True,
            "max_rounds": 10, "tol": 1e-4, "steady_effective_sample_size": 900.0, "n_steps": window + step * len(windows),
            "unprocessed_steps": 0, "windows": windows, "alerts": alerts, "evaluation": None}  # fmt: skip


def origin_section(clients, rng: np.random.Generator, *, T: int = 300, threshold: float = 4.0):
    """An "origin" key: client 2's score ramps up from step 160, client 0's from 200; the rest noise."""
    scores = {c: np.abs(rng.normal(1.0, 0.4, T)) for c in clients}
    t = np.arange(T)
    scores[clients[2]] += np.clip(t - 160, 0, None) * 0.15
    scores[clients[0]] += np.clip(t - 200, 0, None) * 0.05
    first = {c: (int(np.argmax(s > threshold)) if (s > threshold).any() else None) for c, s in scores.items()}
    ranking = sorted(clients, key=lambda c: (first[c] is None, first[c] or 0, -scores[c].max()))
    return origin_record(
        {c: {"first_crossing": first[c], "score": scores[c].tolist()} for c in clients}, ranking, threshold=threshold
    )


def origin_record(clients: dict, ranking: list, *, threshold: float = 1.0, start=None, known_origin=None) -> dict:
    """One fault run's "origin" record, the per-client fields a run writes filled in."""
    filled = {c: {"first_crossing": None, "score": [], "threshold_chi2_scale": 10.0, "dof": 5, "false_alarm": None,
                  "onset": None, "peak": None, **entry} for c, entry in clients.items()}  # fmt: skip
    return {"threshold": threshold, "clients": filled, "ranking": ranking, "start": start, "fault": None,
            "known_origin": known_origin, "calibration_run": "d00_te",
            "settings": {"quantile": 0.99, "run_length": 3, "tie_window": 2}}  # fmt: skip


@pytest.fixture(scope="module")
def stream_dir(run, tmp_path_factory):
    """The tiny run's result.json with "streaming" and "origin" keys added (schemas of /iface)."""
    data = json.loads((run[1] / RESULT_FILE).read_text())
    rng = np.random.default_rng(11)
    data["streaming"] = streaming_section(data["clients"], rng)
    data["origin"] = {"fault": origin_section(data["clients"], rng)}
    out = tmp_path_factory.mktemp("stream")
    (out / RESULT_FILE).write_text(dumps(data))
    return out


def hand_made(directory, *, names=('feed "A"', "reactor 2", "sep\\3")) -> dict:
    """A minimal result.json with known numbers: p of 1 -> 0 underflows (log10 -400) and ties the order
    with 2 -> 0 (-400) broken by strength; 0 -> 2 has a null statistic; truth known."""
    nan = math.nan
    log10_p = np.array([[nan, -400.0, -400.0], [-2.0, nan, -0.5], [-5.0, -0.1, nan]])
    data = {
        "name": "hand",
        "clients": list(names),
        "dims": [2, 3, 1],
        "strength": _rows(np.array([[nan, 0.5, 0.7], [0.2, nan, 0.05], [0.3, 0.01, nan]])),
        "statistic": _rows(np.array([[nan, 1900.0, 1800.0], [20.0, nan, 4.0], [nan, 1.0, nan]])),
        "dof": _rows(np.array([[nan, 6, 2], [6, nan, 3], [2, 3, nan]], dtype=float)),
        "pvalue": _rows(np.where(np.isfinite(log10_p), 10.0**log10_p, nan)),
        "log10_pvalue": _rows(log10_p),
        "edges": _rows(log10_p < -1.5, boolean=True),
        "alpha": 0.05,
        "rounds": 3,
        "converged": True,
        "evaluation": {"truth_edges": _rows(np.array([[0, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=bool), boolean=True)},
    }
    data = complete(data)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULT_FILE).write_text(dumps(data))
    return data


def complete(data: dict) -> dict:
    """A hand-made result with the keys it leaves out filled in as a run writes them (the reader holds
    every file to the schema of result.json)."""
    M, D = len(data["clients"]), sum(data["dims"])
    off = _rows(np.ones((M, M)))
    evaluation = {
        k: None
        for k in (
            "auroc",
            "auprc",
            "precision",
            "recall",
            "f1",
            "relative_error_vs_truth",
            "relative_error_vs_oracle",
            "oracle_relative_error_vs_truth",
            "oracle_rounds",
            "oracle_outside_privacy_guarantee",
        )
    }
    server = {
        "rule": "newton",
        "max_rounds": 10,
        "tol": 1e-6,
        "penalty": 0.0,
        "diagonal": "fixed",
        "learning_rate": None,
        "alpha": data.get("alpha", 0.05),
        "burn_in": 1,
        "on_dropout": "stop",
    }
    defaults = {
        "fedgc_version": "0.1.0", "name": "hand", "engine": "local", "seed": 0, "gc": off, "alpha": 0.05, "test": "lr",
        "A_s": np.zeros((D, D)).tolist(), "A_s_note": "", "server": server, "rounds": 3, "converged": True,
        "timings": {}, "communication": {}, "raw_data_bytes": 0, "privacy": {"enabled": False}, "data": {},
        "unknown": [[False] * M for _ in range(M)],
        "resilience": {"on_dropout": "stop", "dropouts": [], "resumed_from_round": None},
    }  # fmt: skip
    out = {**defaults, **data}
    out["history"] = data.get(
        "history", [{"round": r, "loss": 10.0 / r, "change": 10.0**-r} for r in range(1, out["rounds"] + 1)]
    )
    out["evaluation"] = {**evaluation, "truth_edges": None, **data.get("evaluation", {})}
    return out


# ---------------------------------------------------------------------------------------------- loading


def test_load_matches_the_run(run, gen):
    result, out = run
    gc = result.fit.gc
    res = load_result(out)
    assert res.path == out / RESULT_FILE and load_result(out / RESULT_FILE).clients == res.clients
    assert res.clients == gc.clients and res.dims == gc.dims and res.name == "tiny"
    for key in ("strength", "statistic", "pvalue", "log10_pvalue"):
        np.testing.assert_array_equal(getattr(res, key), getattr(gc, key))
    np.testing.assert_array_equal(res.edges, gc.edges)
    np.testing.assert_array_equal(res.truth, result.evaluation.truth.edges)
    assert res.alpha == res.run_alpha == gc.alpha and res.streaming is None and res.origins == ()
    # the stored p-values re-decide the run's own edges, and other levels as the textbook BH does
    np.testing.assert_array_equal(with_alpha(res, alpha=gc.alpha).edges, gc.edges)
    off = gen.off_diagonal(len(gc.clients))
    for alpha in (1e-12, 0.2, 0.9):
        expected = np.zeros_like(off)
        expected[off] = gen.benjamini_hochberg(gc.pvalue[off], alpha)
        np.testing.assert_array_equal(with_alpha(res, alpha=alpha).edges, expected)


def test_load_streaming_and_origin(stream_dir):
    res = load_result(stream_dir)
    data = json.loads((stream_dir / RESULT_FILE).read_text())
    s = res.streaming
    assert (s.window, s.step, s.forgetting) == (400, 100, 0.99) and len(s.windows) == 24
    assert [w.index for w in s.windows] == list(range(24))
    np.testing.assert_array_equal(s.windows[12].edges, data["streaming"]["windows"][12]["edges"])
    assert len(s.alerts) == len(data["streaming"]["alerts"]) >= 2
    kinds = {(a.source, a.target, a.kind) for a in s.alerts}
    c = res.clients
    assert (c[1], c[2], "appeared") in kinds and (c[3], c[0], "disappeared") in kinds
    (o,) = res.origins
    assert o.run == "fault" and o.start is None and o.known_origin is None
    assert o.ranking[0] == c[2] and o.clients[c[2]].first_crossing > 160
    np.testing.assert_array_equal(o.clients[c[1]].score, data["origin"]["fault"]["clients"][c[1]]["score"])


def test_origin_per_fault_run(stream_dir, tmp_path):
    """fedgc.app.tep writes "origin" as {fault run: record} with the fault start and known origin."""
    from fedgc.report.figures import origin_figure

    data = json.loads((stream_dir / RESULT_FILE).read_text())
    c = data["clients"]
    one = data.pop("origin")["fault"]
    other = origin_section(c, np.random.default_rng(3))
    data["origin"] = {
        "d01_te": {**one, "start": 160, "known_origin": c[2]},
        "d04_te": {**other, "start": 150, "known_origin": c[1]},
    }
    (tmp_path / RESULT_FILE).write_text(dumps(data))
    res = load_result(tmp_path)
    assert [(o.run, o.start, o.known_origin) for o in res.origins] == [("d01_te", 160, c[2]), ("d04_te", 150, c[1])]
    assert res.origins[0].ranking == tuple(one["ranking"])
    text = format_table(res)
    assert f"fault origin d01_te: {' > '.join(one['ranking'])} (known origin: {c[2]})" in text
    assert f"fault origin d04_te: {' > '.join(other['ranking'])} (known origin: {c[1]})" in text

    fig = origin_figure(res)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left").split(";")[0] for ax in panels] == ["d01_te", "d04_te"]
    assert "known origin: " + c[2] + " (right)" in panels[0].get_title(loc="left")  # c[2] ramps up first
    for ax, start in zip(panels, (160, 150)):
        assert any(np.allclose(line.get_xdata(), start) for line in ax.lines)  # the fault start is marked

    data["origin"]["d04_te"]["ranking"] = ["x"]
    (tmp_path / RESULT_FILE).write_text(dumps(data))
    with pytest.raises(FedGCError, match=re.escape("origin[\"d04_te\"].ranking: names ['x'] have no scores")):
        load_result(tmp_path)


def _mutate(data: dict, how: str) -> object:
    if how == "list":
        return [1, 2]
    if how == "foreign":
        return {"model": "resnet", "accuracy": 0.9}
    if how == "short row":
        data["strength"][1] = data["strength"][1][:-1]
    elif how == "rows":
        data["pvalue"] = data["pvalue"][:-1]
    elif how == "text":
        data["strength"][0][1] = "big"
    elif how == "edges":
        data["edges"][0][1] = 1
    elif how == "pvalue":
        data["pvalue"][0][1] = 1.5
    elif how == "dims":
        data["dims"] = [2, 3]
    elif how == "duplicate":
        data["clients"][1] = data["clients"][0]
    elif how == "alert client":
        window = {
            "index": 0,
            "start": 0,
            "end": 10,
            "strength": data["strength"],
            "pvalue": data["pvalue"],
            "edges": data["edges"],
            "log10_pvalue": data["log10_pvalue"],
            "effective_sample_size": 10.0,
            "memory": 0.0,
            "rounds": 1,
            "exchanges": 2,
            "converged": True,
            "reset": False,
            "change_log10_pvalue": None,
        }
        data["streaming"] = stream_record([window], [
            {"window": 0, "time": 3, "target": "nobody", "source": data["clients"][0], "kind": "appeared",
             "strength_before": 0.0, "strength_after": 1.0, "pvalue": 0.001, "log10_pvalue": -3.0}])  # fmt: skip
    elif how == "window matrix":
        data["streaming"] = stream_record([
            {"index": 0, "start": 0, "end": 10, "strength": [[0.0]], "pvalue": data["pvalue"], "edges": data["edges"],
             "log10_pvalue": data["log10_pvalue"], "effective_sample_size": 10.0, "memory": 0.0, "rounds": 1,
             "exchanges": 2, "converged": True, "reset": False, "change_log10_pvalue": None}], [])  # fmt: skip
    elif how == "origin ranking":
        data["origin"] = {"d01_te": origin_record({}, ["x"])}
    return data


@pytest.mark.parametrize(
    "how, problem",
    [
        ("list", "not a fedgc result: missing"),
        ("foreign", "not a fedgc result: missing"),
        ("short row", "strength: row 1 has 2 entries, expected 3"),
        ("rows", "pvalue: has 2 rows, expected 3"),
        ("text", r'strength\[0\]\[1\]: expected a number or null, got "big"'),
        ("edges", r"edges\[0\]\[1\]: expected true or false or null, got 1"),
        ("pvalue", r"pvalue\[0\]\[1\]: 1.5 is above the maximum 1"),
        ("dims", "dims: expected 3 positive integers"),
        ("duplicate", "clients: duplicate names"),
        ("alert client", r'streaming.alerts\[0\].target: "nobody" is not one of the clients'),
        ("window matrix", r"streaming.windows\[0\].strength: has 1 rows, expected 3"),
        ("origin ranking", r'origin\["d01_te"\].ranking: names \[\'x\'\] have no scores'),
    ],
)
def test_malformed_result_names_file_and_problem(tmp_path, how, problem):
    data = hand_made(tmp_path / "x")
    path = tmp_path / "x" / RESULT_FILE
    path.write_text(json.dumps(_mutate(data, how)))
    with pytest.raises(FedGCError, match=re.escape(str(path)) + ".*" + problem):
        load_result(tmp_path / "x")


def test_missing_dir_no_result_invalid_json(tmp_path):
    with pytest.raises(FedGCError, match=re.escape(str(tmp_path / "nope")) + " does not exist"):
        load_result(tmp_path / "nope")
    with pytest.raises(FedGCError, match=re.escape(str(tmp_path)) + " has no result.json"):
        load_result(tmp_path)
    (tmp_path / RESULT_FILE).write_text('{"clients": [')
    with pytest.raises(FedGCError, match=re.escape(str(tmp_path / RESULT_FILE)) + ".*invalid JSON"):
        load_result(tmp_path)


# ---------------------------------------------------------------------------------------------- table


def test_ranked_pairs_and_table(tmp_path):
    hand_made(tmp_path)
    res = load_result(tmp_path)
    c = res.clients
    order = [(p.source, p.target) for p in ranked_pairs(res)]
    # log10 p: 2->0 and 1->0 tie at -400 (strength 0.7 first), 0->2 -5, 0->1 -2, 2->1 -0.5, 1->2 -0.1
    assert order == [(c[2], c[0]), (c[1], c[0]), (c[0], c[2]), (c[0], c[1]), (c[2], c[1]), (c[1], c[2])]
    first = ranked_pairs(res)[1]
    assert first.pvalue == 0.0 and first.log10_pvalue == -400.0 and first.dof == 6 and first.true_edge

    lines = format_table(res).splitlines()
    assert lines[0].startswith("hand: 3 clients, 3 rounds, converged; 4 of 6 ordered pairs are edges")
    header = lines[2].split()
    assert header == ["#", "source", "->", "target", "strength", "statistic", "dof", "p-value", "edge", "true"]
    body = lines[4:8]
    assert body[0].split()[0] == "1" and f"{c[2]} -> {c[0]}" in body[0]
    assert body[1].split()[-4:] == ["6", "1.0e-400", "yes", "yes"]
    assert " n/a " in body[2] and body[2].split()[-3:] == ["1.0e-5", "yes", "yes"]  # null statistic
    assert body[3].split()[-3:] == ["0.01", "yes", "no"]
    assert lines[8] == "2 pairs that are not edges are not listed (--all lists every pair)"

    lines = format_table(res, top=1).splitlines()
    assert len([x for x in lines if re.match(r"\s*\d+  ", x)]) == 1 and "... 3 more edges" in lines[-2]
    lines = format_table(res, every_pair=True).splitlines()
    rows = [x for x in lines if re.match(r"\s*\d+  ", x)]
    assert len(rows) == 6 and rows[-1].split()[-2:] == ["no", "no"] and "0.794" in rows[-1]
    relaxed = format_table(with_alpha(res, alpha=0.5), every_pair=True)
    assert "5 of 6 ordered pairs are edges" in relaxed and "the run used alpha = 0.05" in relaxed
    strict = with_alpha(res, alpha=1e-300)  # only the two underflowed p-values (0) survive
    assert "no pair" not in format_table(strict) and int(strict.edges.sum()) == 2
    with pytest.raises(FedGCError, match="--top 0"):
        format_table(res, top=0)
    with pytest.raises(FedGCError, match=r"--alpha 1.5"):
        with_alpha(res, alpha=1.5)


# ---------------------------------------------------------------------------------------------- exports


def _dot_edges(text: str) -> list[tuple[str, str, dict]]:
    """(source, target, attributes) of every `"a" -> "b" [k="v", ...];` line, quotes unescaped."""
    quoted = r'"((?:[^"\\]|\\.)*)"'
    out = []
    for line in text.splitlines():
        hit = re.fullmatch(rf"\s*{quoted} -> {quoted} \[(.*)\];", line)
        if hit:
            attrs = dict(re.findall(rf"(\w+)={quoted}", hit.group(3)))
            unescape = lambda s: re.sub(r"\\(.)", r"\1", s)
            out.append((unescape(hit.group(1)), unescape(hit.group(2)), attrs))
    return out


@pytest.mark.parametrize("which", ["run", "hand"])
def test_exports_round_trip(run, tmp_path, which):
    import networkx as nx

    if which == "run":
        res = load_result(run[1])
    else:
        hand_made(tmp_path / "in")
        res = load_result(tmp_path / "in")
    paths = export(res, formats=parse_formats("all"), out_dir=tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == EXPORT_FILES
    pairs = ranked_pairs(res)
    edges = {(p.source, p.target): p for p in pairs if p.edge}
    assert edges  # both fixtures have discoveries

    def num(text: str) -> float:
        return float(text) if text else math.nan

    with paths["csv"].open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(pairs)
    for row, p in zip(rows, pairs):
        assert (row["target"], row["source"], row["edge"], int(row["dof"])) == (
            p.target,
            p.source,
            str(p.edge).lower(),
            p.dof,
        )
        for key in ("strength", "statistic", "pvalue", "log10_pvalue"):
            np.testing.assert_equal(num(row[key]), getattr(p, key))  # exact, NaN == NaN

    data = json.loads(paths["json"].read_text())
    assert data["clients"] == list(res.clients) and data["alpha"] == res.alpha and len(data["pairs"]) == len(pairs)
    for entry, p in zip(data["pairs"], pairs):
        back = {k: math.nan if v is None else v for k, v in entry.items()}
        assert back.keys() == {"target", "source", "strength", "statistic", "dof", "pvalue", "log10_pvalue", "edge"}
        for key, value in back.items():
            np.testing.assert_equal(value, getattr(p, key))

    g = nx.read_graphml(paths["graphml"])
    assert g.is_directed() and sorted(g.nodes) == sorted(res.clients)
    assert {n: g.nodes[n]["dim"] for n in g.nodes} == dict(zip(res.clients, res.dims))
    assert set(g.edges) == set(edges) and nx.number_of_selfloops(g) == 0
    for (s, t), p in edges.items():
        assert g.edges[s, t]["weight"] == p.strength and g.edges[s, t]["log10_pvalue"] == p.log10_pvalue

    text = paths["dot"].read_text()
    dot = _dot_edges(text)
    assert len(dot) == len(edges) == text.count(" -> ")
    assert {(s, t) for s, t, _ in dot} == set(edges)
    for s, t, attrs in dot:
        assert float(attrs["strength"]) == edges[s, t].strength and float(attrs["penwidth"]) >= 1.0
    assert text.count("{") == text.count("}") == 1
    pydot = pytest.importorskip("pydot")
    (graph,) = pydot.graph_from_dot_data(text)
    assert len(graph.get_edges()) == len(edges) and len(graph.get_nodes()) >= len(res.clients)


def test_parse_formats():
    assert parse_formats(" CSV, dot,csv ") == ("csv", "dot")
    with pytest.raises(FedGCError, match=r"unknown format.*'png'"):
        parse_formats("csv,png")


# ---------------------------------------------------------------------------------------------- figures


def _looks_like_a_figure(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 600 and image[..., :3].std() > 0.05


def test_figures(stream_dir, tmp_path):
    res = load_result(stream_dir)
    paths = write_figures(res, out_dir=tmp_path)
    assert {k: p.name for k, p in paths.items()} == FIGURE_FILES
    for path in paths.values():
        _looks_like_a_figure(path)
    again = tmp_path / "again.png"
    graph_figure(res).savefig(again, dpi=110)
    assert again.read_bytes() == paths["graph"].read_bytes()  # deterministic layout


def test_streaming_and_origin_figures_mark_alerts_and_crossings(stream_dir):
    from fedgc.report.figures import origin_figure, streaming_figure

    res = load_result(stream_dir)
    ax = streaming_figure(res).axes[0]
    marked = np.concatenate([c.get_offsets() for c in ax.collections])
    expected = [(a.time, a.strength_after) for a in res.streaming.alerts]
    np.testing.assert_allclose(sorted(map(tuple, marked)), sorted(expected))
    assert len(ax.texts) == len(expected)  # each alert is labelled with its pair and kind

    ax = origin_figure(res).axes[0]
    (o,) = res.origins
    crossings = [
        (c.first_crossing, c.score[int(c.first_crossing)]) for c in o.clients.values() if c.first_crossing is not None
    ]
    marked = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(sorted(map(tuple, marked)), sorted(crossings))
    assert any(np.allclose(line.get_ydata(), o.threshold) for line in ax.lines)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith(f"1. {o.ranking[0]} (first crossing t = ")


def test_graph_arrows_each_edge_once_outside_the_nodes(tmp_path):
    from matplotlib.patches import Circle, FancyArrowPatch
    from matplotlib.path import Path

    hand_made(tmp_path)
    res = load_result(tmp_path)
    fig = graph_figure(res)
    ax = fig.axes[0]
    fig.draw_without_rendering()
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    nodes = [p for p in ax.patches if isinstance(p, Circle)]
    missed = res.truth & ~res.edges
    assert len(arrows) == int(res.edges.sum() + missed.sum()) == 5  # 4 discoveries, 1 missed true edge
    np.testing.assert_allclose([c.center for c in nodes], graph_layout(res))
    ends = set()
    for arrow in arrows:
        path = arrow.get_path()  # data coordinates: the shaft, clipped at both node circles, then the head
        xy = path.vertices[path.codes != Path.CLOSEPOLY]
        shaft_end = xy[np.flatnonzero(path.codes == Path.MOVETO)[1] - 1]
        near = [int(np.argmin([np.hypot(*(v - c.center)) for c in nodes])) for v in (xy[0], shaft_end)]
        ends.add(tuple(near))
        for v in xy:  # no part of the arrow (head included) lies inside a node it joins
            for k in near:
                assert np.hypot(*(v - nodes[k].center)) >= nodes[k].radius * 0.98
    assert len(ends) == 5 and all(a != b for a, b in ends)  # distinct pairs, no self-loops


def test_cli_inspect(stream_dir, tmp_path, capsys):
    work = tmp_path / "run"
    shutil.copytree(stream_dir, work)
    out = tmp_path / "elsewhere"
    assert main(["inspect", str(work), "--top", "2", "--export", "csv,graphml", "--figures", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].startswith("tiny: 4 clients") and "streaming: 24 windows of 400 samples every 100" in table[1]
    assert len([x for x in table if re.match(r"\s*\d+  ", x)]) == 2
    written = {p.name for p in out.iterdir()}
    assert written == {"edges.csv", "graph.graphml", *FIGURE_FILES.values(), ".fedgc-inspect"}  # + which run
    assert f"wrote {out / 'edges.csv'}" in captured.err
    assert sorted(p.name for p in work.iterdir()) == [RESULT_FILE]  # --out leaves the run folder alone
    assert main(["inspect", str(work), "--export", "dot", "--out", str(out)]) == 0  # the same run's folder: added to
    assert (out / "graph.dot").is_file() and (out / "edges.csv").is_file()

    assert main(["inspect", str(work), "--export", "json", "--alpha", "0.2", "--all"]) == 0
    # default: into DIR; decided at another level than the run's, so named with it
    assert (
        json.loads((work / "edges.alpha-0.2.json").read_text())["alpha"] == 0.2 and not (work / "edges.json").exists()
    )

    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["inspect", str(work), "--export", "xls", "--out", str(tmp_path / "never")]) == 2
    assert "unknown format" in capsys.readouterr().err and not (tmp_path / "never").exists()
