"""report.md sections of the run's records: bytes per exchange, differential privacy, the clients' data,
dropouts and resume. Each takes the record as result.json holds it and returns Markdown lines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fedgc.report.records import DataNotes, Resilience
from fedgc.report.text import byte_size, fmt, md


def per_exchange_table(rows: Sequence[Mapping[str, Any]], *, head: int = 15, tail: int = 5) -> list[str]:
    """Bytes each way per exchange; a long run shows its first `head` and last `tail` exchanges."""
    if not rows:
        return []
    lines = ["| exchange | request | to clients | to server | seconds |", "|---:|---|---:|---:|---:|"]
    shown = rows if len(rows) <= head + tail else [*rows[:head], None, *rows[-tail:]]
    for r in shown:
        if r is None:
            lines.append(f"| ... | {len(rows) - head - tail} more in result.json | | | |")
            continue
        lines.append(f"| {r.get('exchange', '')} | {md(str(r.get('request', '')))} | {byte_size(r.get('to_clients', 0))} | "
                     f"{byte_size(r.get('to_server', 0))} | {fmt(r.get('seconds'))} |")  # fmt: skip
    return [*lines, ""]


def communication_section(comm: Mapping[str, Any], raw_data_bytes: int) -> list[str]:
    """The bytes on the wire (result.json "communication") and the raw data the clients kept."""
    if not comm and not raw_data_bytes:
        return []
    lines = ["## Communication", ""]
    if comm:
        lines += ["| quantity | value |", "|---|---:|"]
        for k, v in comm.items():
            if k == "per_exchange":
                continue
            if isinstance(v, str):
                shown = v
            elif "bytes" in k:
                shown = byte_size(v)
            else:
                shown = fmt(v) if not isinstance(v, (dict, list)) else json.dumps(v)
            lines.append(f"| {md(k)} | {md(shown)} |")
        lines.append("")
        lines += per_exchange_table(comm.get("per_exchange") or [])
    if raw_data_bytes:
        lines += [f"Raw client data that never left the clients: {byte_size(raw_data_bytes)}.", ""]
    return lines


def privacy_section(p: Mapping[str, Any]) -> list[str]:
    """The privacy figures (fedgc.privacy.accounting.privacy_report); nothing when privacy was off."""
    if not p.get("enabled"):
        return []
    sigma = p.get("noise_multiplier", {})
    lines = [
        "## Differential privacy",
        "",
        f"Target per client for the whole run: epsilon {fmt(p.get('target_epsilon'))}, delta {fmt(p.get('target_delta'))}"
        f" ({p.get('accountant')} accountant). Clip norm c = {_clip(p.get('clip'))} ({p.get('clip_space')}),"
        f" noise multiplier {fmt(sigma.get('client_to_server'))} (client -> server) and"
        f" {fmt(sigma.get('server_to_clients'))} (server -> clients), debias {p.get('debias')},"
        f" {p.get('rounds_run')} of {p.get('planned_rounds')} planned rounds run.",
        "",
        f"Neighbouring relation: {p.get('neighbouring_relation')}",
        "",
        "| client | client -> server epsilon | server -> clients epsilon | whole run epsilon | delta | clip | noise std |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in (p.get("per_client") or {}).items():
        lines.append(
            f"| {md(name)} | {fmt(c['client_to_server']['epsilon'])} | {fmt(c['server_to_clients']['epsilon'])} |"
            f" {fmt(c['whole_run']['epsilon'])} | {fmt(c['whole_run']['delta'])} | {fmt(c.get('clip'))} |"
            f" {fmt(c.get('client_noise_std'))} |"
        )
    lines += ["", str(p.get("notes", "")), ""]
    return lines


def _clip(clip: Any) -> str:
    """The run's clip setting: a norm, or 'auto' (each client's own, from its model: the table's clip column)."""
    return "auto (each client's own, from its model; column clip below)" if clip == "auto" else fmt(clip)


def data_section(d: DataNotes) -> list[str]:
    """What was done to the clients' data files (result.json "data"); nothing for synthetic clients."""
    if not d.clients:
        return []
    lines = [
        "## Data",
        "",
        f"Alignment: {d.align}.",
        "",
        "| client | rows | columns | missing | dropped columns | held columns (period) | rows dropped / inserted by alignment |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for name, c in d.clients.items():
        dropped = [f"{k} (constant)" for k in c.dropped_constant_columns]
        dropped += [f"{k} ({fmt(f * 100, 3)}% missing)" for k, f in c.dropped_missing_columns.items()]
        held = [f"{k} ({h.period})" for k, h in c.held_columns.items()]
        moved = "-" if c.alignment is None else f"{c.alignment.dropped} / {c.alignment.inserted}"
        lines.append(
            f"| {md(name)} | {c.rows} | {c.columns} | {fmt(100 * c.missing_fraction, 3)}% |"
            f" {md(', '.join(dropped) or '-')} | {md(', '.join(held) or '-')} | {moved} |"
        )
    lines += [
        "",
        "Missing measurements (including held analyser values between samples) are skipped exactly by each "
        "client's filter. The p-values treat the steps completed by the filter's prediction as observed, so "
        "with much missing data they are optimistic.",
        "",
    ]
    return lines


def resilience_section(r: Resilience) -> list[str]:
    """The clients that dropped out and the checkpoint the run resumed from; nothing when neither happened."""
    if not r.dropouts and r.resumed_from_round is None:
        return []
    lines = ["## Dropouts and resume", ""]
    if r.resumed_from_round is not None:
        lines += [f"The run was resumed from the checkpoint of round {r.resumed_from_round}.", ""]
    if r.dropouts:
        lines += ["| client | dropped at round | reason |", "|---|---:|---|"]
        lines += [f"| {md(d.client)} | {d.round} | {md(d.reason)} |" for d in r.dropouts]
        lines += [
            "",
            f"server.on_dropout is '{r.on_dropout}': the run went on without these clients. Every pair involving "
            "them is unknown (null in result.json, marked in `unknown`), and the remaining edges are Granger causality "
            "conditional on the remaining clients only.",
            "",
        ]
    return lines
