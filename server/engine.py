"""The `flower-sim` and `flower` engines behind `fedgc simulate/run --engine ...` (fedgc.app.runner looks
them up here by name, in ENGINES, so the fedgc library itself never imports Flower).

flower-sim  Flower's simulation runtime (flwr.simulation.run_simulation) in this process: the
            ServerApp runs in a thread here, the ClientApps in Ray workers; every simulated node
            maps its partition-id to its client's files.
flower      a running SuperLink (--superlink host:port): the app is built into a FAB from this
            project and started through the SuperLink's Control API (what `flwr run` does:
            flwr_internals.control); the ServerApp writes the output folder, and this process
            reports its rounds as they come (OUT/rounds.jsonl), waits for the run and reads the fit.

Both take a config whose clients read files (fedgc.app.clients.deployment_files wrote a scenario's)
and return the fit; the runner adds the evaluation and the source's sections. EngineOptions'
wait_timeout / round_timeout (`fedgc --wait-timeout/--round-timeout`) override each engine's own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from clients.app import make_client_app
from fedgc.app.checkpoint import CHECKPOINT_FILE, recorded_error
from fedgc.app.config import RunConfig, to_plain
from fedgc.app.results import RunResult, load_fit
from fedgc.app.runner import EngineOptions, OnRound
from fedgc.errors import ConfigError, FedGCError
from flwr_internals import control
from server.app import make_server_app, node_overrides
from server.job import FIT_FILE, RUN_FILE, Job
from server.round_log import ROUNDS_FILE, RoundTail

PROJECT_DIR = Path(__file__).resolve().parent.parent
FAB_PACKAGES = ("clients", "server", "flwr_internals")  # the app's code; fedgc itself is installed where it runs


def _timeouts(options: EngineOptions, wait: float, round_: float) -> tuple[float, float]:
    return (
        wait if options.wait_timeout is None else float(options.wait_timeout),
        round_ if options.round_timeout is None else float(options.round_timeout),
    )


class _NotRunSimulationDeprecation(logging.Filter):
    """Drops Flower's notice that run_simulation is deprecated (meant for who calls it: fedgc, not its user)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (
            text.startswith("DEPRECATED FEATURE") and "`run_simulation`" in " ".join(map(str, record.args or ()))
        )


@contextmanager
def _quiet_simulation():
    """Flower's simulation runtime without what only its caller can act on: Flower's INFO lines, its
    run_simulation deprecation notice, and Ray's FutureWarning about accelerator variables (no GPU is
    asked for). Everything else, Flower's other warnings and errors included, still shows."""
    flwr_logger = logging.getLogger("flwr")
    level, notice = flwr_logger.level, _NotRunSimulationDeprecation()
    flwr_logger.setLevel(logging.WARNING)
    flwr_logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                category=FutureWarning,
                message=r"Tip: In future versions of Ray, Ray will no longer override accelerator",
            )
            yield
    finally:
        flwr_logger.removeFilter(notice)
        flwr_logger.setLevel(level)


@dataclass(frozen=True)
class FlowerSimEngine:
    """Flower's simulation runtime in this process, one simulated SuperNode per client."""

    poll_interval: float = 0.005
    wait_timeout: float = 300.0  # the setup waits for Ray to start a worker per node and import the app in it
    round_timeout: float = 600.0

    def check(self, options: EngineOptions) -> None:
        """Nothing to reach beforehand: the simulation starts its own nodes."""

    def __call__(
        self, cfg: RunConfig, *, out_dir: Path, options: EngineOptions, on_round: OnRound | None, resume: bool
    ) -> RunResult:
        wait, round_ = _timeouts(options, self.wait_timeout, self.round_timeout)
        job = Job(
            cfg=cfg, engine="flower-sim", out_dir=Path(out_dir), num_nodes=len(cfg.clients), wait_timeout=wait,
            round_timeout=round_, poll_interval=self.poll_interval, message_format=options.message_format, resume=resume,
            on_round=on_round,
        )  # fmt: skip
        ncpu = os.cpu_count() or 2
        backend_config = {
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": ncpu, "num_gpus": 0, "logging_level": "ERROR", "log_to_driver": False},
        }
        t0 = time.perf_counter()
        with _quiet_simulation():
            run_simulation(
                server_app=make_server_app(job), client_app=make_client_app(node_overrides(cfg)),
                num_supernodes=len(cfg.clients), backend_config=backend_config,
            )  # fmt: skip
        if job.result is None:
            raise FedGCError("the Flower simulation ended without a result (see the log above)")
        result: RunResult = job.result
        result.timings["flower_sim_s"] = time.perf_counter() - t0
        return result


@dataclass(frozen=True)
class DeployedEngine:
    """A running SuperLink: submit the run through its Control API and wait for the ServerApp's output
    folder (resume: the ServerApp continues from OUT/checkpoint.npz). wait_timeout: for the SuperNodes to
    connect; round_timeout: for a round's replies (a silent node is a dropout); send_and_receive: Flower's
    own grid.send_and_receive (3 s polls; benchmarks) instead of fedgc's push and pull; fast_object_pulls:
    the ServerApp opts in to 5 ms object-pull retries (flwr_internals.timing; False: stock Flower only)."""

    wait_timeout: float = 120.0
    round_timeout: float = 120.0
    poll_interval: float = 0.02
    send_and_receive: bool = False
    run_timeout: float = 1800.0
    num_nodes: int = 0
    fast_object_pulls: bool = True

    def check(self, options: EngineOptions) -> None:
        """The SuperLink's address and CA certificate, and one Control API call, before any file is written."""
        address, certificates = self.address(options)
        control.check_reachable(address, certificates)

    @staticmethod
    def address(options: EngineOptions) -> tuple[str, str | None]:
        address = options.superlink or os.environ.get("FEDGC_SUPERLINK")
        if not address:
            raise ConfigError(
                "--engine flower needs the SuperLink's address: --superlink host:port (or FEDGC_SUPERLINK)"
            )
        certificates = options.root_certificates or os.environ.get("FEDGC_ROOT_CERTIFICATES") or None
        if certificates is not None and not Path(certificates).is_file():
            raise ConfigError(f"--root-certificates {certificates}: no such file (the SuperLink's CA certificate, PEM)")
        return address, certificates

    def run_config(self, cfg: RunConfig, out_dir: Path, options: EngineOptions, resume: bool) -> dict[str, Any]:
        """The ServerApp's run config (server.app.DEFAULTS names every key)."""
        wait, round_ = _timeouts(options, self.wait_timeout, self.round_timeout)
        return {
            "fedgc-config": json.dumps(to_plain(replace(cfg, engine="flower"))),
            "out-dir": str(out_dir),
            "num-nodes": int(self.num_nodes),
            "wait-timeout": wait,
            "round-timeout": round_,
            "poll-interval": float(self.poll_interval),
            "send-and-receive": bool(self.send_and_receive),
            "message-format": str(options.message_format),
            "resume": bool(resume),
            "fast-object-pulls": bool(self.fast_object_pulls),
        }

    def __call__(
        self, cfg: RunConfig, *, out_dir: Path, options: EngineOptions, on_round: OnRound | None, resume: bool
    ) -> RunResult:
        address, certificates = self.address(options)
        out_dir = Path(out_dir).resolve()
        for name in (FIT_FILE, RUN_FILE, ROUNDS_FILE):
            (out_dir / name).unlink(missing_ok=True)
        t0 = time.perf_counter()
        run_id = control.submit(address, build_fab(), self.run_config(cfg, out_dir, options, resume),
                                root_certificates=certificates)  # fmt: skip
        rounds = RoundTail(out_dir / ROUNDS_FILE)
        report = (lambda: [on_round(r) for r in rounds.new()]) if on_round is not None else (lambda: None)
        status = wait_for_run(address, run_id, root_certificates=certificates, timeout=self.run_timeout,
                              out_dir=out_dir, while_running=report)  # fmt: skip
        report()
        if not (out_dir / FIT_FILE).is_file():
            kept = out_dir / CHECKPOINT_FILE
            hint = f"; the last completed round is kept in {kept}" if kept.is_file() else ""
            error = recorded_error(out_dir)
            detail = f": {error}" if error else ""
            raise FedGCError(f"Flower run {run_id} ended ({status}) without a result{detail}{hint}")
        fit = load_fit(out_dir / FIT_FILE)
        info = json.loads((out_dir / RUN_FILE).read_text())
        result = RunResult(cfg, fit, "flower")
        result.timings.update(info.get("timings", {}))
        result.timings["flower_run_s"] = time.perf_counter() - t0
        result.communication = info.get("communication", {})
        result.raw_data_bytes = int(info.get("raw_data_bytes", 0))
        result.privacy = info.get("privacy", {"enabled": False})
        result.communication["run_id"] = int(run_id)
        if on_round is not None and rounds.seen == 0:  # a ServerApp that wrote no round log: report them now
            for record in fit.history:
                on_round(record)
        return result


ENGINES: dict[str, Any] = {"flower-sim": FlowerSimEngine(), "flower": DeployedEngine()}


_FAB: tuple[bytes, str] | None = None


def build_fab() -> tuple[bytes, str]:
    """The app's FAB (pyproject.toml + FAB_PACKAGES), built once per process from a staging copy (Flower's
    builder reads every file under the folder it is given before filtering, .venv included)."""
    global _FAB
    if _FAB is None:
        with tempfile.TemporaryDirectory(prefix="fedgc-fab-") as tmp:
            stage = Path(tmp) / "fedgc"
            stage.mkdir()
            shutil.copy2(PROJECT_DIR / "pyproject.toml", stage / "pyproject.toml")
            for pkg in FAB_PACKAGES:
                shutil.copytree(PROJECT_DIR / pkg, stage / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            _FAB = control.build_fab(stage)
    return _FAB


STATUS_POLL = 0.1  # s between run-status requests while the run starts and once its output is written
RUNNING_STATUS_POLL = 1.0  # ... while it runs: every request costs the SuperLink CPU a round needs
OUTPUT_POLL = 0.02  # s between looks at the output folder (round log, last file) while the run runs


def wait_for_run(
    address: str, run_id: int, *, root_certificates=None, timeout: float = 1800.0, start_timeout: float = 120.0,
    out_dir=None, while_running=None,
) -> str:  # fmt: skip
    """Wait for the run to finish ("finished:completed"); FedGCError naming why if it failed."""
    with control.control_client(address, root_certificates) as client:
        return _wait(client, run_id, timeout, start_timeout, out_dir, while_running)


def _wait(client, run_id: int, timeout: float, start_timeout: float, out_dir, while_running=None) -> str:
    t0 = time.monotonic()
    while True:
        status, sub, details = control.run_status(client, run_id)
        waited = time.monotonic() - t0
        if status in ("pending", "starting") and waited > start_timeout:
            raise FedGCError(
                f"Flower run {run_id} is still {status} after {start_timeout:g} s: no ServerApp picked it up "
                "(is a flower-superexec connected to the SuperLink's runtime API? It starts `flwr-serverapp` from "
                "its PATH: start it with the project's venv active, or as .venv/bin/flower-superexec with "
                ".venv/bin first on PATH)"
            )
        if status == "finished":
            if sub != "completed":
                kept = None if out_dir is None else Path(out_dir) / CHECKPOINT_FILE
                details = details or "no details"
                # The ServerApp's reason usually is the error recorded in checkpoint.json: say it once.
                error = recorded_error(out_dir) if out_dir is not None else ""
                extra = f": {error}" if error and error not in details else ""
                hint = (
                    f"; the last completed round is kept in {kept}"
                    if kept and kept.is_file() and str(kept) not in details
                    else ""
                )
                raise FedGCError(f"Flower run {run_id} {sub}: {details}{extra}{hint}")
            return f"{status}:{sub}"
        if waited >= timeout:
            raise FedGCError(f"Flower run {run_id} still {status} after {timeout:g} s")
        if status == "running":
            _sleep_until_output(out_dir, RUNNING_STATUS_POLL, while_running)
        else:
            time.sleep(STATUS_POLL)


def _sleep_until_output(out_dir, seconds: float, while_running=None) -> None:
    """Sleep `seconds`, calling while_running() every OUTPUT_POLL (the round log), or less once the
    ServerApp's last output file exists in out_dir (when the ServerApp writes where this process can see,
    as on one machine or a shared folder): the run is ending."""
    done = None if out_dir is None else Path(out_dir) / RUN_FILE
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if while_running is not None:
            while_running()
        if done is not None and done.is_file():
            time.sleep(STATUS_POLL)
            return
        time.sleep(OUTPUT_POLL)
