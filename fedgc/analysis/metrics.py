"""Scores of a learned block GC matrix against known truth, and matrix distances."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedgc.core.regression import Blocks


class EdgeScores(NamedTuple):
    """auroc, auprc: ranking of the off-diagonal scores against truth (NaN when truth has one class);
    precision, recall, f1: of the boolean edge set."""

    auroc: float
    auprc: float
    precision: float
    recall: float
    f1: float


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = mid_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mid_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x's entries, tied entries sharing their mean rank; all NaN when any entry is NaN
    (scipy.stats.rankdata's default, computed as it does)."""
    x = np.asarray(x, dtype=float).ravel()
    if np.isnan(x).any():
        return np.full(x.size, np.nan)
    order = np.argsort(x, kind="mergesort")
    s = x[order]
    first = np.r_[True, s[1:] != s[:-1]]  # the first entry of every run of ties
    bounds = np.r_[np.flatnonzero(first), s.size]  # run k spans sorted positions bounds[k] .. bounds[k + 1] - 1
    run = np.cumsum(first)
    ranks = np.empty(x.size)
    ranks[order] = 0.5 * (bounds[run] + bounds[run - 1] + 1)
    return ranks


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision: mean over positives of the precision at their rank (ties count pessimistically)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        return float("nan")
    scores = np.asarray(scores, dtype=float)
    precisions = []
    for s in scores[labels]:
        retrieved = scores >= s
        precisions.append(labels[retrieved].sum() / retrieved.sum())
    return float(np.mean(precisions))


def edge_scores(score: np.ndarray, edges: np.ndarray, truth: np.ndarray) -> EdgeScores:
    """Score (M, M) matrices indexed [target, source]; the diagonal is ignored."""
    off = ~np.eye(truth.shape[0], dtype=bool)
    s, e, t = score[off], edges[off].astype(bool), truth[off].astype(bool)
    tp = int((e & t).sum())
    precision = tp / e.sum() if e.sum() else float("nan")
    recall = tp / t.sum() if t.sum() else float("nan")
    f1 = 2 * tp / (e.sum() + t.sum()) if (e.sum() + t.sum()) else float("nan")
    return EdgeScores(auroc(s, t), auprc(s, t), float(precision), float(recall), float(f1))


def offdiagonal_mask(blocks: Blocks) -> np.ndarray:
    mask = np.ones((blocks.total, blocks.total), dtype=bool)
    for m in range(len(blocks.dims)):
        mask[blocks.slice(m), blocks.slice(m)] = False
    return mask


def relative_error(estimate: np.ndarray, reference: np.ndarray, blocks: Blocks) -> float:
    """||estimate - reference||_F / ||reference||_F over the off-diagonal blocks."""
    mask = offdiagonal_mask(blocks)
    denom = np.linalg.norm(reference[mask])
    return float(np.linalg.norm((estimate - reference)[mask]) / denom) if denom > 0 else float("nan")
