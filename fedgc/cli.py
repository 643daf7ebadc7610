"""`fedgc` command line: simulate a scenario, run on per-client CSV files."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from fedgc.config import ENGINES, RunConfig, load_config
from fedgc.errors import FedGCError
from fedgc.progress import RoundProgress


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FedGCError as exc:
        print(f"fedgc: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgc", description="Federated Granger causality over local Kalman filters")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run a synthetic scenario with known truth")
    sim.add_argument("scenario", type=Path, help="scenario YAML (see simulations/)")
    _common(sim)
    sim.set_defaults(func=_simulate)

    run = sub.add_parser("run", help="run on real per-client CSV files")
    run.add_argument("config", type=Path, nargs="?", help="run config YAML with a 'clients' list")
    run.add_argument("--data", type=Path, action="append", default=[], help="a client's CSV (repeat; name = file stem)")
    _common(run)
    run.set_defaults(func=_run)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="output folder (created; required unless --resume)")
    p.add_argument(
        "--resume", type=Path, default=None, metavar="DIR",
        help="continue the interrupted run whose output folder (checkpoint.npz) is DIR, with the same config",
    )  # fmt: skip
    p.add_argument("--engine", choices=ENGINES, default=None, help="override the config's engine")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--superlink", default=None, help="SuperLink address for --engine flower")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _apply_overrides(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    if args.engine is not None:
        cfg = replace(cfg, engine=args.engine)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    return cfg


def _simulate(args: argparse.Namespace) -> int:
    cfg = _apply_overrides(load_config(args.scenario), args)
    return _execute(cfg, args, mode="simulate")


def _run(args: argparse.Namespace) -> int:
    from fedgc.run import config_from_files

    if args.config is not None and args.data:
        raise FedGCError("give either a config file or --data files, not both")
    if args.config is not None:
        cfg = load_config(args.config)
    elif args.data:
        cfg = config_from_files(args.data)
    else:
        raise FedGCError("`fedgc run` needs a config file or at least two --data files")
    return _execute(_apply_overrides(cfg, args), args, mode="run")


def _execute(cfg: RunConfig, args: argparse.Namespace, *, mode: str) -> int:
    from fedgc.engines import run_with_engine
    from fedgc.report import write_outputs

    if args.resume is not None and args.out is not None and args.out.resolve() != args.resume.resolve():
        raise FedGCError(f"--resume {args.resume} continues the run in that folder; drop --out (or give the same folder)")
    out = args.resume if args.resume is not None else args.out
    if out is None:
        raise FedGCError("give the output folder with --out DIR (or --resume DIR to continue a run)")
    args.out = out
    progress = None if args.quiet else RoundProgress(cfg.server.max_rounds, cfg.server.tol)
    start = time.perf_counter()
    result = run_with_engine(
        cfg, mode=mode, out_dir=out, superlink=args.superlink, on_round=progress, resume=args.resume is not None
    )
    if progress is not None:
        progress.close()
    result.timings["total_s"] = time.perf_counter() - start
    paths = write_outputs(result, args.out)
    if not args.quiet:
        _summary(result, paths)
    return 0


def _summary(result, paths) -> None:
    gc = result.fit.gc
    lines = [
        f"{len(gc.clients)} clients, {result.fit.rounds} rounds ({'converged' if result.fit.converged else 'not converged'}),"
        f" {int(gc.edges.sum())} edges at FDR {gc.alpha}",
    ]
    if result.fit.resumed_from is not None:
        lines.append(f"resumed from the checkpoint of round {result.fit.resumed_from}")
    for d in result.fit.dropouts:
        lines.append(f"client {d.client} dropped at round {d.round} ({d.reason}); its pairs are unknown")
    if result.scores is not None:
        lines.append(f"AUROC {result.scores.auroc:.3f}  AUPRC {result.scores.auprc:.3f}  F1 {result.scores.f1:.3f}")
    if result.error_vs_oracle is not None:
        lines.append(f"relative error vs oracle {result.error_vs_oracle:.4f}")
    lines.append(f"wrote {', '.join(str(p) for p in paths.values())}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
