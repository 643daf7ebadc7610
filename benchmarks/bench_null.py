"""Calibration under misspecification (issue 13): systems with NO cross edges, models identified from CSVs.

Null kinds (fedgc.data.ground_truth.NULLS; 4 independent sites, D_m in {2, 3}, sensors D_m+2 .. 6 D_m, SNR 0.5-4):
control (well specified), coloured (AR(1) 0.5 measurement noise), held (half the sensors of every site are
analyser columns sampled every 3-15 steps and held between), underorder (4 latent states per site, the
identification is told D_m = 2), drift (an AR(0.999) drift on every sensor, std 0.5 x its signal's).

Every system goes through the `fedgc run` path (fedgc.app.runner.run) on per-site CSV files with identified
models: server.test auto (= siv) and, for comparison, lr. Columns: the share of the 12 ordered pairs x seeds with
unadjusted p < alpha (0.05; calibrated: about 0.05), and the share declared edges by Benjamini-Hochberg at 0.05
(the false-edge rate; every edge is false here).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_null.py                        # 40 seeds, T = 2000
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_null.py --T 2000 20000 --seeds 40 --tests siv lr
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_identified import fedgc_run, write_sites
from bench_peers import bh_edges

from fedgc.app.config import parse_config
from fedgc.data import ground_truth as gt

ALPHA = 0.05


def one_system(kind: str, T: int, seed: int, tests: list[str], work: Path) -> list[dict]:
    system = gt.make(f"null_{kind}", seed)
    ys, _ = gt.simulate(system, T, np.random.default_rng([seed, T]))
    folder = work / f"{kind}_{T}_{seed}"
    specs = write_sites(system, ys, folder)
    base = parse_config({"name": kind, "seed": seed, "evaluation": {"oracle": False}})
    off = ~np.eye(system.M, dtype=bool)
    rows = []
    for test in tests:
        t0 = time.perf_counter()
        logp, _, used = fedgc_run(base, specs, "auto" if test == "siv" else "lr", folder / test)
        assert used == test, used
        rows.append({"kind": kind, "T": T, "test": test, "seconds": time.perf_counter() - t0,
                     "rejected": int(np.sum(logp[off] < np.log10(ALPHA))), "edges": int(bh_edges(logp)[off].sum()),
                     "pairs": int(off.sum())})  # fmt: skip
    return rows


def table(rows: list[dict], kinds: list[str]) -> str:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["test"], r["T"], r["kind"])].append(r)
    head = "| test | T | " + " | ".join(kinds) + " |"
    out = [f"p < {ALPHA} on non-edges (share of ordered pairs; seeds in brackets), then BH false-edge rate", "",
           head, "|---|---:|" + "---:|" * len(kinds)]  # fmt: skip
    for test in dict.fromkeys(r["test"] for r in rows):
        for T in sorted({r["T"] for r in rows}):
            vals = []
            for kind in kinds:
                g = cells.get((test, T, kind), [])
                pairs = sum(r["pairs"] for r in g)
                if not pairs:
                    vals.append("-")
                    continue
                vals.append(f"{sum(r['rejected'] for r in g) / pairs:.3f} / {sum(r['edges'] for r in g) / pairs:.3f} "
                            f"({len(g)})")  # fmt: skip
            out.append(f"| {test} | {T} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="+", default=list(gt.NULLS), choices=list(gt.NULLS))
    ap.add_argument("--T", nargs="+", type=int, default=[2000])
    ap.add_argument("--seeds", type=int, default=40, help="seeds 0 .. n-1 per kind and T")
    ap.add_argument("--tests", nargs="+", default=["siv"], choices=["siv", "lr"])
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedgc_bench_null_") as tmp:
        for kind in args.kinds:
            for T in args.T:
                for seed in range(args.seeds):
                    rows.extend(one_system(kind, T, seed, args.tests, Path(tmp)))
                print(f"  {kind} T={T} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(table(rows, args.kinds))
    print(f"\n{len(rows)} runs in {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
