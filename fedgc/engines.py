"""Dispatch a run to an engine: `local` here; `flower-sim` and `flower` in the Flower apps (server/)."""

from __future__ import annotations

from pathlib import Path

from fedgc.config import RunConfig
from fedgc.errors import ConfigError
from fedgc.run import RunResult, run_real, run_simulation


def run_with_engine(cfg: RunConfig, *, mode: str, out_dir: Path, superlink: str | None = None, on_round=None) -> RunResult:
    if cfg.engine == "local":
        return run_simulation(cfg, on_round=on_round) if mode == "simulate" else run_real(cfg, on_round=on_round)
    raise ConfigError(f"engine {cfg.engine!r} is not available in this build")
