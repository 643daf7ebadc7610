"""numpy's text reader for small plain CSV files: fedgc.data.csv's fast path without pandas.

pandas' C parser reads a plain file about three times faster than numpy.loadtxt, but importing pandas
costs ~0.25 s, as much as loadtxt's extra time on ~20 MB of CSV: a run whose files are all small
(read_client_csv(reader="numpy")) reads them here and never loads pandas. Same contract as
fedgc.data.csv_fast.read_values: fedgc.data.csv has already decided the layout; None whenever numpy reads
anything other than that layout or a cell it cannot convert (a missing-value marker, a timestamp column),
and the file then goes to pandas' parser. loadtxt converts every cell with Python's own string-to-float
conversion (correctly rounded, as float() and pandas' parser), so the table is the same bit for bit.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def read_values(
    raw: bytes, *, sep: str | None, skip_header: bool, n_fields: int, ts_index: int | None, sensor_fields: list[int],
    n_rows: int, na_values: Sequence[str],
) -> tuple[np.ndarray, list[str] | None] | None:  # fmt: skip
    """(values (n_rows, n_fields), None) of a file without a timestamp column, or None (see the module
    docstring). sep: the delimiter, None for runs of whitespace; na_values: unused (a missing cell is None)."""
    if ts_index is not None:
        return None
    try:
        values = np.loadtxt(io.StringIO(raw.decode("utf-8-sig")), dtype=np.float64, delimiter=sep, comments=None,
                            skiprows=1 if skip_header else 0, ndmin=2)  # fmt: skip
    except ValueError:  # a missing or odd cell, a ragged row
        return None
    if values.shape != (n_rows, n_fields):  # loadtxt leaves out blank lines
        return None
    return np.ascontiguousarray(values), None
