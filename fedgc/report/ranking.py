"""The one ranking of a result's ordered pairs (report.md, the terminal table, the exports) and the
Benjamini-Hochberg edges re-decided at another level."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from fedgc.core.fdr import benjamini_hochberg
from fedgc.errors import FedGCError
from fedgc.report.inspected import Inspected


class Pair(NamedTuple):
    """One ordered pair source -> target (client names). NaN where not estimated; dof 0 when unknown;
    unknown: a client of the pair dropped out, so it was not tested (edge False)."""

    target: str
    source: str
    strength: float
    statistic: float
    dof: int
    pvalue: float
    log10_pvalue: float
    edge: bool
    true_edge: bool | None
    unknown: bool = False


def ranked_pairs(result: Inspected, *, top: int | None = None) -> list[Pair]:
    """Every ordered pair (top: the first `top` of them), most significant first: log10 p ascending (missing
    last), then strength descending; ties keep the order target-major, then source."""
    M = len(result.clients)
    targets, sources = np.nonzero(~np.eye(M, dtype=bool))
    logp = result.log10_pvalue[targets, sources].astype(float)
    strength = result.strength[targets, sources].astype(float)
    order = np.lexsort((-np.where(np.isfinite(strength), strength, 0.0), np.where(np.isnan(logp), math.inf, logp)))
    pairs = []
    for i in order[:top].tolist():
        m, n = int(targets[i]), int(sources[i])
        dof = result.dof[m, n]
        pairs.append(Pair(
            target=result.clients[m], source=result.clients[n], strength=float(result.strength[m, n]),
            statistic=float(result.statistic[m, n]), dof=int(dof) if np.isfinite(dof) else 0,
            pvalue=float(result.pvalue[m, n]), log10_pvalue=float(result.log10_pvalue[m, n]),
            edge=bool(result.edges[m, n]), true_edge=None if result.truth is None else bool(result.truth[m, n]),
            unknown=bool(result.unknown[m, n]),
        ))  # fmt: skip
    return pairs


def fdr_edges(pvalue: np.ndarray, *, alpha: float, tested: np.ndarray | None = None) -> np.ndarray:
    """(M, M) read-only Benjamini-Hochberg discoveries at level alpha over the tested off-diagonal p-values
    (as fedgc.core.granger.granger_tests decides them); a missing p-value of a tested pair counts as 1.
    tested: (M, M) bool, default every off-diagonal pair."""
    M = pvalue.shape[0]
    tested = ~np.eye(M, dtype=bool) if tested is None else tested & ~np.eye(M, dtype=bool)
    edges = np.zeros((M, M), dtype=bool)
    if tested.any():
        edges[tested] = benjamini_hochberg(np.where(np.isfinite(pvalue), pvalue, 1.0)[tested], alpha=alpha)
    edges.setflags(write=False)
    return edges


def file_name_at_alpha(name: str, result: Inspected) -> str:
    """The name of a file `fedgc inspect` draws from `result`: `name` at the run's own FDR level; at another
    (--alpha) the level goes before the suffix (edges.csv -> edges.alpha-0.01.csv), so files decided at
    different levels never pass for each other in one folder."""
    if result.alpha == result.run_alpha:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.alpha-{result.alpha:g}.{suffix}" if dot else f"{name}.alpha-{result.alpha:g}"


def with_alpha(result: Inspected, *, alpha: float) -> Inspected:
    """The result with its edges re-decided at FDR level alpha from the stored p-values."""
    if not 0 < alpha < 1:
        raise FedGCError(f"--alpha {alpha} is not in (0, 1)")
    return dataclasses.replace(
        result, alpha=float(alpha), edges=fdr_edges(result.pvalue, alpha=alpha, tested=result.tested)
    )
