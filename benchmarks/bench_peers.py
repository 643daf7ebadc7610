"""fedgc side by side with centralized peers on the same per-site CSV files, each run a fresh process.

For every M in --sizes: a synthetic system with known truth (fedgc.data.synthetic: D_m = 3 latent states,
P_m = 20 sensors, T = 4000 rows, a random sparse graph with expected in-degree 2) is written as one CSV
per site; then, interleaved, --repeats times each:

  fedgc   `fedgc run --data site000.csv ... --out DIR --quiet`: the installed CLI, everything it does by
          default (models identified from the CSVs, D_m by parallel analysis, the oracle, plots, report).
  var     statsmodels: every site's PCA scores (D_m = 3 components of its standardised sensors), one
          VAR fit on all scores (lag order by AIC up to a cap), and for each ordered pair n -> m the
          block Wald statistic of "every lag of n's scores has zero coefficients in m's equations",
          computed from that one fit's coefficient covariance Sigma_u (x) (Z^T Z)^-1 (what
          VARResults.cov_params() holds) block by block: W = tr(Sigma_mm^-1 b^T G_nn^-1 b), chi2 with
          p D_n D_m dof. (test_causality per pair builds the whole (K (1 + K p))^2 covariance each call.)
  pcmci   tigramite PCMCI (ParCorr, tau_max = 1, pc_alpha = 0.05) on the same PCA scores; a pair's
          p-value is the smallest p-value of its D_n D_m tau_max links, Bonferroni-corrected within the
          block. Killed after --timeout seconds ('timeout'; fedgc and var only after --safety-timeout);
          skipped without tigramite
          (pip install tigramite joblib, or the `bench` extra).

Each process's peak memory is its own ru_maxrss (os.wait4). Edges: Benjamini-Hochberg at FDR 0.05 over
the M (M - 1) ordered pairs for every tool; AUROC ranks the pairs by -log10 p against the true block graph;
the false-edge rate is the share of true non-edges declared edges. Table per M: medians over repeats,
and fedgc's wall time and memory divided by each peer's.

    .venv/bin/python benchmarks/bench_peers.py --sizes 5 10 --repeats 2            # a few minutes
    .venv/bin/python benchmarks/bench_peers.py --sizes 5 10 20 40 100 --repeats 3 --timeout 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

TOOLS = ("fedgc", "var", "pcmci")
FDR = 0.05


# ---------------------------------------------------------------------------------------------- data


def write_sites(folder: Path, M: int, *, steps: int, sensors: int, states: int, seed: int) -> dict:
    from fedgc.data.csv import write_client_csv
    from fedgc.data.synthetic import SystemSpec, simulate

    spec = SystemSpec(n_clients=M, state_dims=states, obs_dims=sensors, edge_density=min(1.0, 2.0 / (M - 1)),
                      n_steps=steps)  # fmt: skip
    data = simulate(spec, np.random.default_rng(seed))
    files = []
    for m, y in enumerate(data.y):
        path = folder / f"site{m:03d}.csv"
        write_client_csv(path, y, columns=[f"s{j}" for j in range(y.shape[1])])
        files.append(str(path))
    truth = {"edges": data.system.edges.astype(int).tolist(), "dims": list(data.system.dims), "files": files}
    (folder / "truth.json").write_text(json.dumps(truth))
    return truth


# ---------------------------------------------------------------------------------------------- peers (child side)


def pca_scores(files: list[str], dims: list[int]) -> np.ndarray:
    """Each site's standardised sensors projected on its top D_m principal directions, stacked (T, sum D_m)."""
    import pandas as pd

    scores = []
    for f, d in zip(files, dims):
        y = pd.read_csv(f).to_numpy(dtype=np.float64)
        y = (y - y.mean(axis=0)) / y.std(axis=0)
        _lam, U = np.linalg.eigh(y.T @ y / len(y))
        scores.append(y @ U[:, ::-1][:, :d])
    return np.hstack(scores)


class BlockWald(NamedTuple):
    """log10_p: (M, M) [target, source] log10 p-values of the block Wald tests; lags: the VAR's order; lag_cap:
    the most AIC could choose."""

    log10_p: np.ndarray
    lags: int
    lag_cap: int


def block_var_wald(X: np.ndarray, dims: list[int], max_lag: int) -> BlockWald:
    """statsmodels VAR on X (T, K) (lag by AIC up to max_lag, kept well below T, at least 1), and for each ordered
    pair the chi2 block Wald test of "every lag of block n is zero in block m's equations", from the one fit's
    coefficient covariance Sigma_u (x) (Z^T Z)^-1 block by block: W = tr(Sigma_mm^-1 b^T G_nn^-1 b)."""
    import scipy.stats
    from statsmodels.tsa.api import VAR

    T, K = X.shape
    cap = max(1, min(max_lag, (T // 4) // K))  # keep K p regressors well below T
    res = VAR(X).fit(maxlags=cap, ic="aic", trend="c")
    if res.k_ar == 0:  # AIC chose no lag at all: test the lag-1 model
        res = VAR(X).fit(1, trend="c")
    p = res.k_ar
    Z = res.endog_lagged  # (T - p, 1 + K p): const, then lag 1 of every variable, lag 2, ...
    G = np.linalg.inv(Z.T @ Z)
    B = res.params  # (1 + K p, K)
    S = res.sigma_u
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    M = len(dims)
    logp = np.full((M, M), np.nan)
    for n in range(M):
        rows = np.concatenate([1 + lag * K + np.arange(off[n], off[n + 1]) for lag in range(p)])
        Gn_inv = np.linalg.inv(G[np.ix_(rows, rows)])
        for m in range(M):
            if m == n:
                continue
            cols = np.arange(off[m], off[m + 1])
            b = B[np.ix_(rows, cols)]
            W = float(np.trace(np.linalg.solve(S[np.ix_(cols, cols)], b.T @ Gn_inv @ b)))
            logp[m, n] = scipy.stats.chi2.logsf(W, len(rows) * len(cols)) / np.log(10)
    return BlockWald(logp, p, cap)


def peer_var(files: list[str], dims: list[int], max_lag: int) -> dict:
    wald = block_var_wald(pca_scores(files, dims), dims, max_lag)
    return {"log10_p": wald.log10_p.tolist(), "lags": wald.lags, "lag_cap": wald.lag_cap}


def peer_pcmci(files: list[str], dims: list[int]) -> dict:
    import tigramite.data_processing as pp
    from tigramite.independence_tests.parcorr import ParCorr
    from tigramite.pcmci import PCMCI

    X = pca_scores(files, dims)
    tau_max = 1
    pcmci = PCMCI(dataframe=pp.DataFrame(X), cond_ind_test=ParCorr(significance="analytic"), verbosity=0)
    out = pcmci.run_pcmci(tau_max=tau_max, pc_alpha=0.05)
    pv = out["p_matrix"]  # [source var, target var, lag]
    off = np.concatenate([[0], np.cumsum(dims)])
    M = len(dims)
    logp = np.full((M, M), np.nan)
    for m in range(M):
        for n in range(M):
            if m != n:
                block = pv[off[n] : off[n + 1], off[m] : off[m + 1], 1 : tau_max + 1]
                logp[m, n] = min(0.0, np.log10(max(float(block.min()), 1e-300)) + np.log10(block.size))
    return {"log10_p": logp.tolist(), "tau_max": tau_max}


def child_main(args) -> None:
    truth = json.loads(Path(args.data_dir, "truth.json").read_text())
    if args.peer == "var":
        out = peer_var(truth["files"], truth["dims"], args.max_lag)
    else:
        out = peer_pcmci(truth["files"], truth["dims"])
    Path(args.result).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------- parent side


def run_child(cmd: list[str], timeout: float) -> dict:
    """Wall time, peak RSS (MB) and exit status of one fresh process; killed after `timeout` s."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status, usage, timed_out = None, None, False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "timeout": timed_out,
            "stderr": err[-2000:]}  # fmt: skip


def bh_edges(logp: np.ndarray, alpha: float = FDR) -> np.ndarray:
    M = logp.shape[0]
    off = ~np.eye(M, dtype=bool)
    p = 10.0 ** logp[off]
    order = np.argsort(p)
    k = np.arange(1, p.size + 1)
    below = p[order] <= alpha * k / p.size
    n_rej = int(np.max(np.flatnonzero(below)) + 1) if below.any() else 0
    reject = np.zeros(p.size, dtype=bool)
    reject[order[:n_rej]] = True
    edges = np.zeros((M, M), dtype=bool)
    edges[off] = reject
    return edges


def score(logp: np.ndarray, edges: np.ndarray, truth: np.ndarray) -> dict:
    from fedgc.analysis.metrics import auroc

    off = ~np.eye(truth.shape[0], dtype=bool)
    t = truth[off].astype(bool)
    s = -np.nan_to_num(logp[off], nan=0.0)
    e = edges[off]
    return {"auroc": auroc(s, t), "false_edge_rate": float(e[~t].mean()) if (~t).any() else float("nan"),
            "power": float(e[t].mean()) if t.any() else float("nan")}  # fmt: skip


def one_run(tool: str, folder: Path, truth: dict, args) -> dict:
    out = folder / f"out-{tool}"
    shutil.rmtree(out, ignore_errors=True)
    if tool == "fedgc":
        cli = Path(sys.executable).with_name("fedgc")
        cmd = [str(cli), "run", *(a for f in truth["files"] for a in ("--data", f)), "--out", str(out), "--quiet"]
    else:
        out.mkdir()
        cmd = [sys.executable, __file__, "--peer", tool, "--data-dir", str(folder), "--result", str(out / "result.json"),
               "--max-lag", str(args.max_lag)]  # fmt: skip
    # the time cap is for PCMCI; fedgc and the VAR only get a safety net (a loaded machine must not drop them)
    run = run_child(cmd, args.timeout if tool == "pcmci" else max(args.timeout, args.safety_timeout))
    run["tool"] = tool
    if run["timeout"] or run["rc"] != 0:
        run["status"] = "timeout" if run["timeout"] else f"failed (rc {run['rc']})"
        return run
    result = json.loads((out / "result.json").read_text())
    if tool == "fedgc":
        p = np.array([[np.nan if v is None else v for v in row] for row in result["pvalue"]], dtype=float)
        logp = np.log10(np.maximum(p, 1e-300))
        if "log10_pvalue" in result:
            logp = np.array([[np.nan if v is None else v for v in row] for row in result["log10_pvalue"]], dtype=float)
        edges = np.array(result["edges"], dtype=bool)  # fedgc's own BH at its alpha (0.05 by default)
        run["dims"] = result.get("dims") or result.get("clients_dims")
    else:
        logp = np.array(result["log10_p"], dtype=float)
        edges = bh_edges(logp)
        run.update({k: v for k, v in result.items() if k != "log10_p"})
    run.update(score(logp, edges, np.array(truth["edges"], dtype=bool)))
    run["status"] = "ok"
    return run


def summarise(M: int, runs: list[dict], tools: list[str], load: tuple[float, float, float]) -> str:
    def med(tool: str, key: str):
        xs = [r[key] for r in runs if r["tool"] == tool and r["status"] == "ok"]
        return statistics.median(xs) if xs else None

    lines = [f"\nM = {M} (load average before/after: {load[0]:.2f} / {load[1]:.2f}; {load[2]} ok runs)",
             "| tool | status | wall s (median) | peak MB (median) | AUROC | false-edge rate (FDR 0.05) | power | "
             "fedgc / tool wall | fedgc / tool peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    fw, fm = med("fedgc", "wall_s"), med("fedgc", "peak_mb")
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        statuses = sorted({r["status"] for r in mine})
        w, mem = med(tool, "wall_s"), med(tool, "peak_mb")
        if w is None:
            status = statuses[0] if statuses else "-"
            if status == "timeout":
                status = f"timeout (> {mine[0]['wall_s']:.0f} s)"
            lines.append(f"| {tool} | {status} | - | - | - | - | - | - | - |")
            continue

        def f(v, spec=".3f"):
            return "-" if v is None else format(v, spec)

        lines.append(
            f"| {tool} | {'/'.join(statuses)} | {w:.2f} | {mem:.0f} | {f(med(tool, 'auroc'))} | "
            f"{f(med(tool, 'false_edge_rate'))} | {f(med(tool, 'power'))} | "
            f"{f(fw / w if fw else None, '.2f')} | {f(fm / mem if fm else None, '.2f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40, 100], help="numbers of sites M")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a PCMCI run is killed ('timeout')")
    p.add_argument("--safety-timeout", type=float, default=3600.0, help="the same for fedgc and the VAR")
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--sensors", type=int, default=20)
    p.add_argument("--states", type=int, default=3)
    p.add_argument("--max-lag", type=int, default=4, help="cap of the VAR's AIC lag search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="write the CSVs and outputs here (default: a temp folder)")
    p.add_argument("--json", type=Path, default=None, help="also write every run's record here")
    p.add_argument("--peer", choices=["var", "pcmci"], help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer:
        child_main(args)
        return
    tools = list(args.tools)
    if "pcmci" in tools:
        import importlib.util

        if importlib.util.find_spec("tigramite") is None or importlib.util.find_spec("joblib") is None:
            print("tigramite (or joblib) not installed: pcmci is skipped", file=sys.stderr)
            tools.remove("pcmci")
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench_peers-"))
    records = []
    print(f"bench_peers: T = {args.steps}, P_m = {args.sensors}, D_m = {args.states}, repeats = {args.repeats}, "
          f"timeout = {args.timeout:.0f} s, {os.cpu_count()} cores; folder {base}")  # fmt: skip
    try:
        for M in args.sizes:
            folder = base / f"M{M}"
            folder.mkdir(parents=True, exist_ok=True)
            truth = write_sites(
                folder, M, steps=args.steps, sensors=args.sensors, states=args.states, seed=args.seed + M
            )
            before = os.getloadavg()[0]
            runs = []
            timed_out: set[str] = set()
            for r in range(args.repeats):  # interleaved: fedgc, var, pcmci, fedgc, var, ...
                for tool in tools:
                    if tool in timed_out:
                        continue  # one timeout is enough: the repeats would only time out again
                    run = one_run(tool, folder, truth, args)
                    run.update(M=M, repeat=r)
                    runs.append(run)
                    if run["status"] == "timeout":
                        timed_out.add(tool)
                    print(f"  M={M} repeat {r} {tool}: {run['status']}, {run['wall_s']:.2f} s, {run['peak_mb']:.0f} MB",
                          file=sys.stderr)  # fmt: skip
                    if run["status"].startswith("failed"):
                        print(run["stderr"], file=sys.stderr)
            after = os.getloadavg()[0]
            print(summarise(M, runs, tools, (before, after, sum(r["status"] == "ok" for r in runs))), flush=True)
            records += runs
    finally:
        if args.json:
            args.json.write_text(json.dumps(records, indent=1, default=str))
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
