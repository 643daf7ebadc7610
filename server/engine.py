"""The `flower-sim` and `flower` engines behind `fedgc simulate/run --engine ...` (fedgc.app.runner looks
them up here by name, so the fedgc library itself never imports Flower).

flower-sim  Flower's simulation runtime (flwr.simulation.run_simulation) in this process: the
            ServerApp runs in a thread here, the ClientApps in Ray workers; every simulated node
            maps its partition-id to its client's files.
flower      a running SuperLink (--superlink host:port): the app is built into a FAB from this
            project and started through the SuperLink's Control API (what `flwr run` does); the
            ServerApp writes the output folder, and this process waits for it and reads it back.

Both take a config whose clients read files (fedgc.app.clients.deployment_files wrote a scenario's)
and return the fit; the runner adds the evaluation and the source's sections.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedgc.app.config import RunConfig, to_plain
from fedgc.app.results import RunResult, load_fit
from fedgc.app.runner import EngineOptions, OnRound
from fedgc.errors import ConfigError, FedGCError
from fedgc.app.checkpoint import CHECKPOINT_FILE, recorded_error
from server.app import FIT_FILE, RUN_FILE, Job, node_overrides

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FlowerSimEngine:
    """Flower's simulation runtime in this process, one simulated SuperNode per client."""

    poll_interval: float = 0.005

    def check(self, options: EngineOptions) -> None:
        """Nothing to reach beforehand: the simulation starts its own nodes."""

    def __call__(
        self, cfg: RunConfig, *, out_dir: Path, options: EngineOptions, on_round: OnRound | None, resume: bool
    ) -> RunResult:
        from flwr.simulation import run_simulation

        from clients.app import make_client_app
        from server.app import make_server_app

        job = Job(
            cfg=cfg, engine="flower-sim", out_dir=Path(out_dir), num_nodes=len(cfg.clients), wait_timeout=60.0,
            round_timeout=600.0, poll_interval=self.poll_interval, message_format=options.message_format, resume=resume,
            on_round=on_round,
        )  # fmt: skip
        ncpu = os.cpu_count() or 2
        backend_config = {
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": ncpu, "num_gpus": 0, "logging_level": "ERROR", "log_to_driver": False},
        }
        flwr_logger = logging.getLogger("flwr")
        level = flwr_logger.level
        flwr_logger.setLevel(logging.WARNING)
        t0 = time.perf_counter()
        try:
            run_simulation(
                server_app=make_server_app(job), client_app=make_client_app(node_overrides(cfg)),
                num_supernodes=len(cfg.clients), backend_config=backend_config,
            )  # fmt: skip
        finally:
            flwr_logger.setLevel(level)
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
    own grid.send_and_receive (3 s polls; benchmarks) instead of fedgc's push and pull."""

    wait_timeout: float = 120.0
    round_timeout: float = 120.0
    poll_interval: float = 0.02
    send_and_receive: bool = False
    run_timeout: float = 1800.0
    num_nodes: int = 0

    def check(self, options: EngineOptions) -> None:
        """The SuperLink's address and CA certificate, and one Control API call, before any file is written."""
        address, certificates = self.address(options)
        check_reachable(address, certificates)

    @staticmethod
    def address(options: EngineOptions) -> tuple[str, str | None]:
        address = options.superlink or os.environ.get("FEDGC_SUPERLINK")
        if not address:
            raise ConfigError("--engine flower needs the SuperLink's address: --superlink host:port (or FEDGC_SUPERLINK)")
        certificates = options.root_certificates or os.environ.get("FEDGC_ROOT_CERTIFICATES") or None
        if certificates is not None and not Path(certificates).is_file():
            raise ConfigError(f"--root-certificates {certificates}: no such file (the SuperLink's CA certificate, PEM)")
        return address, certificates

    def __call__(
        self, cfg: RunConfig, *, out_dir: Path, options: EngineOptions, on_round: OnRound | None, resume: bool
    ) -> RunResult:
        address, certificates = self.address(options)
        out_dir = Path(out_dir).resolve()
        for name in (FIT_FILE, RUN_FILE):
            (out_dir / name).unlink(missing_ok=True)
        run_config = {
            "fedgc-config": json.dumps(to_plain(replace(cfg, engine="flower"))),
            "out-dir": str(out_dir),
            "num-nodes": int(self.num_nodes),
            "wait-timeout": float(self.wait_timeout),
            "round-timeout": float(self.round_timeout),
            "poll-interval": float(self.poll_interval),
            "send-and-receive": bool(self.send_and_receive),
            "message-format": str(options.message_format),
            "resume": bool(resume),
        }
        t0 = time.perf_counter()
        run_id = submit(address, run_config, root_certificates=certificates)
        status = wait_for_run(address, run_id, root_certificates=certificates, timeout=self.run_timeout, out_dir=out_dir)
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
        result.communication["run_id"] = int(run_id)
        if on_round is not None:
            for record in fit.history:
                on_round(record)
        return result


ENGINES: dict[str, Any] = {"flower-sim": FlowerSimEngine(), "flower": DeployedEngine()}


@contextlib.contextmanager
def _reaching(address: str, root_certificates: str | None):
    """Connection failures on the Control API as a FedGCError that says what to check."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise unreachable(address, root_certificates, exc) from exc


def unreachable(address: str, root_certificates: str | None, exc: BaseException) -> FedGCError:
    if root_certificates:
        hint = f"is it up, and is its TLS certificate signed by {root_certificates} and valid for {address}?"
    else:
        hint = "is it up? a SuperLink with TLS needs --root-certificates (its CA certificate)"
    return FedGCError(f"cannot reach the SuperLink at {address} ({type(exc).__name__}: {exc}); {hint}")


def _control_client(address: str, root_certificates: str | None):
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection

    conn = SuperLinkConnection(
        name="fedgc", address=address, root_certificates=root_certificates, insecure=root_certificates is None
    )
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the connection it uses
        return init_http_client_from_connection(conn)


_FAB: tuple[bytes, str] | None = None


def build_fab() -> tuple[bytes, str]:
    """The app's FAB (pyproject.toml + clients/ + server/), built from a staging copy: Flower's
    builder reads every file under the folder it is given before filtering, .venv included."""
    global _FAB
    if _FAB is None:
        import hashlib
        import shutil
        import tempfile

        from flwr.cli.build import build_fab_from_disk

        with tempfile.TemporaryDirectory(prefix="fedgc-fab-") as tmp:
            stage = Path(tmp) / "fedgc"
            stage.mkdir()
            shutil.copy2(PROJECT_DIR / "pyproject.toml", stage / "pyproject.toml")
            for pkg in ("clients", "server"):
                shutil.copytree(PROJECT_DIR / pkg, stage / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            fab_bytes = build_fab_from_disk(stage)
        _FAB = (fab_bytes, hashlib.sha256(fab_bytes).hexdigest())
    return _FAB


def submit(address: str, run_config: dict[str, Any], *, root_certificates: str | None = None) -> int:
    """Start the app on the SuperLink (the Control API call behind `flwr run`); returns the run id."""
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
    from flwr.supercore.fab import Fab

    fab_bytes, fab_hash = build_fab()
    with _reaching(address, root_certificates):
        client = _control_client(address, root_certificates)
        try:
            res = client.StartRun(
                StartRunRequest(
                    fab=fab_to_proto(Fab(fab_hash, fab_bytes, {})),
                    override_config=user_config_to_proto(run_config),
                    federation="",
                )
            )
        finally:
            client.close()
    if not res.HasField("run_id"):
        raise FedGCError(f"the SuperLink at {address} did not start the run")
    return int(res.run_id)


def check_reachable(address: str, root_certificates: str | None = None) -> None:
    """One Control API call (FedGCError if the SuperLink cannot be reached, or TLS does not match)."""
    from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

    with _reaching(address, root_certificates):
        client = _control_client(address, root_certificates)
        try:
            client.ListRuns(ListRunsRequest(limit=1))
        finally:
            client.close()


def run_status(client, run_id: int) -> tuple[str, str, str]:
    from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

    run = client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
    return run.status.status, run.status.sub_status, run.status.details


def wait_for_run(
    address: str, run_id: int, *, root_certificates=None, timeout: float = 1800.0, start_timeout: float = 120.0,
    out_dir=None,
) -> str:  # fmt: skip
    with _reaching(address, root_certificates):
        client = _control_client(address, root_certificates)
        try:
            return _wait(client, run_id, timeout, start_timeout, out_dir)
        finally:
            client.close()


def _wait(client, run_id: int, timeout: float, start_timeout: float, out_dir) -> str:
    t0 = time.monotonic()
    while True:
        status, sub, details = run_status(client, run_id)
        waited = time.monotonic() - t0
        if status in ("pending", "starting") and waited > start_timeout:
            raise FedGCError(
                f"Flower run {run_id} is still {status} after {start_timeout:g} s: no ServerApp picked it up "
                "(is a flower-superexec connected to the SuperLink's runtime API?)"
            )
        if status == "finished":
            if sub != "completed":
                kept = None if out_dir is None else Path(out_dir) / CHECKPOINT_FILE
                details = details or "no details"
                # The ServerApp's reason usually is the error recorded in checkpoint.json: say it once.
                error = recorded_error(out_dir) if out_dir is not None else ""
                extra = f": {error}" if error and error not in details else ""
                hint = f"; the last completed round is kept in {kept}" if kept and kept.is_file() and str(kept) not in details else ""
                raise FedGCError(f"Flower run {run_id} {sub}: {details}{extra}{hint}")
            return f"{status}:{sub}"
        if waited >= timeout:
            raise FedGCError(f"Flower run {run_id} still {status} after {timeout:g} s")
        if status == "running":
            _sleep_until_output(out_dir, RUNNING_STATUS_POLL)
        else:
            time.sleep(STATUS_POLL)


STATUS_POLL = 0.1  # s between run-status requests while the run starts and once its output is written
RUNNING_STATUS_POLL = 1.0  # ... while it runs: every request costs the SuperLink CPU a round needs


def _sleep_until_output(out_dir, seconds: float) -> None:
    """Sleep `seconds`, or less once the ServerApp's last output file exists in out_dir (when the
    ServerApp writes where this process can see, as on one machine): the run is ending."""
    done = None if out_dir is None else Path(out_dir) / RUN_FILE
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if done is not None and done.is_file():
            time.sleep(STATUS_POLL)
            return
        time.sleep(0.02)
