"""Column policies for a client's sensor table: mostly-missing columns, stuck sensors, held analyser values.

Applied by `fedgc.data.csv.read_client_csv` after parsing (values (T, P) with NaN for missing cells), in
this order:

1. A column missing in more than `max_missing` of its rows is dropped with a warning: its moments
   (and so the identified model) rest on too few values, and a sensor that is mostly offline is
   better left out than imputed by the filter. A column without any value is always dropped.
2. A constant column (a stuck sensor; all observed values equal) carries no information and breaks
   standardisation: `constant_columns: drop` (default) drops it with a warning, `error` refuses it.
3. A held column (an analyser whose value is repeated between samples) is detected from its
   runs of exactly repeated values: the new values fall on a regular grid t = phase + j * period,
   period >= 2 (`detect_held`). `held_values: missing` (default) keeps the value at the grid rows
   (the sample times) and turns the repeats into missing measurements, so the filter sees every
   analyser sample once; `keep` leaves them (and the filter then counts each sample `period` times).

Whole rows of missing values are kept: they are pure prediction steps of the filter, and dropping
them would shift this client's time axis against the other clients'.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fedgc.core.moments import column_span
from fedgc.data.column_policy import ColumnPolicy
from fedgc.errors import DataError, FedGCWarning

# A held column: at least this many new values, period >= 2, and this share of them on the grid.
HELD_MIN_SAMPLES = 4
HELD_ON_GRID = 0.9


class HeldColumn(NamedTuple):
    """A held column: new values at rows phase + j * period (0-based data rows); n_masked repeats
    turned into missing values (0 under held_values: keep)."""

    column: str
    period: int
    phase: int
    n_masked: int


class Cleaning(NamedTuple):
    """What the column policies did to one client's table."""

    dropped_missing: tuple[tuple[str, float], ...] = ()  # (column, fraction missing)
    dropped_constant: tuple[str, ...] = ()
    held: tuple[HeldColumn, ...] = ()
    missing_values: int = 0  # missing cells in the kept columns, as read (before held repeats are masked)
    empty_rows: int = 0  # rows with every kept sensor missing (after masking): pure prediction steps
    kept: tuple[int, ...] = ()  # 0-based indices of the kept columns among the file's sensor columns
    file_columns: int = 0  # number of sensor columns in the file
    held_searched: bool = False  # find_held looked at every kept column: `held` is all it found

    def summary(self) -> dict:
        return {
            "dropped_missing_columns": {c: f for c, f in self.dropped_missing},
            "dropped_constant_columns": list(self.dropped_constant),
            "held_columns": {h.column: {"period": h.period, "phase": h.phase, "masked": h.n_masked} for h in self.held},
            "missing_values": self.missing_values,
            "empty_rows": self.empty_rows,
        }


def detect_held(x: np.ndarray) -> tuple[int, int] | None:
    """(period, phase) if column x (T,) holds its values between samples on a regular grid, else None.

    New values are the observed entries that differ from the previous observed one. The period is
    the most common gap between new values (>= 2); the column is held if at least HELD_ON_GRID of
    the new values lie on one residue class modulo the period (two equal consecutive samples make a
    gap of 2 periods and stay on the grid; a continuous sensor that repeats by chance has period 1,
    a coarsely quantised one irregular gaps)."""
    rows = np.flatnonzero(np.isfinite(x))
    if rows.size < 2 * HELD_MIN_SAMPLES:
        return None
    v = x[rows]
    new = rows[np.r_[True, v[1:] != v[:-1]]]
    if new.size < HELD_MIN_SAMPLES:
        return None
    period = int(np.bincount(np.diff(new)).argmax())
    if period < 2:
        return None
    residues = np.bincount(new % period, minlength=period)
    phase = int(residues.argmax())
    if residues[phase] < HELD_ON_GRID * new.size:
        return None
    return period, phase


def find_held(values: np.ndarray) -> dict[int, tuple[int, int]]:
    """{column: (period, phase)} for the columns of values (T, P) that detect_held finds held; the complete
    columns that surely are not (_maybe_held, one vectorised pass) are not looked at one by one."""
    found = {int(j): detect_held(values[:, j]) for j in np.flatnonzero(_maybe_held(values))}
    return {j: grid for j, grid in found.items() if grid is not None}


def _maybe_held(values: np.ndarray) -> np.ndarray:
    """Per column, False where detect_held surely finds nothing: a complete column whose new values
    (those that differ from the previous row) follow each other at a gap of 1 at least as often as at
    any other gap, so the most common gap is 1. One vectorised pass over the rows instead of a strided
    pass per column; columns with missing values go through detect_held."""
    if values.shape[0] < 2:
        return np.ones(values.shape[1], dtype=bool)
    changed = values[1:] != values[:-1]  # row t + 1 holds a new value (NaN != NaN: decided below)
    n_new = 1 + changed.sum(axis=0)
    gap_one = changed[0].astype(np.int64) + (changed[:-1] & changed[1:]).sum(axis=0)  # new rows t, t + 1
    del changed
    complete = ~np.isnan(values).any(axis=0)
    return ~(complete & (2 * gap_one >= n_new - 1))


def apply_policies(
    values: np.ndarray,
    columns: tuple[str, ...],
    policy: ColumnPolicy,
    *,
    fail: Callable[[str], DataError],
    where: str,
    copy: bool = True,
) -> tuple[np.ndarray, tuple[str, ...], Cleaning]:
    """Apply the policies (module docstring) to values (T, P); returns the kept values, their column
    names and what was done. `where` names the client and file in warnings; `fail` builds the errors.
    copy=False: `values` may be returned (and its held repeats masked) in place when every column is kept."""
    T = values.shape[0]
    if not policy.clean:
        kept = tuple(range(len(columns)))
        return values, columns, Cleaning((), (), (), int(np.isnan(values).sum()), int(np.isnan(values).all(axis=1).sum()),
                                         kept, len(columns))  # fmt: skip
    missing = np.isnan(values)
    complete = T > 0 and not missing.any()  # most files: no column misses a value
    frac = np.zeros(values.shape[1]) if complete else missing.mean(axis=0)
    too_sparse = frac > policy.max_missing if complete else (frac > policy.max_missing) | missing.all(axis=0)
    del missing
    dropped_missing = tuple((columns[j], float(frac[j])) for j in np.flatnonzero(too_sparse))
    if dropped_missing:
        listed = ", ".join(f"{c!r} ({f:.0%} missing)" for c, f in dropped_missing)
        _warn(
            f"{where}: dropped column(s) {listed}: more than max_missing = {policy.max_missing:g} of the rows are missing"
        )

    span = column_span(values, complete=complete)  # all-NaN columns (NaN span) are already dropped above
    constant = ~too_sparse & (span == 0)
    dropped_constant = tuple(columns[j] for j in np.flatnonzero(constant))
    if dropped_constant and policy.constant_columns == "error":
        raise fail(
            f"constant column(s) {', '.join(map(repr, dropped_constant))}: zero variance carries no "
            "information and breaks standardisation; drop them (or set constant_columns: drop)"
        )
    if dropped_constant:
        _warn(
            f"{where}: dropped constant column(s) {', '.join(map(repr, dropped_constant))} (a stuck sensor carries "
            "no information; set constant_columns: error to refuse such files)"
        )

    keep = np.flatnonzero(~too_sparse & ~constant)
    if keep.size == 0:
        raise fail("no usable sensor column left after dropping mostly-missing and constant columns")
    # np.take copies, like values[:, keep], and is ~5x faster on a long row-major table
    values = np.take(values, keep, axis=1) if keep.size < values.shape[1] or copy else values
    columns = tuple(columns[j] for j in keep)
    n_missing = 0 if complete else int(np.isnan(values).sum())

    held = []
    for j, (period, phase) in find_held(values).items():
        name = columns[j]
        masked = 0
        if policy.held_values == "missing":
            off_grid = (np.arange(T) % period != phase) & np.isfinite(values[:, j])
            values[off_grid, j] = np.nan
            masked = int(off_grid.sum())
        held.append(HeldColumn(name, period, phase, masked))
    if held:
        groups: dict[int, list[str]] = {}
        for h in held:
            groups.setdefault(h.period, []).append(h.column)
        listed = "; ".join(f"every {p} rows: {', '.join(map(repr, cs))}" for p, cs in sorted(groups.items()))
        action = (
            "repeats between samples are treated as missing measurements"
            if policy.held_values == "missing"
            else "kept as they are (held_values: keep)"
        )
        _warn(f"{where}: held (sampled) column(s) detected, new values {listed}; {action}")
    empty = 0 if complete and not any(h.n_masked for h in held) else int(np.isnan(values).all(axis=1).sum())
    kept = tuple(keep.tolist())
    cleaning = Cleaning(
        dropped_missing, dropped_constant, tuple(held), n_missing, empty, kept, len(frac), held_searched=True
    )
    return values, columns, cleaning


def _warn(message: str) -> None:
    warnings.warn(FedGCWarning(message), stacklevel=4)
