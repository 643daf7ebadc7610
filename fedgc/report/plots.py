"""The run's own figures, drawn by write_outputs from the typed view of its result.json: gc_heatmap.png
(block strength and significance, [target, source]) and convergence.png (relative change and loss per
round). This module and the figure modules that draw on it (figures, graph_figure) import matplotlib: a
run's writer loads them only when it draws its figures (fedgc.report.result_json.FIGURES_MODULE), and
reading a result or writing its report needs none of them.

Every figure is a matplotlib Figure on the Agg canvas (headless; pyplot's global state is untouched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from fedgc.files import replacing
from fedgc.report.inspected import Inspected

if TYPE_CHECKING:  # only a type: the oracle's rounds are handed over by the run
    from fedgc.protocol.state import RoundRecord

TICK_LABEL_LIMIT = 30  # above this many clients the heatmap shows client indices, not names


def new_figure(width: float, height: float):
    """A figure on the Agg canvas directly: headless, and pyplot's global backend is left alone."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """fig as a PNG at `path`, atomically (a half-written figure never carries the name)."""
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def log_panel(ax, rounds: np.ndarray, values: np.ndarray, *, colour: str, label: str, style: str = "o-",
              ms: float | None = None, what: str = "", floor: float | None = None) -> str | None:  # fmt: skip
    """values (> 0) per round on a log axis; rounds whose value is exactly 0 cannot be drawn there, so
    they get a hollow marker on the panel's floor (`floor`, default a decade under the smallest positive
    value) and the returned note says which rounds they are (None when there are none; `what` names the
    series in it)."""
    rounds, values = np.asarray(rounds, dtype=float), np.asarray(values, dtype=float)
    positive = np.isfinite(values) & (values > 0)
    zero = np.isfinite(values) & (values == 0)
    ax.semilogy(rounds[positive], values[positive], style, color=colour, label=label, ms=ms)
    if not zero.any():
        return None
    if floor is None:
        floor = float(values[positive].min()) / 10 if positive.any() else 1e-16
    ax.semilogy(rounds[zero], np.full(int(zero.sum()), floor), "v", color=colour, markerfacecolor="white", ms=8,
                label=f"{what or 'exactly 0'}{' exactly 0' if what else ''} (drawn at the floor)")  # fmt: skip
    which = ", ".join(f"{r:g}" for r in rounds[zero])
    return f"{what + ' ' if what else ''}round{'s' if zero.sum() > 1 else ''} {which}: exactly 0, drawn at the floor"


def set_client_ticks(ax, clients: Sequence[str]) -> None:
    M = len(clients)
    if M > TICK_LABEL_LIMIT:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.tick_params(labelsize=8)
        return
    fontsize = 10 if M <= 10 else (8 if M <= 20 else 6.5)
    ticks = np.arange(M)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    longest = max((len(c) for c in clients), default=0)
    if M * max(longest, 2) > 40:
        ax.set_xticklabels(clients, rotation=90 if M > 12 else 45, ha="center" if M > 12 else "right",
                           rotation_mode="anchor" if M <= 12 else "default", fontsize=fontsize)  # fmt: skip
    else:
        ax.set_xticklabels(clients, fontsize=fontsize)
    ax.set_yticklabels(clients, fontsize=fontsize)
    ax.tick_params(length=2)


def plot_heatmap(result: Inspected, path: str | Path) -> Path:
    """Panels indexed [target m, source n]: block strength ||A_s^{mn}||_F and -log10 p, with FDR edges
    dotted, true edges outlined when known (for M > 30 a third panel compares edges with truth instead),
    diagonal grey."""
    clients = list(result.clients)
    M = len(clients)
    big = M > TICK_LABEL_LIMIT
    off = ~np.eye(M, dtype=bool)
    strength = np.array(result.strength, dtype=float)
    nlogp = -np.array(result.log10_pvalue, dtype=float)
    edges = result.edges & off
    truth = result.truth & off if result.truth is not None else None
    alpha = result.alpha
    auroc = result.evaluation.auroc
    grey, true_colour = "#cfcfcf", "#00a651"
    edge_panel = big  # above 30 clients per-cell markers turn to speckle: edges get a panel of their own

    side = float(np.clip(3.6 + 0.045 * M, 4.2, 7.5))
    n_panels = 3 if edge_panel else 2
    fig = new_figure(n_panels * side + 1.1 * n_panels, side + 1.5)
    axes = list(fig.subplots(1, n_panels))

    # -log10 p colour scale: capped so one overwhelming edge does not wash out the rest, but never
    # below the least significant discovery (the BH cut) or the Bonferroni level.
    finite = nlogp[off & np.isfinite(nlogp)]
    threshold = float(np.min(nlogp[edges])) if edges.any() else None
    floor_level = threshold if threshold is not None else -math.log10((alpha or 0.05) / max(M * (M - 1), 1))
    vmax_p = 1.0
    if finite.size:
        vmax_p = min(max(float(np.percentile(finite, 98)), 1.5 * floor_level, 2.0), max(float(finite.max()), 1.0))
    cell_pt = 72.0 * side * 0.82 / max(M, 1)  # marker geometry from the cell size in points
    dot_size = min(0.38 * cell_pt, 12.0) ** 2
    dot_lw = float(np.clip(cell_pt * 0.05, 0.25, 1.0))
    box_lw = float(np.clip(cell_pt * 0.09, 0.6, 2.2))

    def frame(ax, title: str) -> None:
        if M <= 60:  # thin white cell grid (lines, not minor ticks: ticks cost a text layout each)
            edges_at = np.arange(-0.5, M, 1.0)
            lw = 0.6 if M <= 20 else 0.3
            ax.vlines(edges_at, -0.5, M - 0.5, colors="white", linewidth=lw, zorder=2)
            ax.hlines(edges_at, -0.5, M - 0.5, colors="white", linewidth=lw, zorder=2)
        ax.set_xlim(-0.5, M - 0.5)
        ax.set_ylim(M - 0.5, -0.5)
        set_client_ticks(ax, clients)
        ax.set_xlabel("source n" + (" (client index)" if big else ""))
        ax.set_ylabel("target m" + (" (client index)" if big else ""))
        ax.set_title(title, fontsize=11)

    panels = [
        (strength, "Blues", r"strength $\|A_s^{mn}\|_F$", r"$\|A_s^{mn}\|_F$", None),
        (nlogp, "Reds", r"significance $-\log_{10} p$", r"$-\log_{10} p$", vmax_p),
    ]
    for ax, (values, cmap_name, title, cbar_label, vmax) in zip(axes, panels):
        cmap = matplotlib.colormaps[cmap_name].with_extremes(bad=grey)
        masked = np.ma.masked_where(~off | ~np.isfinite(values), values)
        if vmax is None:  # strength: the largest block, or its 99th percentile when there are many
            vmax = float(np.percentile(masked.compressed(), 99 if big else 100)) if masked.count() else 1.0
            vmax = vmax if vmax > 0 else 1.0
        extend = "max" if masked.count() and float(masked.max()) > vmax * (1 + 1e-9) else "neither"
        im = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
        cbar = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02, extend=extend)
        cbar.set_label(cbar_label)
        if values is nlogp and threshold is not None and threshold <= vmax:
            cbar.ax.axhline(threshold, color="black", lw=1.2)
            cbar.ax.text(-0.15, threshold, "FDR cut", va="top" if threshold > 0.6 * vmax else "bottom", ha="right",
                         fontsize=7, rotation=90,
                         transform=cbar.ax.get_yaxis_transform(), clip_on=False)  # fmt: skip
        if truth is not None and truth.any() and not edge_panel:
            tm, tn = np.nonzero(truth)
            inset = 0.06
            boxes = [
                Rectangle((n - 0.5 + inset, m - 0.5 + inset), 1 - 2 * inset, 1 - 2 * inset) for m, n in zip(tm, tn)
            ]
            ax.add_collection(
                PatchCollection(boxes, facecolor="none", edgecolor=true_colour, linewidth=box_lw, zorder=3)
            )
        if edges.any() and not edge_panel:
            em, en = np.nonzero(edges)
            ax.scatter(en, em, s=dot_size, c="white", edgecolors="black", linewidths=dot_lw, zorder=4)
        frame(ax, title)

    handles = [Patch(facecolor=grey, edgecolor="none", label="diagonal (not tested)")]
    fdr_label = f"FDR edge (Benjamini-Hochberg, alpha = {alpha:g})" if alpha else "FDR edge"
    if edge_panel:
        ax = axes[2]
        if truth is not None:  # neither, true positive, false positive, missed
            colours, labels = (
                ["#ffffff", "#1a9850", "#f46d43", "#a6bddb"],
                ["true positive", "false positive", "missed"],
            )
            kinds = np.where(edges & truth, 1, np.where(edges, 2, np.where(truth, 3, 0))).astype(float)
            counts = [int((edges & truth).sum()), int((edges & ~truth).sum()), int((~edges & truth).sum())]
            title = "FDR edges vs truth"
        else:
            colours, labels = ["#ffffff", "#252525"], [fdr_label]
            kinds = edges.astype(float)
            counts = [int(edges.sum())]
            title = "FDR edges"
        kinds[~off] = np.nan
        cmap = ListedColormap(colours).with_extremes(bad=grey)
        ax.imshow(np.ma.masked_invalid(kinds), cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5,
                  interpolation="nearest", aspect="equal")  # fmt: skip
        frame(ax, title)
        ax.legend(
            handles=[Patch(facecolor=c, edgecolor="#777777", linewidth=0.5, label=f"{lab} ({k})")
                     for c, lab, k in zip(colours[1:], labels, counts)],
            loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False, fontsize=9,
        )  # fmt: skip
    else:
        handles.insert(0, Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="black",
                                 markersize=7, label=fdr_label))  # fmt: skip
        if truth is not None:
            handles.insert(1, Patch(facecolor="none", edgecolor=true_colour, linewidth=2, label="true edge"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    title = (
        f"{result.name}: block Granger causality, {M} clients, "
        f"{int(edges.sum())} of {M * (M - 1)} ordered pairs are FDR edges"
    )
    if auroc is not None:
        title += f"  |  AUROC {auroc:.3f}"
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, path, dpi=110 if not big else 120)


def plot_convergence(
    result: Inspected, path: str | Path, *, oracle_history: Sequence[RoundRecord] | None = None,
    oracle_outside_privacy: bool = False,
) -> Path:  # fmt: skip
    """convergence.png: run_convergence_figure saved at `path`."""
    figure = run_convergence_figure(result, oracle_history=oracle_history,
                                    oracle_outside_privacy=oracle_outside_privacy)  # fmt: skip
    return save_figure(figure, path)


def run_convergence_figure(
    result: Inspected, *, oracle_history: Sequence[RoundRecord] | None = None, oracle_outside_privacy: bool = False
):
    """Relative change of A_s per round (log scale, with the tolerance; a round at exactly 0 marked on the
    floor and named) and the summed client loss per round."""
    history = result.history
    tol = result.server.tol
    fig = new_figure(10.5, 4.0)
    ax_change, ax_loss = fig.subplots(1, 2)
    rounds = np.array([h.round for h in history], dtype=float)
    change = np.array([h.change for h in history], dtype=float)
    loss = np.array([h.loss for h in history], dtype=float)
    o_rounds = [r.round for r in oracle_history or ()]
    o_change = np.array([r.change for r in oracle_history or ()], dtype=float)
    every = np.concatenate([change, o_change])
    positive = every[np.isfinite(every) & (every > 0)]
    floor = float(positive.min()) / 10 if positive.size else 1e-16  # one floor, under both series
    notes = []
    if history:
        notes.append(log_panel(ax_change, rounds, change, colour="#1f77b4", label="federated",
                               what="federated" if oracle_history else "", floor=floor))  # fmt: skip
        ax_loss.plot(rounds, loss, "o-", color="#d62728")
    if oracle_history:
        label = (
            "oracle (pooled raw data, outside the privacy guarantee)"
            if oracle_outside_privacy
            else "oracle (pooled data)"
        )
        notes.append(log_panel(ax_change, o_rounds, o_change, colour="#7f7f7f", label=label, style="s--", ms=4,
                               what="oracle", floor=floor))  # fmt: skip
    note = "; ".join(n for n in notes if n)
    if note:  # a round at exactly 0 cannot sit on the log axis: it is marked on the floor, and named here
        ax_change.text(0.98, 0.02, note, ha="right", va="bottom", fontsize=8, color="#444444",
                       transform=ax_change.transAxes)  # fmt: skip
    if tol:
        ax_change.axhline(tol, color="black", ls=":", lw=1, label=f"tol = {tol:g}")
    ax_change.set_yscale("log")
    ax_change.set_xlabel("round")
    ax_change.set_ylabel(r"relative change of $A_s$")
    ax_change.set_title("relative change per round", fontsize=11)
    ax_change.legend(fontsize=8, frameon=False)
    ax_loss.set_xlabel("round")
    ax_loss.set_ylabel("loss (summed over clients)")
    ax_loss.set_title("loss per round", fontsize=11)
    ax_loss.ticklabel_format(axis="y", useOffset=False, style="sci", scilimits=(-3, 5))
    for ax in (ax_change, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="major")
        if not history:
            ax.text(0.5, 0.5, "no rounds recorded", ha="center", va="center", transform=ax.transAxes)
    status = "converged" if result.converged else "did not converge"
    fig.suptitle(f"{result.name}: {result.rounds} rounds, {status}", fontsize=12)
    return fig
