"""The `flower-sim` and `flower` engines behind `fedgc simulate/run --engine ...`.

flower-sim  Flower's simulation runtime (flwr.simulation.run_simulation) in this process: the
            ServerApp runs in a thread here, the ClientApps in Ray workers; every simulated node
            maps its partition-id to its client's files.
flower      a running SuperLink (--superlink host:port): the app is built into a FAB from this
            project and started through the SuperLink's Control API (what `flwr run` does); the
            ServerApp writes the output folder, and this process waits for it and reads it back.

For `simulate`, the scenario's per-client CSV files (and given models) are first written to
OUT/clients/ with fedgc.app.runner.write_scenario_files, so both engines read data exactly as plants do.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedgc.app.config import RunConfig
from fedgc.errors import ConfigError, FedGCError
from server.app import FIT_FILE, LAST_ROUND_FILE, RUN_FILE, Job, config_to_raw

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _prepare(cfg: RunConfig, mode: str, out_dir: Path):
    """(cfg reading per-client files, truth or None, in-process windows for the oracle or None)."""
    from fedgc.app.results import Truth
    from fedgc.app.runner import build_session, scenario_sessions, simulate_scenario, write_scenario_files

    if mode == "simulate":
        data = simulate_scenario(cfg)
        files_cfg = write_scenario_files(cfg, data, out_dir / "clients")
        truth = Truth(data.system.edges, data.system.A if cfg.local_models == "given" else None)
        windows = None
        if cfg.oracle:
            windows = [_window(s) for s in scenario_sessions(cfg, data)]
        return files_cfg, truth, windows
    if not cfg.clients:
        raise ConfigError(f"{cfg.source or 'config'}: `fedgc run` needs a 'clients' list (or --data files)")
    windows = None
    if cfg.oracle:  # evaluation only: the oracle sees every client's data, as in the local engine
        windows = [_window(build_session(s, cfg.client, seed=cfg.seed + i)) for i, s in enumerate(cfg.clients)]
    return cfg, None, windows


def _window(session):
    return getattr(session, "exact_window", session.window)


def node_overrides(cfg: RunConfig) -> dict[int, dict[str, Any]]:
    """partition-id -> node config of the client at that position (what a SuperNode's --node-config holds)."""
    table = {}
    for i, c in enumerate(cfg.clients):
        entry: dict[str, Any] = {"data-path": str(Path(c.data).resolve()), "client-name": c.name}
        if c.model != "identify":
            entry["model-path"] = str(Path(c.model).resolve())
        if c.state_dim is not None:
            entry["state-dim"] = int(c.state_dim)
        if c.explained_variance is not None:
            entry["explained-variance"] = float(c.explained_variance)
        entry["timestamp-column"] = "none" if c.timestamp_column is None else str(c.timestamp_column)
        entry.update({"constant-columns": c.constant_columns, "held-values": c.held_values, "max-missing": float(c.max_missing)})
        table[i] = entry
    return table


def _evaluator(windows, truth):
    def evaluate(result):
        from fedgc.app.runner import evaluate as evaluate_fit

        return evaluate_fit(result, windows=windows, truth=truth)

    return evaluate


# ------------------------------------------------------------------------------ flower-sim


def run_flower_sim(
    cfg: RunConfig, *, mode: str, out_dir: Path, on_round=None, poll_interval: float = 0.005, resume: bool = False,
    message_format: str = "arrays",
):  # fmt: skip
    import logging

    from flwr.simulation import run_simulation

    from clients.app import make_client_app
    from server.app import make_server_app

    out_dir = Path(out_dir)
    if getattr(cfg, "privacy", None) is not None:
        raise ConfigError("privacy is not available on the Flower engines yet; use --engine local")
    files_cfg, truth, windows = _prepare(cfg, mode, out_dir)
    job = Job(
        cfg=files_cfg,
        engine="flower-sim",
        out_dir=out_dir,
        num_nodes=len(files_cfg.clients),
        wait_timeout=60.0,
        round_timeout=600.0,
        poll_interval=poll_interval,
        message_format=message_format,
        resume=resume,
        on_round=on_round,
        evaluate=_evaluator(windows, truth),
    )
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
            server_app=make_server_app(job),
            client_app=make_client_app(node_overrides(files_cfg)),
            num_supernodes=len(files_cfg.clients),
            backend_config=backend_config,
        )
    finally:
        flwr_logger.setLevel(level)
    if job.result is None:
        raise FedGCError("the Flower simulation ended without a result (see the log above)")
    result = job.result
    result.timings["flower_sim_s"] = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------ flower (deployed)


def run_flower(
    cfg: RunConfig,
    *,
    mode: str,
    out_dir: Path,
    superlink: str | None,
    on_round=None,
    root_certificates: str | None = None,
    num_nodes: int = 0,
    wait_timeout: float = 120.0,
    round_timeout: float = 120.0,
    poll_interval: float = 0.02,
    send_and_receive: bool = False,
    message_format: str = "arrays",
    run_timeout: float = 1800.0,
    resume: bool = False,
):
    """Submit the run to a SuperLink and wait for the ServerApp's output folder
    (resume: the ServerApp continues from OUT/checkpoint.npz)."""
    from fedgc.app.results import load_fit
    from fedgc.app.results import RunResult

    address = superlink or os.environ.get("FEDGC_SUPERLINK")
    if not address:
        raise ConfigError("--engine flower needs the SuperLink's address: --superlink host:port (or FEDGC_SUPERLINK)")
    root_certificates = root_certificates or os.environ.get("FEDGC_ROOT_CERTIFICATES") or None
    if root_certificates is not None and not Path(root_certificates).is_file():
        raise ConfigError(f"--root-certificates {root_certificates}: no such file (the SuperLink's CA certificate, PEM)")
    if getattr(cfg, "privacy", None) is not None:
        raise ConfigError("privacy is not available on the Flower engines yet; use --engine local")
    out_dir = Path(out_dir).resolve()
    check_reachable(address, root_certificates)  # before anything in out_dir is touched
    files_cfg, truth, windows = _prepare(cfg, mode, out_dir)
    for name in (FIT_FILE, RUN_FILE, LAST_ROUND_FILE):
        (out_dir / name).unlink(missing_ok=True)
    run_config = {
        "fedgc-config": json.dumps(config_to_raw(replace(files_cfg, engine="flower"))),
        "out-dir": str(out_dir),
        "num-nodes": int(num_nodes),
        "wait-timeout": float(wait_timeout),
        "round-timeout": float(round_timeout),
        "poll-interval": float(poll_interval),
        "send-and-receive": bool(send_and_receive),
        "message-format": str(message_format),
        "resume": bool(resume),
    }
    t0 = time.perf_counter()
    run_id = submit(address, run_config, root_certificates=root_certificates)
    status = wait_for_run(address, run_id, root_certificates=root_certificates, timeout=run_timeout, out_dir=out_dir)
    if not (out_dir / FIT_FILE).is_file():
        kept = out_dir / LAST_ROUND_FILE
        hint = f"; the last completed round is kept in {kept}" if kept.is_file() else ""
        error = _recorded_error(kept)
        detail = f": {error}" if error else ""
        raise FedGCError(f"Flower run {run_id} ended ({status}) without a result{detail}{hint}")
    fit = load_fit(out_dir / FIT_FILE)
    info = json.loads((out_dir / RUN_FILE).read_text())
    result = RunResult(files_cfg, fit, "flower")
    result.timings.update(info.get("timings", {}))
    result.timings["flower_run_s"] = time.perf_counter() - t0
    result.communication = info.get("communication", {})
    result.raw_data_bytes = int(info.get("raw_data_bytes", 0))
    result.communication["run_id"] = int(run_id)
    if on_round is not None:
        for record in fit.history:
            on_round(record)
    return _evaluator(windows, truth)(result)


def _recorded_error(last_round: Path) -> str:
    """The error the ServerApp recorded in last_round.json, or "" (no file, none recorded)."""
    try:
        err = json.loads(last_round.read_text()).get("error")
    except (OSError, ValueError):
        return ""
    return str(err) if err else ""


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
                kept = None if out_dir is None else Path(out_dir) / LAST_ROUND_FILE
                details = details or "no details"
                # The ServerApp's reason usually is the error recorded in last_round.json: say it once.
                error = _recorded_error(kept) if kept else ""
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
