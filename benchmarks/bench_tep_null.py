"""Tennessee Eastman shifted null through fedgc (issue 13): every unit's series circularly shifted against the
others (shifts pairwise >= 100 samples apart), which destroys the cross-unit dependence and keeps each unit's
own dynamics, analysers and non-Gaussianity. Each draw is written as one CSV per unit (fedgc.data.tep's default
split: feed, reactor, separator, stripper) and goes through the `fedgc run` path with models identified from
the files: server.test auto (= siv) and lr. Printed: the share of the 12 ordered unit pairs declared edges
(BH at 0.05) and with p < 0.05 over the draws, then the unshifted run's edges.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tep_null.py --run d00_te --draws 40
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_identified import fedgc_run
from bench_peers import bh_edges

from fedgc.app.config import ClientSpec, parse_config
from fedgc.data.csv import write_client_csv
from fedgc.data.tep import load_tep

MIN_GAP = 100


def shifts(T: int, n_units: int, rng: np.random.Generator, min_gap: int = MIN_GAP) -> list[int]:
    """Circular shifts pairwise at least min_gap apart (mod T): evenly spread, jittered, rotated at random."""
    base = np.arange(n_units) * (T // n_units)
    jitter = (T // n_units - min_gap) // 2
    while True:
        s = (base + rng.integers(-jitter, jitter + 1, n_units) + rng.integers(T)) % T
        d = np.abs(s[:, None] - s[None, :])
        d = np.minimum(d, T - d)
        if (d[~np.eye(n_units, dtype=bool)] >= min_gap).all():
            return [int(v) for v in s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="d00_te")
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--tests", nargs="+", default=["siv", "lr"], choices=["siv", "lr"])
    ap.add_argument(
        "--held-values",
        default="missing",
        choices=["missing", "keep"],
        help="the units' column policy for TEP's analysers: 'missing' (default; their repeats are missing "
        "values and SIV leaves them out) or 'keep' (their held values are measurements)",
    )
    args = ap.parse_args()
    tep = load_tep(run=args.run)
    units = list(tep.clients)
    T = tep.clients[units[0]].shape[0]
    off = ~np.eye(len(units), dtype=bool)
    counts = {t: {"edges": 0, "p05": 0, "pairs": 0} for t in args.tests}
    unshifted: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedgc_bench_tep_null_") as tmp:
        for draw in range(-1, args.draws):
            sh = [0] * len(units) if draw < 0 else shifts(T, len(units), np.random.default_rng([draw, 11]))
            folder = Path(tmp) / f"draw{draw}"
            folder.mkdir()
            specs = []
            for unit, s in zip(units, sh):
                write_client_csv(
                    folder / f"{unit}.csv", np.roll(tep.clients[unit], s, axis=0), columns=tep.columns[unit]
                )
                specs.append(ClientSpec(unit, folder / f"{unit}.csv", held_values=args.held_values))
            base = parse_config({"name": "tep_null", "evaluation": {"oracle": False}})
            for test in args.tests:
                logp, _, used = fedgc_run(base, specs, "auto" if test == "siv" else "lr", folder / test)
                assert used == test, used
                if draw < 0:
                    unshifted[test] = logp
                    continue
                c = counts[test]
                c["edges"] += int(bh_edges(logp)[off].sum())
                c["p05"] += int(np.sum(logp[off] < np.log10(0.05)))
                c["pairs"] += int(off.sum())
    print(
        f"TEP {args.run} (T = {T}), units {units}, {args.draws} circularly shifted draws (shifts >= {MIN_GAP} apart), "
        f"held_values: {args.held_values}\n"
    )
    print("| test | edge share (BH 0.05) | p < 0.05 share | unshifted edges |")
    print("|---|---:|---:|---|")
    for test in args.tests:
        c = counts[test]
        e = bh_edges(unshifted[test])
        listed = ", ".join(f"{units[n]}->{units[m]} ({unshifted[test][m, n]:.0f})" for m, n in zip(*np.nonzero(e)))
        print(f"| {test} | {c['edges'] / max(c['pairs'], 1):.3f} | {c['p05'] / max(c['pairs'], 1):.3f} | "
              f"{int(e.sum())} of 12: {listed} |")  # fmt: skip
    print(
        f"\n{time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} (unshifted edges: log10 p in brackets)"
    )


if __name__ == "__main__":
    main()
