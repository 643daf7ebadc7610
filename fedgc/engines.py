"""Dispatch a run to an engine: `local` here; `flower-sim` and `flower` in the Flower apps (server/).

The Flower engines are imported lazily, so the library and the local engine never import Flower.
"""

from __future__ import annotations

from pathlib import Path

from fedgc.config import ENGINES, RunConfig
from fedgc.errors import ConfigError
from fedgc.run import RunResult, run_real, run_simulation


def run_with_engine(
    cfg: RunConfig, *, mode: str, out_dir: Path, superlink: str | None = None, on_round=None, resume: bool = False
) -> RunResult:
    """resume: continue from the checkpoint in out_dir (every engine writes one there after each round)."""
    if mode not in ("simulate", "run"):
        raise ConfigError(f"mode must be 'simulate' or 'run', got {mode!r}")
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

        return run_flower_sim(cfg, mode=mode, out_dir=Path(out_dir), on_round=on_round, resume=resume)
    if cfg.engine == "flower":
        from server.engine import run_flower

        return run_flower(cfg, mode=mode, out_dir=Path(out_dir), superlink=superlink, on_round=on_round, resume=resume)
    raise ConfigError(f"engine {cfg.engine!r} is not one of {ENGINES}")
