"""What the server does when clients give no valid reply (server.on_dropout: stop | continue).

stop      ClientDropoutError naming the clients and the round; the checkpoint of the last completed
          round stays on disk (a run can be resumed, also with on_dropout: continue).
continue  the run goes on with the remaining clients. From the round a client k drops, the server
          model is the same fixed-point iteration on the reduced system: every remaining target m
          regresses z^m on the lagged states of the remaining clients only (k's states are no longer
          regressors, and k gets no augmentation), so the edges among the remaining clients are
          Granger causality conditional on them only: an effect routed through k is no longer
          separated from a direct one. Everything involving k is unknown, never zero: its rows and
          columns of A_s and of the GC matrices are NaN, `unknown` marks them, and edges there are
          False in memory but null in result.json.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fedgc.core.granger import GCResult
from fedgc.core.regression import Blocks
from fedgc.errors import FedGCError
from fedgc.protocol.settings import ON_DROPOUT
from fedgc.protocol.state import Dropout

log = logging.getLogger("fedgc")


class ClientDropoutError(FedGCError):
    """Clients gave no valid reply and server.on_dropout is 'stop' (or too few clients remain)."""

    def __init__(self, message: str, dropouts: Sequence[Dropout], completed_round: int) -> None:
        self.dropouts, self.completed_round = tuple(dropouts), int(completed_round)
        super().__init__(message)


def describe(dropouts: Sequence[Dropout]) -> str:
    return "; ".join(f"client '{d.client}': {d.reason}" for d in dropouts)


def apply_policy(
    policy: str, failed: Sequence[Dropout], active: Sequence[bool], names: Sequence[str], completed_round: int
) -> tuple[bool, ...]:
    """The active mask after `failed` clients dropped in one exchange, or ClientDropoutError."""
    if policy not in ON_DROPOUT:
        raise FedGCError(f"server.on_dropout must be one of {ON_DROPOUT}, got {policy!r}")
    rnd = failed[0].round
    who = ", ".join(f"'{d.client}'" for d in failed)
    if policy == "stop":
        raise ClientDropoutError(
            f"round {rnd}: no valid reply from client(s) {who} ({describe(failed)}); server.on_dropout is 'stop', "
            f"so the run stops after round {completed_round} (set server.on_dropout: continue to go on without them)",
            failed, completed_round,
        )  # fmt: skip
    gone = {d.client for d in failed}
    mask = tuple(a and n not in gone for a, n in zip(active, names))
    if sum(mask) < 2:
        left = [n for n, a in zip(names, mask) if a]
        raise ClientDropoutError(
            f"round {rnd}: client(s) {who} dropped ({describe(failed)}) and only {left} remain: Granger causality "
            f"needs at least two clients; the run stops after round {completed_round}",
            failed, completed_round,
        )  # fmt: skip
    for d in failed:
        log.warning("client '%s' dropped at round %d (%s); continuing without it", d.client, d.round, d.reason)
    return mask


def state_indices(blocks: Blocks, members: Sequence[int]) -> np.ndarray:
    """Indices in the full stacked state of the clients `members`, in order."""
    return np.concatenate([np.arange(blocks.offsets[m], blocks.offsets[m + 1]) for m in members]).astype(int)


def embed(sub: np.ndarray, full_blocks: Blocks, members: Sequence[int]) -> np.ndarray:
    """The (D, D) matrix with `sub` (over the members' states) in place and NaN elsewhere."""
    idx = state_indices(full_blocks, members)
    out = np.full((full_blocks.total, full_blocks.total), np.nan)
    out[np.ix_(idx, idx)] = sub
    return out


def embed_gc(
    gc: GCResult, names: Sequence[str], dims: Sequence[int], members: Sequence[int], A_s: np.ndarray
) -> GCResult:
    """A GCResult over `members` as the full M x M result: pairs involving a dropped client are unknown
    (NaN matrices, edges False, `unknown` True)."""
    M = len(names)
    members = list(members)
    ix = np.ix_(members, members)

    def grow(a: np.ndarray, fill: float | bool | int, dtype: type) -> np.ndarray:
        out: np.ndarray = np.full((M, M), fill, dtype=dtype)
        out[ix] = a
        return out

    known = np.zeros((M, M), dtype=bool)
    known[ix] = True
    unknown = ~known & ~np.eye(M, dtype=bool)
    return gc._replace(
        clients=tuple(names), dims=tuple(int(d) for d in dims),
        strength=grow(gc.strength, np.nan, float), gc=grow(gc.gc, np.nan, float),
        statistic=grow(gc.statistic, np.nan, float), dof=grow(gc.dof, 0, int), pvalue=grow(gc.pvalue, np.nan, float),
        log10_pvalue=grow(gc.log10_pvalue, np.nan, float), edges=grow(gc.edges, False, bool), A_s=A_s, unknown=unknown,
        via_source=None if gc.via_source is None else grow(gc.via_source, False, bool),
    )  # fmt: skip
