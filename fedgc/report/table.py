"""The terminal table of `fedgc inspect`: the FDR edges (or every pair), most significant first."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedgc.errors import FedGCError
from fedgc.report.inspected import Inspected
from fedgc.report.ranking import Pair, ranked_pairs
from fedgc.report.text import format_pvalue

DEFAULT_TOP = 20


def windows_converged(result: Inspected) -> tuple[int, int] | None:
    """A streaming run's (windows whose rounds converged, windows); None for a batch run or no windows."""
    s = result.streaming
    if s is None or not s.windows:
        return None
    return sum(w.converged for w in s.windows), len(s.windows)


def _num(x: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}g}"


def _pvalue_text(p: Pair) -> str:
    if math.isfinite(p.log10_pvalue):
        return format_pvalue(p.log10_pvalue)
    return "0" if p.pvalue == 0 else "n/a"


def format_table(result: Inspected, *, top: int | None = None, every_pair: bool = False) -> str:
    """The FDR edges (or every pair), most significant first, at most `top` rows (default 20, or all
    pairs with every_pair), with a summary line above and what was left out below."""
    if top is not None and top < 1:
        raise FedGCError(f"--top {top}: give a positive number of rows")
    M = len(result.clients)
    pairs = ranked_pairs(result)
    n_edges = sum(p.edge for p in pairs)
    candidates = pairs if every_pair else [p for p in pairs if p.edge]
    limit = top if top is not None else (len(candidates) if every_pair else DEFAULT_TOP)
    shown = candidates[:limit]

    counts = windows_converged(result)
    status = f"{result.rounds} rounds, " + (
        ("converged" if result.converged else "not converged") if counts is None
        else f"{counts[1]} windows, {counts[0]} converged"
    )  # fmt: skip
    alpha_note = "" if result.alpha == result.run_alpha else f" (re-decided; the run used alpha = {result.run_alpha:g})"
    lines = [
        f"{result.name}: {M} clients, {status}; {n_edges} of {M * (M - 1)} ordered pairs are edges "
        f"(Benjamini-Hochberg FDR, alpha = {result.alpha:g}){alpha_note}"
    ]
    n_unknown = int(result.unknown.sum())
    if n_unknown:
        dropped = ", ".join(d.client for d in result.resilience.dropouts)
        lines.append(f"{n_unknown} pairs are unknown: {dropped} dropped out (server.on_dropout: continue)")
    if result.streaming is not None:
        s = result.streaming
        lines.append(
            f"streaming: {len(s.windows)} windows of {s.window} samples every {s.step}, {len(s.alerts)} alerts"
        )
    for o in result.origins:
        if o.ranking:
            run = f" {o.run}" if o.run else ""
            known = f" (known origin: {o.known_origin})" if o.known_origin else ""
            lines.append(f"fault origin{run}: {' > '.join(o.ranking[:5])}{known}")
    if not shown:
        lines.append(f"no pair is an edge at alpha = {result.alpha:g}; --all lists every pair")
        return "\n".join(lines)

    header = ["#", "source -> target", "strength", "statistic", "dof", "p-value", "edge"]
    if result.truth is not None:
        header.append("true")
    rows = []
    for i, p in enumerate(shown, 1):
        edge = "unknown" if p.unknown else "yes" if p.edge else "no"
        row = [str(i), f"{p.source} -> {p.target}", _num(p.strength), _num(p.statistic, 5), str(p.dof or "n/a"),
               _pvalue_text(p), edge]  # fmt: skip
        if p.true_edge is not None:
            row.append("yes" if p.true_edge else "no")
        rows.append(row)
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    left = {1}  # the pair column reads left to right; numbers align right

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines += ["", line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    rest = len(candidates) - len(shown)
    if rest:
        lines.append(f"... {rest} more {'pairs' if every_pair else 'edges'} (--top N to show more)")
    if not every_pair:
        lines.append(f"{M * (M - 1) - n_edges} pairs that are not edges are not listed (--all lists every pair)")
    return "\n".join(lines)
