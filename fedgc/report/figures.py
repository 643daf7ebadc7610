"""The figures of `fedgc inspect --figures`, drawn from the typed view of a result.json: the GC heatmap (only
when --alpha re-decided the edges, or the run's own gc_heatmap.png is not beside its result.json:
otherwise it would be that file again), the graph (fedgc.report.graph_figure), convergence on log
scales, the streaming edge strengths with their alerts, and the fault-origin scores. Each `*_figure`
returns a matplotlib Figure on the Agg canvas; `write_figures` saves PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from fedgc.report.graph_figure import graph_figure
from fedgc.report.inspected import Inspected
from fedgc.report.plots import log_panel, new_figure, plot_heatmap, save_figure
from fedgc.report.ranking import file_name_at_alpha
from fedgc.report.result_json import HEATMAP_FILE

FIGURE_FILES = {
    "heatmap": "inspect_heatmap.png",
    "graph": "inspect_graph.png",
    "convergence": "inspect_convergence.png",
    "streaming": "inspect_streaming.png",
    "origin": "inspect_origin.png",
}
AT_ALPHA = ("heatmap", "graph")  # the figures that draw the edges, hence depend on --alpha
_KIND_STYLE = {  # alert kind -> marker, colour
    "appeared": ("^", "#1a9850"),
    "disappeared": ("v", "#d73027"),
    "changed": ("D", "#f39c12"),
}


# ---------------------------------------------------------------------------------------------- convergence


def convergence_figure(result: Inspected):
    """Per round, both on log scales: the relative change of A_s with the tolerance, and the summed
    client loss above its smallest value (report.md's linear loss plot hides everything after round 2).
    A round at exactly 0 (the round of the smallest loss, a change of 0) is marked on the floor."""
    history = result.history
    tol = result.server.tol
    rounds = np.array([h.round for h in history], dtype=float)
    change = np.array([h.change for h in history], dtype=float)
    loss = np.array([h.loss for h in history], dtype=float)
    fig = new_figure(10.5, 4.2)
    ax_change, ax_loss = fig.subplots(1, 2)
    notes = {ax_change: log_panel(ax_change, rounds, change, colour="#1f77b4", label="relative change")}
    if tol:
        ax_change.axhline(tol, color="black", ls=":", lw=1.2, label=f"tolerance {tol:g}")
    ax_change.set_ylabel(r"$\|A_s^{(r)} - A_s^{(r-1)}\|_F \,/\, \|A_s^{(r)}\|_F$")
    ax_change.set_title("relative change of $A_s$ per round", fontsize=11)
    title = "loss above its minimum"
    if np.isfinite(loss).any():
        best = int(np.nanargmin(loss))
        notes[ax_loss] = log_panel(ax_loss, rounds, loss - loss[best], colour="#d62728", label="loss - smallest loss")
        title += f" ({loss[best]:.6g} at round {rounds[best]:g})"
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel(r"loss $-$ smallest loss (summed over clients)")
    ax_loss.set_title(title, fontsize=11)
    for ax in (ax_change, ax_loss):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        if notes.get(ax):
            ax.text(0.98, 0.02, notes[ax], ha="right", va="bottom", fontsize=8, color="#444444", transform=ax.transAxes)
        if not history:
            ax.text(0.5, 0.5, "no rounds recorded", ha="center", va="center", transform=ax.transAxes)
    status = "converged" if result.converged else "did not converge"
    fig.suptitle(f"{result.name}: {len(history)} rounds, {status}", fontsize=12)
    return fig


# ---------------------------------------------------------------------------------------------- streaming


def streaming_figure(result: Inspected, *, featured: int = 8):
    """Edge strength per window (at its end sample) for the `featured` strongest pairs that are ever an
    edge or alerted (solid where an edge, dotted where not; other pairs faint grey), alerts marked by
    kind; below, the number of edges per window with the alert times."""
    s = result.streaming
    if s is None:
        raise ValueError("result has no streaming windows")
    M = len(result.clients)
    off = ~np.eye(M, dtype=bool)
    t = np.array([w.end for w in s.windows], dtype=float)
    strength = np.array([w.strength for w in s.windows]).reshape(len(s.windows), M, M)
    edges = np.array([w.edges & off for w in s.windows], dtype=bool).reshape(len(s.windows), M, M)
    index = {c: k for k, c in enumerate(result.clients)}
    alerted = {(index[a.target], index[a.source]) for a in s.alerts}
    peak = np.where(np.isfinite(strength), strength, -np.inf).max(axis=0) if len(t) else np.zeros((M, M))
    candidates = [(m, n) for m in range(M) for n in range(M) if m != n and (edges[:, m, n].any() or (m, n) in alerted)]
    candidates.sort(key=lambda mn: (-((mn in alerted) + 0.0), -peak[mn]))
    chosen = candidates[:featured]

    fig = new_figure(11.0, 6.6)
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for m in range(M):
        for n in range(M):
            if m != n and (m, n) not in chosen:
                ax.plot(t, strength[:, m, n], color="#c8c8c8", lw=0.6, zorder=1)
    colours = {mn: f"C{i % 10}" for i, mn in enumerate(chosen)}
    for m, n in chosen:
        c = colours[(m, n)]
        ax.plot(t, strength[:, m, n], color=c, lw=1.0, ls=":", zorder=2)
        ax.plot(t, np.where(edges[:, m, n], strength[:, m, n], np.nan), color=c, lw=2.2, marker="o", ms=3,
                zorder=3, label=f"{result.clients[n]} $\\rightarrow$ {result.clients[m]}")  # fmt: skip
    by_index = {w.index: k for k, w in enumerate(s.windows)}
    count = edges.sum(axis=(1, 2))
    annotate = len(s.alerts) <= 10
    for a in s.alerts:
        m, n = index[a.target], index[a.source]
        k = by_index[a.window]
        y = a.strength_after if math.isfinite(a.strength_after) else strength[k, m, n]
        marker, colour = _KIND_STYLE[a.kind]
        ax.scatter([a.time], [y], marker=marker, s=80, c=colour, edgecolors="black", linewidths=0.7, zorder=5)
        if annotate:
            ax.annotate(f"{result.clients[n]} $\\rightarrow$ {result.clients[m]} {a.kind}", (a.time, y),
                        xytext=(6, -12 if a.kind == "disappeared" else 6), textcoords="offset points", fontsize=8,
                        color="#333333", zorder=6)  # fmt: skip
        for axis in (ax, ax_count):
            axis.axvline(a.time, color=colour, lw=1.0, ls="--", alpha=0.6, zorder=0)
        ax_count.scatter(
            [a.time], [count[k]], marker=marker, s=50, c=colour, edgecolors="black", linewidths=0.6, zorder=5
        )
    ax.set_ylabel(r"strength $\|A_s^{mn}\|_F$")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    kinds = sorted({a.kind for a in s.alerts}, key=list(_KIND_STYLE).index)
    if kinds:  # an extra artist: constrained layout makes room only for the axes' own legend, the wider pair list
        ax.add_artist(ax.legend(
            handles=[Line2D([], [], marker=_KIND_STYLE[k][0], ls="", markerfacecolor=_KIND_STYLE[k][1],
                            markeredgecolor="black", markersize=8, label=f"alert: {k}") for k in kinds],
            loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8, frameon=False,
        ))  # fmt: skip
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title="pair (solid: edge)", title_fontsize=8)  # fmt: skip
    ax_count.step(t, count, where="post", color="#33415c")
    ax_count.set_ylim(0, max(int(count.max(initial=0)), 1) * 1.25)
    ax_count.set_ylabel("edges")
    ax_count.set_xlabel("time (sample at the end of the window)")
    ax_count.grid(alpha=0.3)
    ax_count.yaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(
        f"{result.name}: streaming, {len(s.windows)} windows of {s.window} samples every {s.step} "
        f"(forgetting {s.forgetting:g}), {len(s.alerts)} alerts",
        fontsize=12,
    )
    return fig


# ---------------------------------------------------------------------------------------------- origin


def origin_figure(result: Inspected, *, highlighted: int = 6):
    """Per-client innovation score per step with the threshold, one panel per fault run (its start
    and known origin marked when the run says); each client's first crossing marked. The
    `highlighted` most likely origins are in colour (legend in ranking order), the rest grey."""
    if not result.origins:
        raise ValueError("result has no fault-origin scores")
    n = len(result.origins)
    fig = new_figure(11.0, 1.0 + 4.2 * n)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, o in zip(axes, result.origins):
        _origin_panel(ax, o, highlighted=highlighted)
    axes[-1].set_xlabel("time step")
    runs = "" if n == 1 else f", {n} fault runs"
    fig.suptitle(f"{result.name}: fault origin, innovation score per client{runs}", fontsize=12)
    return fig


def _origin_panel(ax, o, *, highlighted: int) -> None:
    order = list(o.ranking) + [c for c in o.clients if c not in o.ranking]
    values = np.concatenate([v.score for v in o.clients.values()])
    top = float(np.nanmax(values)) if np.isfinite(values).any() else o.threshold
    if o.threshold > 0 and top / o.threshold > 100 and np.nanmin(values) > 0:  # scores far above threshold
        ax.set_yscale("log")
    handles = {}
    for rank, name in reversed(list(enumerate(order))):  # the likeliest origin drawn on top
        entry = o.clients[name]
        first = entry.first_crossing
        shown = rank < highlighted
        colour = f"C{rank % 10}" if shown else "#bdbdbd"
        crossing = "never crosses" if first is None else f"first crossing t = {first:g}"
        lw = (1.8 if first is not None else 1.0) if shown else 0.7
        (line,) = ax.plot(np.arange(entry.score.size), entry.score, color=colour, lw=lw,
                          alpha=1.0 if first is not None or not shown else 0.75, zorder=3 if shown else 2,
                          label=f"{rank + 1}. {name} ({crossing})")  # fmt: skip
        if shown:
            handles[rank] = line
        if first is not None and shown:
            k = round(first)
            y = entry.score[k] if 0 <= k < entry.score.size and np.isfinite(entry.score[k]) else o.threshold
            ax.axvline(first, color=colour, ls=":", lw=1.0, zorder=1)
            ax.scatter([first], [y], s=60, color=colour, edgecolors="black", linewidths=0.8, zorder=5)
    threshold = ax.axhline(o.threshold, color="black", ls="--", lw=1.2, label=f"threshold {o.threshold:g}", zorder=4)
    extra = [threshold]
    if o.start is not None:
        extra.append(
            ax.axvline(o.start, color="0.3", lw=3.0, alpha=0.35, zorder=1, label=f"fault start t = {o.start:g}")
        )
    ax.set_ylabel("innovation score")
    ax.grid(alpha=0.3)
    ax.legend(handles=[handles[r] for r in sorted(handles)] + extra, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, frameon=False, title="clients, likeliest origin first", title_fontsize=8)  # fmt: skip
    hidden = len(order) - min(highlighted, len(order))
    likeliest = o.ranking[0] if o.ranking else "n/a"
    title = [o.run or "fault origin", f"likeliest origin: {likeliest}"]
    if o.known_origin is not None:
        title.append(f"known origin: {o.known_origin} ({'right' if likeliest == o.known_origin else 'wrong'})")
    if hidden > 0:
        title.append(f"{hidden} more clients in grey")
    ax.set_title("; ".join(title), fontsize=10, loc="left")


# ---------------------------------------------------------------------------------------------- files


def heatmap_is_the_runs(result: Inspected) -> bool:
    """The inspect heatmap would be the run's own gc_heatmap.png again: same alpha, and that file is there."""
    return result.alpha == result.run_alpha and (result.path.parent / HEATMAP_FILE).is_file()


def write_figures(result: Inspected, *, out_dir: str | Path) -> dict[str, Path]:
    """graph, convergence, and streaming / origin when the result has them, as FIGURE_FILES PNGs in
    out_dir (created; those that draw the edges, at another alpha than the run's, named with it:
    file_name_at_alpha); the heatmap only
    when it differs from the run's gc_heatmap.png (`heatmap_is_the_runs`). The run's own files are left alone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / (file_name_at_alpha(v, result) if k in AT_ALPHA else v) for k, v in FIGURE_FILES.items()}
    if heatmap_is_the_runs(result):
        del paths["heatmap"]
    else:
        plot_heatmap(result, paths["heatmap"])
    save_figure(graph_figure(result), paths["graph"])
    save_figure(convergence_figure(result), paths["convergence"])
    if result.streaming is not None:
        save_figure(streaming_figure(result), paths["streaming"])
    else:
        del paths["streaming"]
    if result.origins:
        save_figure(origin_figure(result), paths["origin"])
    else:
        del paths["origin"]
    return paths
