"""Dispatch a run to an engine: `local` here; `flower-sim` and `flower` in the Flower apps (server/).

The Flower engines are imported lazily, so the library and the local engine never import Flower.
"""

from __future__ import annotations

from pathlib import Path

from fedgc.app.config import ENGINES, RunConfig
from fedgc.errors import ConfigError
from fedgc.protocol.wire import check_message_format
from fedgc.app.results import RunResult
from fedgc.app.runner import run_real, run_simulation


def run_with_engine(
    cfg: RunConfig, *, mode: str, out_dir: Path, superlink: str | None = None, on_round=None,
    root_certificates: str | Path | None = None, resume: bool = False, message_format: str = "arrays",
) -> RunResult:  # fmt: skip
    """root_certificates: CA certificate of a SuperLink with TLS (`flower` engine; else FEDGC_ROOT_CERTIFICATES).
    resume: continue from the checkpoint in out_dir (every engine writes one there after each round).
    message_format: how the Flower engines carry arrays, "arrays" or "compact" (clients.app.to_records)."""
    check_message_format(message_format)
    if mode not in ("simulate", "run"):
        raise ConfigError(f"mode must be 'simulate' or 'run', got {mode!r}")
    if cfg.align != "none" and mode == "run" and cfg.engine != "local":
        raise ConfigError(
            f"align: {cfg.align} needs every client's timestamps in one place; it runs with the local engine only "
            f"(got engine {cfg.engine!r}); align the files beforehand for a federated deployment"
        )
    if cfg.streaming is not None and cfg.engine != "local":
        raise ConfigError(
            f"streaming mode runs on the local engine only; engine {cfg.engine!r} does not support it yet "
            "(use --engine local, or remove the 'streaming' section for a batch run)"
        )
    if cfg.tep is not None and cfg.engine != "local" and not cfg.clients:
        from fedgc.app.tep import run_tep_on_flower

        return run_tep_on_flower(cfg, out_dir=Path(out_dir), superlink=superlink, on_round=on_round, message_format=message_format)
    if cfg.engine == "local":
        run = run_simulation if mode == "simulate" else run_real
        result = run(cfg, on_round=on_round, checkpoint_dir=Path(out_dir), resume=resume)
        if result.raw_data_bytes and result.communication:
            total = int(result.communication.get("bytes_total", 0))
            result.communication["raw_data_bytes_kept"] = int(result.raw_data_bytes)
            result.communication["raw_to_sent_ratio"] = float(result.raw_data_bytes) / max(total, 1)
        return result
    if cfg.engine == "flower-sim":
        from server.engine import run_flower_sim

        return run_flower_sim(cfg, mode=mode, out_dir=Path(out_dir), on_round=on_round, resume=resume, message_format=message_format)
    if cfg.engine == "flower":
        from server.engine import run_flower

        return run_flower(
            cfg, mode=mode, out_dir=Path(out_dir), superlink=superlink, on_round=on_round,
            root_certificates=None if root_certificates is None else str(root_certificates), resume=resume,
            message_format=message_format,
        )  # fmt: skip
    raise ConfigError(f"engine {cfg.engine!r} is not one of {ENGINES}")
