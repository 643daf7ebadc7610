"""A run against what is known about it: the true graph of a synthetic scenario, and the centralized
oracle (fedgc.analysis.oracle: every client's window pooled, evaluation only)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence

import numpy as np

from fedgc.analysis.metrics import edge_scores, relative_error
from fedgc.app.results import Evaluation, RunResult, Truth
from fedgc.core.regression import Blocks
from fedgc.core.window import ClientWindow
from fedgc.protocol.state import RoundRecord

# The oracle is opt-in for `fedgc run` (on for simulate): its module is looked up by name when a run fits it.
ORACLE_MODULE = "fedgc.analysis.oracle"


def evaluate(
    result: RunResult, *, windows: Sequence[ClientWindow] | None = None, truth: Truth | None = None,
    on_oracle_round: Callable[[RoundRecord], None] | None = None,
) -> RunResult:  # fmt: skip
    """Fill result.evaluation: the oracle (when the config asks and the exact windows are at hand; its rounds
    reported to on_oracle_round) and the scores against truth (when known)."""
    cfg, fit = result.config, result.fit
    ev = Evaluation(truth=truth)
    blocks = Blocks.of(fit.gc.dims)
    if cfg.evaluation.oracle and windows is not None:
        t1 = time.perf_counter()
        oracle_fit = importlib.import_module(ORACLE_MODULE).oracle_fit
        ev.oracle_A, ev.oracle_history = oracle_fit(windows, cfg.server, on_round=on_oracle_round)
        result.timings["oracle_s"] = time.perf_counter() - t1
        ev.error_vs_oracle = relative_error(fit.A_s, ev.oracle_A, blocks)
    if truth is not None:
        score = -np.nan_to_num(fit.gc.log10_pvalue, nan=0.0)
        ev.scores = edge_scores(score, fit.gc.edges, truth.edges)
        if truth.A is not None:
            ev.error_vs_truth = relative_error(fit.A_s, truth.A, blocks)
            if ev.oracle_A is not None:
                ev.oracle_error_vs_truth = relative_error(ev.oracle_A, truth.A, blocks)
    result.evaluation = ev
    return result
