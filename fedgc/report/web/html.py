"""Self-contained HTML pages of fedgc results: one run (`report_page`), two runs side by side
(`comparison_page`), and the live page of a running streaming monitor (`live_page`).

Every page is one file that works offline: plotly.js (see `plotly_bundle`) and the page's own
script and style (fedgc/report/web/assets) are inlined, and the data the page draws is embedded as
JSON. The builders are pure functions of parsed result.json dicts (the schema `fedgc.report.result_json.result_dict`
writes and `fedgc.report.result_json.load_result` reads); they never write anything. Node positions come from
networkx (Kamada-Kawai on the union of the FDR and true edges); everything that depends on the FDR
level (the edges, the graph, the heatmap's markers) is decided in the page, by Benjamini-Hochberg on
the stored p-values, so the alpha control re-decides the edges without a server.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from fedgc.analysis.origin import holds_one_record

MATRICES = ("strength", "statistic", "dof", "pvalue", "log10_pvalue")
PAGE_KINDS = ("report", "comparison", "live")
VENDORED_PLOTLY = "vendor/plotly-cartesian.min.js"  # under assets/; fetched by scripts/setup.sh
_LABEL_GAP = 0.02  # distance between a node's circle and its label, in layout units (the layout spans [-1, 1])


# ---------------------------------------------------------------------------------------------- JSON helpers


def _finite(value: Any) -> float | None:
    """A float, or None for null / NaN / infinities (JSON has no non-finite numbers)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def json_ready(value: Any) -> Any:
    """JSON-safe copy: numpy arrays and scalars become lists and numbers, non-finite floats None,
    tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return json_ready(value.item())
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _matrix(rows: Any, M: int) -> list[list[float | None]]:
    """(M, M) numbers from result.json rows, None on the diagonal and where missing."""
    rows = rows if isinstance(rows, Sequence) else []
    out = []
    for m in range(M):
        row = rows[m] if m < len(rows) and isinstance(rows[m], Sequence) else []
        out.append([None if m == n or n >= len(row) else _finite(row[n]) for n in range(M)])
    return out


def _bool_matrix(rows: Any, M: int) -> list[list[bool]] | None:
    """(M, M) booleans (False on the diagonal and for null), or None when rows is None."""
    if rows is None:
        return None
    return [[m != n and bool(rows[m][n]) for n in range(M)] for m in range(M)]


def _log10_matrix(data: Mapping, M: int) -> list[list[float | None]]:
    """log10 p, from result.json's log10_pvalue or, for older results, from pvalue (p = 0 gives None)."""
    if data.get("log10_pvalue") is not None:
        return _matrix(data["log10_pvalue"], M)
    p = _matrix(data.get("pvalue"), M)
    return [[math.log10(v) if v is not None and v > 0 else None for v in row] for row in p]


def script_json(value: Any) -> str:
    """JSON text that is safe inside a <script> element (no '</script>' or '<!--' can appear)."""
    text = json.dumps(json_ready(value), allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ---------------------------------------------------------------------------------------------- layout


def _fill(xy: np.ndarray, lo: tuple[float, float], hi: tuple[float, float]) -> np.ndarray:
    """xy stretched (each axis on its own) to fill the box [lo, hi]; a flat axis sits at the box's middle."""
    xy = np.asarray(xy, dtype=float)
    out = np.empty_like(xy)
    for j in range(2):
        a, b = float(xy[:, j].min()), float(xy[:, j].max())
        mid = (lo[j] + hi[j]) / 2
        out[:, j] = mid if b - a < 1e-12 else lo[j] + (xy[:, j] - a) * (hi[j] - lo[j]) / (b - a)
    return out


def graph_layout(clients: Sequence[str], links: np.ndarray) -> np.ndarray:
    """(M, 2) node positions in [-1, 1]^2 from networkx. Linked sites (`links`: (M, M) bool, [target,
    source], taken as undirected) get the Kamada-Kawai layout, so neighbours sit close and a sparse
    graph's arrows do not all cross the centre; pairs in different components get a graph distance one
    above the largest finite one (networkx's own default of 1e6 would collapse every component to a
    point). Sites without any link sit in rows of at most 8 below the others, instead of stretching the
    layout. No link at all: a circle. Deterministic (Kamada-Kawai starts from the circular layout)."""
    M = len(clients)
    if M == 1:
        return np.zeros((1, 2))
    g = nx.Graph()
    g.add_nodes_from(range(M))
    g.add_edges_from((int(m), int(n)) for m, n in np.argwhere(links) if m != n)
    core = [k for k in range(M) if g.degree(k) > 0]
    lonely = [k for k in range(M) if g.degree(k) == 0]
    if not core:
        pos = nx.circular_layout(g)
        return np.array([pos[k] for k in range(M)], dtype=float)
    sub = g.subgraph(core)
    hops = dict(nx.all_pairs_shortest_path_length(sub))
    far = 1 + max(max(d.values()) for d in hops.values())
    dist = {a: {b: hops[a].get(b, far) for b in core} for a in core}
    pos = nx.kamada_kawai_layout(sub, dist=dist, pos=nx.circular_layout(sub))
    xy = np.zeros((M, 2))
    cols = min(len(lonely), 8)
    rows = -(-len(lonely) // cols) if cols else 0
    row_gap = 0.28
    top_of_rows = -1.0 + row_gap * (rows - 1) if rows else -1.0
    xy[core] = _fill([pos[k] for k in core], (-1.0, top_of_rows + 0.35 if rows else -1.0), (1.0, 1.0))
    for i, k in enumerate(lonely):
        r, c = divmod(i, cols)
        in_row = min(cols, len(lonely) - r * cols)
        xy[k] = (0.0 if in_row == 1 else -1.0 + 2.0 * c / (in_row - 1), top_of_rows - row_gap * r)
    return xy


def node_radius(xy: np.ndarray) -> float:
    """Radius of the node circles in layout units: a third of the closest pair's distance, at most 0.06."""
    if len(xy) < 2:
        return 0.06
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    d[np.eye(len(xy), dtype=bool)] = np.inf
    return float(max(0.02, min(0.06, d.min() / 3)))


# ---------------------------------------------------------------------------------------------- run model


def _truth(data: Mapping, M: int) -> list[list[bool]] | None:
    """evaluation.truth_edges [target][source] when the run knows the truth (a simulation), else None."""
    evaluation = data.get("evaluation") or {}
    return _bool_matrix(evaluation.get("truth_edges"), M)


def _history(data: Mapping) -> dict:
    """Per round: relative change of A_s and summed loss (None where not recorded), with the tolerance
    (a streaming run's is per window)."""
    history = data.get("history") or []
    server = data.get("server") or {}
    stream = data.get("streaming") or {}
    return {
        "round": [h.get("round", i + 1) for i, h in enumerate(history)],
        "change": [_finite(h.get("change")) for h in history],
        "loss": [_finite(h.get("loss")) for h in history],
        "tol": _finite(stream.get("tol") if stream.get("windows") else server.get("tol")),
    }


def _communication(data: Mapping) -> dict:
    """result.json "communication" totals (bytes each way; the per-exchange log is left to report.md) and
    the raw data the clients kept."""
    comm = {k: v for k, v in (data.get("communication") or {}).items() if k != "per_exchange"}
    return {"summary": comm, "raw_data_bytes": data.get("raw_data_bytes")}


def _privacy(data: Mapping) -> dict:
    """result.json "privacy" (fedgc.privacy.accounting.privacy_report): epsilon spent per client and
    direction, or {"enabled": False}."""
    p = data.get("privacy") or {}
    if not p.get("enabled"):
        return {"enabled": False}
    per_client = {
        name: {
            "client_to_server": (c.get("client_to_server") or {}).get("epsilon"),
            "server_to_clients": (c.get("server_to_clients") or {}).get("epsilon"),
            "whole_run": (c.get("whole_run") or {}).get("epsilon"),
            "delta": (c.get("whole_run") or {}).get("delta"),
            "noise_std": c.get("client_noise_std"),
        }
        for name, c in (p.get("per_client") or {}).items()
    }
    keys = ("target_epsilon", "target_delta", "accountant", "clip", "clip_space", "debias", "noise_multiplier",
            "augmentation_noise", "planned_rounds", "rounds_run", "neighbouring_relation", "notes")  # fmt: skip
    return {"enabled": True, **{k: p.get(k) for k in keys}, "per_client": per_client}


def _data_quality(data: Mapping) -> dict:
    """result.json "data" (fedgc.app.clients.read_tables): per client, what the column policies and the alignment
    did (dropped and held columns, missing measurements, rows inserted or dropped)."""
    d = data.get("data") or {}
    clients = {}
    for name, c in (d.get("clients") or {}).items():
        clients[name] = {
            "rows": c.get("rows"),
            "columns": c.get("columns"),
            "missing_fraction": c.get("missing_fraction"),
            "empty_rows": c.get("empty_rows"),
            "dropped_constant": list(c.get("dropped_constant_columns") or []),
            "dropped_missing": dict(c.get("dropped_missing_columns") or {}),
            "held": {k: dict(v) for k, v in (c.get("held_columns") or {}).items()},
            "alignment": c.get("alignment"),
        }
    return {"align": d.get("align"), "clients": clients}


def _streaming(data: Mapping, M: int) -> dict | None:
    """The "streaming" record reduced to what the timeline draws (per-window matrices, alerts)."""
    s = data.get("streaming")
    if not isinstance(s, Mapping):
        return None
    windows = []
    for w in s.get("windows") or []:
        windows.append({
            "index": w.get("index"), "start": w.get("start"), "end": w.get("end"),
            "strength": _matrix(w.get("strength"), M), "log10_pvalue": _log10_matrix(w, M),
            "edges": _bool_matrix(w.get("edges"), M), "converged": w.get("converged"), "reset": w.get("reset"),
            "rounds": w.get("rounds"), "effective_sample_size": _finite(w.get("effective_sample_size")),
        })  # fmt: skip
    settings = ("window", "step", "forgetting", "alert_alpha", "reset_on_alert", "n_steps", "unprocessed_steps")
    return {
        **{k: s.get(k) for k in settings},
        "windows": windows,
        "alerts": [dict(a) for a in s.get("alerts") or []],
        "evaluation": s.get("evaluation"),
    }


def live_model(snapshot: Mapping, *, has_report: bool = False) -> dict:
    """A stream snapshot (fedgc.report.web.live) as the live page draws it: the streaming record reduced
    as in a report, with the client names, the run's FDR level, whether the run is complete, and
    whether its full report (result.json) is there."""
    clients = [str(c) for c in snapshot["clients"]]
    return {
        "name": snapshot.get("name"),
        "clients": clients,
        "alpha": _finite(snapshot.get("alpha")),
        "complete": bool(snapshot.get("complete")),
        "written_at": _finite(snapshot.get("written_at")),
        "has_report": bool(has_report),
        "streaming": _streaming({"streaming": snapshot["streaming"]}, len(clients)),
    }


def _origin(data: Mapping) -> list[dict]:
    """result.json "origin" (one record, or {run: record}) as a list of runs in file order."""
    o = data.get("origin")
    if not isinstance(o, Mapping) or not o:
        return []
    runs = [("", o)] if holds_one_record(o) else [(str(k), v) for k, v in o.items()]
    out = []
    for run, rec in runs:
        out.append({
            "run": run, "threshold": _finite(rec.get("threshold")), "start": _finite(rec.get("start")),
            "known_origin": rec.get("known_origin"), "ranking": list(rec.get("ranking") or []),
            "clients": {
                name: {"score": [_finite(v) for v in c.get("score") or []], "first_crossing": _finite(c.get("first_crossing")),
                       "onset": _finite(c.get("onset")), "peak": _finite(c.get("peak"))}
                for name, c in (rec.get("clients") or {}).items()
            },
        })  # fmt: skip
    return out


def _facts(data: Mapping) -> dict:
    """Engine, seed, version, rounds (over windows for a streaming run), server settings, wall time, dropouts."""
    server = data.get("server") or {}
    timings = data.get("timings") or {}
    stream = data.get("streaming") or {}
    windows = stream.get("windows") or []
    return {
        "name": data.get("name"),
        "engine": data.get("engine"),
        "seed": data.get("seed"),
        "fedgc_version": data.get("fedgc_version"),
        "rounds": data.get("rounds"),
        "converged": data.get("converged"),
        "windows": len(windows) if windows else None,
        "windows_converged": sum(bool(w.get("converged")) for w in windows) if windows else None,
        "server": {
            k: server.get(k) for k in ("rule", "diagonal", "penalty", "tol", "max_rounds", "on_dropout", "acceleration")
        }
        | ({"tol": stream.get("tol"), "max_rounds": stream.get("max_rounds"), "per_window": True} if windows else {}),
        "total_s": _finite(timings.get("total_s")),
        "dropouts": list((data.get("resilience") or {}).get("dropouts") or []),
    }


def run_model(data: Mapping, *, alpha: float | None = None) -> dict:
    """What the page draws of one result dict: matrices [target][source] (None where not tested),
    the run's edges and alpha, the truth when known, node positions, and the run facts. `alpha`: the
    FDR level the page opens at (default: the run's own)."""
    clients = [str(c) for c in data["clients"]]
    M = len(clients)
    edges = _bool_matrix(data["edges"], M)
    truth = _truth(data, M)
    links = np.array(edges, dtype=bool) | (np.array(truth, dtype=bool) if truth is not None else False)
    xy = graph_layout(clients, links)
    evaluation = data.get("evaluation") or {}
    return {
        "name": str(data.get("name") or "run"),
        "clients": clients,
        "dims": list(data.get("dims") or []),
        **{k: _matrix(data.get(k), M) for k in MATRICES if k != "log10_pvalue"},
        "log10_pvalue": _log10_matrix(data, M),
        "edges": edges,
        "unknown": _bool_matrix(data.get("unknown"), M),
        "alpha": float(data.get("alpha", 0.05)),
        "initial_alpha": None if alpha is None else float(alpha),
        "truth": truth,
        "evaluation": {k: v for k, v in evaluation.items() if k != "truth_edges"},
        "layout": {
            "x": xy[:, 0].tolist(),
            "y": xy[:, 1].tolist(),
            "radius": node_radius(xy),
            "label_gap": _LABEL_GAP,
            "links": np.argwhere(links).tolist(),
        },
        "facts": _facts(data),
        "history": _history(data),
        "communication": _communication(data),
        "privacy": _privacy(data),
        "data_quality": _data_quality(data),
        "streaming": _streaming(data, M),
        "origin": _origin(data),
    }


def comparison_model(
    a: Mapping, b: Mapping, *, labels: tuple[str, str] = ("A", "B"), alpha: float | None = None
) -> dict:
    """Two runs for the comparison page: each run's model, and the clients both have (pairs are
    matched by client name; the page compares those pairs only and names the clients one run lacks)."""
    ma, mb = run_model(a), run_model(b)
    common = [c for c in ma["clients"] if c in set(mb["clients"])]
    links = np.zeros((len(common), len(common)), dtype=bool)
    for model in (ma, mb):
        index = {c: k for k, c in enumerate(model["clients"])}
        for i, t in enumerate(common):
            for j, s in enumerate(common):
                links[i, j] |= bool(model["edges"][index[t]][index[s]])
    xy = graph_layout(common, links) if common else np.zeros((0, 2))
    return {
        "runs": [ma, mb],
        "labels": list(labels),
        "initial_alpha": None if alpha is None else float(alpha),
        "common": common,
        "only": [
            [c for c in ma["clients"] if c not in set(common)],
            [c for c in mb["clients"] if c not in set(common)],
        ],
        "same_order": ma["clients"] == mb["clients"],
        "layout": {
            "x": xy[:, 0].tolist(),
            "y": xy[:, 1].tolist(),
            "radius": node_radius(xy) if len(common) else 0.06,
            "label_gap": _LABEL_GAP,
            "links": np.argwhere(links).tolist(),
        },
    }


# ---------------------------------------------------------------------------------------------- pages


def _asset(name: str) -> str:
    return resources.files("fedgc.report.web").joinpath("assets", name).read_text(encoding="utf-8")


class PlotlyBundle(NamedTuple):
    """The plotly.js source a page inlines; vendored: the cartesian bundle scripts/setup.sh fetched."""

    name: str
    source: str
    vendored: bool


def plotly_bundle() -> PlotlyBundle:
    """plotly.js for the page: the cartesian partial bundle (scatter, bar, heatmap: all a report draws;
    1.5 MB) that scripts/setup.sh installs from the npm registry into assets/vendor, else the full bundle
    the plotly package ships (4.8 MB: the same pages, but about twice as slow to open)."""
    vendored = resources.files("fedgc.report.web").joinpath("assets", *VENDORED_PLOTLY.split("/"))
    if vendored.is_file():
        return PlotlyBundle(VENDORED_PLOTLY, vendored.read_text(encoding="utf-8"), True)
    return full_plotly_bundle()


def full_plotly_bundle() -> PlotlyBundle:
    """The full plotly.js bundle the plotly package ships (what a page falls back to)."""
    from plotly.offline import get_plotlyjs

    return PlotlyBundle("plotly (Python package) full bundle", get_plotlyjs(), False)


def _page(kind: str, title: str, model: Mapping, bundle: PlotlyBundle | None = None) -> str:
    """The page skeleton: style, plotly.js (`bundle`, default plotly_bundle()), the model as JSON, the page
    script, and its entry point."""
    if kind not in PAGE_KINDS:
        raise ValueError(f"page kind {kind!r} is not one of {PAGE_KINDS}")
    bundle = bundle or plotly_bundle()
    plotly = bundle.source.replace("</script", "<\\/script")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        '<link rel="icon" href="data:,">',
        f"<style>\n{_asset('report.css')}\n</style>",
        "</head>",
        f'<body data-page="{kind}">',
        '<main id="app"><p class="loading">Loading the report...</p></main>',
        f"<!-- plotly.js: {html.escape(bundle.name)} -->",
        f"<script>\n{plotly}\n</script>",
        f'<script id="fedgc-model" type="application/json">{script_json(model)}</script>',
        f"<script>\n{_asset('report.js')}\n</script>",
        "</body>",
        "</html>",
        "",
    ])  # fmt: skip


def report_page(data: Mapping, *, alpha: float | None = None, bundle: PlotlyBundle | None = None) -> str:
    """The HTML page of one run's result dict, opening at FDR level `alpha` (default: the run's);
    `bundle`: the plotly.js to inline (default plotly_bundle())."""
    model = run_model(data, alpha=alpha)
    return _page("report", f"fedgc report: {model['name']}", model, bundle)


def comparison_page(a: Mapping, b: Mapping, *, labels: tuple[str, str] = ("A", "B"), alpha: float | None = None) -> str:
    """The HTML page comparing two runs' result dicts (B against A: edges gained and lost, strength change),
    opening with both runs' edges at FDR level `alpha` (default: each run's own)."""
    model = comparison_model(a, b, labels=labels, alpha=alpha)
    names = " vs ".join(m["name"] for m in model["runs"])
    return _page("comparison", f"fedgc comparison: {names}", model)


def live_page(*, snapshot_url: str = "stream.json", report_url: str = "report.html", poll_seconds: float = 1.0) -> str:
    """The page `fedgc serve` serves: it polls `snapshot_url` (the stream snapshot) every poll_seconds and
    redraws the timeline, the alerts and the latest window as they arrive; once the run has finished it
    links to `report_url`."""
    model = {"snapshot_url": snapshot_url, "report_url": report_url, "poll_ms": round(1000 * poll_seconds)}
    return _page("live", "fedgc live monitor", model)


__all__ = [
    "PlotlyBundle", "comparison_model", "comparison_page", "full_plotly_bundle", "graph_layout", "json_ready",
    "live_model", "live_page", "node_radius", "plotly_bundle", "report_page", "run_model", "script_json",
]  # fmt: skip
