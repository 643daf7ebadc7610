"""Flower ServerApp: a thin main loop over fedgc's server side.

The ServerApp waits for the SuperNodes, sends each its setup, then runs fedgc.protocol.loop.run_protocol
(through fedgc.app.runner.execute) over a FlowerTransport. After every round it writes
OUT/last_round.json (A_s, history) atomically, so a run stopped by a node that does not answer
keeps the last completed round; at the end it writes OUT/fit.npz, OUT/flower_run.json and the
usual output folder (fedgc.report.result_json.write_outputs).

Run config ([tool.flwr.app.config] in pyproject.toml, override with flwr run --run-config):

    fedgc-config   the run config as JSON (what `fedgc --engine flower` sends), or
    config-path    a YAML run config on the ServerApp's host
    out-dir        output folder on the ServerApp's host
    num-nodes      SuperNodes to wait for (0: one per configured client)
    wait-timeout   seconds to wait for them;  round-timeout: seconds per round
    poll-interval  seconds between pulls of replies
    send-and-receive  use Flower's grid.send_and_receive instead (3 s poll; for benchmarks)
    message-format arrays (default: ArrayRecords, what Flower's tooling reads) or compact (the
                   arrays as float64 bytes in the ConfigRecord: half the objects, faster deployed
                   rounds); clients.app.to_records
    resume         continue from OUT/checkpoint.npz (fedgc.app.checkpoint), written after every round
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgc.protocol import wire
from fedgc.app.results import save_fit
from fedgc.app.config import RunConfig, load_config, parse_config
from fedgc.errors import ConfigError, FedGCError

FIT_FILE = "fit.npz"
RUN_FILE = "flower_run.json"
LAST_ROUND_FILE = "last_round.json"

DEFAULTS: dict[str, Any] = {
    "fedgc-config": "",
    "config-path": "",
    "out-dir": "",
    "num-nodes": 0,
    "wait-timeout": 120.0,
    "round-timeout": 120.0,
    "poll-interval": 0.02,
    "send-and-receive": False,
    "message-format": "arrays",
    "resume": False,
}


@dataclass
class Job:
    """One run of the ServerApp. evaluate: optional hook (in-process engines) that adds the oracle
    and truth; write_files: write the output folder here (deployed) or leave it to the caller."""

    cfg: RunConfig
    engine: str
    out_dir: Path | None = None
    num_nodes: int = 0
    wait_timeout: float = 120.0
    round_timeout: float = 120.0
    poll_interval: float = 0.02
    send_and_receive: bool = False
    message_format: str = "arrays"
    resume: bool = False
    on_round: Callable | None = None
    evaluate: Callable | None = None
    write_files: bool = False
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ config <-> JSON


def config_to_raw(cfg: RunConfig) -> dict[str, Any]:
    """The run config as the plain mapping fedgc.app.config.parse_config reads (paths absolute)."""
    clients = []
    for c in cfg.clients:
        entry: dict[str, Any] = {"name": c.name, "data": str(Path(c.data).resolve())}
        entry["timestamp_column"] = "none" if c.timestamp_column is None else c.timestamp_column
        entry["model"] = "identify" if c.model == "identify" else str(Path(c.model).resolve())
        entry["state_dim"] = "auto" if c.state_dim is None else int(c.state_dim)
        if c.explained_variance is not None:
            entry["explained_variance"] = float(c.explained_variance)
        entry.update(constant_columns=c.constant_columns, held_values=c.held_values, max_missing=float(c.max_missing))
        clients.append(entry)
    raw: dict[str, Any] = {
        "name": cfg.name,
        "seed": int(cfg.seed),
        "engine": cfg.engine,
        "local_models": cfg.local_models,
        "clients": clients,
        "server": asdict(cfg.server),
        "client": asdict(cfg.client),
        "evaluation": {"oracle": bool(cfg.oracle)},
    }
    return raw


def config_from_json(text: str) -> RunConfig:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run config 'fedgc-config' is not valid JSON: {exc}") from exc
    return parse_config(raw, source=None)


def job_from_context(context: Context) -> Job:
    rc = {**DEFAULTS, **dict(context.run_config)}
    if rc["fedgc-config"]:
        cfg = config_from_json(str(rc["fedgc-config"]))
    elif rc["config-path"]:
        cfg = load_config(Path(str(rc["config-path"])))
    else:
        raise ConfigError("the ServerApp needs a run config: set 'fedgc-config' (JSON) or 'config-path' in --run-config")
    out = Path(str(rc["out-dir"])) if rc["out-dir"] else Path("runs") / f"{cfg.name}-flower"
    return Job(
        cfg=cfg,
        engine="flower",
        out_dir=out,
        num_nodes=int(rc["num-nodes"]),
        wait_timeout=float(rc["wait-timeout"]),
        round_timeout=float(rc["round-timeout"]),
        poll_interval=float(rc["poll-interval"]),
        send_and_receive=bool(rc["send-and-receive"]),
        message_format=str(rc["message-format"]),
        resume=bool(rc["resume"]),
        write_files=True,
    )


# ------------------------------------------------------------------------------ files


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Checkpoint:
    """OUT/last_round.json after every completed round: the state a failed run keeps."""

    def __init__(self, out_dir: Path | None, names: list[str], dims: list[int]) -> None:
        self.path = None if out_dir is None else out_dir / LAST_ROUND_FILE
        self.names, self.dims = names, dims
        self.history: list[dict] = []

    def on_round(self, record) -> None:
        self.history.append({"round": int(record.round), "loss": float(record.loss), "change": float(record.change)})

    def after_update(self, A_s: np.ndarray) -> bool:
        self.write(A_s, complete=False)
        return False

    def write(self, A_s: np.ndarray, *, complete: bool, error: str | None = None) -> None:
        if self.path is None:
            return
        _write_json_atomic(self.path, {
            "complete": complete,
            "round": self.history[-1]["round"] if self.history else 0,
            "clients": self.names,
            "dims": self.dims,
            "A_s": np.asarray(A_s, dtype=float).tolist(),
            "history": self.history,
            "error": error,
        })  # fmt: skip


# ------------------------------------------------------------------------------ the main loop


def run_job(grid: Grid, job: Job):
    from fedgc.app.runner import execute
    from server.transport import FlowerTransport

    if job.engine == "flower":
        from clients.flwrtiming import SERVERAPP_GRID_MODULE, fast_object_pulls

        fast_object_pulls(SERVERAPP_GRID_MODULE)
    cfg = job.cfg
    if getattr(cfg, "privacy", None) is not None:
        raise ConfigError("privacy is not available on the Flower engines yet; use --engine local")
    if job.resume and cfg.client.learn_theta:
        raise ConfigError(
            "resuming a Flower run with client.learn_theta is not supported: theta is each SuperNode's own state "
            "and does not outlive the run; use --engine local, or start afresh"
        )
    order = tuple(c.name for c in cfg.clients)
    expected = job.num_nodes or len(order)
    if expected < 1:
        raise ConfigError("the run config lists no clients and num-nodes is 0: nothing to wait for")
    setup = wire.SetupRequest(
        seed=cfg.seed, client_order=order, learn_theta=cfg.client.learn_theta, theta=cfg.client.theta
    )
    transport = FlowerTransport(
        grid,
        setup=setup,
        expected_nodes=expected,
        wait_timeout=job.wait_timeout,
        round_timeout=job.round_timeout,
        poll_interval=job.poll_interval,
        send_and_receive=job.send_and_receive,
        message_format=job.message_format,
    )
    t0 = time.perf_counter()
    infos = transport.connect()
    setup_s = time.perf_counter() - t0
    checkpoint = Checkpoint(job.out_dir, [c.name for c in infos], [c.state_dim for c in infos])

    def on_round(record) -> None:
        checkpoint.on_round(record)
        if job.on_round is not None:
            job.on_round(record)

    last_A: list[np.ndarray] = []

    def after_update(A_s: np.ndarray) -> bool:
        last_A[:] = [A_s]
        return checkpoint.after_update(A_s)

    try:
        result = execute(
            cfg, transport, engine=job.engine, on_round=on_round, stop_when=after_update, checkpoint_dir=job.out_dir,
            resume=job.resume,
        )  # fmt: skip
    except FedGCError as exc:
        if last_A:
            checkpoint.write(last_A[0], complete=False, error=str(exc))
        where = f"; the last completed round is kept in {checkpoint.path}" if checkpoint.path and last_A else ""
        exc.args = (f"{exc}{where}",)
        raise
    result.timings["setup_s"] = setup_s
    result.raw_data_bytes = int(sum(transport.raw_data_bytes.values()))
    comm = dict(result.communication)
    comm["setup_bytes"] = int(transport.setup_to_clients + transport.setup_to_server)
    comm["bytes_to_clients"] = int(comm.get("bytes_to_clients", 0)) + int(transport.setup_to_clients)
    comm["bytes_to_server"] = int(comm.get("bytes_to_server", 0)) + int(transport.setup_to_server)
    comm["bytes_total"] = comm["bytes_to_clients"] + comm["bytes_to_server"]
    comm.update(transport.wire_summary())
    result.communication = with_raw(comm, result.raw_data_bytes)
    checkpoint.write(result.fit.A_s, complete=True)
    if job.evaluate is not None:
        result = job.evaluate(result)
    if job.out_dir is not None:
        save_fit(job.out_dir / FIT_FILE, result.fit)
        _write_json_atomic(job.out_dir / RUN_FILE, {
            "engine": result.engine,
            "communication": result.communication,
            "timings": result.timings,
            "raw_data_bytes": result.raw_data_bytes,
        })  # fmt: skip
        if job.write_files:
            from fedgc.report.result_json import write_outputs

            write_outputs(result, job.out_dir)
    job.result = result
    return result


def with_raw(comm: dict[str, Any], raw: int) -> dict[str, Any]:
    comm = dict(comm)
    if raw:
        comm["raw_data_bytes_kept"] = int(raw)
        comm["raw_to_sent_ratio"] = float(raw) / max(int(comm.get("bytes_total", 0)), 1)
    return comm


def make_server_app(job: Job | None = None) -> ServerApp:
    """The ServerApp. job: an in-process run (flower-sim); None: read the job from the run config."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_job(grid, job if job is not None else job_from_context(context))

    return server_app


app = make_server_app()
