"""The report.md section of a streaming run (fedgc.report.inspected.Streaming).

A windows x edges table does not fit many clients, so the section shows the alerts, the detection
of known switches, and the per-window timeline of the edges that switched or alerted.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedgc.report.inspected import Streaming
from fedgc.report.records import StreamEvaluation
from fedgc.report.text import fmt, format_pvalue, md

MAX_ALERT_ROWS = 30
MAX_TIMELINE_EDGES = 6
FULL_TIMELINE_WINDOWS = 30  # longer streams show the windows near each edge's events only
CONTEXT_WINDOWS = 3


def streaming_section(s: Streaming, clients: Sequence[str]) -> list[str]:
    """Markdown lines for a streaming run; clients: names in matrix order."""
    windows, alerts = s.windows, s.alerts
    M = len(clients)
    lam, step = s.forgetting, s.step
    rounds = [w.rounds for w in windows]
    exchanges = [w.exchanges for w in windows]
    per_sample = lam ** (1.0 / step) if lam and step else None
    lines = [
        "## Streaming",
        "",
        f"{len(windows)} windows of {s.window} samples, one every {step} samples "
        f"({s.unprocessed_steps} trailing samples after the last full window not processed). "
        f"Forgetting {fmt(lam)} per step ({fmt(per_sample, 6)} per sample); steady-state effective sample size "
        f"{fmt(s.steady_effective_sample_size)}, the N of each window's GC tests. "
        f"Memory restarts at an alert: {'yes' if s.reset_on_alert else 'no'}. "
        "The matrices at the top of this report are the last window's.",
        "",
        f"Alert rule: a change test of every block between the new window and the forgotten estimate before it, "
        f"alert when p < {fmt(s.alert_alpha)} / {max(M * (M - 1), 1)} pairs, so the chance of a false "
        f"alert in a window is at most {fmt(s.alert_alpha)} (fedgc.protocol.streaming, fedgc.core.forgetting.change_tests).",
        "",
    ]
    if windows:
        lines += [
            f"Rounds per window: {fmt(sum(rounds) / len(rounds), 3)} server updates on average (max {max(rounds)}), "
            f"{fmt(sum(exchanges) / len(exchanges), 3)} client exchanges (max {max(exchanges)}); "
            f"{sum(w.converged for w in windows)} of {len(windows)} windows reached tol {fmt(s.tol)}.",
            "",
        ]
    lines += [f"### Alerts ({len(alerts)})", ""]
    if not alerts:
        lines += ["No alerts.", ""]
    else:
        lines += ["| window | time | source -> target | kind | strength before | strength after | p-value |",
                  "|---:|---:|---|---|---:|---:|---:|"]  # fmt: skip
        for a in alerts[:MAX_ALERT_ROWS]:
            lines.append(f"| {a.window} | {a.time} | {md(a.source)} -> {md(a.target)} | {a.kind} |"
                         f" {fmt(a.strength_before)} | {fmt(a.strength_after)} | {format_pvalue(a.log10_pvalue)} |")  # fmt: skip
        if len(alerts) > MAX_ALERT_ROWS:
            lines.append(f"| ... | | {len(alerts) - MAX_ALERT_ROWS} more in result.json | | | | |")
        lines.append("")
    if s.evaluation is not None:
        lines += _detection(s.evaluation, len(alerts))
    lines += _timelines(s, clients)
    return lines


def _detection(ev: StreamEvaluation, n_alerts: int) -> list[str]:
    lines = ["### Detection of the true switches", ""]
    if not ev.switches:
        lines += ["The scenario has no switches.", ""]
    else:
        lines += ["| switch | at sample | kind | first alert: window (time) | alert kind | delay (samples) | delay (windows) |",
                  "|---|---:|---|---|---|---:|---:|"]  # fmt: skip
        for s in ev.switches:
            hit = f"{s.alert_window} ({s.alert_time})" if s.detected else "not detected"
            lines.append(f"| {md(s.source)} -> {md(s.target)} | {s.time} | {s.kind} | {hit} |"
                         f" {s.alert_kind or ''} | {fmt(s.delay_samples)} | {fmt(s.delay_windows)} |")  # fmt: skip
        lines += [
            "",
            "Delay in windows counts from the first window holding post-switch samples (1 = that window).",
            "",
        ]
    lines += [f"False alerts (no switch of their pair before them): {ev.false_alerts} of {n_alerts} alerts.", ""]
    return lines


def _timelines(s: Streaming, clients: Sequence[str]) -> list[str]:
    windows = s.windows
    index = {c: i for i, c in enumerate(clients)}
    events: dict[tuple[int, int], set[int]] = {}
    for sw in s.evaluation.switches if s.evaluation is not None else ():
        events.setdefault((index[sw.target], index[sw.source]), set()).add(sw.first_window)
    for a in s.alerts:
        events.setdefault((index[a.target], index[a.source]), set()).add(a.window)
    pairs = list(events)[:MAX_TIMELINE_EDGES]
    if not pairs or not windows:
        return []
    alerted = {(index[a.target], index[a.source], a.window): a.kind for a in s.alerts}
    lines = ["### Timeline of the switched and alerted edges", ""]
    for m, n in pairs:
        shown: Sequence[int] = range(len(windows))
        if len(windows) > FULL_TIMELINE_WINDOWS:
            near = {k for e in events[(m, n)] for k in range(e - CONTEXT_WINDOWS, e + CONTEXT_WINDOWS + 1)}
            shown = [k for k in range(len(windows)) if k in near]
        lines += [f"**{md(clients[n])} -> {md(clients[m])}**", "",
                  "| window | samples | strength | p-value (forgotten) | edge | change p-value | alert |",
                  "|---:|---|---:|---:|:---:|---:|---|"]  # fmt: skip
        last = -1
        for k in shown:
            w = windows[k]
            if k != last + 1:
                lines.append("| ... | | | | | | |")
            last = k
            change = "" if w.change_log10_pvalue is None else format_pvalue(float(w.change_log10_pvalue[m, n]))
            lines.append(
                f"| {k} | {w.start}-{w.end} | {fmt(w.strength[m, n])} | {format_pvalue(float(w.log10_pvalue[m, n]))} |"
                f" {'yes' if w.edges[m, n] else 'no'} | {change} | {alerted.get((m, n, k), '')} |"
            )
        lines.append("")
    return lines
