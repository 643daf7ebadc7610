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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from clients.flwrtiming import SERVERAPP_GRID_MODULE, fast_object_pulls
from fedgc.app.config import RunConfig, load_config, parse_config
from fedgc.app.results import RunResult, save_fit
from fedgc.app.runner import run_batch
from fedgc.errors import ConfigError
from fedgc.protocol import wire
from fedgc.report.result_json import write_outputs
from server.transport import FlowerTransport

FIT_FILE = "fit.npz"
RUN_FILE = "flower_run.json"

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
    """One run of the ServerApp. write_files: write the output folder here (deployed) or leave it to the
    caller (flower-sim: the submitting command adds the evaluation first)."""

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
    write_files: bool = False
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ config <-> JSON


def node_overrides(cfg: RunConfig) -> dict[int, dict[str, Any]]:
    """partition-id -> node config of the client at that position (what a SuperNode's --node-config holds)."""
    return {i: c.to_node_config() for i, c in enumerate(cfg.clients)}


def config_from_json(text: str) -> RunConfig:
    """The run config `fedgc --engine flower` sent: fedgc.app.config.to_plain's mapping as JSON (server.engine)."""
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


# ------------------------------------------------------------------------------ the main loop


def run_job(grid: Grid, job: Job) -> RunResult:
    """The ServerApp's run: connect the nodes, run the batch protocol over them (fedgc.app.runner.run_batch,
    checkpointed into the output folder), and hand the fit back (files, or job.result in-process)."""
    if job.engine == "flower":
        fast_object_pulls(SERVERAPP_GRID_MODULE)
    cfg = job.cfg
    if cfg.privacy is not None:
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
    setup = wire.SetupRequest(seed=cfg.seed, client_order=order, learn_theta=cfg.client.learn_theta, theta=cfg.client.theta)
    transport = FlowerTransport(
        grid, setup=setup, expected_nodes=expected, wait_timeout=job.wait_timeout, round_timeout=job.round_timeout,
        poll_interval=job.poll_interval, send_and_receive=job.send_and_receive, message_format=job.message_format,
    )  # fmt: skip
    t0 = time.perf_counter()
    transport.connect()
    setup_s = time.perf_counter() - t0
    result = run_batch(cfg, transport, checkpoint_dir=job.out_dir, on_round=job.on_round, resume=job.resume,
                       engine=job.engine)  # fmt: skip
    result.timings["setup_s"] = setup_s
    result.raw_data_bytes = int(sum(transport.raw_data_bytes.values()))
    comm = dict(result.communication)
    comm["setup_bytes"] = int(transport.setup_to_clients + transport.setup_to_server)
    comm["bytes_to_clients"] = int(comm.get("bytes_to_clients", 0)) + int(transport.setup_to_clients)
    comm["bytes_to_server"] = int(comm.get("bytes_to_server", 0)) + int(transport.setup_to_server)
    comm["bytes_total"] = comm["bytes_to_clients"] + comm["bytes_to_server"]
    comm.update(transport.wire_summary())
    result.communication = with_raw(comm, result.raw_data_bytes)
    if job.out_dir is not None:
        save_fit(job.out_dir / FIT_FILE, result.fit)
        _write_json_atomic(job.out_dir / RUN_FILE, {
            "engine": result.engine,
            "communication": result.communication,
            "timings": result.timings,
            "raw_data_bytes": result.raw_data_bytes,
        })  # fmt: skip
        if job.write_files:
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
