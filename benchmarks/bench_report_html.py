"""HTML report benchmark: page size and load time in headless Chromium for a 30-site run.

Makes a synthetic 30-site run (`fedgc simulate` on a YAML with n_clients: 30, written to a temporary
folder), builds its report.html (`fedgc inspect --html`), and opens it in Debian's headless Chromium.
Load time is measured in the browser: from navigation start (performance.timeOrigin) to the graph
drawn (the page records performance.now() when plotly.js has drawn the graph). "cold" opens the page
in a fresh browser profile each time (nothing compiled or cached: what a reader sees first), "warm"
reloads it in the same browser. The same page with the full plotly.js bundle of the plotly package
(the fallback when scripts/setup.sh has not fetched the cartesian bundle) is measured alongside.
Other run folders can be added with --runs.

    .venv/bin/python benchmarks/bench_report_html.py
    .venv/bin/python benchmarks/bench_report_html.py --repeats 5 --runs runs/default runs/tep
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Chromium launcher the browser tests use

SITES30 = {
    "name": "sites30", "seed": 0, "engine": "local", "local_models": "given",
    "synthetic": {"n_clients": 30, "state_dims": 3, "obs_dims": 20, "edge_density": 0.07, "edge_strength": 0.3,
                  "snr": 1.0, "n_steps": 4000},
    "server": {"rule": "newton", "max_rounds": 20, "tol": 1.0e-6, "alpha": 0.05},
    "evaluation": {"oracle": False},
}  # fmt: skip


def make_run(folder: Path) -> Path:
    from fedgc.cli import main

    cfg = folder / "sites30.yaml"
    cfg.write_text(yaml.safe_dump(SITES30))
    out = folder / "sites30"
    if main(["simulate", str(cfg), "--out", str(out), "--quiet"]) != 0:
        raise SystemExit("the 30-site simulation failed")
    return out


def build_pages(run: Path, folder: Path) -> list[tuple[str, Path, float]]:
    """(variant, page, seconds to build) for the default bundle and the full plotly bundle."""
    from fedgc.report.result_json import read_result
    from fedgc.report.web.html import full_plotly_bundle, plotly_bundle, report_page

    data = read_result(run)
    pages = []
    for variant, bundle in (("default", plotly_bundle()), ("full plotly.js", full_plotly_bundle())):
        t0 = time.perf_counter()
        html = report_page(data, bundle=bundle)
        seconds = time.perf_counter() - t0
        path = folder / f"{run.name}-{variant.split()[0]}.html"
        path.write_text(html, encoding="utf-8")
        pages.append((f"{variant} ({bundle.name})", path, seconds))
    return pages


def graph_drawn_ms(driver, url: str) -> float:
    """Navigation start to graph drawn, in ms, as the page measured it."""
    driver.get(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = driver.execute_script("return window.fedgcReport && window.fedgcReport.timings.graphDrawn")
        if t:
            return float(t)
        time.sleep(0.02)
    raise RuntimeError(f"{url}: the graph was not drawn within 60 s")


def measure(page: Path, repeats: int) -> tuple[list[float], list[float]]:
    from conftest import start_chromium

    cold, warm = [], []
    for _ in range(repeats):
        driver = start_chromium()
        try:
            cold.append(graph_drawn_ms(driver, page.as_uri()))
            warm += [graph_drawn_ms(driver, page.as_uri()) for _ in range(3)]
        finally:
            driver.quit()
            driver.fedgc_cleanup()
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh browsers per page (default 3)")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="more run folders to measure")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        runs = [make_run(folder), *args.runs]
        print(f"30-site run made in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for run in runs:
            from fedgc.report.result_json import load_result

            result = load_result(run)
            for variant, page, build_s in build_pages(run, folder):
                cold, warm = measure(page, args.repeats)
                rows.append([result.name, str(len(result.clients)), str(int(result.edges.sum())), variant,
                             f"{page.stat().st_size / 1e6:.2f}", f"{build_s:.2f}", f"{statistics.median(cold):.0f}",
                             f"{max(cold):.0f}", f"{statistics.median(warm):.0f}"])  # fmt: skip
                print(f"{result.name} {variant}: cold {[round(c) for c in cold]} ms", file=sys.stderr)
    load = os.getloadavg()[0]
    head = ["run", "sites", "edges", "plotly.js", "page MB", "build s", "cold load ms (median)", "cold load ms (max)",
            "warm load ms (median)"]  # fmt: skip
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
