"""The report.md section of a streaming run, drawn from result.json's "streaming" record only.

A windows x edges table does not fit many clients, so the section shows the alerts, the detection
of known switches, and the per-window timeline of the edges that switched or alerted.
"""

from __future__ import annotations

from typing import Any

from fedgc.report.result_json import _fmt, _md, format_pvalue

MAX_ALERT_ROWS = 30
MAX_TIMELINE_EDGES = 6
FULL_TIMELINE_WINDOWS = 30  # longer streams show the windows near each edge's events only
CONTEXT_WINDOWS = 3


def streaming_section(record: dict, clients: list[str]) -> list[str]:
    """Markdown lines for record = result.json["streaming"]; clients: names in matrix order."""
    windows, alerts = record.get("windows") or [], record.get("alerts") or []
    M = len(clients)
    lam, step = record.get("forgetting"), record.get("step")
    rounds = [w["rounds"] for w in windows]
    exchanges = [w["exchanges"] for w in windows]
    per_sample = lam ** (1.0 / step) if lam and step else None
    lines = [
        "## Streaming",
        "",
        f"{len(windows)} windows of {record.get('window')} samples, one every {step} samples "
        f"({record.get('unprocessed_steps', 0)} trailing samples after the last full window not processed). "
        f"Forgetting {_fmt(lam)} per step ({_fmt(per_sample, 6)} per sample); steady-state effective sample size "
        f"{_fmt(record.get('steady_effective_sample_size'))}, the N of each window's GC tests. "
        f"Memory restarts at an alert: {'yes' if record.get('reset_on_alert') else 'no'}. "
        "The matrices at the top of this report are the last window's.",
        "",
        f"Alert rule: a change test of every block between the new window and the forgotten estimate before it, "
        f"alert when p < {_fmt(record.get('alert_alpha'))} / {max(M * (M - 1), 1)} pairs, so the chance of a false "
        f"alert in a window is at most {_fmt(record.get('alert_alpha'))} (fedgc/streaming.py).",
        "",
    ]
    if windows:
        lines += [
            f"Rounds per window: {_fmt(sum(rounds) / len(rounds), 3)} server updates on average (max {max(rounds)}), "
            f"{_fmt(sum(exchanges) / len(exchanges), 3)} client exchanges (max {max(exchanges)}); "
            f"{sum(bool(w['converged']) for w in windows)} of {len(windows)} windows reached tol {_fmt(record.get('tol'))}.",
            "",
        ]
    lines += [f"### Alerts ({len(alerts)})", ""]
    if not alerts:
        lines += ["No alerts.", ""]
    else:
        lines += ["| window | time | source -> target | kind | strength before | strength after | p-value |",
                  "|---:|---:|---|---|---:|---:|---:|"]  # fmt: skip
        for a in alerts[:MAX_ALERT_ROWS]:
            lines.append(f"| {a['window']} | {a['time']} | {_md(a['source'])} -> {_md(a['target'])} | {a['kind']} |"
                         f" {_fmt(a['strength_before'])} | {_fmt(a['strength_after'])} | {format_pvalue(a['log10_pvalue'])} |")  # fmt: skip
        if len(alerts) > MAX_ALERT_ROWS:
            lines.append(f"| ... | | {len(alerts) - MAX_ALERT_ROWS} more in result.json | | | | |")
        lines.append("")
    evaluation = record.get("evaluation")
    if evaluation is not None:
        lines += _detection(evaluation, len(alerts))
    lines += _timelines(record, clients)
    return lines


def _detection(ev: dict, n_alerts: int) -> list[str]:
    switches = ev.get("switches") or []
    lines = ["### Detection of the true switches", ""]
    if not switches:
        lines += ["The scenario has no switches.", ""]
    else:
        lines += ["| switch | at sample | kind | first alert: window (time) | alert kind | delay (samples) | delay (windows) |",
                  "|---|---:|---|---|---|---:|---:|"]  # fmt: skip
        for s in switches:
            hit = f"{s['alert_window']} ({s['alert_time']})" if s["detected"] else "not detected"
            lines.append(f"| {_md(s['source'])} -> {_md(s['target'])} | {s['time']} | {s['kind']} | {hit} |"
                         f" {s['alert_kind'] or ''} | {_fmt(s['delay_samples'])} | {_fmt(s['delay_windows'])} |")  # fmt: skip
        lines += ["", "Delay in windows counts from the first window holding post-switch samples (1 = that window).", ""]
    lines += [f"False alerts (no switch of their pair before them): {ev.get('false_alerts', 0)} of {n_alerts} alerts.", ""]
    return lines


def _timelines(record: dict, clients: list[str]) -> list[str]:
    windows = record.get("windows") or []
    index = {c: i for i, c in enumerate(clients)}
    pairs: list[tuple[int, int]] = []
    events: dict[tuple[int, int], set[int]] = {}
    for s in (record.get("evaluation") or {}).get("switches") or []:
        pair = (index[s["target"]], index[s["source"]])
        events.setdefault(pair, set()).add(s["first_window"])
    for a in record.get("alerts") or []:
        pair = (index[a["target"]], index[a["source"]])
        events.setdefault(pair, set()).add(a["window"])
    pairs = list(events)[:MAX_TIMELINE_EDGES]
    if not pairs or not windows:
        return []
    alerted = {(index[a["target"]], index[a["source"]], a["window"]): a["kind"] for a in record.get("alerts") or []}
    lines = ["### Timeline of the switched and alerted edges", ""]
    for m, n in pairs:
        shown = range(len(windows))
        if len(windows) > FULL_TIMELINE_WINDOWS:
            near = {k for e in events[(m, n)] for k in range(e - CONTEXT_WINDOWS, e + CONTEXT_WINDOWS + 1)}
            shown = [k for k in range(len(windows)) if k in near]
        lines += [f"**{_md(clients[n])} -> {_md(clients[m])}**", "",
                  "| window | samples | strength | p-value (forgotten) | edge | change p-value | alert |",
                  "|---:|---|---:|---:|:---:|---:|---|"]  # fmt: skip
        last = -1
        for k in shown:
            w = windows[k]
            if k != last + 1:
                lines.append("| ... | | | | | | |")
            last = k
            change = w.get("change_log10_pvalue")
            lines.append(
                f"| {k} | {w['start']}-{w['end']} | {_fmt(_cell(w['strength'], m, n))} |"
                f" {format_pvalue(_cell(w['log10_pvalue'], m, n))} | {'yes' if _cell(w['edges'], m, n) else 'no'} |"
                f" {format_pvalue(_cell(change, m, n)) if change is not None else ''} | {alerted.get((m, n, k), '')} |"
            )
        lines.append("")
    return lines


def _cell(matrix: Any, m: int, n: int) -> Any:
    return None if matrix is None else matrix[m][n]
