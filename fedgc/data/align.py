"""Putting several clients' tables on one time axis.

Without alignment (`align: none`, the default) row t of every client is time step t: the tables
must have the same number of rows, else a DataError names every client, its file and its length.

With `align: timestamp` every client needs a timestamp column (all datetimes or all numbers), and
the clients are put on a common grid: the union of their timestamps inside the overlap
[latest first timestamp, earliest last timestamp]. A client's rows outside the overlap are
dropped; where a client has no row for a grid time it gets a row of missing measurements (a pure
prediction step of its filter). This keeps every measured row of the overlap and keeps the time
step uniform when the clients share a sampling grid with outages; intersecting the timestamps
instead would glue the rows before and after an outage together as if they were one step apart,
which corrupts the lagged regressions Granger causality rests on. Clients whose clocks do not share
a grid (different sampling phases or rates) would get mostly missing rows; that is refused
(`MAX_INSERTED`): resample such data onto a common grid first.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fedgc.data.csv import ClientTable
from fedgc.errors import DataError, FedGCWarning

# A client may have fewer than this fraction of its aligned rows inserted as missing.
MAX_INSERTED = 0.5


class AlignedRows(NamedTuple):
    """One client's row accounting: rows in its file, rows dropped outside the overlap, rows of missing
    measurements inserted where it lacks a grid time, and rows after alignment."""

    rows_in_file: int
    dropped: int
    inserted: int
    rows: int


def check_lengths(tables: Sequence[ClientTable]) -> None:
    """Row t of every table is step t: equal lengths required (DataError naming each client and file otherwise).
    Equal lengths with different timestamps are paired by position, with a warning."""
    lengths = {t.client: t.values.shape[0] for t in tables}
    if len(set(lengths.values())) > 1:
        detail = "; ".join(f"client {t.client!r} ({t.path}): {t.values.shape[0]} rows" for t in tables)
        hint = (
            " Every file has timestamps: use align: timestamp (or fedgc run --align timestamp) to align them."
            if all(t.timestamps is not None for t in tables)
            else " Trim the files to the same time span (or give them timestamps and use align: timestamp)."
        )
        raise DataError(f"clients have different numbers of rows: {detail}.{hint}")
    stamped = [t for t in tables if t.timestamps is not None]
    if len(stamped) > 1:
        ref = stamped[0]
        for t in stamped[1:]:
            if t.timestamps.dtype != ref.timestamps.dtype or not np.array_equal(t.timestamps, ref.timestamps):
                warnings.warn(
                    FedGCWarning(
                        f"client {t.client!r} ({t.path}) and client {ref.client!r} ({ref.path}) have different "
                        "timestamps; rows are paired by position (use align: timestamp to align them by time)"
                    ),
                    stacklevel=2,
                )
                break


def align_tables(tables: Sequence[ClientTable]) -> tuple[list[ClientTable], dict[str, AlignedRows]]:
    """The tables on the common grid (module docstring) and each client's row accounting."""
    unstamped = [f"{t.client!r} ({t.path})" for t in tables if t.timestamps is None]
    if unstamped:
        raise DataError(
            f"align: timestamp needs a timestamp column in every file; client(s) {', '.join(unstamped)} have none"
        )
    kinds = {t.timestamps.dtype.kind for t in tables}
    if len(kinds) > 1:
        detail = ", ".join(
            f"{t.client!r}: {'datetimes' if t.timestamps.dtype.kind == 'M' else 'numbers'}" for t in tables
        )
        raise DataError(f"align: timestamp needs timestamps of one kind in every file, got {detail}")
    start = max(t.timestamps[0] for t in tables)
    end = min(t.timestamps[-1] for t in tables)
    if start > end:
        detail = ", ".join(f"{t.client!r} ({t.path}): {t.timestamps[0]} .. {t.timestamps[-1]}" for t in tables)
        raise DataError(f"the clients' time spans do not overlap: {detail}")
    grid = np.unique(np.concatenate([t.timestamps[(t.timestamps >= start) & (t.timestamps <= end)] for t in tables]))
    out, rows = [], {}
    for t in tables:
        inside = (t.timestamps >= start) & (t.timestamps <= end)
        at = np.searchsorted(grid, t.timestamps[inside])
        values = np.full((grid.size, t.values.shape[1]), np.nan)
        values[at] = t.values[inside]
        inserted = grid.size - int(inside.sum())
        if inserted >= MAX_INSERTED * grid.size:
            raise DataError(
                f"client {t.client!r} ({t.path}): aligned by timestamp it would lack {inserted} of {grid.size} "
                "common time steps; the clients' timestamps do not share a sampling grid (different rates or "
                "phases?). Resample the files onto a common grid first."
            )
        rows[t.client] = AlignedRows(t.values.shape[0], int((~inside).sum()), inserted, grid.size)
        out.append(t._replace(values=values, timestamps=grid.copy()))
    changed = {c: r for c, r in rows.items() if r.dropped or r.inserted}
    if changed:
        detail = "; ".join(f"{c!r}: {r.dropped} dropped, {r.inserted} missing inserted" for c, r in changed.items())
        warnings.warn(
            FedGCWarning(f"aligned {len(tables)} clients on {grid.size} common time steps ({detail})"), stacklevel=2
        )
    return out, rows
