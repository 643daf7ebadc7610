"""Identified-model Granger benchmark (issue 13): systems with known truth, written as per-site CSV files.

Families (fedgc.data.ground_truth; sensors D_m+1 .. 10 D_m per site, per-site SNR 0.5 .. 4 unless noted):
tanks (A -> B -> C line of two-tank sites plus an independent utility), chain (cascade 0 -> .. -> 4 and an
independent site), tree (out-tree: common causes), feedback (a loop with a downstream and an independent
site), dense (random graph with >= 3 two-hop paths whose direct pair is absent), var2 (latent VAR(2): needs
more than one lag), mixed (VAR(1) and VAR(2) sites, a lag-2 cross effect), slow (eigenvalues 0.93-0.98).

For every family, T and seed, each method sees the same data:

  fedgc        the `fedgc run` path through the library API (fedgc.app.runner.run) on the CSVs, models
               identified from them, server.test auto (= siv for identified models)
  fedgc-lr     the same run with server.test lr: the likelihood-ratio test on identified models (the test
               issue 13 reported; for comparison)
  oracle       the centralized oracle with every site's TRUE local model (fedgc.analysis.oracle: the joint
               filter's fixed point on all sites' data, diagonal fixed) and the LR test on its states;
               not for latent VAR(2) systems (no one-lag local model)
  var-scores   statsmodels VAR on every site's PCA scores (D_m from fedgc's identification), lag by AIC,
               block Wald per ordered pair (benchmarks/bench_peers.py's peer)
  var-raw      statsmodels VAR on all standardised raw sensors, lag by AIC (cap 4), block Wald per site pair

Edges: Benjamini-Hochberg at 0.05 over the M (M - 1) ordered pairs. Columns: false-edge rate (share of
absent ordered pairs declared), power (share of true edges declared), AUROC of -log10 p, protocol rounds,
wall time per system (seconds; for fedgc: reading, identification, rounds and test). Means over seeds.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_identified.py                     # quick
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_identified.py --T 2000 20000 100000 --seeds 10
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import bh_edges, block_var_wald, score

from fedgc.analysis.oracle import oracle_fit
from fedgc.app.config import ClientSpec, RunConfig, parse_config
from fedgc.app.runner import run
from fedgc.core.granger import granger_tests
from fedgc.core.kalman import filter_scan, steady_state
from fedgc.core.local_model import identify
from fedgc.core.regression import Blocks, regression_stats
from fedgc.core.window import lagged, prepare_window
from fedgc.data import ground_truth as gt
from fedgc.data.csv import write_client_csv
from fedgc.protocol.settings import ServerConfig

METHODS = ("fedgc", "fedgc-lr", "oracle", "var-scores", "var-raw")
QUICK_FAMILIES = ("tanks", "chain", "tree", "feedback", "dense", "var2", "mixed", "slow")


def write_sites(system: gt.System, ys: list[np.ndarray], folder: Path) -> list[ClientSpec]:
    """Per-site CSVs and their specs with models identified from them (D_m as told by a null system)."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for m, y in enumerate(ys):
        csv = folder / f"site{m}.csv"
        write_client_csv(csv, y, columns=[f"s{j}" for j in range(y.shape[1])])
        told = None if system.told_dims is None else system.told_dims[m]
        specs.append(ClientSpec(f"site{m}", csv, state_dim=told))
    return specs


def oracle(system: gt.System, ys: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """log10 p of the LR test on the centralized oracle's joint-filter states with the true local models."""
    windows = [prepare_window(system.local_model(m), y, f"site{m}") for m, y in enumerate(ys)]
    config = ServerConfig()
    A_s, history = oracle_fit(windows, config)
    blocks = Blocks.of([w.A.shape[0] for w in windows])
    A_loc = scipy.linalg.block_diag(*[w.A for w in windows])
    J = scipy.linalg.block_diag(*[w.J for w in windows])
    Q = scipy.linalg.block_diag(*[w.Q for w in windows])
    ytil = np.hstack([w.ytil for w in windows])
    ss = steady_state(A_loc + A_s, J, Q)
    H = filter_scan(ss.transition, ytil @ ss.posterior_cov.T)
    prev = lagged(H)
    z = ytil - prev @ (J @ A_loc).T
    parts = [blocks.slice(m) for m in range(len(windows))]
    stats = regression_stats([H[:, s] for s in parts], [z[:, s] for s in parts], burn_in=1)
    gc = granger_tests(stats, A_s, [f"site{m}" for m in range(len(windows))], blocks, diagonal=config.diagonal)
    return np.asarray(gc.log10_pvalue), len(history)


def fedgc_run(base: RunConfig, specs: list[ClientSpec], test: str, out: Path) -> tuple[np.ndarray, int, str]:
    cfg = replace(base, clients=tuple(specs), server=replace(base.server, test=test))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # held columns, missing values: reported in the run, not here
        result = run(cfg, mode="run", out_dir=out)
    return np.asarray(result.fit.gc.log10_pvalue), result.fit.rounds, result.fit.gc.test


def standardised(y: np.ndarray) -> np.ndarray:
    return (y - y.mean(axis=0)) / y.std(axis=0)


def var_scores(ys: list[np.ndarray], system: gt.System, seed: int) -> np.ndarray:
    scores, dims = [], []
    for m, y in enumerate(ys):
        told = None if system.told_dims is None else system.told_dims[m]
        d = identify(y, client=f"site{m}", state_dim=told, rng=np.random.default_rng(seed + m)).state_dim
        z = standardised(y)
        _, U = np.linalg.eigh(z.T @ z / len(z))
        scores.append(z @ U[:, ::-1][:, :d])
        dims.append(d)
    return block_var_wald(np.hstack(scores), dims, 8).log10_p


def var_raw(ys: list[np.ndarray]) -> np.ndarray:
    return block_var_wald(np.hstack([standardised(y) for y in ys]), [y.shape[1] for y in ys], 4).log10_p


def one_system(family: str, T: int, seed: int, methods: list[str], work: Path) -> list[dict]:
    system = gt.make(family, seed)
    ys, _ = gt.simulate(system, T, np.random.default_rng([seed, T]))
    folder = work / f"{family}_{T}_{seed}"
    identified = write_sites(system, ys, folder)
    base = parse_config({"name": family, "seed": seed, "evaluation": {"oracle": False}})
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        rounds: int | None = None
        if method in ("fedgc", "fedgc-lr"):
            logp, rounds, used = fedgc_run(base, identified, "auto" if method == "fedgc" else "lr", folder / method)
            assert used == ("siv" if method == "fedgc" else "lr"), used
        elif method == "oracle":
            if system.lags.shape[0] != 1:
                continue
            logp, rounds = oracle(system, ys)
        elif method == "var-scores":
            logp = var_scores(ys, system, seed)
        else:
            logp = var_raw(ys)
        seconds = time.perf_counter() - t0
        rows.append({"family": family, "T": T, "seed": seed, "method": method, "rounds": rounds, "seconds": seconds,
                     **score(logp, bh_edges(logp), system.edges)})  # fmt: skip
    return rows


def table(rows: list[dict], methods: list[str]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["T"], r["method"])].append(r)
    out = ["| family | T | method | seeds | false-edge rate | power | AUROC | rounds | seconds |",
           "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    families = list(dict.fromkeys(r["family"] for r in rows))
    Ts = sorted({r["T"] for r in rows})
    for fam in families:
        for T in Ts:
            for method in methods:
                g = groups.get((fam, T, method))
                if not g:
                    continue
                mean = {
                    k: float(np.nanmean([r[k] for r in g])) for k in ("false_edge_rate", "power", "auroc", "seconds")
                }
                rounds = "-" if g[0]["rounds"] is None else f"{np.mean([r['rounds'] for r in g]):.1f}"
                out.append(f"| {fam} | {T} | {method} | {len(g)} | {mean['false_edge_rate']:.3f} | {mean['power']:.3f} | "
                           f"{mean['auroc']:.3f} | {rounds} | {mean['seconds']:.2f} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="+", default=list(QUICK_FAMILIES), choices=list(gt.FAMILIES))
    ap.add_argument("--T", nargs="+", type=int, default=[2000, 20000])
    ap.add_argument("--seeds", type=int, default=2, help="seeds 0 .. n-1 per family and T")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedgc_bench_identified_") as tmp:
        for fam in args.families:
            for T in args.T:
                for seed in range(args.seeds):
                    rows.extend(one_system(fam, T, seed, args.methods, Path(tmp)))
                    print(
                        f"  {fam} T={T} seed={seed} done ({time.perf_counter() - t0:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    print(table(rows, args.methods))
    print(f"\n{len(rows)} method runs in {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
