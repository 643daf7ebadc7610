"""`fedgc` command line: simulate a scenario, run on per-client CSV files, inspect a result."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from fedgc.app.config import ALIGN_MODES, ENGINES, RunConfig, config_from_files, load_config
from fedgc.app.output_folder import OutputFolder
from fedgc.app.progress import RoundProgress
from fedgc.errors import FedGCError, FedGCWarning
from fedgc.files import file_digest, write_text
from fedgc.protocol.settings import MESSAGE_FORMATS, ORACLE_MIN_ROUNDS

INSPECT_MARKER = ".fedgc-inspect"  # in an inspect --out folder: which result.json (path, sha256) it was drawn from
INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
CONFIG_KEYS = "every config key, its type, default and meaning: `fedgc config-reference`"
CSV_FORMAT = """\
CSV files: one file per site (a client), one row per time step, one column per sensor:
  - delimiter ',', ';', tab or runs of spaces (detected); '.' is the decimal point
  - an optional header line names the sensors (without one they are s0, s1, ...)
  - an optional timestamp column: the first column, when its header is time, timestamp, date, datetime or
    t, or its values are ISO-8601 datetimes (a config's timestamp_column names another one, or none);
    timestamps must increase
  - empty cells, NaN, NA, null and none are missing measurements (the filter skips them exactly);
    text and infinities in a sensor column are errors naming the row and column
  - a constant column (stuck sensor) or one missing in over half its rows is dropped, with a warning;
    an analyser's value held between its samples counts as missing after the sample
  - row t of every file is time step t, so the files have equally many rows; --align timestamp (or
    align: timestamp) pairs the rows by their timestamps instead
"""
CONFIG_EXAMPLE = (
    """\
config (YAML; paths are relative to the file;
"""
    + CONFIG_KEYS
    + """):
  name: plant
  clients:
    - {name: feed, data: feed.csv}                    # model: identify (default), from the data
    - {name: reactor, data: reactor.csv, state_dim: 3}
    - {name: separator, data: sep.csv, model: sep.npz, timestamp_column: none}
  server: {max_rounds: 20, tol: 1.0e-6, alpha: 0.05}
"""
)
OUTPUT_RULES = """\
output folder (--out): created if needed. One that holds anything is refused: --overwrite replaces a
fedgc output folder (the new run is written beside it and swapped in only when it succeeds), --resume
DIR continues the interrupted run in DIR (a checkpoint is written after every round; Ctrl-C says the
command).
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    with _plain_warnings():
        try:
            return args.func(args)
        except FedGCError as exc:
            print(f"fedgc: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("fedgc: interrupted", file=sys.stderr)
            return INTERRUPTED
        except BrokenPipeError:  # the reader of stdout went away (`fedgc ... | head`)
            _stdout_to_devnull()
            return 0
        except OSError as exc:  # the machine's: a full disk, a permission, a file that went away
            where = f" {exc.filename}" if exc.filename else ""
            print(f"fedgc: error:{where}: {exc.strerror or exc}", file=sys.stderr)
            return 1


@contextmanager
def _plain_warnings() -> Iterator[None]:
    """A FedGCWarning prints as `warning: <message>` (it names the client and file itself; the source line
    that raised it means nothing to a user); other warnings keep Python's format."""
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, FedGCWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning
    try:
        yield
    finally:
        warnings.formatwarning = default


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedgc")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """--version: looks the installed version up only when asked (importlib.metadata costs every other
    command about 20 ms)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help="show program's version number and exit" if help is None else help)  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"fedgc {_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    parser = argparse.ArgumentParser(
        prog="fedgc", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Federated Granger causality over local Kalman filters: which industrial sites drive which,\n"
        "without moving their raw data.",
        epilog="examples:\n"
        "  fedgc simulate simulations/default.yaml --out runs/default   # a scenario with known truth\n"
        "  fedgc run --data feed.csv reactor.csv --out runs/plant         # your sites' CSV files\n"
        "  fedgc run plant.yaml --out runs/plant                          # a config naming the clients\n"
        "  fedgc inspect runs/plant --figures --export csv                # table, figures, edge list\n"
        "  fedgc run plant.yaml --resume runs/plant                       # continue an interrupted run\n\n"
        + CSV_FORMAT + "\n" + CONFIG_KEYS + ".\n`fedgc COMMAND --help`: each command's options and examples.",
    )  # fmt: skip
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = command(
        "simulate", help="run a synthetic scenario with known truth",
        description="Run a synthetic scenario (a config with a 'synthetic' section) and score the result against "
        "its true graph and the centralized oracle (every client's data pooled; local engine).",
        epilog="examples:\n  fedgc simulate simulations/default.yaml --out runs/default\n"
        "  fedgc simulate simulations/default.yaml --out runs/default --overwrite --seed 3\n\n" + OUTPUT_RULES
        + "\n" + CONFIG_KEYS + ".",
    )  # fmt: skip
    sim.add_argument("scenario", type=Path, help="scenario YAML (see simulations/)")
    _common(sim)
    sim.set_defaults(func=_simulate, figures=True)  # the demo job: its figures are part of it

    run = command(
        "run", help="run on real per-client CSV files",
        description="Run on your sites' CSV files: each client filters its own file; only low-dimensional state "
        "estimates are exchanged. Give the files with --data (a client per file, named after it), or a config.",
        epilog="examples:\n  fedgc run --data feed.csv reactor.csv separator.csv --out runs/plant\n"
        "  fedgc run --data history/site*.csv --out runs/plant\n"
        "  fedgc run plant.yaml --out runs/plant\n  fedgc run plant.yaml --resume runs/plant\n\n"
        + CSV_FORMAT + "\n" + CONFIG_EXAMPLE + "\n" + OUTPUT_RULES,
    )  # fmt: skip
    run.add_argument("config", type=Path, nargs="?", help="run config YAML with a 'clients' list")
    run.add_argument(
        "--data", type=Path, action="extend", nargs="+", default=[], metavar="CSV",
        help="the clients' CSV files, a client per file named after it (--data a.csv b.csv, --data sites/*.csv, or "
        "--data repeated)",
    )  # fmt: skip
    run.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default=None,
        help="override the config's align: 'timestamp' aligns the clients' rows by their timestamps",
    )
    run.add_argument(
        "--figures",
        action="store_true",
        help="also draw gc_heatmap.png and convergence.png (default: result.json and report.md only; "
        "`fedgc inspect OUT --figures` or --html draws figures later from result.json)",
    )
    _common(run)
    run.set_defaults(func=_run)

    ident = command(
        "identify", help="fit a client's model on data it may spend (the model file a private run reads)",
        description="Identify a local model from a CSV (or every client of a config, each on its identify_on file "
        "or, failing that, its data file) and save it as .npz with its column names, mean and scale.",
        epilog="examples:\n  fedgc identify --data history/feed.csv --out models/feed.npz\n"
        "  fedgc identify plant.yaml --out models/       # models/<client>.npz for every client\n\n"
        "Existing model files are refused unless --overwrite; with a config, every model is identified before "
        "any file is replaced.\n\n" + CSV_FORMAT,
    )  # fmt: skip
    ident.add_argument("config", type=Path, nargs="?", help="a run config: one model per client, into --out (a folder)")
    ident.add_argument("--data", type=Path, default=None, help="a CSV to identify on (historical or public data)")
    ident.add_argument("--name", default=None, help="the client's name (default: the file's stem)")
    ident.add_argument("--state-dim", type=int, default=None, help="latent states (default: chosen from the data)")
    ident.add_argument("--out", type=Path, required=True, help="the model file (.npz), or a folder with a config")
    ident.add_argument("--seed", type=int, default=0, help="seed of the state-dimension choice")
    ident.add_argument("--overwrite", action="store_true", help="replace model files that exist")
    ident.set_defaults(func=_identify)

    ins = command(
        "inspect", help="table, exports and figures of a run's output folder",
        description="Print a run's edges as a table; write exports, figures and an HTML report from its result.json.",
        epilog="examples:\n  fedgc inspect runs/plant                        # the FDR edges, most significant first\n"
        "  fedgc inspect runs/plant --all --alpha 0.01     # every ordered pair, edges re-decided at FDR 0.01\n"
        "  fedgc inspect runs/plant --figures --export all # into the run's folder\n"
        "  fedgc inspect runs/plant --html                 # runs/plant/report.html\n\n"
        "Files at another --alpha than the run's carry it in their names (edges.alpha-0.01.csv), so files at "
        "different levels never mix. --out DIR: a new or empty folder, or one an earlier inspect of the same run "
        "wrote; --overwrite replaces another.",
    )  # fmt: skip
    ins.add_argument(
        "dir",
        type=Path,
        nargs="+",
        help="output folder of `fedgc simulate` or `fedgc run` (holds result.json); with --html, a second "
        "folder compares the two runs",
    )
    ins.add_argument(
        "--top", type=int, default=None, help="rows in the table (default 20 edges; with --all every pair)"
    )
    ins.add_argument(
        "--alpha", type=float, default=None, help="re-decide the edges at this FDR level (default: the run's)"
    )
    ins.add_argument(
        "--all", action="store_true", dest="every_pair", help="list every ordered pair, not only the edges"
    )
    ins.add_argument("--export", default=None, metavar="FORMATS", help="comma-separated: json,csv,graphml,dot (or all)")
    ins.add_argument(
        "--figures",
        action="store_true",
        help="write PNGs: graph, convergence, streaming, origin (and the heatmap at another --alpha)",
    )
    ins.add_argument(
        "--html",
        action="store_true",
        help="write a self-contained report.html (two folders: compare.html) that works offline",
    )
    ins.add_argument("--out", type=Path, default=None, help="folder for exports, figures and HTML (default: DIR)")
    ins.add_argument("--overwrite", action="store_true", help="replace an --out folder another inspect wrote")
    ins.set_defaults(func=_inspect)

    srv = command("serve", help="live page of a running streaming monitor's output folder",
                  epilog="example:\n  fedgc serve runs/monitor --port 8765")  # fmt: skip
    srv.add_argument(
        "dir", type=Path, help="the streaming run's output folder (it writes stream.json after every window)"
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    srv.add_argument("--poll", type=float, default=1.0, help="seconds between the page's updates (default 1)")
    srv.set_defaults(func=_serve)

    ref = command("config-reference", help="print every config key with its type, default and meaning (Markdown)")
    ref.set_defaults(func=_config_reference)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="output folder (created; required unless --resume)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds, once the new run has succeeded (a failed run leaves it as it was)",
    )
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
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="S",
        help="flower engines: seconds to wait for the SuperNodes (default 120 deployed)",
    )
    p.add_argument(
        "--round-timeout",
        type=float,
        default=None,
        metavar="S",
        help="flower engines: seconds a round waits for replies; a silent client then counts as "
        "dropped (server.on_dropout; default 120 deployed)",
    )
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


DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".dat")
CONFIG_SUFFIXES = (".yaml", ".yml")


def _run(args: argparse.Namespace) -> int:
    if args.config is not None and args.config.suffix.lower() in DATA_SUFFIXES:
        files = [*args.data, args.config]
        raise FedGCError(
            f"{args.config} is a data file, not a run config: give the clients' CSV files after --data "
            f"(--data {' '.join(map(str, files))})"
        )
    configs = [f for f in args.data if f.suffix.lower() in CONFIG_SUFFIXES]
    if configs:
        raise FedGCError(
            f"{configs[0]} is a run config, not a data file: give it before --data or without it "
            f"(fedgc run {configs[0]} --out DIR)"
        )
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
        raise FedGCError(
            f"--resume {args.resume} continues the run in that folder; drop --out (or give the same folder)"
        )
    if args.resume is not None and args.overwrite:
        raise FedGCError("--overwrite starts the run afresh and --resume continues it: give one of them")
    out = args.resume if args.resume is not None else args.out
    if out is None:
        raise FedGCError("give the output folder with --out DIR (or --resume DIR to continue a run)")
    options = EngineOptions(
        superlink=args.superlink, message_format=args.message_format,
        root_certificates=None if args.root_certificates is None else str(args.root_certificates),
        wait_timeout=args.wait_timeout, round_timeout=args.round_timeout,
    )  # fmt: skip
    folder = OutputFolder.open(out, overwrite=args.overwrite, resume=args.resume is not None,
                               flag="--out" if args.resume is None else "--resume")  # fmt: skip
    if folder.staged and not args.quiet:
        print(f"fedgc: writing into {folder.work}; it replaces {folder.target} when the run succeeds", file=sys.stderr)
    limits = cfg.server if cfg.streaming is None else cfg.streaming  # streaming: the rounds of each window
    rounds, tol = limits.max_rounds, limits.tol
    progress = None if args.quiet else RoundProgress(rounds, tol)
    oracle = None if args.quiet else RoundProgress(max(cfg.server.max_rounds, ORACLE_MIN_ROUNDS), cfg.server.tol,
                                                   label="oracle")  # fmt: skip
    start = time.perf_counter()
    try:
        snapshots = None
        if cfg.streaming is not None:  # the live page (`fedgc serve OUT`) reads OUT/stream.json as windows complete
            from fedgc.report.web.live import StreamSnapshots

            snapshots = StreamSnapshots(folder.work, cfg)
        result = run(cfg, mode=mode, out_dir=folder.work, options=options, on_round=progress,
                     resume=args.resume is not None, on_window=snapshots, on_oracle_round=oracle)  # fmt: skip
        _close(progress, oracle)
        if snapshots is not None and result.streaming is not None:
            snapshots.finish(result.streaming)
        result.timings["total_s"] = time.perf_counter() - start
        from fedgc.report.result_json import write_outputs  # after the rounds: the report layer is not needed before

        paths = write_outputs(result, folder.work, figures=args.figures)
        folder.commit()
    except KeyboardInterrupt:
        _close(progress, oracle)
        return _interrupted(args, folder)
    except BaseException:
        _close(progress, oracle)
        folder.abandon()
        raise
    if not args.quiet:
        _summary(result, {k: folder.final(p) for k, p in paths.items()})
    return 0


def _close(*bars: RoundProgress | None) -> None:
    for bar in bars:
        if bar is not None:
            bar.close()


def _interrupted(args: argparse.Namespace, folder: OutputFolder) -> int:
    """Ctrl-C during a run: one line with the last completed round and the command that continues it."""
    from fedgc.app.checkpoint import completed_round

    done = completed_round(folder.work)
    if done is None:
        folder.abandon()
        print("fedgc: interrupted before the first round completed; nothing to resume", file=sys.stderr)
    else:
        command = _resume_command(args.argv, folder.work)
        print(f"fedgc: interrupted after round {done} (the last one saved); continue with: {command}", file=sys.stderr)
    return INTERRUPTED


def _resume_command(argv: list[str], folder: Path) -> str:
    """The command line that was run, with --resume FOLDER in place of --out/--overwrite/--resume."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--out", "--resume"):
            skip = True
        elif token != "--overwrite" and not token.startswith(("--out=", "--resume=")):
            kept.append(token)
    program = sys.argv[0] if Path(sys.argv[0]).name == "fedgc" else "fedgc"
    return shlex.join([program, *kept, "--resume", str(folder)])


def _identify(args: argparse.Namespace) -> int:
    from fedgc.app.config import ClientSpec
    from fedgc.app.identify import check_model_path, identify_client, save_identified

    if (args.config is None) == (args.data is None):
        raise FedGCError("`fedgc identify` needs a CSV (--data FILE --out model.npz) or a config (CONFIG --out FOLDER)")
    if args.data is not None:
        spec = ClientSpec(args.name or args.data.stem, args.data, state_dim=args.state_dim)
        jobs = [(spec, args.out)]
    else:
        cfg = load_config(args.config)
        if not cfg.clients:
            raise FedGCError(f"{args.config} has no 'clients' list to identify models for")
        if args.out.exists() and not args.out.is_dir():
            raise FedGCError(f"--out {args.out}: that is a file; with a config, --out is the folder of the model files")
        jobs = [(spec, args.out / f"{spec.name}.npz") for spec in cfg.clients]
    for spec, out in jobs:  # every path checked before any model is identified
        check_model_path(spec, out, overwrite=args.overwrite)
    # Every model is identified before any file is written: a client that fails leaves every file as it was.
    identified = [identify_client(spec, out, seed=args.seed) for spec, out in jobs]
    for (spec, _), done in zip(jobs, identified):
        save_identified(done)
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
    result = results[0]
    folder = None
    if formats or args.html or args.figures:  # checked before anything is printed or written
        folder = _inspect_folder(args.out, result.path, overwrite=args.overwrite)
    _print_table("\n\n".join(format_table(r, top=args.top, every_pair=args.every_pair) for r in results))
    if folder is None:
        return 0
    try:
        paths = export(result, formats=formats, out_dir=folder.work)
        if args.html:
            from fedgc.report.web.commands import write_html

            paths["html"] = write_html(results, out_dir=folder.work, alpha=args.alpha)
        if args.figures:  # the figure modules import matplotlib: loaded only when figures are asked for
            from fedgc.report.figures import write_figures

            paths.update(write_figures(result, out_dir=folder.work))
        folder.commit()
    except BaseException:
        folder.abandon()
        raise
    if args.figures and importlib.import_module("fedgc.report.figures").heatmap_is_the_runs(result):
        print(f"heatmap: the run's own {result.path.parent / HEATMAP_FILE} (the edges are the run's; "
              "--alpha re-decides them and draws the heatmap at that level)", file=sys.stderr)  # fmt: skip
    for path in paths.values():
        print(f"wrote {folder.final(path)}", file=sys.stderr)
    return 0


def _inspect_folder(out: Path | None, result_file: Path, *, overwrite: bool) -> OutputFolder:
    """Where inspect writes: the run's own folder (default), or --out: a new or empty folder, one an earlier
    inspect of the same run wrote, or (--overwrite) a staging folder that replaces another inspect's."""
    own = result_file.parent
    if out is None or (out.is_dir() and out.resolve() == own.resolve()):
        return OutputFolder(own, own, fresh=False)
    marker = json.dumps({"result": str(result_file.resolve()), "sha256": file_digest(result_file)})
    if not overwrite and out.is_dir() and _read(out / INSPECT_MARKER) == marker:
        return OutputFolder(out, out, fresh=False)
    folder = OutputFolder.open(out, overwrite=overwrite, resumable=False, marker=INSPECT_MARKER)
    write_text(folder.work / INSPECT_MARKER, marker)
    return folder


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _print_table(text: str) -> None:
    """The table on stdout; a reader that stops early (`fedgc inspect RUN --all | head`) ends the table
    quietly, and the exports and figures are still written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    """After a broken pipe: Python would report it again when it flushes stdout at exit, so stdout goes to
    devnull."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _config_reference(args: argparse.Namespace) -> int:
    from fedgc.app.config import config_reference

    print(config_reference())
    return 0


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
    if ev.error_vs_oracle is not None and math.isfinite(ev.error_vs_oracle):
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
    event = (
        "per time step" if k == 1 else f"per event of {k} steps (one step: epsilon {first['one_step']['epsilon']:.3g})"
    )
    if not p.get("private", True):
        lines = [
            f"NOT PRIVATE: reproducible_noise derived the noise from the seed; epsilon {eps:.3g} is not guaranteed"
        ]
    else:
        lines = [f"privacy: epsilon {eps:.3g}, delta {delta:g} spent per client for the whole run, {event}"]
    if p.get("noise_swamps_signal"):
        lines.append("warning: the privacy noise swamps the signal (no block of A_s stood above its noise); the edges and "
                     "AUROC say little: raise epsilon or use a longer window")  # fmt: skip
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
