"""Time and peak memory of fedgc.data.csv.read_client_csv on one or more files, each repeat in a fresh process.

Wall and CPU seconds are for reading every file (CPU: the process's, less noisy on a shared machine), per
file when there are several. Peak memory is the child's ru_maxrss; `base MB` is its RSS after the imports
(numpy, pandas, pyarrow, fedgc.data.csv), so `peak - base` is what reading cost. --parsers slow forces the pure-Python
parser (fedgc.data.csv._parse_python); --before DIR also times the fedgc package of another checkout (e.g.
`git worktree add /tmp/orig main`, with its own .venv from scripts/setup.sh: an editable install finds its
own fedgc whatever PYTHONPATH says), i.e. the code before a change, with its default parser.
pandas and pyarrow are imported before the clock starts (once per run, not per file).

    .venv/bin/python benchmarks/make_long_csvs.py --out /tmp/a100k --sites 2 --steps 100000
    .venv/bin/python benchmarks/bench_read_csv.py /tmp/a100k/site000.csv --repeats 3
    .venv/bin/python benchmarks/bench_read_csv.py /work/peers/M100/site*.csv --parsers fast --before /work/main
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(paths: list[str], parser: str) -> dict:
    import numpy as np  # noqa: F401
    import pandas  # noqa: F401  (the fast readers' packages: imported once per run, not timed per file)

    with contextlib.suppress(ImportError):  # a checkout from before pyarrow (--before)
        import pyarrow.csv  # noqa: F401

    import fedgc.data.csv as data

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if parser == "slow":
        data.FAST_PATH = False
    t0, c0 = time.perf_counter(), time.process_time()
    shapes = [list(data.read_client_csv(path, client="bench").values.shape) for path in paths]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "cpu_s": cpu, "base_mb": base, "peak_mb": peak, "shape": shapes[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parsers", nargs="+", default=["fast", "slow"], choices=["fast", "slow"])
    p.add_argument("--before", default=None, help="a checkout whose fedgc is timed as 'before'")
    p.add_argument("--child", choices=["fast", "slow"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.paths, args.child)))
        return
    variants = [(k, k, None) for k in args.parsers]
    if args.before:
        variants.append(("before", "fast", args.before))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    for _ in range(args.repeats):  # interleaved
        for label, parser, checkout in variants:
            env, python = dict(os.environ), sys.executable
            if checkout:
                own = Path(checkout) / ".venv" / "bin" / "python"
                python = str(own) if own.exists() else python
                env["PYTHONPATH"] = checkout
            out = subprocess.run(
                [python, __file__, *map(os.path.abspath, args.paths), "--child", parser],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=checkout or None,
            ).stdout
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    n = len(args.paths)
    size = sum(os.path.getsize(p) for p in args.paths) / 1e6
    unit = "s" if n == 1 else "ms per file"
    scale = 1.0 if n == 1 else 1e3 / n
    print(f"{n} file(s), {size:.1f} MB, load average {os.getloadavg()[0]:.2f} (1 min) after the runs")
    print(
        f"| parser | shape | wall {unit} (median, min-max) | CPU {unit} (median, min-max) | peak MB | base MB | peak - base MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for parser, rs in runs.items():
        w = [r["wall_s"] * scale for r in rs]
        c = [r["cpu_s"] * scale for r in rs]
        peak = statistics.median(r["peak_mb"] for r in rs)
        base = statistics.median(r["base_mb"] for r in rs)
        print(
            f"| {parser} | {rs[0]['shape']} | {statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f}) | "
            f"{statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f}) | {peak:.0f} | {base:.0f} | {peak - base:.0f} |"
        )


if __name__ == "__main__":
    main()
