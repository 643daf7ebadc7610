"""report.md, written from the same typed view (fedgc.report.inspected.Inspected) that `fedgc inspect`
reads, so `markdown_report(load_result(dir))` regenerates a run's report from its result.json alone."""

from __future__ import annotations

from collections.abc import Mapping

from fedgc.report.inspected import Inspected
from fedgc.report.markdown_sections import communication_section, data_section, privacy_section, resilience_section
from fedgc.report.ranking import ranked_pairs
from fedgc.report.streaming_markdown import streaming_section
from fedgc.report.table import windows_converged
from fedgc.report.tep_markdown import tep_sections
from fedgc.report.text import fmt, format_pvalue, md, metric

A_S_NOTE = (
    "A_s is the server's (D, D) matrix of cross-client couplings indexed [target state][source state]; "
    "its diagonal blocks hold the jointly re-estimated correction to each client's local A^{mm} "
    "(zero when server.diagonal is 'fixed')."
)
MAX_TABLE_ROWS = 20
DEFAULT_IMAGES = {"heatmap": "gc_heatmap.png", "convergence": "convergence.png"}
NO_FIGURES = (
    "No figures: this run was written without them (`fedgc run --figures` draws gc_heatmap.png and "
    "convergence.png). From result.json alone, `fedgc inspect DIR --figures` draws the heatmap, the graph "
    "and convergence, and `fedgc inspect DIR --html` writes report.html (DIR: this report's folder)."
)
_METRICS = (
    ("AUROC (ranking by p-value)", "auroc"),
    ("AUPRC", "auprc"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("F1", "f1"),
    ("relative error of A_s vs truth", "relative_error_vs_truth"),
    ("relative error of A_s vs oracle", "relative_error_vs_oracle"),
    ("oracle's relative error vs truth", "oracle_relative_error_vs_truth"),
    ("oracle rounds", "oracle_rounds"),
)


TEST_NAMES = {"lr": "likelihood ratio (lr)", "siv": "snapshot IV (siv; identified models)"}


def server_text(result: Inspected) -> str:
    """The server settings; a streaming run's rounds and tolerance are its per-window ones."""
    server = result.server
    stream = result.streaming if windows_converged(result) is not None else None
    tol, max_rounds = (server.tol, server.max_rounds) if stream is None else (stream.tol, stream.max_rounds)
    accelerated = f", acceleration {server.acceleration}" if server.acceleration != "none" else ""
    return (f"rule {server.rule}, diagonal {server.diagonal}, penalty {fmt(server.penalty)}{accelerated}, "
            f"tol {fmt(tol)}, max_rounds {max_rounds}" + (" per window" if stream is not None else ""))  # fmt: skip


def rounds_text(result: Inspected) -> str:
    """'8 (converged)', or for a streaming run the rounds over all windows and how many converged."""
    counts = windows_converged(result)
    if counts is None:
        return f"{result.rounds} ({'converged' if result.converged else 'not converged'})"
    return f"{result.rounds} over {counts[1]} windows ({counts[0]} of {counts[1]} windows converged)"


def markdown_report(result: Inspected, images: Mapping[str, str] | None = None) -> str:
    """A short Markdown report; `images` maps heatmap/convergence to paths relative to the report
    (default the run's gc_heatmap.png and convergence.png; an empty mapping shows none, and says how to
    draw them)."""
    images = DEFAULT_IMAGES if images is None else images
    lines = _summary(result)
    if images.get("heatmap"):
        lines += [f"![Granger causality heatmap]({images['heatmap']})", ""]
    lines += _strongest_edges(result)
    lines += _evaluation(result)
    lines += communication_section(result.communication, result.raw_data_bytes)
    lines += privacy_section(result.privacy)
    lines += data_section(result.client_data)
    lines += tep_sections(result.flowsheet, result.origins, result.fault_stream)
    if result.streaming is not None:
        lines += streaming_section(result.streaming, result.clients)
    lines += resilience_section(result.resilience)
    lines += ["## Convergence", ""]
    if result.history:
        last = result.history[-1]
        lines += [f"Final round {last.round}: loss {fmt(last.loss, 6)}, relative change {fmt(last.change)}.", ""]
    if images.get("convergence"):
        lines += [f"![Convergence]({images['convergence']})", ""]
    if not any(images.values()):
        lines += [NO_FIGURES, ""]
    lines += ["Matrices in result.json are indexed [target m][source n]; " + A_S_NOTE, ""]
    return "\n".join(lines)


def _summary(result: Inspected) -> list[str]:
    clients, dims = [md(c) for c in result.clients], list(result.dims)
    M = len(clients)
    timings = result.timings
    n_edges = int(result.edges.sum())
    shown = (
        ", ".join(f"{c} ({d})" for c, d in zip(clients, dims))
        if M <= 12
        else (", ".join(f"{c} ({d})" for c, d in zip(clients[:6], dims[:6])) + f", ... {clients[-1]} ({dims[-1]})")
    )
    total_time = timings.get("total_s", sum(v for v in timings.values() if isinstance(v, (int, float))))
    time_parts = ", ".join(
        f"{k.removesuffix('_s')} {fmt(v, 3)} s" for k, v in timings.items() if k != "total_s" and v is not None
    )
    rows = [
        ("engine", result.engine),
        ("clients (D_m)", f"{M}: {shown}"),
        ("total state dimension D", sum(dims)),
        ("server", server_text(result)),
        ("rounds", rounds_text(result)),
        ("FDR edges", f"{n_edges} of {M * (M - 1)} ordered pairs at alpha = {fmt(result.alpha)}"),
        ("Granger test", TEST_NAMES.get(result.test, result.test)),
        ("time", f"{fmt(total_time, 3)} s" + (f" ({time_parts})" if time_parts else "") if timings else "n/a"),
        ("seed", result.seed),
        ("fedgc version", result.fedgc_version),
    ]
    return [f"# fedgc report: {result.name}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _strongest_edges(result: Inspected) -> list[str]:
    M = len(result.clients)
    pairs = ranked_pairs(result, top=MAX_TABLE_ROWS)
    lines = [f"## Strongest edges (top {len(pairs)} of {M * (M - 1)} pairs, by p-value)", ""]
    header = ["source -> target", "strength", "statistic", "dof", "p-value", "FDR edge"]
    if result.truth is not None:
        header.append("true edge")
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * 4 + [":---:"] * (len(header) - 5)) + "|",
    ]
    for p in pairs:
        cells = [
            f"{md(p.source)} -> {md(p.target)}",
            fmt(p.strength),
            fmt(p.statistic, 5),
            fmt(p.dof or None),
            format_pvalue(p.log10_pvalue),
            "unknown" if p.unknown else "yes" if p.edge else "no",
        ]
        if p.true_edge is not None:
            cells.append("yes" if p.true_edge else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _evaluation(result: Inspected) -> list[str]:
    ev, truth = result.evaluation, result.truth
    lines = ["## Evaluation", ""]
    if truth is None and all(v is None for v in ev):
        return [*lines, "No ground truth or oracle for this run.", ""]
    if truth is not None:
        n_true = int(truth.sum())
        tp = int((truth & result.edges).sum())
        lines += [
            f"Against the known truth: {n_true} true edges; {int(result.edges.sum())} FDR edges, of which {tp} are true.",
            "",
        ]
    always = ("AUROC (ranking by p-value)", "AUPRC", "F1") if truth is not None else ()
    table = [(label, getattr(ev, key)) for label, key in _METRICS]
    table = [(k, v) for k, v in table if v is not None or k in always]
    lines += ["| metric | value |", "|---|---:|"] + [f"| {k} | {metric(k, v)} |" for k, v in table] + [""]
    lines += ["Relative errors are `||X - reference||_F / ||reference||_F` over the off-diagonal blocks.", ""]
    if result.evaluation.oracle_outside_privacy_guarantee:
        lines += [
            "**The oracle figures are computed from the raw (synthetic) data, outside the privacy guarantee**: "
            "the centralized oracle pools every client's data; only the federated result is private.",
            "",
        ]
    return lines
