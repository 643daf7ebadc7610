"""Figures of an inspected result (fedgc.report.reader.Inspected): the GC heatmap (drawn by fedgc.report.result_json from
the same dict a run writes), the directed graph, convergence on log scales, the streaming edge
strengths with their alerts, and the fault-origin scores. Each `*_figure` returns a matplotlib Figure
on the Agg canvas (headless; pyplot's global state is not touched); `write_figures` saves PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fedgc.report.reader import Inspected
from fedgc.report.result_json import _figure, plot_heatmap

FIGURE_FILES = {
    "heatmap": "inspect_heatmap.png",
    "graph": "inspect_graph.png",
    "convergence": "inspect_convergence.png",
    "streaming": "inspect_streaming.png",
    "origin": "inspect_origin.png",
}
_TRUE, _FALSE, _MISSED = "#1f4e9c", "#e6550d", "#9a9a9a"
_KIND_STYLE = {  # alert kind -> marker, colour
    "appeared": ("^", "#1a9850"),
    "disappeared": ("v", "#d73027"),
    "changed": ("D", "#f39c12"),
}


def _rows(a: np.ndarray) -> list[list]:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(a, dtype=float)]


def report_dict(result: Inspected) -> dict:
    """The dict fedgc.report.result_json's plots read, with this result's edges and alpha (they may be re-decided)."""
    return {
        **result.data,
        "name": result.name,
        "clients": list(result.clients),
        "strength": _rows(result.strength),
        "log10_pvalue": _rows(result.log10_pvalue),
        "edges": result.edges.tolist(),
        "alpha": result.alpha,
    }


# ---------------------------------------------------------------------------------------------- graph


def circle_layout(M: int) -> np.ndarray:
    """(M, 2) node positions on the unit circle, client 0 on top, then clockwise: deterministic."""
    angle = math.pi / 2 - 2 * math.pi * np.arange(M) / max(M, 1)
    return np.column_stack([np.cos(angle), np.sin(angle)])


def _width(fraction: float, M: int) -> float:
    """Line width (points) of an arrow whose strength is `fraction` of the strongest; thinner for many clients."""
    return (0.7 + 3.8 * fraction) * min(1.0, math.sqrt(12 / max(M, 1)))


def _fit_limits(fig, ax, texts, *, margin: float) -> None:
    """Axis limits (equal aspect) that hold the unit circle and every label: text sizes are in points,
    so their extent in data units depends on the limits; a few fixed-point passes settle it. Call it
    after the suptitle and legends exist: they shape the layout."""
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    for text in texts:  # they end inside the limits: the layout must not make room for them outside
        text.set_in_layout(False)
    fig.draw_without_rendering()  # settles the constrained layout (the axes box does not depend on the limits)
    renderer = fig.canvas.get_renderer()
    for _ in range(4):
        ax.set_xlim(lo[0] - margin, hi[0] + margin)
        ax.set_ylim(lo[1] - margin, hi[1] + margin)
        ax.apply_aspect()
        boxes = [t.get_window_extent(renderer).transformed(ax.transData.inverted()) for t in texts]
        lo = np.minimum([-1.0, -1.0], np.min([[b.x0, b.y0] for b in boxes], axis=0)) if boxes else lo
        hi = np.maximum([1.0, 1.0], np.max([[b.x1, b.y1] for b in boxes], axis=0)) if boxes else hi


def _bend(a: np.ndarray, b: np.ndarray, *, reciprocal: bool, rad: float = 0.12) -> float:
    """arc3 curvature of the arrow a -> b. Its control point is mid + rad (d_y, -d_x), d = b - a: a lone
    arrow bends toward the circle's centre, away from the other nodes; the two arrows of a reciprocal
    pair keep the same rad, so they bend to opposite sides and never overlap."""
    if reciprocal:
        return rad
    d, mid = b - a, (a + b) / 2
    return rad if float(np.dot([d[1], -d[0]], -mid)) >= 0 else -rad


def graph_figure(result: Inspected):
    """The FDR edges as arrows source -> target between clients on a circle, width by strength; when
    the truth is known, true edges blue, false discoveries orange, missed true edges grey dashed.
    Self-loops (the diagonal) are not tested, so never drawn. Arrows are clipped at the node circles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyArrowPatch

    M = len(result.clients)
    pos = circle_layout(M)
    off = ~np.eye(M, dtype=bool)
    edges = result.edges & off
    truth = result.truth & off if result.truth is not None else None
    missed = truth & ~edges if truth is not None else np.zeros_like(edges)
    strengths = result.strength[edges | missed]
    top = float(np.nanmax(strengths)) if np.isfinite(strengths).any() else 1.0
    top = top if top > 0 else 1.0

    fig = _figure(8.6, 8.0)
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")
    radius = float(min(0.11, 0.8 * math.sin(math.pi / max(M, 2))))
    fontsize = 11 if M <= 12 else (9 if M <= 24 else 7)
    nodes, texts = [], []
    for k, name in enumerate(result.clients):
        circle = Circle(pos[k], radius, facecolor="#eef3fb", edgecolor="#33415c", lw=1.2, zorder=3)
        ax.add_patch(circle)
        nodes.append(circle)
        out = pos[k] * (1 + radius + 0.04)  # the name outside the circle, anchored away from it
        if M <= 12:
            ha = "center" if abs(pos[k][0]) < 0.2 else ("left" if pos[k][0] > 0 else "right")
            va = "center" if abs(pos[k][1]) < 0.5 else ("bottom" if pos[k][1] > 0 else "top")
            texts.append(ax.text(*out, name, ha=ha, va=va, fontsize=fontsize, zorder=4))
        else:  # many nodes: names along the radius, so neighbours' names cannot overlap
            angle = math.degrees(math.atan2(pos[k][1], pos[k][0]))
            left = pos[k][0] < -1e-9
            texts.append(ax.text(*out, name, ha="right" if left else "left", va="center", fontsize=fontsize,
                                 rotation=angle + 180 if left else angle, rotation_mode="anchor", zorder=4))  # fmt: skip
        if M <= 40:
            ax.text(*pos[k], str(k), ha="center", va="center", fontsize=fontsize - 2, color="#33415c", zorder=4)

    label_edges = int(edges.sum()) <= 24
    drawn = np.argwhere(edges | missed)  # (target, source) rows
    for m, n in drawn:  # arrow n -> m
        s = float(result.strength[m, n]) if np.isfinite(result.strength[m, n]) else 0.0
        width = _width(s / top, M)
        if missed[m, n]:
            colour, style, width = _MISSED, "--", 1.0
        else:
            colour, style = (_TRUE if truth is None or truth[m, n] else _FALSE), "-"
        rad = _bend(pos[n], pos[m], reciprocal=bool((edges | missed)[n, m]))
        arrow = FancyArrowPatch(
            pos[n], pos[m], patchA=nodes[n], patchB=nodes[m], shrinkA=2, shrinkB=3,
            arrowstyle="-|>", mutation_scale=9 + 2.0 * width, lw=width, ls=style, color=colour,
            connectionstyle=f"arc3,rad={rad}", zorder=2, alpha=0.9 if len(drawn) <= 60 else 0.6,
        )  # fmt: skip
        ax.add_patch(arrow)
        if label_edges and not missed[m, n]:
            mid = (pos[n] + pos[m]) / 2
            d = pos[m] - pos[n]
            at = mid + 0.5 * rad * np.array([d[1], -d[0]])  # the arc3 Bezier at t = 1/2
            ax.text(*at, f"{s:.2f}", fontsize=max(fontsize - 3, 6), ha="center", va="center", color=colour,
                    zorder=5, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))  # fmt: skip

    widths = [Line2D([], [], color=_TRUE, lw=_width(f, M), label=f"strength {f * top:.2g}") for f in (1.0, 0.5, 0.2)]
    kinds = [
        Line2D([], [], color=_TRUE, lw=2.5, label="FDR edge, true"),
        Line2D([], [], color=_FALSE, lw=2.5, label="FDR edge, not in truth"),
        Line2D([], [], color=_MISSED, lw=1.0, ls="--", label="true edge missed"),
    ]
    # legends fill column by column: interleave so the first row shows widths, the second colours
    handles = [h for pair in zip(widths, kinds) for h in pair] if truth is not None else widths
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(
        f"{result.name}: {int(edges.sum())} Granger-causal edges (Benjamini-Hochberg FDR, alpha = {result.alpha:g})\n"
        r"arrow source $\rightarrow$ target, width $\propto \|A_s^{mn}\|_F$" + (", label = strength" if label_edges else ""),
        fontsize=12,
    )  # fmt: skip
    _fit_limits(fig, ax, texts, margin=0.04)
    return fig


# ---------------------------------------------------------------------------------------------- convergence


def convergence_figure(result: Inspected):
    """Per round, both on log scales: the relative change of A_s with the tolerance, and the summed
    client loss above its smallest value (report.md's linear loss plot hides everything after round 2)."""
    from matplotlib.ticker import MaxNLocator

    history = result.data.get("history") or []
    tol = (result.data.get("server") or {}).get("tol")
    rounds = np.array([h.get("round", i + 1) for i, h in enumerate(history)], dtype=float)
    change = np.array([np.nan if h.get("change") is None else h["change"] for h in history], dtype=float)
    loss = np.array([np.nan if h.get("loss") is None else h["loss"] for h in history], dtype=float)
    fig = _figure(10.5, 4.0)
    ax_change, ax_loss = fig.subplots(1, 2)
    shown = np.isfinite(change) & (change > 0)
    ax_change.semilogy(rounds[shown], change[shown], "o-", color="#1f77b4", label="relative change")
    if tol:
        ax_change.axhline(tol, color="black", ls=":", lw=1.2, label=f"tolerance {tol:g}")
    ax_change.set_ylabel(r"$\|A_s^{(r)} - A_s^{(r-1)}\|_F \,/\, \|A_s^{(r)}\|_F$")
    ax_change.set_title("relative change of $A_s$ per round", fontsize=11)
    ax_change.legend(fontsize=8, frameon=False)
    title = "loss above its minimum"
    if np.isfinite(loss).any():
        best = int(np.nanargmin(loss))
        excess = loss - loss[best]
        keep = np.isfinite(excess) & (excess > 0)
        ax_loss.semilogy(rounds[keep], excess[keep], "o-", color="#d62728")
        title += f" ({loss[best]:.6g} at round {rounds[best]:g})"
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel(r"loss $-$ smallest loss (summed over clients)")
    ax_loss.set_title(title, fontsize=11)
    for ax in (ax_change, ax_loss):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not history:
            ax.text(0.5, 0.5, "no rounds recorded", ha="center", va="center", transform=ax.transAxes)
    status = "converged" if result.data.get("converged") else "did not converge"
    fig.suptitle(f"{result.name}: {len(history)} rounds, {status}", fontsize=12)
    return fig


# ---------------------------------------------------------------------------------------------- streaming


def streaming_figure(result: Inspected, *, featured: int = 8):
    """Edge strength per window (at its end sample) for the `featured` strongest pairs that are ever an
    edge or alerted (solid where an edge, dotted where not; other pairs faint grey), alerts marked by
    kind; below, the number of edges per window with the alert times."""
    from matplotlib.lines import Line2D

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

    fig = _figure(11.0, 6.6)
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
        ax_count.scatter([a.time], [count[k]], marker=marker, s=50, c=colour, edgecolors="black", linewidths=0.6, zorder=5)
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
    fig = _figure(11.0, 1.0 + 4.2 * n)
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
            k = int(round(first))
            y = entry.score[k] if 0 <= k < entry.score.size and np.isfinite(entry.score[k]) else o.threshold
            ax.axvline(first, color=colour, ls=":", lw=1.0, zorder=1)
            ax.scatter([first], [y], s=60, color=colour, edgecolors="black", linewidths=0.8, zorder=5)
    threshold = ax.axhline(o.threshold, color="black", ls="--", lw=1.2, label=f"threshold {o.threshold:g}", zorder=4)
    extra = [threshold]
    if o.start is not None:
        extra.append(ax.axvline(o.start, color="0.3", lw=3.0, alpha=0.35, zorder=1, label=f"fault start t = {o.start:g}"))
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


def write_figures(result: Inspected, *, out_dir: str | Path) -> dict[str, Path]:
    """heatmap, graph, convergence, and streaming / origin when the result has them, as FIGURE_FILES
    PNGs in out_dir (created; the run's own gc_heatmap.png and convergence.png are left alone)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / v for k, v in FIGURE_FILES.items()}
    data = report_dict(result)
    plot_heatmap(data, paths["heatmap"])
    graph_figure(result).savefig(paths["graph"], dpi=110)
    convergence_figure(result).savefig(paths["convergence"], dpi=110)
    if result.streaming is not None:
        streaming_figure(result).savefig(paths["streaming"], dpi=110)
    else:
        del paths["streaming"]
    if result.origins:
        origin_figure(result).savefig(paths["origin"], dpi=110)
    else:
        del paths["origin"]
    return paths
