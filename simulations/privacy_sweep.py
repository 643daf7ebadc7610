"""Privacy-utility sweep: AUROC and relative error vs the (non-private) oracle over epsilon x T x debias,
over several seeds (a new system and new data per seed).

    .venv/bin/python simulations/privacy_sweep.py simulations/privacy_sweep.yaml --out out/privacy_sweep

Writes DIR/privacy_sweep.csv (one row per seed and setting), DIR/privacy_sweep.md (mean, sd and worst
case over seeds) and DIR/privacy_sweep.png. epsilon = inf is the noise-free federated run. Every setting
of one (T, seed) sees the same data; the oracle is the non-private centralized fit of that data.

sweep.variants lists the estimators compared at each epsilon: {debias: client | server | none,
shrink: true | false}. Nothing is tuned on the truth: the only inputs are the noise the clients add
(known to the server) and the data.
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

from fedgc.analysis.metrics import relative_error
from fedgc.app.config import EvaluationSettings, parse_config
from fedgc.app.runner import run_local
from fedgc.core.regression import Blocks


def variant_label(v: dict) -> str:
    return v["debias"] + ("" if v.get("shrink", True) else " (no shrink)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text())
    sweep = raw.pop("sweep")
    base = parse_config(raw, base_dir=args.config.parent, source=args.config)
    variants = [v if isinstance(v, dict) else {"debias": v} for v in sweep.get("variants", sweep.get("debias", []))]
    seeds = [int(s) for s in sweep.get("seeds", [base.seed])]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for T in sweep["n_steps"]:
        for seed in seeds:
            cfg_T = replace(base, seed=seed, synthetic=replace(base.synthetic, n_steps=int(T)))
            t0 = time.perf_counter()
            clean = run_local(replace(cfg_T, privacy=None), mode="simulate", out_dir=None)
            oracle_A, blocks = clean.evaluation.oracle_A, Blocks.of(clean.fit.gc.dims)
            rows.append(_row(T, seed, math.inf, "-", clean, oracle_A, blocks, time.perf_counter() - t0))
            print(_fmt(rows[-1]), file=sys.stderr, flush=True)
            for eps in sweep["epsilon"]:
                if math.isinf(float(eps)):
                    continue
                for v in variants:
                    privacy = replace(
                        base.privacy, epsilon=float(eps), debias=v["debias"], shrink=bool(v.get("shrink", True))
                    )
                    t0 = time.perf_counter()
                    res = run_local(
                        replace(cfg_T, evaluation=EvaluationSettings(oracle=False), privacy=privacy),
                        mode="simulate",
                        out_dir=None,
                    )
                    rows.append(
                        _row(T, seed, float(eps), variant_label(v), res, oracle_A, blocks, time.perf_counter() - t0)
                    )
                    print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    _write(rows, args.out, [variant_label(v) for v in variants], base)
    return 0


def _row(T, seed, eps, variant, res, oracle_A, blocks, seconds) -> dict:
    p = res.privacy
    c0 = next(iter(p["per_client"].values())) if p.get("enabled") else None
    return {
        "n_steps": int(T),
        "seed": int(seed),
        "epsilon_target": eps,
        "variant": variant,
        "epsilon_whole_run": c0["whole_run"]["epsilon"] if c0 else 0.0,
        "releases": c0["whole_run"]["releases"] if c0 else 0,
        "noise_multiplier": p["noise_multiplier"]["client_to_server"] if c0 else 0.0,
        "auroc": res.evaluation.scores.auroc,
        "auprc": res.evaluation.scores.auprc,
        "error_vs_oracle": relative_error(res.fit.A_s, oracle_A, blocks),
        "error_vs_truth": res.evaluation.error_vs_truth,
        "rounds": res.fit.rounds,
        "seconds": round(seconds, 1),
    }


def _fmt(r: dict) -> str:
    return (
        f"T={r['n_steps']:>6} seed={r['seed']} eps={r['epsilon_target']:>5} {r['variant']:<18} "
        f"sigma={r['noise_multiplier']:.3f} AUROC={r['auroc']:.3f} err_oracle={r['error_vs_oracle']:.3f}"
    )


def _summary(rows: list[dict]) -> list[dict]:
    """Mean, sd and worst case over seeds of each (T, epsilon, variant), in the order the rows were run."""
    order = {v: i for i, v in enumerate(dict.fromkeys(r["variant"] for r in rows))}
    keys = sorted(
        {(r["n_steps"], r["epsilon_target"], r["variant"]) for r in rows}, key=lambda k: (k[0], k[1], order[k[2]])
    )
    out = []
    for T, eps, variant in keys:
        sel = [r for r in rows if (r["n_steps"], r["epsilon_target"], r["variant"]) == (T, eps, variant)]
        a = np.array([r["auroc"] for r in sel])
        e = np.array([r["error_vs_oracle"] for r in sel])
        out.append(
            {
                "n_steps": T,
                "epsilon_target": eps,
                "variant": variant,
                "seeds": len(sel),
                "epsilon_whole_run": max(r["epsilon_whole_run"] for r in sel),
                "releases": sel[0]["releases"],
                "noise_multiplier": sel[0]["noise_multiplier"],
                "auroc_mean": float(a.mean()),
                "auroc_sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                "auroc_min": float(a.min()),
                "auroc_max": float(a.max()),
                "error_mean": float(e.mean()),
                "error_sd": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
                "error_min": float(e.min()),
                "error_max": float(e.max()),
                "error_vs_truth_mean": float(np.mean([r["error_vs_truth"] for r in sel])),
            }
        )
    return out


def _write(rows: list[dict], out: Path, variants: list[str], base) -> None:
    with open(out / "privacy_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = _summary(rows)
    p = base.privacy
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Privacy sweep: seeds {seeds}, newton rule, max_rounds {base.server.max_rounds}, delta {p.delta:g}, "
        f"clip {p.clip:g} ({p.clip_space}), {p.accountant} accountant, augmentation noise "
        f"{'on' if p.augmentation_noise else 'off (post-processing: one release per client per run)'}. "
        "Mean +- sd over seeds, worst case in brackets. Error is ||A_s - A_oracle||_F / ||A_oracle||_F "
        "over the off-diagonal blocks.",
        "",
        "| T | target epsilon | estimator | whole-run epsilon | releases | sigma | AUROC | error vs oracle | error vs truth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['n_steps']} | {s['epsilon_target']:g} | {s['variant']} | {s['epsilon_whole_run']:.3g} | {s['releases']} | "
            f"{s['noise_multiplier']:.3f} | {s['auroc_mean']:.3f} +- {s['auroc_sd']:.3f} [{s['auroc_min']:.3f}] | "
            f"{s['error_mean']:.3f} +- {s['error_sd']:.3f} [{s['error_max']:.3f}] | {s['error_vs_truth_mean']:.3f} |"
        )
    (out / "privacy_sweep.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    eps_vals = sorted({s["epsilon_target"] for s in summary if not math.isinf(s["epsilon_target"])})
    x_inf = max(eps_vals) * 2.5
    styles = ["-o", "--s", ":^", "-.v", "-D"]
    for T, color in zip(sorted({s["n_steps"] for s in summary}), ("tab:blue", "tab:orange", "tab:green")):
        clean = next(s for s in summary if s["n_steps"] == T and math.isinf(s["epsilon_target"]))
        for variant, style in zip(variants, styles):
            sel = sorted(
                (s for s in summary if s["n_steps"] == T and s["variant"] == variant), key=lambda s: s["epsilon_target"]
            )
            if not sel:
                continue
            xs = [s["epsilon_target"] for s in sel] + [x_inf]
            for ax, key in zip(axes, ("auroc", "error")):
                pts = [*sel, clean]
                ys = np.array([s[f"{key}_mean"] for s in pts])
                lo = ys - np.array([s[f"{key}_min"] for s in pts])
                hi = np.array([s[f"{key}_max"] for s in pts]) - ys
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, color=color, capsize=2, ms=4, label=f"T={T}, {variant}")
    for ax, title in zip(axes, ("AUROC (mean, bars: min-max over seeds)", "relative error vs oracle (mean, min-max)")):
        ax.set_xscale("log")
        ax.set_xticks([*eps_vals, x_inf])
        ax.set_xticklabels([f"{e:g}" for e in eps_vals] + ["inf"])
        ax.minorticks_off()
        ax.set_xlabel(f"whole-run epsilon per client (delta = {p.delta:g})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.9, color="grey", lw=0.8)
    axes[1].axhline(1.0, color="grey", lw=0.8)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "privacy_sweep.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
