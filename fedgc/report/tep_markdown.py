"""report.md sections of a Tennessee Eastman run: the learned unit graph against the flowsheet, the
fault origin per fault run, and a streamed fault run's alerts against the fault's start."""

from __future__ import annotations

from collections.abc import Sequence

from fedgc.report.inspected import Origin
from fedgc.report.records import FaultStream, Flowsheet
from fedgc.report.text import format_pvalue


def tep_sections(flowsheet: Flowsheet | None, origins: Sequence[Origin], fault_stream: FaultStream | None) -> list[str]:
    """The three sections, each only when its record is there."""
    return flowsheet_markdown(flowsheet) + origin_markdown(origins) + fault_stream_markdown(fault_stream)


def flowsheet_markdown(fs: Flowsheet | None) -> list[str]:
    """Report lines for result.json's "flowsheet": flowsheet edges first, each group most significant first."""
    if fs is None:
        return []
    c, auroc = fs.counts, fs.auroc
    lines = [
        "## Learned unit graph vs the flowsheet",
        "",
        "| source -> target | flowsheet edge | learned edge | strength | p-value |",
        "|---|:---:|:---:|---:|---:|",
    ]
    key = lambda p: (not p.flowsheet, p.log10_pvalue if p.log10_pvalue is not None else float("inf"))
    for p in sorted(fs.pairs, key=key):
        strength = "n/a" if p.strength is None else f"{p.strength:.3g}"
        lines.append(
            f"| {p.source} -> {p.target} | {'yes' if p.flowsheet else 'no'} | {'yes' if p.learned else 'no'} "
            f"| {strength} | {format_pvalue(p.log10_pvalue)} |"
        )
    agreement = "n/a" if c.agreement is None else f"{c.agreement:.2f}"
    lines += [
        "",
        f"Of {c.pairs} ordered pairs: {c.both} flowsheet edges learned, {c.flowsheet_only} flowsheet edges "
        f"missed, {c.learned_only} learned edges that are not material flows, {c.neither} pairs with neither "
        f"(agreement {agreement}); AUROC of the p-value ranking against the flowsheet "
        f"{'n/a' if auroc is None or auroc != auroc else f'{auroc:.2f}'}.",
        "",
        fs.note,
        "",
    ]
    if fs.not_compared:
        lines += [f"Not compared (units the flowsheet does not name): {[list(p) for p in fs.not_compared]}.", ""]
    return lines


def origin_markdown(origins: Sequence[Origin]) -> list[str]:
    """Report lines for result.json's "origin": one table row per fault run."""
    if not origins:
        return []
    first = origins[0]
    names = list(first.clients)
    settings = first.settings
    lines = [
        "## Fault origin",
        "",
        "Each client scores its own filter innovations (e_t^T S^-1 e_t, normalised by its threshold: the "
        f"{settings.quantile} quantile of its normal-operation scores); a crossing is "
        f"{settings.run_length} consecutive samples above it, from the fault start on. The server "
        f"ranks clients by first crossing; near-ties (within {settings.tie_window} samples of the "
        "earliest) are ordered by being upstream in the learned graph, then by onset strength (mean normalised "
        "score over the crossing run). Times are sample indices (3 min each for TEP).",
        "",
        "| run | fault start | known origin | predicted ranking | top correct | "
        + " | ".join(f"first crossing {n}" for n in names)
        + " | false alarms before start |",
        "|---|---:|---|---|:---:|" + "---:|" * len(names) + "---|",
    ]
    correct = known_runs = 0
    for o in origins:
        known = o.known_origin
        top = o.ranking[0] if o.ranking else None
        if known is not None:
            known_runs += 1
            correct += int(top == known)
        alarms = [f"{n} at {c.false_alarm}" for n, c in o.clients.items() if c.false_alarm is not None]
        crossings = [
            "never" if o.clients[n].first_crossing is None else str(o.clients[n].first_crossing) for n in names
        ]
        lines.append(
            f"| {o.run} | {'n/a' if o.start is None else o.start} | {known or 'n/a'} | {' > '.join(o.ranking)} | "
            f"{'n/a' if known is None else ('yes' if top == known else 'no')} | "
            + " | ".join(crossings)
            + f" | {', '.join(alarms) or 'none'} |"
        )
    lines.append("")
    if known_runs:
        lines += [f"The top-ranked client is the known origin in {correct} of {known_runs} runs.", ""]
    return lines


def fault_stream_markdown(fs: FaultStream | None) -> list[str]:
    """Report lines for result.json's "fault_stream": alerts before and after the fault, the first after it."""
    if fs is None:
        return []
    if fs.fault is None:
        return [
            "## Normal-operation run, streaming",
            "",
            f"Run {fs.run} (no fault): {fs.alerts_before_fault} alert(s), all false alerts.",
            "",
        ]
    first = fs.first_alert_after_fault
    return [
        "## Fault run, streaming",
        "",
        f"Run {fs.run} (fault {fs.fault}, known origin {fs.known_origin or 'unknown'}, fault from "
        f"sample index {fs.fault_start}): {fs.alerts_before_fault} alert(s) before the fault (normal "
        f"operation: false alerts), {fs.alerts_after_fault} after it.",
        "",
        (f"First alert after the fault: {first.kind} {first.source} -> {first.target} at sample "
         f"{first.time} ({first.delay} samples after the fault start; an alert comes at the end of its window)."
         if first else "No alert after the fault."),
        "",
    ]  # fmt: skip
