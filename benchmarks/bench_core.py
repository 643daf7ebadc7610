"""Core benchmark: federated newton vs gd vs the centralized oracle vs statsmodels' VAR Granger test.

Prints one table row per number of clients M (D_m = 4, P_m = 50, T = 10000, expected in-degree 2):
wall time and peak memory of the federated run (each row in its own process, so peak RSS is its own),
rounds to 1e-6 relative change, AUROC, relative error vs the oracle, gd rounds to reach the newton
solution within 1%, and statsmodels' block Wald test (VAR(1) on the clients' PCA scores, centralized).

    .venv/bin/python benchmarks/bench_core.py                # M = 5, 20, 100
    .venv/bin/python benchmarks/bench_core.py --clients 5 20 --gd-max-rounds 300
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

# statsmodels' test_causality builds the full (K*D)^2 parameter covariance on every call.
STATSMODELS_MAX_STATES = 120


def one_row(M: int, *, T: int, D: int, P: int, seed: int, gd_max_rounds: int) -> dict:
    from fedgc.analysis.metrics import auroc, relative_error
    from fedgc.analysis.oracle import oracle_fit
    from fedgc.core.local_model import identify
    from fedgc.core.regression import Blocks
    from fedgc.data.synthetic import SystemSpec, simulate
    from fedgc.protocol.loop import run_protocol
    from fedgc.protocol.session import ClientSession
    from fedgc.protocol.settings import ServerConfig
    from fedgc.protocol.transport import LocalTransport

    rng = np.random.default_rng(seed)
    spec = SystemSpec(n_clients=M, state_dims=D, obs_dims=P, edge_density=min(1.0, 2.0 / (M - 1)), n_steps=T)
    t0 = time.perf_counter()
    data = simulate(spec, rng)
    t_gen = time.perf_counter() - t0
    off = ~np.eye(M, dtype=bool)
    truth = data.system.edges[off]

    t0 = time.perf_counter()
    sessions = [ClientSession(f"c{m}", data.system.local_model(m), data.y[m]) for m in range(M)]
    fit = run_protocol(LocalTransport(sessions), ServerConfig(max_rounds=30, tol=1e-6))
    t_fed = time.perf_counter() - t0
    rss_fed = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    A_oracle, oracle_hist = oracle_fit([s.window for s in sessions], ServerConfig(max_rounds=30, tol=1e-6))
    t_oracle = time.perf_counter() - t0
    blocks = Blocks.of(fit.gc.dims)

    # gd: rounds until A_s is within 1% of the newton solution (fresh clients, same data).
    gd_sessions = [ClientSession(f"c{m}", data.system.local_model(m), data.y[m]) for m in range(M)]
    t0 = time.perf_counter()
    gd_fit = run_protocol(
        LocalTransport(gd_sessions),
        ServerConfig(rule="gd", max_rounds=gd_max_rounds, tol=1e-12),
        stop_when=lambda A: np.linalg.norm(A - fit.A_s) < 0.01 * np.linalg.norm(fit.A_s),
    )
    t_gd = time.perf_counter() - t0
    gd_close = np.linalg.norm(gd_fit.A_s - fit.A_s) < 0.01 * np.linalg.norm(fit.A_s)

    row = {
        "M": M,
        "D": M * D,
        "T": T,
        "edges": int(truth.sum()),
        "gen_s": t_gen,
        "fed_s": t_fed,
        "fed_peak_mb": rss_fed,
        "rounds": fit.rounds,
        "converged": fit.converged,
        "auroc": auroc(-fit.gc.log10_pvalue[off], truth),
        "err_vs_oracle": relative_error(fit.A_s, A_oracle, blocks),
        "oracle_s": t_oracle,
        "oracle_rounds": len(oracle_hist),
        "gd_rounds_to_1pct": gd_fit.rounds if gd_close else None,
        "gd_s": t_gd,
        "gd_max_rounds": gd_max_rounds,
    }
    row.update(_statsmodels_row(data, M, D, seed, identify))
    row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def _statsmodels_row(data, M: int, D: int, seed: int, identify) -> dict:
    """statsmodels VAR(1) block Granger test on the clients' PCA scores, centralized."""
    from statsmodels.tsa.api import VAR

    from fedgc.analysis.metrics import auroc

    if M * D > STATSMODELS_MAX_STATES:
        return {
            "sm_s": None,
            "sm_auroc": None,
            "sm_note": f"skipped: test_causality needs a {(M * D) ** 2} x {(M * D) ** 2} covariance",
        }
    t0 = time.perf_counter()
    scores = []
    for m, y in enumerate(data.y):
        model = identify(y, client=f"c{m}", state_dim=D, rng=np.random.default_rng(seed + m))
        ys = model.standardise(y)
        scores.append(np.linalg.lstsq(model.C, ys.T, rcond=None)[0].T)
    X = np.hstack(scores)
    res = VAR(X).fit(1, trend="n")
    names = res.names
    p = np.full((M, M), np.nan)
    for m in range(M):
        for n in range(M):
            if m != n:
                test = res.test_causality(names[m * D : (m + 1) * D], names[n * D : (n + 1) * D], kind="wald")
                p[m, n] = test.pvalue
    off = ~np.eye(M, dtype=bool)
    score = -np.log10(np.maximum(p[off], 1e-300))
    return {"sm_s": time.perf_counter() - t0, "sm_auroc": auroc(score, data.system.edges[off]), "sm_note": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[5, 20, 100])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--state-dim", type=int, default=4)
    parser.add_argument("--obs-dim", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gd-max-rounds", type=int, default=200)
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row is not None:
        print(
            json.dumps(
                one_row(
                    args.row,
                    T=args.steps,
                    D=args.state_dim,
                    P=args.obs_dim,
                    seed=args.seed,
                    gd_max_rounds=args.gd_max_rounds,
                )
            )
        )
        return
    rows = []
    for M in args.clients:
        cmd = [
            sys.executable,
            __file__,
            "--row",
            str(M),
            "--steps",
            str(args.steps),
            "--state-dim",
            str(args.state_dim),
            "--obs-dim",
            str(args.obs_dim),
            "--seed",
            str(args.seed),
            "--gd-max-rounds",
            str(args.gd_max_rounds),
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["process_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"M={M} done in {row['process_s']:.1f}s", file=sys.stderr)
    _print_table(rows)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _print_table(rows: list[dict]) -> None:
    head = (
        "M",
        "D",
        "T",
        "edges",
        "fed wall s",
        "peak MB",
        "newton rounds",
        "AUROC",
        "err vs oracle",
        "oracle s",
        "gd rounds to 1%",
        "statsmodels s",
        "statsmodels AUROC",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = (
            str(r["M"]),
            str(r["D"]),
            str(r["T"]),
            str(r["edges"]),
            _fmt(r["fed_s"], ".2f"),
            _fmt(r["peak_mb"], ".0f"),
            f"{r['rounds']}" + ("" if r["converged"] else " (not conv.)"),
            _fmt(r["auroc"], ".4f"),
            _fmt(r["err_vs_oracle"], ".4f"),
            _fmt(r["oracle_s"], ".2f"),
            _fmt(r["gd_rounds_to_1pct"], "d") if r["gd_rounds_to_1pct"] is not None else f"> {r['gd_max_rounds']}",
            _fmt(r["sm_s"], ".2f") if r["sm_s"] is not None else r["sm_note"],
            _fmt(r["sm_auroc"], ".4f"),
        )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
