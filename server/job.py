"""One run of the ServerApp: connect the SuperNodes, run fedgc's batch protocol over them, write the fit.

run_job(grid, job) waits for the SuperNodes, sends each its setup, then runs fedgc.app.runner.run_batch
over a FlowerTransport, checkpointed after every round into the output folder (fedgc.app.checkpoint:
a run stopped by a node that does not answer keeps the last completed round). At the end it writes
OUT/fit.npz and OUT/flower_run.json (with the privacy record), and (deployed) the usual output folder
(fedgc.report.result_json.write_outputs). job.on_round sees every round: in a deployed run it appends
to OUT/rounds.jsonl (server.round_log), which the submitting process tails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from fedgc.app.checkpoint import CheckpointError, config_fingerprint, load_checkpoint
from fedgc.app.clients import snapshot_request
from fedgc.app.config import RunConfig
from fedgc.app.privacy import privacy_plan, privacy_text
from fedgc.app.results import RunResult, save_fit
from fedgc.app.runner import run_batch
from fedgc.errors import ConfigError
from fedgc.files import write_text
from fedgc.protocol import wire
from fedgc.report.result_json import write_outputs
from server.transport import FlowerTransport

FIT_FILE = "fit.npz"
RUN_FILE = "flower_run.json"


@dataclass
class Job:
    """One run of the ServerApp. write_files: write the output folder here (deployed) or leave it to the
    caller (flower-sim: the submitting command adds the evaluation first). fast_object_pulls: Flower's
    reply pulls retried after 5 ms instead of 1 s (Flower-private: flwr_internals.timing; opt-in)."""

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
    fast_object_pulls: bool = False
    on_round: Callable | None = None
    write_files: bool = False
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_job(grid: Grid, job: Job) -> RunResult:
    """The ServerApp's run: connect the nodes, run the batch protocol over them (fedgc.app.runner.run_batch,
    checkpointed into the output folder), and hand the fit back (files, or job.result in-process)."""
    if job.fast_object_pulls:
        # Opt-in speed option: the only place the ServerApp touches Flower's private modules. Imported
        # here, not at the top, so that a run that does not ask never loads them (or their version guard).
        from flwr_internals.timing import SERVERAPP_GRID_MODULE, fast_object_pulls

        fast_object_pulls(SERVERAPP_GRID_MODULE)
    cfg = job.cfg
    if job.resume and (cfg.client.learn_theta or (cfg.privacy is not None and cfg.privacy.augmentation_noise)):
        raise ConfigError(
            "resuming a Flower run with client.learn_theta (or privacy.augmentation_noise, under which every client "
            "learns theta) is not supported: theta is each SuperNode's own state and does not outlive the run; use "
            "--engine local, or start afresh"
        )
    plan = privacy_plan(cfg)  # before any client touches its data; each node checks it against the settings
    order = tuple(c.name for c in cfg.clients)
    expected = job.num_nodes or len(order)
    if expected < 1:
        raise ConfigError("the run config lists no clients and num-nodes is 0: nothing to wait for")
    setup = wire.SetupRequest(
        seed=cfg.seed, client_order=order, learn_theta=cfg.client.learn_theta, theta=cfg.client.theta,
        privacy="" if cfg.privacy is None else privacy_text(cfg.privacy), plan=plan,
        run="" if plan is None else config_fingerprint(cfg), snapshots=snapshot_request(cfg),
    )  # fmt: skip
    transport = FlowerTransport(
        grid, setup=setup, expected_nodes=expected, wait_timeout=job.wait_timeout, round_timeout=job.round_timeout,
        poll_interval=job.poll_interval, send_and_receive=job.send_and_receive, message_format=job.message_format,
        absent=resumed_clients(job),
    )  # fmt: skip
    t0 = time.perf_counter()
    transport.connect()
    setup_s = time.perf_counter() - t0
    result = run_batch(cfg, transport, plan=plan, checkpoint_dir=job.out_dir, on_round=job.on_round, resume=job.resume,
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
            "privacy": result.privacy,
        })  # fmt: skip
        if job.write_files:
            write_outputs(result, job.out_dir)
    job.result = result
    return result


def resumed_clients(job: Job) -> dict[str, int] | None:
    """A run resumed under server.on_dropout: continue goes on without clients whose SuperNode is dead, as a
    running one would: their names and state dims from the checkpoint (None otherwise, or without a
    readable checkpoint, which run_batch then reports)."""
    if not job.resume or job.cfg.server.on_dropout != "continue" or job.out_dir is None:
        return None
    try:
        state = load_checkpoint(job.out_dir).state
    except CheckpointError:
        return None
    return {name: int(dim) for name, dim in zip(state.clients, state.dims, strict=True)}


def with_raw(comm: dict[str, Any], raw: int) -> dict[str, Any]:
    comm = dict(comm)
    if raw:
        comm["raw_data_bytes_kept"] = int(raw)
        comm["raw_to_sent_ratio"] = float(raw) / max(int(comm.get("bytes_total", 0)), 1)
    return comm


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=1))
