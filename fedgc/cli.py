"""`fedgc` command line: simulate a scenario, run on per-client CSV files, inspect a result."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from fedgc.app.config import ALIGN_MODES, ENGINES, RunConfig, config_from_files, load_config
from fedgc.errors import FedGCError
from fedgc.protocol.settings import MESSAGE_FORMATS
from fedgc.app.progress import RoundProgress


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
    run.add_argument("--align", choices=ALIGN_MODES, default=None,
                     help="override the config's align: 'timestamp' aligns the clients' rows by their timestamps")
    _common(run)
    run.set_defaults(func=_run)

    ident = sub.add_parser(
        "identify", help="fit a client's model on data it may spend (the model file a private run reads)",
        description="Identify a local model from a CSV (or every client of a config, each on its identify_on file "
        "or, failing that, its data file) and save it as .npz with its column names, mean and scale.",
    )  # fmt: skip
    ident.add_argument("config", type=Path, nargs="?", help="a run config: one model per client, into --out (a folder)")
    ident.add_argument("--data", type=Path, default=None, help="a CSV to identify on (historical or public data)")
    ident.add_argument("--name", default=None, help="the client's name (default: the file's stem)")
    ident.add_argument("--state-dim", type=int, default=None, help="latent states (default: chosen from the data)")
    ident.add_argument("--out", type=Path, required=True, help="the model file (.npz), or a folder with a config")
    ident.add_argument("--seed", type=int, default=0, help="seed of the state-dimension choice")
    ident.add_argument("--overwrite", action="store_true", help="replace model files that exist")
    ident.set_defaults(func=_identify)

    ins = sub.add_parser("inspect", help="table, exports and figures of a run's output folder")
    ins.add_argument("dir", type=Path, nargs="+",
                     help="output folder of `fedgc simulate` or `fedgc run` (holds result.json); with --html, a second "
                     "folder compares the two runs")
    ins.add_argument("--top", type=int, default=None, help="rows in the table (default 20 edges; with --all every pair)")
    ins.add_argument("--alpha", type=float, default=None, help="re-decide the edges at this FDR level (default: the run's)")
    ins.add_argument("--all", action="store_true", dest="every_pair", help="list every ordered pair, not only the edges")
    ins.add_argument("--export", default=None, metavar="FORMATS", help="comma-separated: json,csv,graphml,dot (or all)")
    ins.add_argument("--figures", action="store_true", help="write PNGs: heatmap, graph, convergence, streaming, origin")
    ins.add_argument("--html", action="store_true",
                     help="write a self-contained report.html (two folders: compare.html) that works offline")
    ins.add_argument("--out", type=Path, default=None, help="folder for exports, figures and HTML (default: DIR)")
    ins.set_defaults(func=_inspect)

    srv = sub.add_parser("serve", help="live page of a running streaming monitor's output folder")
    srv.add_argument("dir", type=Path, help="the streaming run's output folder (it writes stream.json after every window)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    srv.add_argument("--poll", type=float, default=1.0, help="seconds between the page's updates (default 1)")
    srv.set_defaults(func=_serve)
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
    p.add_argument(
        "--root-certificates", type=Path, default=None,
        help="CA certificate (PEM) of a SuperLink with TLS, e.g. deploy/certs/ca.crt (or FEDGC_ROOT_CERTIFICATES)",
    )  # fmt: skip
    p.add_argument(
        "--message-format", choices=MESSAGE_FORMATS, default="arrays",
        help="flower engines: arrays in ArrayRecords (default), or compact (float64 bytes in the ConfigRecord: "
        "half the Flower objects per message, faster deployed rounds)",
    )  # fmt: skip
    p.add_argument("--wait-timeout", type=float, default=None, metavar="S",
                   help="flower engines: seconds to wait for the SuperNodes (default 120 deployed)")
    p.add_argument("--round-timeout", type=float, default=None, metavar="S",
                   help="flower engines: seconds a round waits for replies; a silent client then counts as "
                   "dropped (server.on_dropout; default 120 deployed)")
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
    if args.config is not None and args.data:
        raise FedGCError("give either a config file or --data files, not both")
    if args.config is not None:
        cfg = load_config(args.config)
    elif args.data:
        cfg = config_from_files(args.data)
    else:
        raise FedGCError("`fedgc run` needs a config file or at least two --data files")
    if args.align is not None:
        cfg = replace(cfg, align=args.align)
    return _execute(_apply_overrides(cfg, args), args, mode="run")


def _execute(cfg: RunConfig, args: argparse.Namespace, *, mode: str) -> int:
    # The maths and its dependencies load only once the arguments are checked: mistakes are reported at once.
    from fedgc.app.runner import EngineOptions, run

    if args.resume is not None and args.out is not None and args.out.resolve() != args.resume.resolve():
        raise FedGCError(f"--resume {args.resume} continues the run in that folder; drop --out (or give the same folder)")
    out = args.resume if args.resume is not None else args.out
    if out is None:
        raise FedGCError("give the output folder with --out DIR (or --resume DIR to continue a run)")
    args.out = out
    limits = cfg.server if cfg.streaming is None else cfg.streaming  # streaming: the rounds of each window
    rounds, tol = limits.max_rounds, limits.tol
    progress = None if args.quiet else RoundProgress(rounds, tol)
    start = time.perf_counter()
    options = EngineOptions(
        superlink=args.superlink, message_format=args.message_format,
        root_certificates=None if args.root_certificates is None else str(args.root_certificates),
        wait_timeout=args.wait_timeout, round_timeout=args.round_timeout,
    )  # fmt: skip
    snapshots = None
    if cfg.streaming is not None:  # the live page (`fedgc serve OUT`) reads OUT/stream.json as windows complete
        from fedgc.report.web.live import StreamSnapshots

        snapshots = StreamSnapshots(out, cfg)
    result = run(cfg, mode=mode, out_dir=out, options=options, on_round=progress, resume=args.resume is not None,
                 on_window=snapshots)  # fmt: skip
    if progress is not None:
        progress.close()
    if snapshots is not None and result.streaming is not None:
        snapshots.finish(result.streaming)
    result.timings["total_s"] = time.perf_counter() - start
    from fedgc.report.result_json import write_outputs  # after the rounds: the report layer is not needed before

    paths = write_outputs(result, args.out)
    if not args.quiet:
        _summary(result, paths)
    return 0


def _identify(args: argparse.Namespace) -> int:
    from fedgc.app.config import ClientSpec
    from fedgc.app.identify import identify_to_file

    if (args.config is None) == (args.data is None):
        raise FedGCError("`fedgc identify` needs a CSV (--data FILE --out model.npz) or a config (CONFIG --out FOLDER)")
    if args.data is not None:
        spec = ClientSpec(args.name or args.data.stem, args.data, state_dim=args.state_dim)
        jobs = [(spec, args.out)]
    else:
        cfg = load_config(args.config)
        if not cfg.clients:
            raise FedGCError(f"{args.config} has no 'clients' list to identify models for")
        jobs = [(spec, args.out / f"{spec.name}.npz") for spec in cfg.clients]
    for spec, out in jobs:
        done = identify_to_file(spec, out, seed=args.seed, overwrite=args.overwrite)
        source = spec.identify_on or spec.data
        dropped = f"; dropped {', '.join(done.dropped)}" if done.dropped else ""
        print(f"client {done.client}: {done.model.state_dim} states, {done.model.obs_dim} columns from {source}"
              f"{dropped} -> {done.path}", file=sys.stderr)  # fmt: skip
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from fedgc.report.exports import export, parse_formats
    from fedgc.report.ranking import with_alpha
    from fedgc.report.result_json import HEATMAP_FILE, load_result
    from fedgc.report.table import format_table

    formats = parse_formats(args.export) if args.export is not None else ()
    if len(args.dir) > 2 or (len(args.dir) == 2 and (not args.html or formats or args.figures)):
        raise FedGCError("give one run folder, or two with --html (and no --export or --figures) to compare them")
    results = [load_result(d) for d in args.dir]
    if args.alpha is not None:
        results = [with_alpha(r, alpha=args.alpha) for r in results]
    _print_table("\n\n".join(format_table(r, top=args.top, every_pair=args.every_pair) for r in results))
    result = results[0]
    out = args.out if args.out is not None else result.path.parent
    paths = export(result, formats=formats, out_dir=out)
    if args.html:
        from fedgc.report.web.commands import write_html

        paths["html"] = write_html(results, out_dir=out, alpha=args.alpha)
    if args.figures:  # the figure modules import matplotlib: loaded only when figures are asked for
        from fedgc.report.figures import heatmap_is_the_runs, write_figures

        paths.update(write_figures(result, out_dir=out))
        if heatmap_is_the_runs(result):
            print(f"heatmap: the run's own {result.path.parent / HEATMAP_FILE} (the edges are the run's; "
                  "--alpha re-decides them and draws inspect_heatmap.png)", file=sys.stderr)  # fmt: skip
    for path in paths.values():
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _print_table(text: str) -> None:
    """The table on stdout; a reader that stops early (`fedgc inspect RUN --all | head`) ends the table
    quietly, and the exports and figures are still written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit: point stdout at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _serve(args: argparse.Namespace) -> int:
    from fedgc.report.web.live import serve

    return serve(args.dir, host=args.host, port=args.port, poll_seconds=args.poll)


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
    lines += _privacy_lines(result.privacy)
    ev = result.evaluation
    if ev.scores is not None:
        lines.append(f"AUROC {ev.scores.auroc:.3f}  AUPRC {ev.scores.auprc:.3f}  F1 {ev.scores.f1:.3f}")
    if ev.error_vs_oracle is not None:
        outside = " (oracle from raw data, outside the privacy guarantee)" if result.privacy.get("enabled") else ""
        lines.append(f"relative error vs oracle {ev.error_vs_oracle:.4f}{outside}")
    lines.append(f"wrote {', '.join(str(p) for p in paths.values())}")
    print("\n".join(lines), file=sys.stderr)


def _privacy_lines(p: dict) -> list[str]:
    """The privacy spent, in one line (or why the run is not private), and a warning when the noise swamps
    the signal."""
    if not p.get("enabled"):
        return []
    first = next(iter(p["per_client"].values()))
    eps, delta = first["whole_run"]["epsilon"], first["whole_run"]["delta"]
    k = p.get("event_steps", 1)
    event = "per time step" if k == 1 else f"per event of {k} steps (one step: epsilon {first['one_step']['epsilon']:.3g})"
    if not p.get("private", True):
        lines = [f"NOT PRIVATE: reproducible_noise derived the noise from the seed; epsilon {eps:.3g} is not guaranteed"]
    else:
        lines = [f"privacy: epsilon {eps:.3g}, delta {delta:g} spent per client for the whole run, {event}"]
    if p.get("noise_swamps_signal"):
        lines.append("warning: the privacy noise swamps the signal (no block of A_s stood above its noise); the edges and "
                     "AUROC say little: raise epsilon or use a longer window")  # fmt: skip
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
