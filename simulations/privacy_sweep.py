"""Privacy-utility sweep: AUROC and relative error vs the (non-private) oracle over epsilon x T x debias.

    .venv/bin/python simulations/privacy_sweep.py simulations/privacy_sweep.yaml --out out/privacy_sweep

Writes DIR/privacy_sweep.csv, DIR/privacy_sweep.md and DIR/privacy_sweep.png. epsilon = inf is the
noise-free federated run. Same data (same seed) for every setting of one T.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from fedgc.config import parse_config
from fedgc.metrics import relative_error
from fedgc.run import run_simulation
from fedgc.server import Blocks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text())
    sweep = raw.pop("sweep")
    base = parse_config(raw, base_dir=args.config.parent, source=args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for T in sweep["n_steps"]:
        cfg_T = replace(base, synthetic=replace(base.synthetic, n_steps=int(T)))
        clean = run_simulation(replace(cfg_T, privacy=None))
        oracle_A, blocks = clean.oracle_A, Blocks.of(clean.fit.gc.dims)
        rows.append(_row(T, math.inf, "-", clean, oracle_A, blocks, 0.0))
        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
        for eps in sweep["epsilon"]:
            if math.isinf(float(eps)):
                continue
            for debias in sweep["debias"]:
                cfg = replace(
                    cfg_T, oracle=False, privacy=replace(base.privacy, epsilon=float(eps), debias=debias)
                )
                t0 = time.perf_counter()
                res = run_simulation(cfg)
                rows.append(_row(T, float(eps), debias, res, oracle_A, blocks, time.perf_counter() - t0))
                print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    _write(rows, args.out)
    return 0


def _row(T, eps, debias, res, oracle_A, blocks, seconds) -> dict:
    p = res.privacy
    c0 = next(iter(p["per_client"].values())) if p.get("enabled") else None
    return {
        "n_steps": int(T),
        "epsilon_target": eps,
        "debias": debias,
        "epsilon_whole_run": c0["whole_run"]["epsilon"] if c0 else 0.0,
        "noise_multiplier": p["noise_multiplier"]["client_to_server"] if c0 else 0.0,
        "auroc": res.scores.auroc,
        "auprc": res.scores.auprc,
        "error_vs_oracle": relative_error(res.fit.A_s, oracle_A, blocks),
        "error_vs_truth": res.error_vs_truth,
        "rounds": res.fit.rounds,
        "seconds": round(seconds, 1),
    }


def _fmt(r: dict) -> str:
    return (
        f"T={r['n_steps']:>6} eps={r['epsilon_target']:>5} debias={r['debias']:<6} sigma={r['noise_multiplier']:.3f} "
        f"AUROC={r['auroc']:.3f} err_oracle={r['error_vs_oracle']:.3f}"
    )


def _write(rows: list[dict], out: Path) -> None:
    with open(out / "privacy_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = "| T | target epsilon | debias | whole-run epsilon | sigma | AUROC | AUPRC | error vs oracle | error vs truth |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['n_steps']} | {r['epsilon_target']:g} | {r['debias']} | {r['epsilon_whole_run']:.3g} | "
            f"{r['noise_multiplier']:.3f} | {r['auroc']:.3f} | {r['auprc']:.3f} | {r['error_vs_oracle']:.3f} | "
            f"{r['error_vs_truth']:.3f} |"
        )
    (out / "privacy_sweep.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    eps_vals = sorted({r["epsilon_target"] for r in rows if not math.isinf(r["epsilon_target"])})
    x_inf = max(eps_vals) * 2.5
    for T in sorted({r["n_steps"] for r in rows}):
        clean = [r for r in rows if r["n_steps"] == T and math.isinf(r["epsilon_target"])][0]
        for debias, style in (("client", "-o"), ("server", "--s"), ("none", ":^")):
            sel = sorted((r for r in rows if r["n_steps"] == T and r["debias"] == debias), key=lambda r: r["epsilon_target"])
            if not sel:
                continue
            xs = [r["epsilon_target"] for r in sel] + [x_inf]
            for ax, key in zip(axes, ("auroc", "error_vs_oracle")):
                ax.plot(xs, [r[key] for r in sel] + [clean[key]], style, label=f"T={T}, debias {debias}")
    for ax, title in zip(axes, ("AUROC", "relative error vs oracle")):
        ax.set_xscale("log")
        ax.set_xticks(eps_vals + [x_inf])
        ax.set_xticklabels([f"{e:g}" for e in eps_vals] + ["inf"])
        ax.set_xlabel("whole-run epsilon per client (delta = 1e-5)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.9, color="grey", lw=0.8)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "privacy_sweep.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
