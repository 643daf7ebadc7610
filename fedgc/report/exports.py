"""`fedgc inspect --export`: the ranked pairs as JSON and CSV, the FDR edges as GraphML (networkx) and DOT."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import networkx as nx

from fedgc.errors import FedGCError
from fedgc.files import replacing, write_text
from fedgc.report.inspected import Inspected
from fedgc.report.jsonable import dumps
from fedgc.report.ranking import file_name_at_alpha, ranked_pairs

EXPORT_FILES = {"json": "edges.json", "csv": "edges.csv", "graphml": "graph.graphml", "dot": "graph.dot"}
CSV_COLUMNS = ("target", "source", "strength", "statistic", "pvalue", "edge", "log10_pvalue", "dof")


def parse_formats(text: str) -> tuple[str, ...]:
    """'json,csv' -> ('json', 'csv'); 'all' for every format; unknown names are an error."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return tuple(EXPORT_FILES)
    unknown = [n for n in names if n not in EXPORT_FILES]
    if unknown or not names:
        raise FedGCError(
            f"--export {text!r}: unknown format(s) {unknown}; choose from {', '.join(EXPORT_FILES)} or all"
        )
    return tuple(dict.fromkeys(names))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _num(x: float, digits: int) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}g}"


def edges_json(result: Inspected) -> dict:
    """The JSON export: every ordered pair (most significant first) with its edge decision at alpha."""
    return {
        "name": result.name,
        "source": str(result.path),
        "clients": list(result.clients),
        "dims": list(result.dims),
        "alpha": result.alpha,
        "run_alpha": result.run_alpha,
        "edge_rule": "Benjamini-Hochberg over all M(M-1) ordered pairs",
        "pairs": [
            {"target": p.target, "source": p.source, "strength": _finite(p.strength), "statistic": _finite(p.statistic),
             "dof": p.dof, "pvalue": _finite(p.pvalue), "log10_pvalue": _finite(p.log10_pvalue), "edge": p.edge}
            for p in ranked_pairs(result)
        ],
    }  # fmt: skip


def write_json(result: Inspected, path: str | Path) -> Path:
    path = Path(path)
    write_text(path, dumps(edges_json(result)))
    return path


def write_csv(result: Inspected, path: str | Path) -> Path:
    """Edge list, one row per ordered pair (most significant first); floats exact (repr), empty when
    unknown, edge true/false. log10_pvalue keeps p-values that underflow to 0 in pvalue."""
    path = Path(path)
    with replacing(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for p in ranked_pairs(result):
            values = {**p._asdict(), "edge": "true" if p.edge else "false"}
            w.writerow(
                ["" if isinstance(v, float) and not math.isfinite(v) else v for v in (values[k] for k in CSV_COLUMNS)]
            )
    return path


def to_networkx(result: Inspected) -> nx.DiGraph:
    """A node per client (attribute dim = D_m), an edge source -> target per FDR edge with weight =
    strength ||A_s^{mn}||_F, statistic, dof, pvalue, log10_pvalue (unknown values left out)."""
    g = nx.DiGraph(name=result.name, alpha=result.alpha, edge_rule="Benjamini-Hochberg FDR")
    for name, dim in zip(result.clients, result.dims):
        g.add_node(name, dim=int(dim))
    for p in ranked_pairs(result):
        if p.edge:
            attrs = {"weight": p.strength, "statistic": p.statistic, "pvalue": p.pvalue, "log10_pvalue": p.log10_pvalue}
            g.add_edge(p.source, p.target, dof=p.dof, **{k: v for k, v in attrs.items() if math.isfinite(v)})
    return g


def write_graphml(result: Inspected, path: str | Path) -> Path:
    path = Path(path)
    with replacing(path) as tmp:
        nx.write_graphml(to_networkx(result), tmp)
    return path


def _dot_id(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot_source(result: Inspected) -> str:
    """Graphviz DOT of the FDR edges: pen width by strength, label = strength; every value quoted."""
    pairs = [p for p in ranked_pairs(result) if p.edge]
    top = max((p.strength for p in pairs if math.isfinite(p.strength)), default=1.0) or 1.0
    title = f"{result.name}: {len(pairs)} edges (Benjamini-Hochberg FDR, alpha = {result.alpha:g}); width ~ strength"
    lines = [
        f"// fedgc inspect of {result.path}",
        f"digraph {_dot_id(result.name)} {{",
        f'  graph [label={_dot_id(title)}, labelloc="t", rankdir="LR"];',
        '  node [shape="ellipse", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize="10"];',
    ]
    for name, dim in zip(result.clients, result.dims):
        lines.append(f'  {_dot_id(name)} [label={_dot_id(f"{name} (D={dim})")}, dim="{dim}"];')
    for p in pairs:
        width = 1.0 + 4.0 * (p.strength / top if math.isfinite(p.strength) else 0.0)
        attrs = {
            "penwidth": f"{width:.2f}", "label": _num(p.strength, 3), "strength": repr(p.strength),
            "pvalue": repr(p.pvalue), "log10_pvalue": repr(p.log10_pvalue), "dof": str(p.dof),
        }  # fmt: skip
        body = ", ".join(f"{k}={_dot_id(v)}" for k, v in attrs.items())
        lines.append(f"  {_dot_id(p.source)} -> {_dot_id(p.target)} [{body}];")
    return "\n".join([*lines, "}", ""])


def write_dot(result: Inspected, path: str | Path) -> Path:
    path = Path(path)
    write_text(path, dot_source(result))
    return path


_WRITERS = {"json": write_json, "csv": write_csv, "graphml": write_graphml, "dot": write_dot}


def export(result: Inspected, *, formats: Sequence[str], out_dir: str | Path) -> dict[str, Path]:
    """Write the chosen formats into out_dir (created) as EXPORT_FILES (at another alpha than the run's, named
    with it: fedgc.report.ranking.file_name_at_alpha); returns {format: path}."""
    out_dir = Path(out_dir)
    if formats:
        out_dir.mkdir(parents=True, exist_ok=True)
    return {f: _WRITERS[f](result, out_dir / file_name_at_alpha(EXPORT_FILES[f], result)) for f in formats}
