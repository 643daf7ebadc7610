"""inspect_graph.png: the FDR edges as arrows source -> target, laid out by causal order.

Layout (`graph_layout`): each client starts in the column of its layer, the topological generation of
its strongly connected component in the graph of drawn edges (sources left, sinks right; the clients
of one feedback loop share a layer); Kamada-Kawai then spreads the nodes so that linked clients sit
close and no edge has to pass through the middle of the figure, as every chord of a circle did.
Strength labels go on the strongest edges only (MAX_STRENGTH_LABELS), each at the first point along
its arrow where it overlaps no other label and no node, as measured with the renderer's text extents;
every strength is in the exports (edges.csv, graph.graphml).
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch

from fedgc.report.inspected import Inspected
from fedgc.report.plots import new_figure

MAX_STRENGTH_LABELS = 8
_TRUE, _FALSE, _MISSED = "#1f4e9c", "#e6550d", "#9a9a9a"
_RAD = 0.15  # arc3 curvature of the two arrows of a reciprocal pair (opposite sides); lone arrows are straight
_LABEL_AT = (0.5, 0.38, 0.62, 0.28, 0.72)  # where along an arrow a strength label may go, in this order


def drawn_edges(result: Inspected) -> tuple[np.ndarray, np.ndarray]:
    """(edges, missed): (M, M) bool [target, source]: FDR edges, and true edges that were not found."""
    off = ~np.eye(len(result.clients), dtype=bool)
    edges = result.edges & off
    missed = result.truth & off & ~edges if result.truth is not None else np.zeros_like(edges)
    return edges, missed


def graph_layout(result: Inspected) -> np.ndarray:
    """(M, 2) node positions in [-1, 1]^2, deterministic: layers by causal order, refined by Kamada-Kawai."""
    M = len(result.clients)
    edges, missed = drawn_edges(result)
    g = nx.DiGraph()
    g.add_nodes_from(range(M))
    g.add_edges_from((int(n), int(m)) for m, n in np.argwhere(edges | missed))  # source -> target
    if M <= 2:
        return np.array([[-1.0, 0.0], [1.0, 0.0]])[:M]
    condensed = nx.condensation(g)
    layer = np.zeros(M)
    for depth, generation in enumerate(nx.topological_generations(condensed)):
        for component in generation:
            layer[list(condensed.nodes[component]["members"])] = depth
    start = nx.circular_layout(g)  # no causal order at all (one feedback loop): Kamada-Kawai's own start
    if layer.max() > 0:  # one column per layer, zigzagged so that Kamada-Kawai can leave the column
        for depth in np.unique(layer):
            members = np.flatnonzero(layer == depth)
            for k, node in enumerate(members):
                start[int(node)] = (float(depth) + 0.4 * (k % 2 - 0.5), float(k - (len(members) - 1) / 2))
    undirected = g.to_undirected()
    hops = dict(nx.shortest_path_length(undirected))
    far = 1 + max((d for row in hops.values() for d in row.values()), default=1)
    distance = {a: {b: hops[a].get(b, far) for b in range(M)} for a in range(M)}
    pos = nx.kamada_kawai_layout(undirected, dist=distance, pos=start)
    xy = np.array([pos[k] for k in range(M)], dtype=float)
    xy -= xy.mean(axis=0)
    xy = xy @ np.linalg.svd(xy, full_matrices=False)[2].T  # principal axes: the longer extent across the figure
    flow = sum((xy[t] - xy[s] for s, t in g.edges), np.zeros(2))
    if layer.max() > 0 and flow[0] < 0:  # a causal order: causes on the left
        xy[:, 0] = -xy[:, 0]
    xy -= (xy.max(axis=0) + xy.min(axis=0)) / 2
    return xy / max(float(np.abs(xy).max()), 1e-12)


def _free_side(pos: np.ndarray, k: int, drawn: np.ndarray) -> np.ndarray:
    """The unit direction from node k, among 8 compass directions, farthest in angle from its edges (ties:
    the one pointing away from the other nodes), where its name goes."""
    neighbours = np.flatnonzero(drawn[k] | drawn[:, k])
    edge_angles = np.arctan2(*(pos[neighbours] - pos[k])[:, ::-1].T) if neighbours.size else np.zeros(0)
    away = pos[k] - pos.mean(axis=0)
    best, choice = None, np.array([0.0, 1.0])
    for angle in np.arange(8) * np.pi / 4:
        direction = np.array([np.cos(angle), np.sin(angle)])
        gap = np.min(np.abs(np.angle(np.exp(1j * (edge_angles - angle))))) if edge_angles.size else np.pi
        score = (round(float(gap), 6), float(direction @ away))
        if best is None or score > best:
            best, choice = score, direction
    return choice


def _width(fraction: float, M: int) -> float:
    """Line width (points) of an arrow whose strength is `fraction` of the strongest; thinner for many clients."""
    return (0.7 + 3.8 * fraction) * min(1.0, math.sqrt(12 / max(M, 1)))


def _along(a: np.ndarray, b: np.ndarray, rad: float, t: float) -> np.ndarray:
    """The point at parameter t of matplotlib's arc3 curve from a to b (a quadratic Bezier whose control
    point is the midpoint moved by rad * (d_y, -d_x), d = b - a)."""
    d = b - a
    control = (a + b) / 2 + rad * np.array([d[1], -d[0]])
    return (1 - t) ** 2 * a + 2 * t * (1 - t) * control + t**2 * b


def _on_circles(a: np.ndarray, b: np.ndarray, rad: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the arc3 curve a -> b leaves the node circle at a and meets the one at b: each end moved by
    `radius` along the curve's tangent there (towards its control point). Computed here, because clipping
    every arrow at its node patches costs matplotlib a Bezier search per arrow and draw (minutes for 30 sites)."""
    d = b - a
    control = (a + b) / 2 + rad * np.array([d[1], -d[0]])
    out_a, in_b = control - a, control - b
    return a + radius * out_a / np.hypot(*out_a), b + radius * in_b / np.hypot(*in_b)


def _fit_limits(fig, ax, texts, *, lo: np.ndarray, hi: np.ndarray, margin: float) -> None:
    """Axis limits (equal aspect) that hold the box [lo, hi] and every text: text sizes are in points, so
    their extent in data units depends on the limits; a few fixed-point passes settle it. Call it after
    the suptitle and legends exist: they shape the layout."""
    box_lo, box_hi = lo.copy(), hi.copy()
    for text in texts:  # they end inside the limits: the layout must not make room for them outside
        text.set_in_layout(False)
    fig.draw_without_rendering()  # settles the constrained layout (the axes box does not depend on the limits)
    renderer = fig.canvas.get_renderer()
    for _ in range(4):
        ax.set_xlim(lo[0] - margin, hi[0] + margin)
        ax.set_ylim(lo[1] - margin, hi[1] + margin)
        ax.apply_aspect()
        boxes = [t.get_window_extent(renderer).transformed(ax.transData.inverted()) for t in texts]
        if boxes:
            lo = np.minimum(box_lo, np.min([[b.x0, b.y0] for b in boxes], axis=0))
            hi = np.maximum(box_hi, np.max([[b.x1, b.y1] for b in boxes], axis=0))


def graph_figure(result: Inspected):
    """The FDR edges as arrows source -> target, width by strength; when the truth is known, true edges
    blue, false discoveries orange, missed true edges grey dashed. Self-loops (the diagonal) are not
    tested, so never drawn. Arrows run from node circle to node circle; the strongest edges carry their
    strength, placed where no two labels overlap."""
    M = len(result.clients)
    pos = graph_layout(result)
    edges, missed = drawn_edges(result)
    drawn = edges | missed
    strengths = result.strength[drawn]
    top = float(np.nanmax(strengths)) if np.isfinite(strengths).any() else 1.0
    top = top if top > 0 else 1.0
    gaps = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1)) + np.eye(M) * 9
    radius = float(min(0.11, 0.3 * gaps.min())) if M > 1 else 0.11

    fig = new_figure(9.6, 7.6)
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")
    fontsize = 11 if M <= 12 else (9 if M <= 24 else 7)
    nodes, names = [], []
    for k, name in enumerate(result.clients):
        circle = Circle(pos[k], radius, facecolor="#eef3fb", edgecolor="#33415c", lw=1.2, zorder=3)
        ax.add_patch(circle)
        nodes.append(circle)
        away = _free_side(pos, k, drawn)
        at = pos[k] + away * (radius * 1.25)  # the name outside its node, where no edge of it leaves
        ha = "center" if abs(away[0]) < 0.35 else ("left" if away[0] > 0 else "right")
        va = "center" if abs(away[1]) < 0.35 else ("bottom" if away[1] > 0 else "top")
        names.append(ax.text(*at, name, ha=ha, va=va, fontsize=fontsize, zorder=4,
                             bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7)))  # fmt: skip
        ax.text(*pos[k], str(k), ha="center", va="center", fontsize=max(fontsize - 3, 5), color="#33415c", zorder=4)

    arrows = []  # (strength, source position, target position, rad, colour) of the FDR edges
    for m, n in np.argwhere(drawn):  # arrow n -> m
        s = float(result.strength[m, n]) if np.isfinite(result.strength[m, n]) else 0.0
        width = _width(s / top, M)
        if missed[m, n]:
            colour, style, width = _MISSED, "--", 1.0
        else:
            colour, style = (_TRUE if result.truth is None or result.truth[m, n] else _FALSE), "-"
            arrows.append((s, pos[n], pos[m], _RAD if drawn[n, m] else 0.0, colour))
        start, end = _on_circles(pos[n], pos[m], _RAD if drawn[n, m] else 0.0, radius)
        ax.add_patch(FancyArrowPatch(
            start, end, shrinkA=1, shrinkB=2, arrowstyle="-|>", mutation_scale=9 + 2.0 * width, lw=width, ls=style,
            color=colour, connectionstyle=f"arc3,rad={_RAD if drawn[n, m] else 0.0}", zorder=2,
            alpha=0.9 if drawn.sum() <= 60 else 0.6,
        ))  # fmt: skip

    widths = [Line2D([], [], color=_TRUE, lw=_width(f, M), label=f"strength {f * top:.2g}") for f in (1.0, 0.5, 0.2)]
    kinds = [
        Line2D([], [], color=_TRUE, lw=2.5, label="FDR edge, true"),
        Line2D([], [], color=_FALSE, lw=2.5, label="FDR edge, not in truth"),
        Line2D([], [], color=_MISSED, lw=1.0, ls="--", label="true edge missed"),
    ]
    # legends fill column by column: interleave so the first row shows widths, the second colours
    handles = [h for pair in zip(widths, kinds) for h in pair] if result.truth is not None else widths
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    n_labels = min(len(arrows), MAX_STRENGTH_LABELS)
    labelled = f"; label: strength of the {n_labels} strongest" if n_labels else ""
    fig.suptitle(
        f"{result.name}: {int(edges.sum())} Granger-causal edges (Benjamini-Hochberg FDR, alpha = {result.alpha:g})\n"
        r"arrow source $\rightarrow$ target, width $\propto \|A_s^{mn}\|_F$" + labelled,
        fontsize=12,
    )  # fmt: skip
    _fit_limits(fig, ax, names, lo=pos.min(axis=0) - radius, hi=pos.max(axis=0) + radius, margin=0.04)
    strongest = sorted(arrows, key=lambda a: -a[0])[:n_labels]
    _place_strength_labels(fig, ax, strongest, [*nodes, *names], fontsize=max(fontsize - 3, 6))
    return fig


def _place_strength_labels(fig, ax, arrows, obstacles, *, fontsize: float) -> list:
    """A label per arrow (strongest first) at the first point of _LABEL_AT where its box overlaps no label
    placed before and no obstacle (nodes, names); an arrow with no such point goes unlabelled. Returns the
    labels."""
    renderer = fig.canvas.get_renderer()
    taken = [o.get_window_extent(renderer) for o in obstacles]
    placed = []
    for strength, a, b, rad, colour in arrows:
        text = ax.text(0, 0, f"{strength:.2f}", fontsize=fontsize, ha="center", va="center", color=colour, zorder=5,
                       gid="strength", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))  # fmt: skip
        text.set_in_layout(False)
        for t in _LABEL_AT:
            text.set_position(_along(a, b, rad, t))
            box = text.get_window_extent(renderer).padded(2.0)
            if not any(box.overlaps(other) for other in taken):
                taken.append(box)
                placed.append(text)
                break
        else:
            text.remove()
    return placed
