"""`fedgc inspect`: an output folder's result.json read back into typed containers, its pairs ranked
for a terminal table, and the graph exported as JSON, CSV, GraphML and DOT (figures: fedgc.report.figures).

Every matrix is (M, M) indexed [target m, source n] as in result.json; diagonals are NaN / False.
Edges are Benjamini-Hochberg discoveries over the M(M-1) ordered pairs: the run's own, or re-decided
from the stored p-values at another level (`with_alpha`) exactly as fedgc.core.granger decides them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from fedgc.errors import FedGCError
from fedgc.analysis.origin import holds_one_record
from fedgc.report.result_json import RESULT_FILE, dumps, format_pvalue, read_result, windows_converged

EXPORT_FILES = {"json": "edges.json", "csv": "edges.csv", "graphml": "graph.graphml", "dot": "graph.dot"}
CSV_COLUMNS = ("target", "source", "strength", "statistic", "pvalue", "edge", "log10_pvalue", "dof")
ALERT_KINDS = ("appeared", "disappeared", "changed")
DEFAULT_TOP = 20


# ---------------------------------------------------------------------------------------------- containers


class Window(NamedTuple):
    """One streaming window over samples [start, end); (M, M) matrices indexed [target, source]."""

    index: int
    start: int
    end: int
    strength: np.ndarray
    pvalue: np.ndarray
    edges: np.ndarray


class Alert(NamedTuple):
    """A change of the pair source -> target at `time` (window `window`); NaN where result.json has null."""

    window: int
    time: float
    target: str
    source: str
    kind: str
    strength_before: float
    strength_after: float
    pvalue: float


@dataclass(frozen=True, eq=False)
class Streaming:
    """result.json "streaming": sliding windows of `window` samples every `step`, forgetting factor."""

    window: int
    step: int
    forgetting: float
    windows: tuple[Window, ...]
    alerts: tuple[Alert, ...]


class OriginScores(NamedTuple):
    """A client's per-step innovation score (T,) and the first step above the threshold (None: never)."""

    first_crossing: float | None
    score: np.ndarray


@dataclass(frozen=True, eq=False)
class Origin:
    """One run's fault-origin record of result.json "origin": scores per client, ranking most likely
    origin first; start (the fault's first step) and known_origin when the run says."""

    run: str
    threshold: float
    clients: dict[str, OriginScores]
    ranking: tuple[str, ...]
    start: float | None = None
    known_origin: str | None = None


@dataclass(frozen=True, eq=False)
class Inspected:
    """A result.json as arrays. strength ||A_s^{mn}||_F, statistic, dof, pvalue, log10_pvalue: (M, M)
    float, NaN where not tested; edges, truth: (M, M) bool (truth None when unknown); run_alpha is the
    level the run used, alpha the one `edges` are decided at; origins: one fault-origin record per run
    (empty when the result has none). data is the parsed JSON as read."""

    path: Path
    data: dict
    name: str
    clients: tuple[str, ...]
    dims: tuple[int, ...]
    strength: np.ndarray
    statistic: np.ndarray
    dof: np.ndarray
    pvalue: np.ndarray
    log10_pvalue: np.ndarray
    edges: np.ndarray
    alpha: float
    run_alpha: float
    truth: np.ndarray | None
    streaming: Streaming | None
    origins: tuple[Origin, ...]


class Pair(NamedTuple):
    """One tested ordered pair source -> target (client names), as in the table and the exports."""

    target: str
    source: str
    strength: float
    statistic: float
    dof: int
    pvalue: float
    log10_pvalue: float
    edge: bool
    true_edge: bool | None


# ---------------------------------------------------------------------------------------------- loading


class _Checker:
    """Type and shape checks on the parsed JSON; every failure names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> None:
        raise FedGCError(f"{self.path}: {where}: {problem}")

    def number(self, value: Any, where: str, *, null: bool = True) -> float:
        if value is None and null:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number{' or null' if null else ''}, got {json.dumps(value)[:40]}")
        return float(value)

    def integer(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {json.dumps(value)[:40]}")
        return int(value)

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"expected a non-empty string, got {json.dumps(value)[:40]}")
        return value

    def items(self, value: Any, where: str, kind: type = list) -> Any:
        if not isinstance(value, kind):
            self.fail(where, f"expected a JSON {'object' if kind is dict else 'list'}, got {type(value).__name__}")
        return value

    def matrix(self, rows: Any, M: int, where: str, *, boolean: bool = False) -> np.ndarray:
        """(M, M) from a list of M rows; numbers or null (NaN), or booleans (null on the diagonal: False)."""
        self.items(rows, where)
        if len(rows) != M:
            self.fail(where, f"has {len(rows)} rows, expected {M} (one per client)")
        out = np.zeros((M, M), dtype=bool) if boolean else np.full((M, M), np.nan)
        for m, row in enumerate(self.items(r, f"{where} row {i}") for i, r in enumerate(rows)):
            if len(row) != M:
                self.fail(where, f"row {m} has {len(row)} entries, expected {M} (one per client)")
            for n, v in enumerate(row):
                if boolean:
                    if not isinstance(v, bool) and not (v is None and m == n):
                        self.fail(where, f"[{m}][{n}] is {json.dumps(v)[:40]}, expected true or false")
                    out[m, n] = bool(v)
                else:
                    out[m, n] = self.number(v, f"{where}[{m}][{n}]")
        out[np.eye(M, dtype=bool)] = np.nan if not boolean else False
        out.setflags(write=False)
        return out


def load_result(path: str | Path) -> Inspected:
    """The result of an output folder (or a result.json path), checked: clear FedGCError naming the file
    and the problem when the folder is missing, holds no result.json, or it is malformed or foreign."""
    path = Path(path)
    if not path.exists():
        raise FedGCError(f"{path} does not exist (expected a fedgc output folder holding {RESULT_FILE})")
    file = path / RESULT_FILE if path.is_dir() else path
    if not file.is_file():
        raise FedGCError(f"{path} has no {RESULT_FILE}: is it the output folder of `fedgc simulate` or `fedgc run`?")
    try:
        data = read_result(file)
    except OSError as exc:
        raise FedGCError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    c = _Checker(file)
    clients = tuple(c.text(x, f"clients[{i}]") for i, x in enumerate(c.items(data["clients"], "clients")))
    M = len(clients)
    if M < 2:
        c.fail("clients", f"{M} client(s); a result has at least 2")
    if len(set(clients)) != M:
        c.fail("clients", f"duplicate names {sorted({x for x in clients if clients.count(x) > 1})}")
    dims = tuple(c.integer(x, f"dims[{i}]") for i, x in enumerate(c.items(data["dims"], "dims")))
    if len(dims) != M or min(dims) < 1:
        c.fail("dims", f"expected {M} positive integers (one per client), got {data['dims']}")
    off = ~np.eye(M, dtype=bool)
    strength = c.matrix(data["strength"], M, "strength")
    pvalue = c.matrix(data["pvalue"], M, "pvalue")
    if np.any(off & np.isfinite(pvalue) & ((pvalue < 0) | (pvalue > 1))):
        c.fail("pvalue", "entries outside [0, 1]")
    if "log10_pvalue" in data:
        log10_pvalue = c.matrix(data["log10_pvalue"], M, "log10_pvalue")
    else:  # an older result: log10 from p (underflowed p = 0 gives -inf, still ranked first)
        with np.errstate(divide="ignore"):
            log10_pvalue = np.log10(pvalue)
    nan = np.full((M, M), np.nan)
    statistic = c.matrix(data["statistic"], M, "statistic") if "statistic" in data else nan
    dof_default = np.where(off, np.outer(dims, dims), np.nan)
    dof = c.matrix(data["dof"], M, "dof") if "dof" in data else dof_default
    edges = c.matrix(data["edges"], M, "edges", boolean=True)
    run_alpha = c.number(data.get("alpha", 0.05), "alpha", null=False)
    if not 0 < run_alpha < 1:
        c.fail("alpha", f"{run_alpha} is not in (0, 1)")
    evaluation = data.get("evaluation") or {}
    c.items(evaluation, "evaluation", dict)
    truth = None
    if evaluation.get("truth_edges") is not None:
        truth = c.matrix(evaluation["truth_edges"], M, "evaluation.truth_edges", boolean=True)
    streaming = _streaming(c, data["streaming"], clients) if data.get("streaming") is not None else None
    origins = _origins(c, data["origin"], clients) if data.get("origin") is not None else ()
    for a in (log10_pvalue, statistic, dof):
        a.setflags(write=False)
    return Inspected(
        path=file, data=data, name=str(data.get("name") or file.parent.name), clients=clients, dims=dims,
        strength=strength, statistic=statistic, dof=dof, pvalue=pvalue, log10_pvalue=log10_pvalue, edges=edges,
        alpha=run_alpha, run_alpha=run_alpha, truth=truth, streaming=streaming, origins=origins,
    )  # fmt: skip


def _streaming(c: _Checker, s: Any, clients: tuple[str, ...]) -> Streaming:
    """The "streaming" key (schema agreed with fedgc.protocol.streaming)."""
    c.items(s, "streaming", dict)
    M = len(clients)
    for key in ("window", "step", "forgetting", "windows", "alerts"):
        if key not in s:
            c.fail("streaming", f"missing key {key!r}")
    windows = []
    for i, w in enumerate(c.items(s["windows"], "streaming.windows")):
        where = f"streaming.windows[{i}]"
        c.items(w, where, dict)
        missing = [k for k in ("index", "start", "end", "strength", "pvalue", "edges") if k not in w]
        if missing:
            c.fail(where, f"missing keys {missing}")
        windows.append(Window(
            index=c.integer(w["index"], f"{where}.index"), start=c.integer(w["start"], f"{where}.start"),
            end=c.integer(w["end"], f"{where}.end"), strength=c.matrix(w["strength"], M, f"{where}.strength"),
            pvalue=c.matrix(w["pvalue"], M, f"{where}.pvalue"),
            edges=c.matrix(w["edges"], M, f"{where}.edges", boolean=True),
        ))  # fmt: skip
    indices = {w.index for w in windows}
    alerts = []
    for i, a in enumerate(c.items(s["alerts"], "streaming.alerts")):
        where = f"streaming.alerts[{i}]"
        c.items(a, where, dict)
        missing = [k for k in ("window", "time", "target", "source", "kind") if k not in a]
        if missing:
            c.fail(where, f"missing keys {missing}")
        for key in ("target", "source"):
            if a[key] not in clients:
                c.fail(f"{where}.{key}", f"{json.dumps(a[key])[:40]} is not one of the clients")
        if a["kind"] not in ALERT_KINDS:
            c.fail(f"{where}.kind", f"{json.dumps(a['kind'])[:40]} is not one of {list(ALERT_KINDS)}")
        window = c.integer(a["window"], f"{where}.window")
        if window not in indices:
            c.fail(f"{where}.window", f"no window has index {window}")
        alerts.append(Alert(
            window=window, time=c.number(a["time"], f"{where}.time", null=False), target=a["target"],
            source=a["source"], kind=a["kind"],
            **{k: c.number(a.get(k), f"{where}.{k}") for k in ("strength_before", "strength_after", "pvalue")},
        ))  # fmt: skip
    return Streaming(
        window=c.integer(s["window"], "streaming.window"), step=c.integer(s["step"], "streaming.step"),
        forgetting=c.number(s["forgetting"], "streaming.forgetting", null=False),
        windows=tuple(sorted(windows, key=lambda w: w.index)), alerts=tuple(alerts),
    )  # fmt: skip


def _origins(c: _Checker, o: Any, clients: tuple[str, ...]) -> tuple[Origin, ...]:
    """The "origin" key (fedgc.analysis.origin.origin_dict records): one record, or {run name: record}."""
    c.items(o, "origin", dict)
    if holds_one_record(o):
        return (_origin(c, o, "origin", run=""),)
    return tuple(_origin(c, rec, f"origin[{json.dumps(run)}]", run=str(run)) for run, rec in o.items())


def _origin(c: _Checker, o: Any, where: str, *, run: str) -> Origin:
    c.items(o, where, dict)
    for key in ("threshold", "clients", "ranking"):
        if key not in o:
            c.fail(where, f"missing key {key!r}")
    scores = {}
    for name, entry in c.items(o["clients"], f"{where}.clients", dict).items():
        at = f"{where}.clients[{json.dumps(name)}]"
        c.items(entry, at, dict)
        if "score" not in entry:
            c.fail(at, "missing key 'score'")
        score = np.array([c.number(v, f"{at}.score[{t}]") for t, v in enumerate(c.items(entry["score"], at))])
        first = entry.get("first_crossing")
        scores[name] = OriginScores(None if first is None else c.number(first, f"{at}.first_crossing"), score)
    ranking = tuple(c.items(o["ranking"], f"{where}.ranking"))
    unknown = [r for r in ranking if r not in scores]
    if unknown:
        c.fail(f"{where}.ranking", f"names {unknown} have no scores in {where}.clients")
    start = o.get("start")
    known = o.get("known_origin")
    return Origin(
        run=run, threshold=c.number(o["threshold"], f"{where}.threshold", null=False), clients=scores, ranking=ranking,
        start=None if start is None else c.number(start, f"{where}.start"), known_origin=None if known is None else str(known),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- edges


def fdr_edges(pvalue: np.ndarray, *, alpha: float) -> np.ndarray:
    """(M, M) Benjamini-Hochberg discoveries at level alpha over the off-diagonal p-values (as
    fedgc.core.granger.granger_tests decides them); a missing p-value counts as 1 (tested, not rejected)."""
    from statsmodels.stats.multitest import multipletests

    M = pvalue.shape[0]
    off = ~np.eye(M, dtype=bool)
    edges = np.zeros((M, M), dtype=bool)
    if off.any():
        reject, *_ = multipletests(np.where(np.isfinite(pvalue), pvalue, 1.0)[off], alpha=alpha, method="fdr_bh")
        edges[off] = reject
    edges.setflags(write=False)
    return edges


def with_alpha(result: Inspected, *, alpha: float) -> Inspected:
    """The result with its edges re-decided at FDR level alpha from the stored p-values."""
    if not 0 < alpha < 1:
        raise FedGCError(f"--alpha {alpha} is not in (0, 1)")
    return dataclasses.replace(result, alpha=float(alpha), edges=fdr_edges(result.pvalue, alpha=alpha))


def ranked_pairs(result: Inspected) -> list[Pair]:
    """Every ordered pair, most significant first (log10 p ascending, then strength descending; as report.md)."""
    M = len(result.clients)
    pairs = []
    for m in range(M):
        for n in range(M):
            if m == n:
                continue
            dof = result.dof[m, n]
            pairs.append(Pair(
                target=result.clients[m], source=result.clients[n], strength=float(result.strength[m, n]),
                statistic=float(result.statistic[m, n]), dof=int(dof) if np.isfinite(dof) else 0,
                pvalue=float(result.pvalue[m, n]), log10_pvalue=float(result.log10_pvalue[m, n]),
                edge=bool(result.edges[m, n]), true_edge=None if result.truth is None else bool(result.truth[m, n]),
            ))  # fmt: skip

    def key(p: Pair) -> tuple[float, float]:
        logp = p.log10_pvalue if not math.isnan(p.log10_pvalue) else math.inf
        return logp, -(p.strength if math.isfinite(p.strength) else 0.0)

    return sorted(pairs, key=key)


def _num(x: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}g}"


def _pvalue_text(p: Pair) -> str:
    if math.isfinite(p.log10_pvalue):
        return format_pvalue(p.log10_pvalue)
    return "0" if p.pvalue == 0 else "n/a"


def format_table(result: Inspected, *, top: int | None = None, every_pair: bool = False) -> str:
    """The terminal table: the FDR edges (or every pair), most significant first, at most `top` rows
    (default 20, or all pairs with every_pair), with a summary line above and what was left out below."""
    if top is not None and top < 1:
        raise FedGCError(f"--top {top}: give a positive number of rows")
    M = len(result.clients)
    pairs = ranked_pairs(result)
    n_edges = sum(p.edge for p in pairs)
    candidates = pairs if every_pair else [p for p in pairs if p.edge]
    limit = top if top is not None else (len(candidates) if every_pair else DEFAULT_TOP)
    shown = candidates[:limit]

    data = result.data
    counts = windows_converged(data)
    status = f"{data.get('rounds', '?')} rounds, " + (
        ("converged" if data.get("converged") else "not converged") if counts is None
        else f"{counts[1]} windows, {counts[0]} converged"
    )  # fmt: skip
    alpha_note = "" if result.alpha == result.run_alpha else f" (re-decided; the run used alpha = {result.run_alpha:g})"
    lines = [
        f"{result.name}: {M} clients, {status}; {n_edges} of {M * (M - 1)} ordered pairs are edges "
        f"(Benjamini-Hochberg FDR, alpha = {result.alpha:g}){alpha_note}"
    ]
    if result.streaming is not None:
        s = result.streaming
        lines.append(f"streaming: {len(s.windows)} windows of {s.window} samples every {s.step}, {len(s.alerts)} alerts")
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
        row = [str(i), f"{p.source} -> {p.target}", _num(p.strength), _num(p.statistic, 5), str(p.dof or "n/a"),
               _pvalue_text(p), "yes" if p.edge else "no"]  # fmt: skip
        if p.true_edge is not None:
            row.append("yes" if p.true_edge else "no")
        rows.append(row)
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    left = {1}  # the pair column reads left to right; numbers align right

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines += ["", line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    rest = len(candidates) - len(shown)
    if rest:
        lines.append(f"... {rest} more {'pairs' if every_pair else 'edges'} (--top N to show more)")
    if not every_pair:
        lines.append(f"{M * (M - 1) - n_edges} pairs that are not edges are not listed (--all lists every pair)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- exports


def parse_formats(text: str) -> tuple[str, ...]:
    """'json,csv' -> ('json', 'csv'); 'all' for every format; unknown names are an error."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return tuple(EXPORT_FILES)
    unknown = [n for n in names if n not in EXPORT_FILES]
    if unknown or not names:
        raise FedGCError(f"--export {text!r}: unknown format(s) {unknown}; choose from {', '.join(EXPORT_FILES)} or all")
    return tuple(dict.fromkeys(names))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


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
    path.write_text(dumps(edges_json(result)))
    return path


def write_csv(result: Inspected, path: str | Path) -> Path:
    """Edge list, one row per ordered pair (most significant first); floats exact (repr), empty when
    unknown, edge true/false. log10_pvalue keeps p-values that underflow to 0 in pvalue."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for p in ranked_pairs(result):
            values = {**p._asdict(), "edge": "true" if p.edge else "false"}
            w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in (values[k] for k in CSV_COLUMNS)])
    return path


def to_networkx(result: Inspected):
    """networkx.DiGraph: a node per client (attribute dim = D_m), an edge source -> target per FDR edge
    with weight = strength ||A_s^{mn}||_F, statistic, dof, pvalue, log10_pvalue (unknown values left out)."""
    import networkx as nx

    g = nx.DiGraph(name=result.name, alpha=result.alpha, edge_rule="Benjamini-Hochberg FDR")
    for name, dim in zip(result.clients, result.dims):
        g.add_node(name, dim=int(dim))
    for p in ranked_pairs(result):
        if p.edge:
            attrs = {"weight": p.strength, "statistic": p.statistic, "pvalue": p.pvalue, "log10_pvalue": p.log10_pvalue}
            g.add_edge(p.source, p.target, dof=p.dof, **{k: v for k, v in attrs.items() if math.isfinite(v)})
    return g


def write_graphml(result: Inspected, path: str | Path) -> Path:
    import networkx as nx

    path = Path(path)
    nx.write_graphml(to_networkx(result), path)
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
        f"  graph [label={_dot_id(title)}, labelloc=\"t\", rankdir=\"LR\"];",
        '  node [shape="ellipse", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize="10"];',
    ]
    for name, dim in zip(result.clients, result.dims):
        lines.append(f"  {_dot_id(name)} [label={_dot_id(f'{name} (D={dim})')}, dim=\"{dim}\"];")
    for p in pairs:
        width = 1.0 + 4.0 * (p.strength / top if math.isfinite(p.strength) else 0.0)
        attrs = {
            "penwidth": f"{width:.2f}", "label": _num(p.strength, 3), "strength": repr(p.strength),
            "pvalue": repr(p.pvalue), "log10_pvalue": repr(p.log10_pvalue), "dof": str(p.dof),
        }  # fmt: skip
        body = ", ".join(f"{k}={_dot_id(v)}" for k, v in attrs.items())
        lines.append(f"  {_dot_id(p.source)} -> {_dot_id(p.target)} [{body}];")
    return "\n".join(lines + ["}", ""])


def write_dot(result: Inspected, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dot_source(result))
    return path


_WRITERS = {"json": write_json, "csv": write_csv, "graphml": write_graphml, "dot": write_dot}


def export(result: Inspected, *, formats: Sequence[str], out_dir: str | Path) -> dict[str, Path]:
    """Write the chosen formats into out_dir (created) as EXPORT_FILES; returns {format: path}."""
    out_dir = Path(out_dir)
    if formats:
        out_dir.mkdir(parents=True, exist_ok=True)
    return {f: _WRITERS[f](result, out_dir / EXPORT_FILES[f]) for f in formats}
