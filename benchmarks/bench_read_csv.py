"""Time and peak memory of fedgc.data.csv.read_client_csv on one file, each repeat in a fresh process.

Peak memory is the child's ru_maxrss; `base MB` is its RSS after the imports (numpy, pandas, fedgc.data.csv),
so `peak - base` is what reading the file cost. --parser slow forces the old pure-Python parser
(fedgc.data.csv._parse_python) for the before/after comparison; --before DIR also times the fedgc package
of another checkout (e.g. `git worktree add /tmp/orig main`), i.e. the code before this change.
pandas is imported before the clock starts (statsmodels imports it on every `fedgc run` anyway).

    .venv/bin/python benchmarks/make_long_csvs.py --out /tmp/a100k --sites 2 --steps 100000
    .venv/bin/python benchmarks/bench_read_csv.py /tmp/a100k/site000.csv --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(path: str, parser: str) -> dict:
    import numpy as np  # noqa: F401
    import pandas  # noqa: F401  (imported by statsmodels on every `fedgc run` anyway)

    import fedgc.data.csv as data

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if parser == "slow":
        data.FAST_PATH = False
    t0 = time.perf_counter()
    table = data.read_client_csv(path, client="bench")
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "base_mb": base, "peak_mb": peak, "shape": list(table.values.shape)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parsers", nargs="+", default=["fast", "slow"], choices=["fast", "slow"])
    p.add_argument("--before", default=None, help="a checkout whose fedgc is timed as 'before'")
    p.add_argument("--child", choices=["fast", "slow"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.path, args.child)))
        return
    variants = [(k, k, None) for k in args.parsers]
    if args.before:
        variants.append(("before", "slow", args.before))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    for _ in range(args.repeats):  # interleaved
        for label, parser, pythonpath in variants:
            env = dict(os.environ)
            if pythonpath:
                env["PYTHONPATH"] = pythonpath
            out = subprocess.run(
                [sys.executable, __file__, args.path, "--child", parser],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=pythonpath or None,
            ).stdout
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    size = os.path.getsize(args.path) / 1e6
    print(f"{args.path}: {size:.1f} MB, load average {os.getloadavg()[0]:.2f} (1 min) after the runs")
    print("| parser | shape | wall s (median, min-max) | peak MB | base MB | peak - base MB |")
    print("|---|---|---|---|---|---|")
    for parser, rs in runs.items():
        w = [r["wall_s"] for r in rs]
        peak = statistics.median(r["peak_mb"] for r in rs)
        base = statistics.median(r["base_mb"] for r in rs)
        print(
            f"| {parser} | {rs[0]['shape']} | {statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f}) | {peak:.0f} | "
            f"{base:.0f} | {peak - base:.0f} |"
        )


if __name__ == "__main__":
    main()
