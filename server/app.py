"""Flower ServerApp: its main reads the run config and runs one job over the grid (server.job.run_job).

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
                   rounds); clients.records
    resume         continue from OUT/checkpoint.npz (fedgc.app.checkpoint), written after every round
    fast-object-pulls  retry Flower's reply pulls after 5 ms instead of 1 s (Flower 1.41 only:
                   flwr_internals.timing; `fedgc --engine flower` turns it on, `flwr run` does not)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgc.app.config import RunConfig, load_config, parse_config
from fedgc.errors import ConfigError
from server.job import Job, run_job
from server.round_log import ROUNDS_FILE, RoundLog

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
    "fast-object-pulls": False,
}


# ------------------------------------------------------------------------------ config conversions
# RunConfig <-> plain mapping / node configs (to be replaced by fedgc.app.config's serialiser at merge).


def node_overrides(cfg: RunConfig) -> dict[int, dict[str, Any]]:
    """partition-id -> node config of the client at that position (what a SuperNode's --node-config holds)."""
    return {i: c.to_node_config() for i, c in enumerate(cfg.clients)}


def config_from_json(text: str) -> RunConfig:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"run config 'fedgc-config' is not valid JSON: {exc}") from exc
    return parse_config(raw, source=None)


# ------------------------------------------------------------------------------ the ServerApp


def job_from_context(context: Context) -> Job:
    """The deployed run the run config describes; every round is appended to OUT/rounds.jsonl."""
    rc = {**DEFAULTS, **dict(context.run_config)}
    if rc["fedgc-config"]:
        cfg = config_from_json(str(rc["fedgc-config"]))
    elif rc["config-path"]:
        cfg = load_config(Path(str(rc["config-path"])))
    else:
        raise ConfigError(
            "the ServerApp needs a run config: set 'fedgc-config' (JSON) or 'config-path' in --run-config"
        )
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
        fast_object_pulls=bool(rc["fast-object-pulls"]),
        on_round=RoundLog(out / ROUNDS_FILE),
        write_files=True,
    )


def make_server_app(job: Job | None = None) -> ServerApp:
    """The ServerApp. job: an in-process run (flower-sim); None: read the job from the run config."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_job(grid, job if job is not None else job_from_context(context))

    return server_app


app = make_server_app()
