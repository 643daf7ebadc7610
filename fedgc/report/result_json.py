"""Turn a RunResult into files: result.json, gc_heatmap.png, convergence.png, report.md.

The plots and the Markdown report are drawn from the JSON-ready dict (`result_dict`), so a
result read back with `read_result` can be re-rendered (`fedgc inspect`) without the run.
Matrices are indexed [target m][source n]; NaN becomes null; diagonals are null (not tested).
Pairs not estimated because a client dropped out (server.on_dropout: continue) are marked in the
"unknown" matrix, and their strength, p-value and edge are null, never 0 or false; "resilience"
says which clients dropped at which round and whether the run was resumed from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fedgc.errors import FedGCError

from fedgc.analysis.origin import origin_markdown
from fedgc.analysis.stream import StreamRecord
from fedgc.app.config import to_plain

if TYPE_CHECKING:  # fedgc.app.runner imports every engine's dependencies; the report needs none of them
    from fedgc.protocol.state import RoundRecord
    from fedgc.app.results import RunResult

RESULT_FILE = "result.json"
HEATMAP_FILE = "gc_heatmap.png"
CONVERGENCE_FILE = "convergence.png"
REPORT_FILE = "report.md"

A_S_NOTE = (
    "A_s is the server's (D, D) matrix of cross-client couplings indexed [target state][source state]; "
    "its diagonal blocks hold the jointly re-estimated correction to each client's local A^{mm} "
    "(zero when server.diagonal is 'fixed')."
)

KEYS = (
    "fedgc_version", "name", "engine", "seed", "clients", "dims",
    "strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue", "edges", "alpha",
    "A_s", "A_s_note", "server", "rounds", "converged", "history",
    "evaluation", "timings", "communication", "raw_data_bytes", "privacy", "data", "unknown", "resilience",
)  # fmt: skip
EVALUATION_KEYS = (
    "auroc", "auprc", "precision", "recall", "f1",
    "relative_error_vs_truth", "relative_error_vs_oracle", "oracle_relative_error_vs_truth",
    "oracle_rounds", "truth_edges",
)  # fmt: skip

_MATRICES = ("strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue")
_MAX_TABLE_ROWS = 20
_TICK_LABEL_LIMIT = 30  # above this many clients the heatmap shows client indices, not names


# ---------------------------------------------------------------------------------------------- JSON


def _version() -> str:
    import fedgc

    return str(getattr(fedgc, "__version__", "0.1.0"))


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy to lists/scalars, non-finite floats to None, paths to str."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple: its fields by name
        return _jsonable(value._asdict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def _matrix(a: np.ndarray, *, kind: type = float) -> list[list[Any]]:
    """(M, M) [target][source] with None on the diagonal and for non-finite entries."""
    a = np.asarray(a)
    rows = []
    for m in range(a.shape[0]):
        row = []
        for n in range(a.shape[1]):
            v = a[m, n]
            row.append(None if m == n or not np.isfinite(v) else kind(v))
        rows.append(row)
    return rows


def _optional(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def result_dict(result: RunResult) -> dict:
    """The JSON-ready record of a run (layout of DESIGN.md section 3)."""
    fit, gc, cfg = result.fit, result.fit.gc, result.config
    ev = result.evaluation
    scores, truth = ev.scores, ev.truth
    M = len(gc.clients)
    unknown = np.zeros((M, M), dtype=bool) if gc.unknown is None else np.asarray(gc.unknown, dtype=bool)
    evaluation = {
        "auroc": _optional(scores.auroc) if scores else None,
        "auprc": _optional(scores.auprc) if scores else None,
        "precision": _optional(scores.precision) if scores else None,
        "recall": _optional(scores.recall) if scores else None,
        "f1": _optional(scores.f1) if scores else None,
        "relative_error_vs_truth": _optional(ev.error_vs_truth),
        "relative_error_vs_oracle": _optional(ev.error_vs_oracle),
        "oracle_relative_error_vs_truth": _optional(ev.oracle_error_vs_truth),
        "oracle_rounds": len(ev.oracle_history) if ev.oracle_A is not None else None,
        "truth_edges": np.asarray(truth.edges, dtype=bool).tolist() if truth is not None else None,
    }
    out = {
        "fedgc_version": _version(),
        "name": cfg.name,
        "engine": result.engine,
        "seed": int(cfg.seed),
        "clients": [str(c) for c in gc.clients],
        "dims": [int(d) for d in gc.dims],
        **{k: _matrix(getattr(gc, k), kind=int if k == "dof" else float) for k in _MATRICES},
        "edges": [[None if unknown[m, n] else bool(gc.edges[m, n]) for n in range(M)] for m in range(M)],
        "alpha": float(gc.alpha),
        "A_s": _jsonable(np.asarray(fit.A_s, dtype=float)),
        "A_s_note": A_S_NOTE,
        "server": _jsonable(to_plain(cfg.server)),
        "rounds": int(fit.rounds),
        "converged": bool(fit.converged),
        "history": [{"round": int(r.round), "loss": _optional(r.loss), "change": _optional(r.change)} for r in fit.history],
        "evaluation": evaluation,
        "timings": _jsonable(dict(result.timings)),
        "communication": _jsonable(dict(result.communication or {})),
        "raw_data_bytes": int(result.raw_data_bytes),
        "privacy": _jsonable(dict(result.privacy or {"enabled": False})),
        "data": {} if result.data is None else {"align": result.align, "clients": _jsonable(result.data)},
        "unknown": unknown.tolist(),
        "resilience": {
            "on_dropout": cfg.server.on_dropout,
            "dropouts": [{"client": d.client, "round": int(d.round), "reason": d.reason} for d in fit.dropouts],
            "resumed_from_round": fit.resumed_from,
        },
    }
    assert tuple(out) == KEYS
    if result.tep is not None:
        out["flowsheet"] = _jsonable(result.tep.flowsheet)
        if result.tep.origin:
            out["origin"] = _jsonable(result.tep.origin)
        if result.tep.fault_stream is not None:
            out["fault_stream"] = _jsonable(result.tep.fault_stream)
    if result.streaming is not None:
        out["streaming"] = _jsonable(streaming_json(result.streaming))
    return out


def streaming_json(record: StreamRecord) -> dict[str, Any]:
    """The "streaming" key of result.json (numpy arrays; the report writer makes them JSON)."""
    sc, stream, evaluation = record.settings, record.result, record.evaluation
    names = stream.clients
    windows = [
        {
            "index": w.index, "start": w.start, "end": w.end,
            "strength": w.gc.strength, "pvalue": w.gc.pvalue, "edges": w.gc.edges,
            "log10_pvalue": w.gc.log10_pvalue, "effective_sample_size": w.effective_size, "memory": w.memory,
            "rounds": w.rounds, "exchanges": w.exchanges, "converged": w.converged, "reset": w.reset,
            "change_log10_pvalue": None if w.change is None else w.change.log10_pvalue,
        }  # fmt: skip
        for w in stream.windows
    ]
    alerts = [
        {
            "window": a.window, "time": a.time, "target": names[a.target], "source": names[a.source], "kind": a.kind,
            "strength_before": a.strength_before, "strength_after": a.strength_after,
            "pvalue": 10.0**a.log10_pvalue, "log10_pvalue": a.log10_pvalue,
        }  # fmt: skip
        for a in stream.alerts
    ]
    last_end = stream.windows[-1].end if stream.windows else 0
    return {
        "window": sc.window, "step": sc.step, "forgetting": sc.forgetting, "alert_alpha": sc.alert_alpha,
        "reset_on_alert": sc.reset_on_alert, "max_rounds": sc.max_rounds, "tol": sc.tol,
        "steady_effective_sample_size": sc.steady_effective_size(),
        "n_steps": stream.n_steps, "unprocessed_steps": stream.n_steps - last_end,
        "windows": windows, "alerts": alerts, "evaluation": evaluation,
    }  # fmt: skip


def dumps(data: dict) -> str:
    """JSON text of a result dict: one key per line, a matrix row or a history entry per line."""
    return _dump(data, 0) + "\n"


def _dump(value: Any, depth: int) -> str:
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict) and value and depth < 2:
        items = [f"{inner}{json.dumps(str(k))}: {_dump(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and all(isinstance(v, (list, dict)) for v in value):
        rows = [inner + json.dumps(v, allow_nan=False) for v in value]
        return "[\n" + ",\n".join(rows) + "\n" + pad + "]"
    return json.dumps(value, allow_nan=False)


def read_result(path_or_dir: str | Path) -> dict:
    """A result.json (or the output folder holding one) read back as the dict `result_dict` wrote."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / RESULT_FILE
    if not path.is_file():
        raise FedGCError(f"no result at {path} (expected a {RESULT_FILE} or the output folder holding one)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FedGCError(f"{path} is not a valid fedgc result (invalid JSON: {exc})") from exc
    missing = [k for k in ("clients", "dims", "strength", "pvalue", "edges") if not isinstance(data, dict) or k not in data]
    if missing:
        raise FedGCError(f"{path} is not a fedgc result: missing {missing}")
    return data


def write_outputs(result: RunResult, out_dir: str | Path) -> dict[str, Path]:
    """Write result.json, gc_heatmap.png, convergence.png and report.md into out_dir (created).
    Returns {"json", "heatmap", "convergence", "report"} -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = result_dict(result)
    paths = {
        "json": out_dir / RESULT_FILE,
        "heatmap": out_dir / HEATMAP_FILE,
        "convergence": out_dir / CONVERGENCE_FILE,
        "report": out_dir / REPORT_FILE,
    }
    paths["json"].write_text(dumps(data))
    plot_heatmap(data, paths["heatmap"])
    plot_convergence(data, paths["convergence"], oracle_history=result.evaluation.oracle_history)
    paths["report"].write_text(markdown_report(data, images={k: paths[k].name for k in ("heatmap", "convergence")}))
    return paths


# ---------------------------------------------------------------------------------------------- plots


def _array(rows: Sequence[Sequence[Any]] | None, dtype: type = float) -> np.ndarray | None:
    if rows is None:
        return None
    if dtype is bool:
        return np.array([[bool(v) for v in row] for row in rows], dtype=bool)
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def _figure(width: float, height: float):
    """A figure on the Agg canvas directly: headless, and pyplot's global backend is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _set_client_ticks(ax, clients: Sequence[str]) -> None:
    from matplotlib.ticker import MaxNLocator

    M = len(clients)
    if M > _TICK_LABEL_LIMIT:
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


def plot_heatmap(data: dict, path: str | Path) -> Path:
    """Panels indexed [target m, source n]: block strength ||A_s^{mn}||_F and -log10 p, with FDR edges
    dotted, true edges outlined when known (for M > 30 a third panel compares edges with truth instead),
    diagonal grey."""
    import matplotlib
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    clients = list(data["clients"])
    M = len(clients)
    big = M > _TICK_LABEL_LIMIT
    off = ~np.eye(M, dtype=bool)
    strength = _array(data["strength"])
    nlogp = -_array(data["log10_pvalue"])
    edges = _array(data["edges"], bool) & off
    evaluation = data.get("evaluation") or {}
    truth = _array(evaluation.get("truth_edges"), bool)
    truth = truth & off if truth is not None else None
    alpha = data.get("alpha")
    auroc = evaluation.get("auroc")
    grey, true_colour = "#cfcfcf", "#00a651"
    edge_panel = big  # above 30 clients per-cell markers turn to speckle: edges get a panel of their own

    side = float(np.clip(3.6 + 0.045 * M, 4.2, 7.5))
    n_panels = 3 if edge_panel else 2
    fig = _figure(n_panels * side + 1.1 * n_panels, side + 1.5)
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
        _set_client_ticks(ax, clients)
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
            boxes = [Rectangle((n - 0.5 + inset, m - 0.5 + inset), 1 - 2 * inset, 1 - 2 * inset) for m, n in zip(tm, tn)]
            ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=true_colour, linewidth=box_lw, zorder=3))
        if edges.any() and not edge_panel:
            em, en = np.nonzero(edges)
            ax.scatter(en, em, s=dot_size, c="white", edgecolors="black", linewidths=dot_lw, zorder=4)
        frame(ax, title)

    handles = [Patch(facecolor=grey, edgecolor="none", label="diagonal (not tested)")]
    fdr_label = f"FDR edge (Benjamini-Hochberg, alpha = {alpha:g})" if alpha else "FDR edge"
    if edge_panel:
        ax = axes[2]
        if truth is not None:  # neither, true positive, false positive, missed
            colours, labels = ["#ffffff", "#1a9850", "#f46d43", "#a6bddb"], ["true positive", "false positive", "missed"]
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
        f"{data.get('name', 'run')}: block Granger causality, {M} clients, "
        f"{int(edges.sum())} of {M * (M - 1)} ordered pairs are FDR edges"
    )
    if auroc is not None:
        title += f"  |  AUROC {auroc:.3f}"
    fig.suptitle(title, fontsize=12)
    path = Path(path)
    fig.savefig(path, dpi=110 if not big else 120)
    return path


def plot_convergence(data: dict, path: str | Path, *, oracle_history: Sequence[RoundRecord] | None = None) -> Path:
    """Relative change of A_s per round (log scale, with the tolerance) and the summed client loss per round."""
    from matplotlib.ticker import MaxNLocator

    history = data.get("history") or []
    tol = (data.get("server") or {}).get("tol")
    fig = _figure(10.5, 4.0)
    ax_change, ax_loss = fig.subplots(1, 2)
    rounds = np.array([h["round"] for h in history], dtype=float)
    change = np.array([np.nan if h["change"] is None else h["change"] for h in history], dtype=float)
    loss = np.array([np.nan if h["loss"] is None else h["loss"] for h in history], dtype=float)
    floor = 1e-16
    positive = change[np.isfinite(change) & (change > 0)]
    if positive.size:
        floor = max(1e-16, float(positive.min()) * 1e-2)
    if history:
        ax_change.semilogy(rounds, np.maximum(change, floor), "o-", color="#1f77b4", label="federated")
        ax_loss.plot(rounds, loss, "o-", color="#d62728")
    if oracle_history:
        o_rounds = [r.round for r in oracle_history]
        o_change = np.maximum(np.array([r.change for r in oracle_history], dtype=float), floor)
        ax_change.semilogy(o_rounds, o_change, "s--", color="#7f7f7f", ms=4, label="oracle (pooled data)")
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
    status = "converged" if data.get("converged") else "did not converge"
    fig.suptitle(f"{data.get('name', 'run')}: {data.get('rounds', len(history))} rounds, {status}", fontsize=12)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------------------------- Markdown


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.{digits}g}"


def format_pvalue(log10_p: float | None) -> str:
    """A p-value from its log10, so it stays readable below float underflow (e.g. 3.2e-412)."""
    if log10_p is None or not math.isfinite(log10_p):
        return "n/a"
    if log10_p > -3:
        return f"{10.0**log10_p:.3g}"
    e = math.floor(log10_p)
    mantissa = 10.0 ** (log10_p - e)
    if round(mantissa, 1) >= 10:
        mantissa, e = mantissa / 10, e + 1
    return f"{mantissa:.1f}e{e}"


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return _fmt(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _metric(name: str, v: Any) -> str:
    if v is None or isinstance(v, int) or "error" in name:
        return _fmt(v)
    return f"{v:.3f}"


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def strongest_edges(data: dict, limit: int = _MAX_TABLE_ROWS) -> list[dict]:
    """Ordered pairs sorted by p-value (smallest first), then strength (largest first)."""
    M = len(data["clients"])
    rows = []
    for m in range(M):
        for n in range(M):
            if m == n:
                continue
            logp = data["log10_pvalue"][m][n]
            strength = data["strength"][m][n]
            rows.append({"target": m, "source": n, "log10_p": logp, "strength": strength})
    rows.sort(key=lambda r: (math.inf if r["log10_p"] is None else r["log10_p"], -(r["strength"] or 0.0)))
    return rows[:limit]


def markdown_report(data: dict, images: dict[str, str] | None = None) -> str:
    """A short Markdown report of a result dict; `images` maps heatmap/convergence to relative paths."""
    images = images if images is not None else {"heatmap": HEATMAP_FILE, "convergence": CONVERGENCE_FILE}
    clients, dims = [_md(c) for c in data["clients"]], list(data["dims"])
    M = len(clients)
    ev = data.get("evaluation") or {}
    truth = ev.get("truth_edges")
    edges = data["edges"]
    timings = data.get("timings") or {}
    n_edges = sum(bool(edges[m][n]) for m in range(M) for n in range(M) if m != n)

    lines = [f"# fedgc report: {data.get('name', 'run')}", ""]
    shown = ", ".join(f"{c} ({d})" for c, d in zip(clients, dims)) if M <= 12 else (
        ", ".join(f"{c} ({d})" for c, d in zip(clients[:6], dims[:6])) + f", ... {clients[-1]} ({dims[-1]})"
    )
    total_time = timings.get("total_s", sum(v for v in timings.values() if isinstance(v, (int, float))))
    time_parts = ", ".join(
        f"{k.removesuffix('_s')} {_fmt(v, 3)} s" for k, v in timings.items() if k != "total_s" and v is not None
    )
    summary = [
        ("engine", data.get("engine")),
        ("clients (D_m)", f"{M}: {shown}"),
        ("total state dimension D", sum(dims)),
        ("server", server_text(data)),
        ("rounds", rounds_text(data)),
        ("FDR edges", f"{n_edges} of {M * (M - 1)} ordered pairs at alpha = {_fmt(data.get('alpha'))}"),
        ("time", f"{_fmt(total_time, 3)} s" + (f" ({time_parts})" if time_parts else "") if timings else "n/a"),
        ("seed", data.get("seed")),
        ("fedgc version", data.get("fedgc_version")),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary] + [""]
    if images.get("heatmap"):
        lines += [f"![Granger causality heatmap]({images['heatmap']})", ""]

    rows = strongest_edges(data)
    lines += [f"## Strongest edges (top {len(rows)} of {M * (M - 1)} pairs, by p-value)", ""]
    header = ["source -> target", "strength", "statistic", "dof", "p-value", "FDR edge"]
    if truth is not None:
        header.append("true edge")
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 4 + [":---:"] * (len(header) - 5)) + "|"]
    for r in rows:
        m, n = r["target"], r["source"]
        cells = [
            f"{clients[n]} -> {clients[m]}",
            _fmt(r["strength"]),
            _fmt(data["statistic"][m][n], 5),
            _fmt(data["dof"][m][n]),
            format_pvalue(r["log10_p"]),
            "unknown" if edges[m][n] is None else "yes" if edges[m][n] else "no",
        ]
        if truth is not None:
            cells.append("yes" if truth[m][n] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    lines += ["## Evaluation", ""]
    known = [k for k in EVALUATION_KEYS if k != "truth_edges" and ev.get(k) is not None]
    if truth is None and not known:
        lines += ["No ground truth or oracle for this run.", ""]
    else:
        if truth is not None:
            n_true = sum(bool(truth[m][n]) for m in range(M) for n in range(M) if m != n)
            tp = sum(bool(truth[m][n] and edges[m][n]) for m in range(M) for n in range(M) if m != n)
            lines += [f"Against the known truth: {n_true} true edges; {n_edges} FDR edges, of which {tp} are true.", ""]
        table = [
            ("AUROC (ranking by p-value)", ev.get("auroc")),
            ("AUPRC", ev.get("auprc")),
            ("precision", ev.get("precision")),
            ("recall", ev.get("recall")),
            ("F1", ev.get("f1")),
            ("relative error of A_s vs truth", ev.get("relative_error_vs_truth")),
            ("relative error of A_s vs oracle", ev.get("relative_error_vs_oracle")),
            ("oracle's relative error vs truth", ev.get("oracle_relative_error_vs_truth")),
            ("oracle rounds", ev.get("oracle_rounds")),
        ]
        always = ("AUROC (ranking by p-value)", "AUPRC", "F1") if truth is not None else ()
        table = [(k, v) for k, v in table if v is not None or k in always]
        lines += ["| metric | value |", "|---|---:|"] + [f"| {k} | {_metric(k, v)} |" for k, v in table] + [""]
        lines += ["Relative errors are `||X - reference||_F / ||reference||_F` over the off-diagonal blocks.", ""]

    comm = data.get("communication") or {}
    raw = data.get("raw_data_bytes")
    if comm or raw:
        lines += ["## Communication", ""]
        if comm:
            lines += ["| quantity | value |", "|---|---:|"]
            for k, v in comm.items():
                if k == "per_exchange":
                    continue
                if isinstance(v, str):
                    shown_v = v
                elif "bytes" in k:
                    shown_v = _bytes(v)
                else:
                    shown_v = _fmt(v) if not isinstance(v, (dict, list)) else json.dumps(v)
                lines.append(f"| {_md(k)} | {_md(shown_v)} |")
            lines.append("")
            lines += _per_exchange_table(comm.get("per_exchange") or [])
        if raw:
            lines += [f"Raw client data that never left the clients: {_bytes(raw)}.", ""]

    lines += _privacy_section(data.get("privacy") or {})
    lines += _data_section(data.get("data") or {})
    lines += _tep_sections(data)
    if data.get("streaming") is not None:
        from fedgc.report.streaming_markdown import streaming_section

        lines += streaming_section(data["streaming"], list(data["clients"]))
    lines += _resilience_section(data.get("resilience") or {}, M)
    lines += ["## Convergence", ""]
    history = data.get("history") or []
    if history:
        last = history[-1]
        lines += [f"Final round {last['round']}: loss {_fmt(last['loss'], 6)}, relative change {_fmt(last['change'])}.", ""]
    if images.get("convergence"):
        lines += [f"![Convergence]({images['convergence']})", ""]
    lines += ["Matrices in result.json are indexed [target m][source n]; " + A_S_NOTE, ""]
    return "\n".join(lines)


def _stream(data: Mapping) -> Mapping | None:
    """result.json's "streaming" section when the run processed windows, else None."""
    stream = data.get("streaming")
    return stream if isinstance(stream, Mapping) and stream.get("windows") else None


def server_text(data: Mapping) -> str:
    """The server settings; a streaming run's rounds and tolerance are its per-window ones."""
    server = data.get("server") or {}
    stream = _stream(data)
    limits = server if stream is None else {**server, **{k: stream[k] for k in ("tol", "max_rounds") if k in stream}}
    return (f"rule {server.get('rule')}, diagonal {server.get('diagonal')}, penalty {_fmt(server.get('penalty'))}, "
            f"tol {_fmt(limits.get('tol'))}, max_rounds {limits.get('max_rounds')}"
            + (" per window" if stream is not None else ""))  # fmt: skip


def windows_converged(data: Mapping) -> tuple[int, int] | None:
    """A streaming run's (windows whose rounds converged, windows); None for a batch run."""
    stream = _stream(data)
    if stream is None:
        return None
    return sum(bool(w.get("converged")) for w in stream["windows"]), len(stream["windows"])


def rounds_text(data: Mapping) -> str:
    """'8 (converged)', or for a streaming run the rounds over all windows and how many converged."""
    counts = windows_converged(data)
    if counts is None:
        return f"{data.get('rounds')} ({'converged' if data.get('converged') else 'not converged'})"
    return f"{data.get('rounds')} over {counts[1]} windows ({counts[0]} of {counts[1]} windows converged)"


def _per_exchange_table(rows: list[dict], *, head: int = 15, tail: int = 5) -> list[str]:
    """Bytes each way per exchange; a long run shows its first `head` and last `tail` exchanges."""
    if not rows:
        return []
    lines = ["| exchange | request | to clients | to server | seconds |", "|---:|---|---:|---:|---:|"]
    shown = rows if len(rows) <= head + tail else [*rows[:head], None, *rows[-tail:]]
    for r in shown:
        if r is None:
            lines.append(f"| ... | {len(rows) - head - tail} more in result.json | | | |")
            continue
        lines.append(f"| {r.get('exchange', '')} | {_md(str(r.get('request', '')))} | {_bytes(r.get('to_clients', 0))} | "
                     f"{_bytes(r.get('to_server', 0))} | {_fmt(r.get('seconds'))} |")  # fmt: skip
    return [*lines, ""]


def _tep_sections(data: dict) -> list[str]:
    """The flowsheet comparison and fault-origin tables (fedgc.data.tep, fedgc.analysis.origin), when present."""
    lines: list[str] = []
    if data.get("flowsheet"):
        lines += flowsheet_markdown(data)
    if data.get("origin"):
        lines += origin_markdown(data)
    fs = data.get("fault_stream")
    if fs:
        first = fs.get("first_alert_after_fault")
        if fs["fault"] is None:
            lines += [
                "## Normal-operation run, streaming",
                "",
                f"Run {fs['run']} (no fault): {fs['alerts_before_fault']} alert(s), all false alerts.",
                "",
            ]
            return lines
        lines += [
            "## Fault run, streaming",
            "",
            f"Run {fs['run']} (fault {fs['fault']}, known origin {fs.get('known_origin') or 'unknown'}, fault from "
            f"sample index {fs['fault_start']}): {fs['alerts_before_fault']} alert(s) before the fault (normal "
            f"operation: false alerts), {fs['alerts_after_fault']} after it.",
            "",
            (f"First alert after the fault: {first['kind']} {first['source']} -> {first['target']} at sample "
             f"{first['time']} ({first['delay']} samples after the fault start; an alert comes at the end of its window)."
             if first else "No alert after the fault."),
            "",
        ]  # fmt: skip
    return lines


def _data_section(d: dict) -> list[str]:
    """Markdown for what was done to the clients' data (fedgc.app.runner.read_tables)."""
    clients = d.get("clients") or {}
    if not clients:
        return []
    lines = [
        "## Data",
        "",
        f"Alignment: {d.get('align', 'none')}.",
        "",
        "| client | rows | columns | missing | dropped columns | held columns (period) | rows dropped / inserted by alignment |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for name, c in clients.items():
        dropped = [f"{k} (constant)" for k in c.get("dropped_constant_columns", [])]
        dropped += [f"{k} ({_fmt(f * 100, 3)}% missing)" for k, f in (c.get("dropped_missing_columns") or {}).items()]
        held = [f"{k} ({h['period']})" for k, h in (c.get("held_columns") or {}).items()]
        al = c.get("alignment")
        moved = f"{al['dropped']} / {al['inserted']}" if al else "-"
        lines.append(
            f"| {_md(name)} | {c.get('rows')} | {c.get('columns')} | {_fmt(100 * c.get('missing_fraction', 0.0), 3)}% |"
            f" {_md(', '.join(dropped) or '-')} | {_md(', '.join(held) or '-')} | {moved} |"
        )
    lines += [
        "",
        "Missing measurements (including held analyser values between samples) are skipped exactly by each "
        "client's filter. The p-values treat the steps completed by the filter's prediction as observed, so "
        "with much missing data they are optimistic.",
        "",
    ]
    return lines


def _resilience_section(r: dict, M: int) -> list[str]:
    dropouts, resumed = r.get("dropouts") or [], r.get("resumed_from_round")
    if not dropouts and resumed is None:
        return []
    lines = ["## Dropouts and resume", ""]
    if resumed is not None:
        lines += [f"The run was resumed from the checkpoint of round {resumed}.", ""]
    if dropouts:
        lines += ["| client | dropped at round | reason |", "|---|---:|---|"]
        lines += [f"| {_md(d['client'])} | {d['round']} | {_md(d['reason'])} |" for d in dropouts]
        lines += [
            "",
            f"server.on_dropout is '{r.get('on_dropout')}': the run went on without these clients. Every pair involving "
            "them is unknown (null in result.json, marked in `unknown`), and the remaining edges are Granger causality "
            "conditional on the remaining clients only.",
            "",
        ]
    return lines


def _privacy_section(p: dict) -> list[str]:
    """Markdown for the privacy figures (fedgc.privacy.accounting.privacy_report)."""
    if not p.get("enabled"):
        return []
    sigma = p.get("noise_multiplier", {})
    lines = [
        "## Differential privacy",
        "",
        f"Target per client for the whole run: epsilon {_fmt(p.get('target_epsilon'))}, delta {_fmt(p.get('target_delta'))}"
        f" ({p.get('accountant')} accountant). Clip norm c = {_fmt(p.get('clip'))} ({p.get('clip_space')}),"
        f" noise multiplier {_fmt(sigma.get('client_to_server'))} (client -> server) and"
        f" {_fmt(sigma.get('server_to_clients'))} (server -> clients), debias {p.get('debias')},"
        f" {p.get('rounds_run')} of {p.get('planned_rounds')} planned rounds run.",
        "",
        f"Neighbouring relation: {p.get('neighbouring_relation')}",
        "",
        "| client | client -> server epsilon | server -> clients epsilon | whole run epsilon | delta | noise std |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in (p.get("per_client") or {}).items():
        lines.append(
            f"| {_md(name)} | {_fmt(c['client_to_server']['epsilon'])} | {_fmt(c['server_to_clients']['epsilon'])} |"
            f" {_fmt(c['whole_run']['epsilon'])} | {_fmt(c['whole_run']['delta'])} | {_fmt(c.get('client_noise_std'))} |"
        )
    lines += ["", str(p.get("notes", "")), ""]
    return lines


def flowsheet_markdown(data: Mapping[str, Any]) -> list[str]:
    """Report lines for result.json's "flowsheet"."""
    fs = data.get("flowsheet") if isinstance(data, Mapping) else None
    if not fs:
        return []
    c = fs["counts"]
    auroc = fs.get("auroc")
    lines = [
        "## Learned unit graph vs the flowsheet",
        "",
        "| source -> target | flowsheet edge | learned edge | strength | p-value |",
        "|---|:---:|:---:|---:|---:|",
    ]
    for p in sorted(fs["pairs"], key=lambda p: (not p["flowsheet"], p["log10_pvalue"])):
        lines.append(
            f"| {p['source']} -> {p['target']} | {'yes' if p['flowsheet'] else 'no'} | {'yes' if p['learned'] else 'no'} "
            f"| {p['strength']:.3g} | {format_pvalue(p['log10_pvalue'])} |"
        )
    agreement = "n/a" if c["agreement"] is None else f"{c['agreement']:.2f}"
    lines += [
        "",
        f"Of {c['pairs']} ordered pairs: {c['both']} flowsheet edges learned, {c['flowsheet_only']} flowsheet edges "
        f"missed, {c['learned_only']} learned edges that are not material flows, {c['neither']} pairs with neither "
        f"(agreement {agreement}); AUROC of the p-value ranking against the flowsheet "
        f"{'n/a' if auroc is None or auroc != auroc else f'{auroc:.2f}'}.",
        "",
        fs.get("note", ""),
        "",
    ]
    if fs.get("not_compared"):
        lines += [f"Not compared (units the flowsheet does not name): {fs['not_compared']}.", ""]
    return lines
