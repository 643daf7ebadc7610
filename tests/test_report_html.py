"""`fedgc inspect RUN --html` and `fedgc inspect RUN_A RUN_B --html` in a real headless Chromium: the
default, Tennessee Eastman, streaming (mean_shift) and private runs load without console errors, draw
the run's edges, re-decide them in the page exactly as fedgc.report.ranking does, show each pair's test on
hover, link the heatmap and the graph, and show the run facts, the streaming alerts and the fault
origin that result.json holds. Screenshots go to each test's tmp_path."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import operator
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.cli import main
from fedgc.data.tep_layout import default_data_path
from fedgc.report.ranking import with_alpha
from fedgc.report.result_json import load_result, read_result
from fedgc.report.text import format_pvalue
from fedgc.report.web.html import graph_layout, plotly_bundle, report_page

REPO = Path(__file__).resolve().parents[1]
RUNS = ("default", "tep", "mean_shift", "private")
PAGE_LIMIT_BYTES = 10_000_000


# ---------------------------------------------------------------------------------------------- runs


def _private_yaml(folder: Path, *, seeded: bool = False) -> Path:
    """simulations/private.yaml at a quarter of its length (fresh noise every run, so it has edges to draw
    at T = 5000 only with a looser epsilon than the scenario's). seeded: the noise drawn from the seed
    (reproducible_noise, NOT private), for a test whose assertion needs the same draws every time."""
    cfg = yaml.safe_load((REPO / "simulations" / "private.yaml").read_text())
    cfg["synthetic"]["n_steps"] = 5000
    cfg["privacy"]["epsilon"] = 40
    cfg["privacy"]["reproducible_noise"] = seeded
    path = folder / ("private_seeded.yaml" if seeded else "private.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _sites30_yaml(folder: Path) -> Path:
    cfg = {
        "name": "sites30", "seed": 3, "engine": "local", "local_models": "given",
        "synthetic": {"n_clients": 30, "state_dims": 2, "obs_dims": 6, "edge_density": 0.07, "n_steps": 1500},
        "server": {"max_rounds": 15}, "evaluation": {"oracle": False},
    }  # fmt: skip
    path = folder / "sites30.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _scenario(name: str, folder: Path) -> Path:
    if name in ("private", "private_seeded"):
        return _private_yaml(folder, seeded=name == "private_seeded")
    if name == "sites30":
        return _sites30_yaml(folder)
    if name == "tep" and not (default_data_path() / "d00_te.dat").is_file():
        pytest.fail(f"the TEP report test needs the Braatz data at {default_data_path()} (set FEDGC_TEP_DATA)")
    return REPO / "simulations" / f"{name}.yaml"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """run_dir(name): the output folder of `fedgc simulate` on that scenario, made once and shared by the
    test processes (pytest-xdist workers share the base temp folder; a file lock makes one of them run it)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "html-report-runs"  # this session's
    shared.mkdir(exist_ok=True)

    def make(name: str) -> Path:
        out = shared / name
        with open(shared / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "result.json").is_file():
                shutil.rmtree(out, ignore_errors=True)
                assert main(["simulate", str(_scenario(name, shared)), "--out", str(out), "--quiet"]) == 0
        return out

    return make


def _report(run: Path, folder: Path, *extra: str) -> Path:
    """`fedgc inspect RUN --html --out folder`; the report's path."""
    assert main(["inspect", str(run), "--html", "--out", str(folder), *extra]) == 0
    page = folder / "report.html"
    assert page.is_file() and page.stat().st_size < PAGE_LIMIT_BYTES
    return page


def _drawn_edges(driver, div: str = "graph") -> set[tuple[int, int]]:
    """(target, source) of the arrows drawn in the graph (FDR edges; missed true edges are not edges)."""
    pairs = driver.execute_script(
        "const gd = document.getElementById(arguments[0]); const out = [];"
        "for (const t of gd.data) { if (!t.meta || t.meta.role !== 'edges' || t.meta.category === 'missed') continue;"
        "  for (const c of t.customdata) if (c) out.push(c[0] + ',' + c[1]); }"
        "return [...new Set(out)];",
        div,
    )
    return {tuple(int(v) for v in p.split(",")) for p in pairs}


def _edges(matrix) -> set[tuple[int, int]]:
    M = len(matrix)
    return {(m, n) for m in range(M) for n in range(M) if m != n and matrix[m][n]}


def _set_alpha(driver, web, alpha: float) -> None:
    box = driver.find_element("id", "alpha-input")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.clear()
    box.send_keys(repr(alpha) + "\n")
    web.wait_for(driver, "return window.fedgcReport.state.alpha === arguments[0]".replace("arguments[0]", repr(alpha)),
                 what=f"alpha {alpha} to be applied")  # fmt: skip


def _inspect_count(run: Path, alpha: float, capsys) -> int:
    """The edge count `fedgc inspect RUN --alpha X` prints."""
    capsys.readouterr()
    assert main(["inspect", str(run), "--alpha", repr(alpha)]) == 0
    text = capsys.readouterr().out
    return int(re.search(r"; (\d+) of \d+ ordered pairs are edges", text).group(1))


# ---------------------------------------------------------------------------------------------- every run


@pytest.mark.parametrize("name", RUNS)
def test_page_loads_clean_and_draws_the_runs_edges(name, run_dir, chromium, web, tmp_path):
    run = run_dir(name)
    page = _report(run, tmp_path)
    errors = web.open_page(chromium, page.as_uri())
    chromium.save_screenshot(str(tmp_path / f"{name}.png"))
    assert errors == []
    result = json.loads((run / "result.json").read_text())
    assert _drawn_edges(chromium) == _edges(result["edges"])
    assert chromium.execute_script("return window.fedgcReport.runEdgesReproduced") is True
    count = chromium.find_element("id", "edge-count")
    assert count.get_attribute("data-edges") == str(len(_edges(result["edges"])))
    assert "the run's edges" in count.text
    text = chromium.find_element("tag name", "body").text
    for fact in (result["engine"], f"seed {result['seed']}", f"fedgc {result['fedgc_version']}"):
        assert fact in text
    assert "<!-- plotly.js: vendor/plotly-cartesian.min.js -->" in page.read_text()  # setup.sh fetched the bundle
    assert (
        chromium.execute_script("return performance.getEntriesByType('resource').map((r) => r.name)") == []
    )  # offline


@pytest.mark.parametrize("name", RUNS)
def test_alpha_control_gives_the_edges_fedgc_inspect_gives(name, run_dir, chromium, web, tmp_path, capsys):
    run = run_dir(name)
    web.open_page(chromium, _report(run, tmp_path).as_uri())
    inspected = load_result(run)
    levels = [1e-12, 1e-6, 1e-3, 0.01, 0.2, 0.5, inspected.run_alpha]
    counts = []
    for alpha in levels:
        _set_alpha(chromium, web, alpha)
        expected = with_alpha(inspected, alpha=alpha).edges
        assert _drawn_edges(chromium) == _edges(expected), alpha
        shown = int(chromium.find_element("id", "edge-count").get_attribute("data-edges"))
        assert shown == int(expected.sum()) == _inspect_count(run, alpha, capsys), alpha
        counts.append(shown)
    assert len(set(counts)) > 1, counts  # the control did move the edges
    assert counts[-1] == int(inspected.edges.sum())  # back at the run's alpha: the run's edges
    assert web.console_errors(chromium) == []
    chromium.save_screenshot(str(tmp_path / f"{name}-alpha.png"))


def _edge_to_hover(driver, exclude: tuple[int, int] | None = None) -> dict:
    """The drawn arrow (not `exclude`) whose middle point is farthest from every other arrow's points:
    {m, n, x, y} (target, source, the middle point)."""
    return driver.execute_script(
        "const gd = document.getElementById('graph'); const pts = [];"
        "for (const t of gd.data) { if (!t.meta || t.meta.role !== 'edges') continue;"
        "  for (let i = 0; i < t.x.length; i++) if (t.x[i] !== null) pts.push([t.x[i], t.y[i], t.customdata[i][0], t.customdata[i][1], i]); }"
        "let best = null;"
        "for (const t of gd.data) { if (!t.meta || t.meta.role !== 'edges' || t.meta.category === 'missed') continue;"
        "  for (let i = 0; i < t.x.length; i++) { if (t.x[i] === null) continue; const cd = t.customdata[i];"
        "    if (t.x[i + 8] === undefined || i > 0 && t.x[i - 1] !== null) continue;"  # i: first point of an arrow
        "    if (arguments[0] && cd[0] === arguments[0][0] && cd[1] === arguments[0][1]) continue;"
        "    const x = t.x[i + 8], y = t.y[i + 8]; let d = Infinity;"
        "    for (const p of pts) if (p[2] !== cd[0] || p[3] !== cd[1]) d = Math.min(d, Math.hypot(p[0] - x, p[1] - y));"
        "    if (!best || d > best.d) best = {m: cd[0], n: cd[1], x, y, d}; } }"
        "return best;",
        list(exclude) if exclude else None,
    )


@pytest.mark.parametrize("name", RUNS)
def test_hovering_an_edge_shows_its_test(name, run_dir, chromium, web, tmp_path):
    run = run_dir(name)
    web.open_page(chromium, _report(run, tmp_path).as_uri())
    result = load_result(run)
    edge = _edge_to_hover(chromium)
    assert edge is not None, "no arrow drawn"
    m, n = edge["m"], edge["n"]
    web.pointer(chromium, *web.plot_point(chromium, "graph", edge["x"], edge["y"]))
    label = web.wait_for(chromium, "const h = document.querySelector('#graph .hoverlayer .hovertext'); return h && h.textContent",
                         what="the hover label")  # fmt: skip
    chromium.save_screenshot(str(tmp_path / f"{name}-hover.png"))
    assert f"{result.clients[n]} -> {result.clients[m]}" in label
    assert f"p-value = {format_pvalue(float(result.log10_pvalue[m, n]))}" in label
    assert f"dof = {int(result.dof[m, n])}" in label and "statistic = " in label and "strength" in label


def test_heatmap_and_graph_select_each_other(run_dir, chromium, web, tmp_path):
    run = run_dir("default")
    web.open_page(chromium, _report(run, tmp_path).as_uri())
    result = load_result(run)
    m, n = map(int, np.argwhere(result.edges)[0])  # an edge: clicking its cell highlights its arrow
    web.pointer(chromium, *web.plot_point(chromium, "heatmap", n, m), click=True)
    selected = web.wait_for(chromium, "const t = document.getElementById('graph').data.find((t) => t.meta && t.meta.role === 'selected');"
                            "return t && [t.meta.m, t.meta.n]", what="the selected arrow")  # fmt: skip
    assert selected == [m, n]
    assert f"{result.clients[n]} -> {result.clients[m]}" in chromium.find_element("id", "pair-detail").text
    chromium.save_screenshot(str(tmp_path / "heatmap-click.png"))
    # and back: clicking another arrow frames its cell in the heatmap
    edge = _edge_to_hover(chromium, exclude=(m, n))
    web.pointer(chromium, *web.plot_point(chromium, "graph", edge["x"], edge["y"]), click=True)
    frame = web.wait_for(chromium, "const s = (document.getElementById('heatmap').layout.shapes || []).find((s) => s.name === 'selected');"
                         "return s && [s.y0 + 0.5, s.x0 + 0.5]", what="the framed heatmap cell")  # fmt: skip
    assert frame == [edge["m"], edge["n"]]
    chromium.save_screenshot(str(tmp_path / "graph-click.png"))


# ---------------------------------------------------------------------------------------------- sections


def test_streaming_timeline_shows_the_alerts_of_result_json(run_dir, chromium, web, tmp_path):
    run = run_dir("mean_shift")
    web.open_page(chromium, _report(run, tmp_path).as_uri())
    stream = json.loads((run / "result.json").read_text())["streaming"]
    assert stream["alerts"], "the mean_shift scenario raises its switch's alert"
    drawn = chromium.execute_script(
        "const t = document.getElementById('timeline').data.find((t) => t.meta && t.meta.role === 'alerts');"
        "return t.x.map((x, i) => [x, t.y[i], t.customdata[i]]);"
    )
    assert [(d[0], d[1]) for d in drawn] == [(a["time"], a["strength_after"]) for a in stream["alerts"]]
    rows = chromium.find_elements("css selector", "#timeline-alerts tr[data-alert]")
    assert len(rows) == len(stream["alerts"])
    windows = chromium.execute_script(
        "return document.getElementById('timeline').data.find((t) => t.meta.role === 'counts').x"
    )
    assert windows == [w["end"] for w in stream["windows"]]
    # clicking the alert's marker shows its pair and its test
    a = stream["alerts"][0]
    web.pointer(chromium, *web.plot_point(chromium, "timeline", a["time"], a["strength_after"]), click=True)
    detail = web.wait_for(chromium, "const d = document.getElementById('timeline-alert-detail'); return d.dataset.alert !== undefined && d.textContent",
                          what="the alert's detail")  # fmt: skip
    chromium.save_screenshot(str(tmp_path / "alert.png"))
    assert f"{a['source']} -> {a['target']} {a['kind']}" in detail
    assert format_pvalue(a["log10_pvalue"]) in detail and f"window {a['window']}" in detail
    assert f"before {a['strength_before']:.4g}, after {a['strength_after']:.4g}" in detail
    assert web.console_errors(chromium) == []


def test_fault_origin_scores_thresholds_and_rankings(run_dir, chromium, web, tmp_path):
    run = run_dir("tep")
    web.open_page(chromium, _report(run, tmp_path).as_uri())
    origin = json.loads((run / "result.json").read_text())["origin"]
    rows = chromium.find_elements("css selector", "#origin-table tbody tr")
    assert [r.find_elements("tag name", "td")[0].text for r in rows] == list(origin)
    for row, record in zip(rows, origin.values()):
        assert row.find_elements("tag name", "td")[3].text == " > ".join(record["ranking"])
    last = list(origin)[-1]
    rows[-1].click()
    web.wait_for(chromium, f"return document.getElementById('origin-plot').layout.title.text.startsWith({json.dumps(last)})",
                 what="the last fault run's scores")  # fmt: skip
    plot = chromium.execute_script(
        "const gd = document.getElementById('origin-plot');"
        "return {scores: gd.data.filter((t) => t.meta.role === 'score').map((t) => [t.meta.client, t.y.length]),"
        "        threshold: gd.layout.shapes[0].y0};"
    )
    record = origin[last]
    assert [c for c, _ in plot["scores"]] == record["ranking"]
    assert all(length == len(record["clients"][c]["score"]) for c, length in plot["scores"])
    assert plot["threshold"] == record["threshold"]
    ranking = chromium.find_element("id", "origin-ranking").text
    assert ranking.splitlines()[0].startswith(record["ranking"][0])
    chromium.save_screenshot(str(tmp_path / "origin.png"))
    assert web.console_errors(chromium) == []


def test_run_facts_convergence_communication_and_privacy(run_dir, chromium, web, tmp_path):
    for name in ("private", "default"):
        run = run_dir(name)
        web.open_page(chromium, _report(run, tmp_path / name).as_uri())
        data = json.loads((run / "result.json").read_text())
        conv = chromium.execute_script("return document.getElementById('convergence').data.map((t) => t.x.length)")
        assert conv == [len(data["history"])] * 2
        comm = chromium.find_element("id", "communication").text
        assert f"{data['communication']['bytes_to_server'] / 1e6:.1f} MB" in comm
        assert f"{data['raw_data_bytes'] / 1e6:.1f} MB" in comm
        privacy = chromium.find_element("id", "privacy").text
        if name == "private":
            rows = chromium.find_elements("css selector", "#privacy tbody tr")
            assert len(rows) == len(data["privacy"]["per_client"])
            first, entry = next(iter(data["privacy"]["per_client"].items()))
            assert rows[0].text.startswith(first) and f"{entry['whole_run']['epsilon']:.4g}" in rows[0].text
        else:
            assert "Not private" in privacy
        assert "No data-quality notes" in chromium.find_element("id", "data-quality").text
        chromium.save_screenshot(str(tmp_path / f"{name}-facts.png"))


def test_data_quality_notes_of_a_run_on_messy_files(chromium, web, tmp_path):
    """`fedgc run --align timestamp` on CSVs with a stuck sensor, a held analyser column and gaps."""
    from fedgc.data.csv import write_client_csv
    from fedgc.data.synthetic import SystemSpec, simulate

    data = simulate(
        SystemSpec(n_clients=3, state_dims=2, obs_dims=6, edge_density=0.5, n_steps=1200), np.random.default_rng(4)
    )
    files = []
    for m, y in enumerate(data.y):
        y = y.copy()
        if m == 0:
            y[:, 1] = y[(np.arange(len(y)) // 3) * 3, 1]  # an analyser sampled every 3 rows and held
        keep = np.delete(np.arange(len(y)), [50 + m, 400 + 2 * m]) if m else np.arange(len(y))  # rows missing here
        values = np.hstack([y, np.full((len(y), 1), 2.5)])[keep]
        files.append(tmp_path / f"unit{m}.csv")
        write_client_csv(
            files[-1], values, columns=[*(f"x{j}" for j in range(y.shape[1])), "stuck"], timestamps=keep.astype(float)
        )
    out = tmp_path / "run"
    with pytest.warns(Warning):
        assert (
            main(
                [
                    "run",
                    *functools.reduce(operator.iadd, (["--data", str(f)] for f in files), []),
                    "--align",
                    "timestamp",
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
    web.open_page(chromium, _report(out, tmp_path / "html").as_uri())
    quality = json.loads((out / "result.json").read_text())["data"]["clients"]
    rows = {
        r.find_elements("tag name", "td")[0].text: r.text
        for r in chromium.find_elements("css selector", "#data-quality tbody tr")
    }
    assert set(rows) == set(quality)
    assert all("stuck (constant)" in text for text in rows.values())
    assert "x1 (every 3 rows" in rows["unit0"]
    for name, entry in quality.items():
        assert f"{entry['alignment']['inserted']} / {entry['alignment']['dropped']}" in rows[name]
    assert any(entry["alignment"]["inserted"] > 0 for entry in quality.values())
    chromium.save_screenshot(str(tmp_path / "data-quality.png"))
    assert web.console_errors(chromium) == []


# ---------------------------------------------------------------------------------------------- comparison


def test_comparison_of_a_private_and_a_plain_run(run_dir, chromium, web, tmp_path, capsys):
    plain, private = run_dir("default"), run_dir("private_seeded")  # seeded: `lost` below is the same every run
    assert main(["inspect", str(plain), str(private), "--html", "--out", str(tmp_path)]) == 0
    assert web.open_page(chromium, (tmp_path / "compare.html").as_uri()) == []
    a, b = load_result(plain), load_result(private)
    assert a.clients == b.clients
    expected = {
        "both": int((a.edges & b.edges).sum()),
        "gained": int((b.edges & ~a.edges).sum()),
        "lost": int((a.edges & ~b.edges).sum()),
    }
    counts = chromium.find_element("id", "compare-counts")
    assert {k: int(counts.get_attribute(f"data-{k}")) for k in expected} == expected
    assert expected["lost"] > 0  # privacy noise costs edges at epsilon 10
    assert "Both runs have the same 8 clients" in chromium.find_element("id", "client-sets").text
    rows = chromium.find_elements("css selector", "#change-table tbody tr")
    lost = [r.text for r in rows if " lost " in f" {r.text} "]
    assert len(lost) == expected["lost"]
    # at a common alpha both runs are re-decided
    _set_alpha(chromium, web, 0.001)
    at = {"both": int((with_alpha(a, alpha=0.001).edges & with_alpha(b, alpha=0.001).edges).sum())}
    assert int(counts.get_attribute("data-both")) == at["both"]
    chromium.find_element("id", "alpha-reset").click()  # back to each run's own level
    web.wait_for(chromium, "return window.fedgcReport.state.alpha === null")
    assert {k: int(counts.get_attribute(f"data-{k}")) for k in expected} == expected
    chromium.save_screenshot(str(tmp_path / "compare.png"))


def test_comparison_says_when_the_client_sets_differ(run_dir, chromium, web, tmp_path):
    big, small = run_dir("default"), run_dir("mean_shift")
    assert main(["inspect", str(big), str(small), "--html", "--out", str(tmp_path)]) == 0
    assert web.open_page(chromium, (tmp_path / "compare.html").as_uri()) == []
    banner = chromium.find_element("id", "client-sets").text
    assert banner.startswith("The client sets differ")
    assert "Only in default: client5, client6, client7" in banner and "Only in mean_shift: none" in banner
    a, b = load_result(big), load_result(small)
    common = 5
    gained = int((b.edges[:common, :common] & ~a.edges[:common, :common]).sum())
    assert int(chromium.find_element("id", "compare-counts").get_attribute("data-gained")) == gained
    assert chromium.execute_script(
        "return document.getElementById('graph').data.find((t) => t.meta.role === 'labels').text"
    ) == list(b.clients)
    chromium.save_screenshot(str(tmp_path / "compare-differ.png"))


# ---------------------------------------------------------------------------------------------- 30 sites, safety


def test_thirty_sites_names_do_not_collide(run_dir, chromium, web, tmp_path):
    run = run_dir("sites30")
    page = _report(run, tmp_path)
    assert web.open_page(chromium, page.as_uri()) == []
    chromium.save_screenshot(str(tmp_path / "sites30.png"))
    boxes = chromium.execute_script(
        "return [...document.querySelectorAll('#graph .textpoint text')].map((t) => { const r = t.getBoundingClientRect();"
        " return [t.textContent, r.left, r.top, r.right, r.bottom]; });"
    )
    assert sorted(b[0] for b in boxes) == sorted(load_result(run).clients)
    overlaps = [(p[0], q[0]) for i, p in enumerate(boxes) for q in boxes[i + 1:]
                if p[1] < q[3] and q[1] < p[3] and p[2] < q[4] and q[2] < p[4]]  # fmt: skip
    assert overlaps == []
    assert _drawn_edges(chromium) == _edges(json.loads((run / "result.json").read_text())["edges"])


def test_report_only_reads_result_json(run_dir, tmp_path):
    run = run_dir("mean_shift")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    assert main(["inspect", str(run), "--html"]) == 0
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    assert set(after) - set(before) <= {"report.html"}
    assert {k: after[k] for k in before if k != "report.html"} == {
        k: v for k, v in before.items() if k != "report.html"
    }


def test_page_is_self_contained_and_offline(run_dir):
    page = report_page(read_result(run_dir("default")))
    head = page[: page.index("<script>")]  # everything before the inlined scripts: no external resource
    assert not re.search(r"""(src|href)=["'](https?:)?//""", head)
    assert "<script src" not in page and '<link rel="stylesheet"' not in page
    assert page.count("<script") == 3  # plotly.js, the model (JSON), the page script
    assert len(page.encode()) < PAGE_LIMIT_BYTES


def test_client_names_cannot_break_out_of_the_page(run_dir, chromium, web, tmp_path):
    data = read_result(run_dir("default"))
    evil = ["</script><script>window.fedgcPwned = 1</script>", "<img src=x onerror=window.fedgcPwned=2>", "a & b \"'"]
    data = {**data, "clients": evil + data["clients"][3:]}
    page = tmp_path / "evil.html"
    page.write_text(report_page(data))
    assert web.open_page(chromium, page.as_uri()) == []
    assert chromium.execute_script("return window.fedgcPwned === undefined")
    labels = chromium.execute_script(
        "return document.getElementById('graph').data.find((t) => t.meta.role === 'labels').text"
    )
    assert labels[:3] == evil


def test_pairs_unknown_after_a_dropout(run_dir, chromium, web, tmp_path):
    """A client that dropped out (server.on_dropout: continue): its pairs are null in result.json, never
    edges, counted as p = 1 by the in-page BH, and their hover says unknown."""
    from fedgc.report.ranking import fdr_edges

    data = json.loads(json.dumps(read_result(run_dir("default"))))
    M, gone = len(data["clients"]), 2
    for m in range(M):
        for n in range(M):
            if m != n and gone in (m, n):
                for key in ("strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue"):
                    data[key][m][n] = None
                data["edges"][m][n] = None
                data["unknown"][m][n] = True
    page = tmp_path / "dropout.html"
    page.write_text(report_page(data))
    assert web.open_page(chromium, page.as_uri()) == []
    assert chromium.execute_script("return window.fedgcReport.runEdgesReproduced") is True
    p = np.array([[np.nan if v is None else v for v in row] for row in data["pvalue"]])
    for alpha in (0.05, 0.5):
        _set_alpha(chromium, web, alpha)
        assert _drawn_edges(chromium) == _edges(fdr_edges(p, alpha=alpha))
        assert all(gone not in pair for pair in _drawn_edges(chromium))
    text = chromium.execute_script("return document.getElementById('heatmap').data[0].text[0][2]")
    assert "unknown (a client dropped out)" in text and "p-value = n/a" in text


def test_layout_is_deterministic_and_inside_the_plot():
    rng = np.random.default_rng(0)
    links = rng.random((30, 30)) < 0.05
    np.fill_diagonal(links, False)
    links[:, 29] = links[29, :] = False  # a site without links goes below the others
    xy = graph_layout([f"c{k}" for k in range(30)], links)
    assert np.array_equal(xy, graph_layout([f"c{k}" for k in range(30)], links))
    assert np.all(np.abs(xy) <= 1 + 1e-9)
    linked = [k for k in range(29) if links[k].any() or links[:, k].any()]
    assert xy[29, 1] < xy[linked, 1].min()
    circle = graph_layout(["a", "b", "c"], np.zeros((3, 3), dtype=bool))
    assert np.allclose(np.hypot(*circle.T), 1.0)


def _tiny_result(pvalue: np.ndarray, log10_pvalue: np.ndarray, alpha: float) -> dict:
    """A minimal result dict with these p-values (None where NaN) and the edges statsmodels decides."""
    from fedgc.report.ranking import fdr_edges

    M = len(pvalue)
    rows = lambda a: [
        [None if m == n or not np.isfinite(a[m, n]) else float(a[m, n]) for n in range(M)] for m in range(M)
    ]
    edges = fdr_edges(pvalue, alpha=alpha)
    return {
        "name": "tiny", "clients": [f"s{k}" for k in range(M)], "dims": [2] * M, "alpha": alpha,
        "strength": rows(np.abs(log10_pvalue) / 100), "statistic": rows(-log10_pvalue), "dof": rows(np.full((M, M), 4.0)),
        "pvalue": rows(pvalue), "log10_pvalue": rows(log10_pvalue),
        "edges": [[bool(edges[m, n]) if m != n else None for n in range(M)] for m in range(M)],
    }  # fmt: skip


def test_in_page_benjamini_hochberg_is_statsmodels_exactly(chromium, web, tmp_path):
    """Underflowed p = 0 (log10 p kept), unknown pairs (null), ties, and p-values exactly on a BH cut
    (k / n) * alpha: the page's decision equals fedgc.report.ranking.fdr_edges at every level."""
    from fedgc.report.ranking import fdr_edges

    M = 6
    rng = np.random.default_rng(7)
    log10 = -rng.uniform(0, 8, (M, M))
    log10[0, 1], log10[2, 3], log10[4, 5] = -400.0, -350.0, -1200.0  # p underflows to 0
    p = 10.0**log10
    p[1, 0] = p[3, 2] = p[1, 2] = 0.004  # ties
    n = M * (M - 1)
    p[5, 4] = (7 / n) * 0.05  # exactly on the 7th cut at alpha 0.05
    log10[5, 4] = math.log10(p[5, 4])
    p[2, 0] = log10[2, 0] = np.nan  # unknown pair: counts as p = 1
    np.fill_diagonal(p, np.nan)
    np.fill_diagonal(log10, np.nan)
    page = tmp_path / "tiny.html"
    page.write_text(report_page(_tiny_result(p, log10, 0.05)))
    assert web.open_page(chromium, page.as_uri()) == []
    assert chromium.execute_script("return window.fedgcReport.runEdgesReproduced") is True
    alphas = [0.05, 1e-300, 1e-9, 1e-5, 0.001, 0.01, 0.02, 0.1, 0.3, 0.6, 0.9, 0.999] + [
        float(x) for x in np.sort(p[np.isfinite(p)]) * n / 3
    ]
    alphas = [a for a in alphas if 0 < a < 1]
    decided = chromium.execute_script(
        "const m = window.fedgcReport.model;"
        "return arguments[0].map((a) => window.fedgcReport.bhEdges(m.pvalue, m.log10_pvalue, a));",
        alphas,
    )
    for alpha, edges in zip(alphas, decided):
        expected = fdr_edges(p, alpha=alpha)
        got = np.array(edges, dtype=bool)
        np.fill_diagonal(got, False)
        assert np.array_equal(got, expected), alpha


def test_two_folders_need_html(run_dir, capsys):
    run = run_dir("default")
    assert main(["inspect", str(run), str(run)]) == 2
    assert "two with --html" in capsys.readouterr().err
    assert plotly_bundle().vendored, (
        "scripts/setup.sh fetches plotly.js's cartesian bundle into fedgc/report/web/assets/vendor"
    )
