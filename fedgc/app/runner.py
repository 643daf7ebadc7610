"""Run a config: the one place that decides what a run is (synthetic, CSV or TEP clients; batch or
streaming) and where it runs (the local engine here; flower-sim and flower in the Flower app).

    run(cfg, mode=..., out_dir=...)   checks the combination once, then
      local engine:   clients as in-process sessions (fedgc.app.clients) -> the round loop over a local
                      transport (batch: fedgc.protocol.loop; streaming: fedgc.protocol.streaming)
      Flower engines: clients as files (fedgc.app.clients.deployment_files) -> server/engine.py
    then the evaluation (truth, oracle) and the source's own sections (TEP).

The Flower engines live in the Flower app (server/), so this library never imports Flower: they are
looked up by name, from the fedgc project folder, when a run asks for one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from threadpoolctl import threadpool_limits

from fedgc.analysis.stream import StreamRecord
from fedgc.app.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointing,
    config_fingerprint,
    fingerprint_config,
    hash_fingerprint,
    record_error,
)
from fedgc.app.clients import LOCAL_WORKERS, Clients, alert_references, deployment_files, local_clients
from fedgc.app.config import ENGINES, RunConfig
from fedgc.app.evaluation import evaluate
from fedgc.app.privacy import privacy_accountant, privacy_plan, privacy_summary, refuse_data_dependence, server_privacy
from fedgc.app.results import RunResult
from fedgc.errors import ConfigError, FedGCError
from fedgc.privacy.budget import PrivacyPlan
from fedgc.protocol.background import in_background
from fedgc.protocol.loop import FitResult, run_protocol
from fedgc.protocol.rules import rule_named
from fedgc.protocol.session import ClientSession
from fedgc.protocol.state import RoundRecord
from fedgc.protocol.streaming import Alert, WindowResult, calibrate_alerts, run_stream
from fedgc.protocol.transport import CountingTransport, LocalTransport, Transport
from fedgc.protocol.wire import check_message_format

MODES = ("simulate", "run")
PROJECT_DIR = Path(__file__).resolve().parents[2]
FLOWER_ENGINE_TABLE = "ENGINES"  # server/engine.py's {engine name: FlowerEngine}
FLOWER_ENGINES = ("flower-sim", "flower")

# The local engine's parallelism is its LOCAL_WORKERS client threads; BLAS inside them gets the remaining cores
# (one each on 2 cores). Multi-threaded BLAS on these small matrices, called from two threads at once, more
# than doubled a run's CPU time on the 2-core machine (benchmarks/bench_peers.py, docs/performance.md).
BLAS_THREADS = max(1, (os.cpu_count() or 1) // LOCAL_WORKERS)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

OnRound = Callable[[RoundRecord], None]
OnWindow = Callable[[WindowResult, list[Alert]], None]


@dataclass(frozen=True)
class EngineOptions:
    """How a Flower engine reaches the clients. superlink: the SuperLink's address (engine flower);
    root_certificates: its CA certificate when it serves TLS; message_format: 'arrays' or 'compact'
    (server/ and clients/ carry the arrays as ArrayRecords, or as float64 bytes in the ConfigRecord);
    wait_timeout: seconds to wait for the SuperNodes, round_timeout: for a round's replies before a silent
    client counts as dropped (None: the engine's own, 120 s deployed)."""

    superlink: str | None = None
    root_certificates: str | None = None
    message_format: str = "arrays"
    wait_timeout: float | None = None
    round_timeout: float | None = None

    def __post_init__(self) -> None:
        check_message_format(self.message_format)
        for name in ("wait_timeout", "round_timeout"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ConfigError(f"--{name.replace('_', '-')} must be a number of seconds > 0, got {value!r}")


class FlowerEngine(Protocol):
    """What server/engine.py provides for each Flower engine: a check of what it needs to reach, and a run
    of a config whose clients read files that returns the fit (evaluation and sections are added here)."""

    def check(self, options: EngineOptions) -> None: ...

    def __call__(
        self, cfg: RunConfig, *, out_dir: Path, options: EngineOptions, on_round: OnRound | None, resume: bool
    ) -> RunResult: ...


def run(
    cfg: RunConfig, *, mode: str, out_dir: Path, options: EngineOptions = EngineOptions(),
    on_round: OnRound | None = None, resume: bool = False, flower: FlowerEngine | None = None,
    on_window: OnWindow | None = None, on_oracle_round: OnRound | None = None,
) -> RunResult:  # fmt: skip
    """`fedgc simulate` (mode 'simulate') or `fedgc run` (mode 'run') of cfg on its engine; out_dir holds the
    checkpoint (and, for the Flower engines, the clients' files). resume: continue from its checkpoint.
    flower: a Flower engine to use instead of server/engine.py's own for cfg.engine (other timeouts);
    on_window: called as each window of a streaming run completes, with its alerts; on_oracle_round: with
    each round of the oracle (when the run has one)."""
    check_run(cfg, mode=mode, resume=resume)
    cfg = with_oracle_decided(cfg, mode=mode)
    if cfg.engine == "local":
        return run_local(cfg, mode=mode, out_dir=Path(out_dir), on_round=on_round, resume=resume, on_window=on_window,
                         on_oracle_round=on_oracle_round)  # fmt: skip
    engine = flower if flower is not None else flower_engine(cfg.engine)
    engine.check(options)  # e.g. the SuperLink is reachable, before any file is written
    clients = deployment_files(cfg, mode=mode, directory=Path(out_dir) / "clients")
    result = engine(clients.config, out_dir=Path(out_dir), options=options, on_round=on_round, resume=resume)
    return _finish(result, clients, windows=clients.oracle_windows)


def with_oracle_decided(cfg: RunConfig, *, mode: str) -> RunConfig:
    """cfg with evaluation.oracle true or false. The oracle pools every client's raw window in one place, so
    it is never computed where clients keep their data: unset (auto), it is on for `fedgc simulate` on the
    local engine and off otherwise (`fedgc run`, a private TEP run); asked for on a Flower engine, whose
    clients read their data on their own nodes, it is an error."""
    asked = cfg.evaluation.oracle
    if cfg.engine in FLOWER_ENGINES:
        if asked:
            raise ConfigError(
                f"{cfg.source or 'config'}: evaluation.oracle pools every client's raw data in one place, which the "
                f"Flower engines never do (engine {cfg.engine!r}: each client reads its data on its own node); remove "
                "`oracle: true`, or run with --engine local"
            )
        decided = False
    elif asked is None:
        decided = mode == "simulate" and not (cfg.privacy is not None and cfg.tep is not None)
    else:
        decided = bool(asked)
    return cfg if asked is decided else replace(cfg, evaluation=replace(cfg.evaluation, oracle=decided))


def check_run(cfg: RunConfig, *, mode: str, resume: bool) -> None:
    """Every combination of mode, source, streaming, engine and resume that a run cannot do, refused before
    any data is read."""
    where = cfg.source or "config"
    if mode not in MODES:
        raise ConfigError(f"mode must be 'simulate' or 'run', got {mode!r}")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine {cfg.engine!r} is not one of {ENGINES}")
    if mode == "run" and not cfg.clients and cfg.tep is None:
        raise ConfigError(f"{where}: `fedgc run` needs a 'clients' list (or --data files)")
    if len(cfg.clients) == 1:
        raise ConfigError(f"{where}: clients: one client ({cfg.clients[0].name!r}); Granger causality is between "
                          "sites, so a run needs at least two")  # fmt: skip
    if resume and (cfg.tep is not None or cfg.streaming is not None):
        raise ConfigError(f"{where}: --resume continues batch runs; tep and streaming runs start afresh")
    if cfg.privacy is not None:
        if (mode == "run" or cfg.tep is not None) and cfg.evaluation.oracle:
            raise ConfigError(
                f"{where}: privacy: the centralized oracle pools every client's raw data, outside the guarantee; a "
                "private `fedgc run` cannot compute it (set evaluation: {oracle: false})"
            )
        refuse_data_dependence(cfg)  # every engine: the clients' nodes refuse the same again, on their own settings
        if resume and not cfg.clients and not cfg.privacy.reproducible_noise:
            raise ConfigError(
                f"{where}: a private simulated run cannot be resumed: its clients would draw fresh noise, a second "
                "release (a client with a data file keeps its noise seed in its ledger); start afresh"
            )
    if cfg.engine == "local":
        return
    if cfg.align != "none" and mode == "run":
        raise ConfigError(
            f"align: {cfg.align} needs every client's timestamps in one place; it runs with the local engine only "
            f"(got engine {cfg.engine!r}); align the files beforehand for a federated deployment"
        )
    if cfg.streaming is not None:
        raise ConfigError(
            f"streaming mode runs on the local engine only; engine {cfg.engine!r} does not support it yet "
            "(use --engine local, or remove the 'streaming' section for a batch run)"
        )


def run_local(cfg: RunConfig, *, mode: str, out_dir: Path | None, on_round: OnRound | None = None,
              resume: bool = False, on_window: OnWindow | None = None,
              on_oracle_round: OnRound | None = None) -> RunResult:  # fmt: skip
    """The local engine: every client an in-process session over a local transport, BLAS on BLAS_THREADS
    threads (unless the environment sets a BLAS thread count)."""
    with local_blas_threads():
        return _run_local(cfg, mode=mode, out_dir=out_dir, on_round=on_round, resume=resume, on_window=on_window,
                          on_oracle_round=on_oracle_round)  # fmt: skip


def local_blas_threads() -> contextlib.AbstractContextManager[Any]:
    """BLAS limited to BLAS_THREADS threads until the block ends, or left alone when the user chose a count."""
    if any(os.environ.get(v) for v in BLAS_THREAD_VARIABLES):
        return contextlib.nullcontext()
    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def _run_local(cfg: RunConfig, *, mode: str, out_dir: Path | None, on_round: OnRound | None, resume: bool,
               on_window: OnWindow | None, on_oracle_round: OnRound | None) -> RunResult:  # fmt: skip
    cfg = with_oracle_decided(cfg, mode=mode)
    plan = privacy_plan(cfg)  # before any data is touched
    t0 = time.perf_counter()
    # The checkpoint's fingerprint hashes every client file (5 GB for a year of 1-minute data from 20 sites,
    # ~7 s of sha256): on a thread of its own while the clients are read (sha256 releases the GIL).
    fingerprint = None
    if cfg.streaming is None and out_dir is not None:
        # The config's part here: pydantic's compiled code on the daemon thread aborted the process ("exception
        # not rethrown") when a bad file ended the run meanwhile (CPython unwinds daemon threads at exit).
        raw = fingerprint_config(cfg)
        fingerprint = in_background(lambda: hash_fingerprint(raw, workers=1))
    clients = local_clients(cfg, mode=mode, plan=plan)
    setup_s = time.perf_counter() - t0
    if cfg.streaming is None:
        result = run_batch(cfg, LocalTransport(clients.sessions, workers=LOCAL_WORKERS), sessions=clients.sessions, plan=plan,
                           checkpoint_dir=out_dir, on_round=on_round, resume=resume,
                           fingerprint=None if fingerprint is None else fingerprint.result())  # fmt: skip
        windows = clients.oracle_windows
    else:
        result = run_streaming(cfg, clients, on_round=on_round, on_window=on_window)
        windows = None
    result.timings["setup_s"] = setup_s
    return _finish(result, clients, windows=windows, on_oracle_round=on_oracle_round)


def run_batch(
    cfg: RunConfig, transport: Transport, *, sessions: Sequence[ClientSession] = (), plan: PrivacyPlan | None = None,
    checkpoint_dir: Path | None = None, on_round: OnRound | None = None, resume: bool = False,
    stop_when: Callable[[Any], bool] | None = None, engine: str = "local", fingerprint: str | None = None,
) -> RunResult:  # fmt: skip
    """The batch protocol over `transport`, checkpointed after every round into checkpoint_dir (a failed run
    says there where its last round is kept, and why it stopped). sessions: the in-process clients (their
    own state goes into the checkpoint); fingerprint: config_fingerprint(cfg) when already computed. The
    privacy report reads each client's noise level from what it reported of its release (ClientInfo.release:
    an in-process session's, or a Flower node's setup reply)."""
    t0 = time.perf_counter()
    server = server_privacy(cfg, plan)
    counting = CountingTransport(transport)
    saver, start = None, None
    if checkpoint_dir is not None:
        saver = Checkpointing(
            Path(checkpoint_dir), config_fingerprint(cfg) if fingerprint is None else fingerprint,
            rule_named(cfg.server.rule), tuple(sessions), plan,
            None if plan is None else privacy_accountant(cfg),
        )  # fmt: skip
        start = saver.start(resume=resume)
    elif resume:
        raise ConfigError("resuming needs the output folder that holds the checkpoint")
    try:
        fit = run_protocol(
            counting,
            replace(cfg.server, test="lr" if cfg.gc_test == "lr" else cfg.server.test),
            on_round=on_round,
            stop_when=stop_when,
            privacy=server,
            resume=start,
            on_checkpoint=saver,
            siv_workers=LOCAL_WORKERS if engine == "local" else 1,
        )
    except FedGCError as exc:
        if checkpoint_dir is not None and record_error(checkpoint_dir, str(exc)) is not None:
            kept = Path(checkpoint_dir) / CHECKPOINT_FILE
            exc.args = (f"{exc}; the last completed round is kept in {kept} (continue with --resume {checkpoint_dir})",)
        raise
    result = RunResult(cfg, fit, engine)
    result.timings["protocol_s"] = time.perf_counter() - t0
    result.privacy = privacy_summary(cfg, plan, fit, counting.clients(), server)
    result.communication = counting.log.summary()
    return result


def run_streaming(
    cfg: RunConfig, clients: Clients, *, on_round: OnRound | None = None, on_window: OnWindow | None = None
) -> RunResult:
    """The stream over the clients' streaming sessions; the last window's result is the run's main result."""
    if cfg.privacy is not None:
        raise ConfigError(f"{cfg.source or 'config'}: streaming mode does not support privacy yet "
                          "(its accounting composes over windows); turn one of them off")  # fmt: skip
    if cfg.streaming is None:
        raise ConfigError(f"{cfg.source or 'config'} has no 'streaming' section")
    t0 = time.perf_counter()
    counting = CountingTransport(LocalTransport(clients.sessions, workers=LOCAL_WORKERS))
    references = alert_references(cfg, {s.name: s.model for s in clients.sessions})
    null = None
    if references:
        null = calibrate_alerts([LocalTransport(r, workers=LOCAL_WORKERS) for r in references], cfg.server,
                                cfg.streaming, predictive=cfg.streaming.alert_calibration == "cross_fit")  # fmt: skip
    stream = run_stream(counting, cfg.server, cfg.streaming, on_round=on_round, on_window=on_window, null=null)
    last = stream.windows[-1]
    fit = FitResult(last.gc, stream.A_s, list(stream.history), last.converged, list(stream.dropouts))
    result = RunResult(cfg, fit, "local")
    result.timings["protocol_s"] = time.perf_counter() - t0
    result.communication = counting.log.summary()
    result.streaming = StreamRecord.scored(cfg.streaming, stream, clients.switches)
    return result


def _finish(result: RunResult, clients: Clients, *, windows: Sequence[Any] | None,
            on_oracle_round: OnRound | None = None) -> RunResult:  # fmt: skip
    """What the clients add to a run's result: raw bytes kept, data notes, evaluation, sections."""
    if clients.raw_data_bytes:
        result.raw_data_bytes = clients.raw_data_bytes
    if clients.data is not None:
        result.data, result.align = clients.data, clients.align
    raw = result.raw_data_bytes
    if raw and result.communication:
        result.communication["raw_data_bytes_kept"] = int(raw)
        result.communication["raw_to_sent_ratio"] = float(raw) / max(int(result.communication.get("bytes_total", 0)), 1)
    evaluate(result, windows=windows, truth=clients.truth, on_oracle_round=on_oracle_round)
    if clients.finish is not None:
        clients.finish(result)
    return result


def flower_engine(name: str) -> FlowerEngine:
    """The Flower engine `name`, from server/engine.py of the fedgc project folder."""
    if name not in FLOWER_ENGINES:
        raise ConfigError(f"engine {name!r} is not one of {FLOWER_ENGINES}")
    if not (PROJECT_DIR / "server" / "engine.py").is_file():
        raise ConfigError(
            f"engine {name!r} needs the Flower app (clients/, server/, flwr_internals/ of the fedgc project folder), "
            f"which this installation does not have ({PROJECT_DIR}); install fedgc from a clone with `pip install -e .`"
        )
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    engines: dict[str, FlowerEngine] = getattr(importlib.import_module("server.engine"), FLOWER_ENGINE_TABLE)
    return engines[name]
