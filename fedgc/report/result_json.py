"""result.json: the one writer (a RunResult -> the JSON record, and the files of a run's folder) and the
one reader (a result.json -> its typed view), both held to result.schema.json.

    write_outputs(run, dir)  result.json, then from the same typed view `fedgc inspect` reads:
                             gc_heatmap.png, convergence.png (figures=False: none), report.md
    read_result(path)        the parsed JSON, checked against the schema
    load_result(path)        the typed view (fedgc.report.inspected.Inspected) of read_result

Matrices are indexed [target m][source n]; NaN becomes null; diagonals are null (not tested). Pairs not
estimated because a client dropped out (server.on_dropout: continue) are marked in the "unknown"
matrix, and every matrix entry of theirs (strength, p-value, dof, ...) and their edge are null, never 0 or false; "resilience" says which
clients dropped at which round and whether the run was resumed from a checkpoint.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import fedgc
from fedgc.analysis.stream import StreamRecord
from fedgc.app.config import to_plain
from fedgc.errors import FedGCError
from fedgc.files import write_text
from fedgc.report.inspected import Inspected, inspected_from_json
from fedgc.report.jsonable import dumps, finite_or_none, jsonable, matrix_rows
from fedgc.report.markdown import A_S_NOTE, markdown_report

if TYPE_CHECKING:  # fedgc.app imports every engine's dependencies; the report needs none of them
    from fedgc.app.results import RunResult

RESULT_FILE = "result.json"
HEATMAP_FILE = "gc_heatmap.png"
CONVERGENCE_FILE = "convergence.png"
REPORT_FILE = "report.md"
# The run's figures are drawn by this module, which imports matplotlib: it is looked up by name when a run
# writes its figures, so writing (or reading) a result without them never loads matplotlib.
FIGURES_MODULE = "fedgc.report.plots"
# The schema check (jsonschema) is the readers': looked up by name, so that writing a result never loads it.
SCHEMA_MODULE = "fedgc.report.schema"
FEDGC_VERSION = str(getattr(fedgc, "__version__", "0.1.0"))

KEYS = (
    "fedgc_version", "name", "engine", "seed", "clients", "dims",
    "strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue", "edges", "alpha", "test", "siv_via_source",
    "A_s", "A_s_note", "server", "rounds", "converged", "history",
    "evaluation", "timings", "communication", "raw_data_bytes", "privacy", "data", "unknown", "resilience",
)  # fmt: skip
# Keys added after results were first written: the writer writes them, the schema does not require them, so
# fedgc inspect still reads an older result.json (without "test": the LR test, the only one there was).
ADDED_KEYS = ("test", "siv_via_source")
EVALUATION_KEYS = (
    "auroc", "auprc", "precision", "recall", "f1",
    "relative_error_vs_truth", "relative_error_vs_oracle", "oracle_relative_error_vs_truth",
    "oracle_rounds", "truth_edges", "oracle_outside_privacy_guarantee",
)  # fmt: skip
_MATRICES = ("strength", "statistic", "gc", "dof", "pvalue", "log10_pvalue")


# ---------------------------------------------------------------------------------------------- writer


def result_dict(result: RunResult) -> dict:
    """The JSON-ready record of a run (layout of DESIGN.md section 3; fedgc/report/result.schema.json)."""
    fit, gc, cfg = result.fit, result.fit.gc, result.config
    ev = result.evaluation
    scores, truth = ev.scores, ev.truth
    M = len(gc.clients)
    unknown = np.zeros((M, M), dtype=bool) if gc.unknown is None else np.asarray(gc.unknown, dtype=bool)
    evaluation = {
        **{
            k: finite_or_none(getattr(scores, k)) if scores else None
            for k in ("auroc", "auprc", "precision", "recall", "f1")
        },
        "relative_error_vs_truth": finite_or_none(ev.error_vs_truth),
        "relative_error_vs_oracle": finite_or_none(ev.error_vs_oracle),
        "oracle_relative_error_vs_truth": finite_or_none(ev.oracle_error_vs_truth),
        "oracle_rounds": len(ev.oracle_history) if ev.oracle_A is not None else None,
        "truth_edges": np.asarray(truth.edges, dtype=bool).tolist() if truth is not None else None,
        # a private simulation's oracle pools the raw synthetic data: outside the privacy guarantee
        "oracle_outside_privacy_guarantee": None if ev.oracle_A is None else bool(result.privacy.get("enabled")),
    }
    out = {
        "fedgc_version": FEDGC_VERSION,
        "name": cfg.name,
        "engine": result.engine,
        "seed": int(cfg.seed),
        "clients": [str(c) for c in gc.clients],
        "dims": [int(d) for d in gc.dims],
        **{
            k: matrix_rows(np.where(unknown, np.nan, getattr(gc, k)), kind=int if k == "dof" else float)
            for k in _MATRICES
        },
        "edges": [[None if unknown[m, n] else bool(gc.edges[m, n]) for n in range(M)] for m in range(M)],
        "alpha": float(gc.alpha),
        "test": str(gc.test),
        "siv_via_source": None
        if gc.via_source is None
        else [[None if unknown[m, n] else bool(gc.via_source[m, n]) for n in range(M)] for m in range(M)],
        "A_s": jsonable(np.asarray(fit.A_s, dtype=float)),
        "A_s_note": A_S_NOTE,
        "server": jsonable(to_plain(cfg.server)),
        "rounds": int(fit.rounds),
        "converged": bool(fit.converged),
        "history": [
            {"round": int(r.round), "loss": finite_or_none(r.loss), "change": finite_or_none(r.change)}
            for r in fit.history
        ],
        "evaluation": evaluation,
        "timings": jsonable(dict(result.timings)),
        "communication": jsonable(dict(result.communication or {})),
        "raw_data_bytes": int(result.raw_data_bytes),
        "privacy": jsonable(dict(result.privacy or {"enabled": False})),
        "data": {} if result.data is None else {"align": result.align, "clients": jsonable(result.data)},
        "unknown": unknown.tolist(),
        "resilience": {
            "on_dropout": cfg.server.on_dropout,
            "dropouts": [{"client": d.client, "round": int(d.round), "reason": d.reason} for d in fit.dropouts],
            "resumed_from_round": fit.resumed_from,
        },
    }
    assert tuple(out) == KEYS
    if result.tep is not None:
        out["flowsheet"] = jsonable(result.tep.flowsheet)
        if result.tep.origin:
            out["origin"] = jsonable(result.tep.origin)
        if result.tep.fault_stream is not None:
            out["fault_stream"] = jsonable(result.tep.fault_stream)
    if result.streaming is not None:
        out["streaming"] = jsonable(streaming_json(result.streaming))
    return out


def streaming_json(record: StreamRecord) -> dict[str, Any]:
    """The "streaming" key of result.json (numpy arrays; `jsonable` makes them JSON)."""
    sc, stream, evaluation = record.settings, record.result, record.evaluation
    names = stream.clients
    windows = [
        {
            "index": w.index,
            "start": w.start,
            "end": w.end,
            "strength": w.gc.strength,
            "pvalue": w.gc.pvalue,
            "edges": w.gc.edges,
            "log10_pvalue": w.gc.log10_pvalue,
            "effective_sample_size": w.effective_size,
            "memory": w.memory,
            "rounds": w.rounds,
            "exchanges": w.exchanges,
            "converged": w.converged,
            "reset": w.reset,
            "change_log10_pvalue": None if w.change is None else w.change.log10_pvalue,
        }
        for w in stream.windows
    ]
    alerts = [
        {
            "window": a.window,
            "time": a.time,
            "target": names[a.target],
            "source": names[a.source],
            "kind": a.kind,
            "strength_before": a.strength_before,
            "strength_after": a.strength_after,
            "pvalue": 10.0**a.log10_pvalue,
            "log10_pvalue": a.log10_pvalue,
        }
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


def write_outputs(result: RunResult, out_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write result.json, then gc_heatmap.png, convergence.png (unless figures is False) and report.md drawn
    from its typed view (built from the written JSON as `fedgc inspect` builds it), into out_dir (created).
    The writer's output is held to the schema by tests/test_result_schema.py, not on every run: jsonschema
    walks every matrix entry (0.7 s at M = 100, with A_s 300 x 300). `fedgc inspect` checks what it reads.
    Returns {"json", "heatmap", "convergence", "report"} -> path (no figures: {"json", "report"})."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / RESULT_FILE}
    if figures:
        paths.update(heatmap=out_dir / HEATMAP_FILE, convergence=out_dir / CONVERGENCE_FILE)
    paths["report"] = out_dir / REPORT_FILE
    text = dumps(result_dict(result))
    write_text(paths["json"], text)
    written = inspected_from_json(json.loads(text), paths["json"])
    if figures:
        plots = importlib.import_module(FIGURES_MODULE)
        plots.plot_heatmap(written, paths["heatmap"])
        plots.plot_convergence(written, paths["convergence"], oracle_history=result.evaluation.oracle_history,
                               oracle_outside_privacy=bool(result.privacy.get("enabled")))  # fmt: skip
    images = {k: paths[k].name for k in ("heatmap", "convergence") if k in paths}
    write_text(paths["report"], markdown_report(written, images=images))
    return paths


# ---------------------------------------------------------------------------------------------- reader


def result_file(path: str | Path) -> Path:
    """The result.json of an output folder (or the path itself); a clear FedGCError when there is none."""
    path = Path(path)
    if not path.exists():
        raise FedGCError(f"{path} does not exist (expected a fedgc output folder holding {RESULT_FILE})")
    file = path / RESULT_FILE if path.is_dir() else path
    if not file.is_file():
        raise FedGCError(f"{path} has no {RESULT_FILE}: is it the output folder of `fedgc simulate` or `fedgc run`?")
    return file


def read_result(path: str | Path) -> dict:
    """A result.json (or the output folder holding one) as the dict `result_dict` wrote, checked against
    the schema: a FedGCError naming the file and the JSON path of the first problem otherwise."""
    file = result_file(path)
    data = _parsed(file)
    _check(data, file)
    return data


def parse_result(data: Any, file: Path) -> Inspected:
    """The typed view of a parsed result.json `data` read from `file` (checked here)."""
    _check(data, file)
    return inspected_from_json(data, file)


def load_result(path: str | Path) -> Inspected:
    """The typed view of an output folder's result.json (or of that file): clear FedGCError naming the
    file and the problem when the folder is missing, holds no result.json, or it is malformed or foreign."""
    file = result_file(path)
    return parse_result(_parsed(file), file)


def _check(data: Any, file: Path) -> None:
    importlib.import_module(SCHEMA_MODULE).check_result(data, file)


def _parsed(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FedGCError(f"{file} is not a valid fedgc result (invalid JSON: {exc})") from exc
    except OSError as exc:
        raise FedGCError(f"{file}: cannot read ({exc.strerror or exc})") from exc
