"""pandas' C parser for plain CSV files: the fast path's reader for what pyarrow (fedgc.data.csv_fast) does
not read, that is files separated by runs of whitespace and files with cells pyarrow converts differently
from float() or refuses (padded missing markers, "1_000", "-nan", ...); the one module of fedgc.data that
imports pandas (fedgc.data.csv looks it up by name, PANDAS_PARSER, when csv_fast returns None).

fedgc.data.csv has already decided the file's layout on its raw bytes and first lines (delimiter, header,
number of fields, timestamp column, rows); `read_values` reads the sensor values into one float64 array
in chunks and returns None whenever pandas reads anything other than that layout, so the Python parser
can read the file again and name the problem.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

# Rows per pandas chunk (bounds pandas' own buffers). Each chunk is read in one pass (low_memory=False): pandas'
# low-memory reader tokenises a chunk in pieces of a few thousand rows and concatenates their columns, which
# cost a 4000 x 20 file ~0.5 of its ~6 ms; a smaller chunk keeps the memory of a wide file's tokens as low.
READ_CHUNK_ROWS = 1 << 14


def read_values(
    raw: bytes, *, sep: str | None, skip_header: bool, n_fields: int, ts_index: int | None, sensor_fields: list[int],
    n_rows: int, na_values: Sequence[str],
) -> tuple[np.ndarray, list[str] | None] | None:  # fmt: skip
    """(values (n_rows, len(sensor_fields)), the stripped timestamp cells or None) of the file's bytes, or None
    when pandas does not find exactly n_rows rows of n_fields fields with float64 sensor columns.
    sep: the delimiter, None for runs of whitespace; na_values: the cells that are missing values."""
    if sep is not None and _signed_and_padded(raw, sep):
        return None
    values = np.empty((n_rows, len(sensor_fields)))
    # pandas infers the sensor columns' types (faster than asking for float64); a column it reads as
    # anything but float64 (integers: "-0" would lose its sign; booleans) sends the whole file through
    # again with float64 asked for, which then either converts every cell like float() or fails.
    read = None
    for explicit in (False, True):
        options = dict(
            sep=r"\s+" if sep is None else sep, header=None, names=list(range(n_fields)),
            skiprows=1 if skip_header else 0, index_col=False, engine="c", quoting=csv.QUOTE_NONE,
            dtype={j: (object if j == ts_index else np.float64) for j in range(n_fields) if explicit or j == ts_index},
            na_values=_missing_cells(na_values, sensor_fields, ts_index), keep_default_na=False,
            skipinitialspace=sep is not None, skip_blank_lines=True, chunksize=READ_CHUNK_ROWS, low_memory=False,
            encoding="utf-8", **_float_options(),
        )  # fmt: skip
        read = _read_chunks(pd.read_csv(io.BytesIO(raw), **options), values, sensor_fields, ts_index, n_fields)
        if read is not None:
            break
    if read is None:
        return None
    rows, cells = read
    if rows != n_rows:
        return None
    return values, cells


def _signed_and_padded(raw: bytes, sep: str) -> bool:
    """True if the file may hold a number with a leading '+' and trailing blanks: pandas' C parser (3.1.1)
    rounds about a quarter of such cells wrongly ('+.10e31 ' -> 9.999999999999999e+29 where float() gives
    1e+30), with or without float_precision. Conservative: a '+' that is not an exponent's sign anywhere, and
    a space or tab before a delimiter, a line end or the end of the file anywhere."""
    data = np.frombuffer(raw, dtype=np.uint8)
    plus = np.flatnonzero(data == ord("+"))
    if not (plus == 0).any() and np.isin(data[plus - 1], np.frombuffer(b"eE", dtype=np.uint8)).all():
        return False  # no '+', or only exponents' signs
    ends = np.frombuffer(b"\n\r" + sep.encode(), dtype=np.uint8)
    blank = np.flatnonzero((data == ord(" ")) | (data == ord("\t")))
    return bool(blank.size) and (
        blank[-1] == data.size - 1 or bool(np.isin(data[blank[blank < data.size - 1] + 1], ends).any())
    )


def _missing_cells(na_values: Sequence[str], sensor_fields: list[int], ts_index: int | None) -> list | dict:
    """pandas' na_values: the missing-value cells of the sensor columns only (a timestamp cell reading "NA"
    stays a string); one list for the whole file when every column is a sensor's (pandas cleans a per-column
    dict column by column: 3 of a 4000 x 20 file's 12 ms)."""
    if ts_index is None:
        return list(na_values)
    return {j: list(na_values) for j in sensor_fields}


def _read_chunks(
    reader, values: np.ndarray, sensor_fields: list[int], ts_index: int | None, n_fields: int
) -> tuple[int, list[str] | None] | None:
    """Fill `values` from a pandas chunk reader: (rows read, the stripped timestamp cells or None when there
    is no timestamp column), or None if a sensor column did not come back as float64, a timestamp cell is
    not a string, or there are more rows than lines."""
    row, cells = 0, []
    with reader:
        for chunk in reader:
            n = len(chunk)
            if chunk.shape[1] != n_fields or row + n > values.shape[0]:
                return None
            columns = [chunk[j].to_numpy() for j in sensor_fields]
            if any(column.dtype != np.float64 for column in columns):
                return None
            _store_rows(values[row : row + n], columns)
            if ts_index is not None:
                stamps = chunk[ts_index].tolist()
                if not all(type(c) is str for c in stamps):
                    return None
                cells.extend(c.strip() for c in stamps)
            row += n
    return row, (None if ts_index is None else cells)


_TRANSPOSE_ROWS = 2048  # rows per cache-sized block when writing pandas' columns into the row-major table


def _store_rows(out: np.ndarray, columns: list[np.ndarray]) -> None:
    """out[:, k] = columns[k] for a row-major out (n, P), a block of rows at a time through a (P, block)
    buffer: contiguous reads of each column, one transposing copy in cache (a column-by-column strided
    write touches every cache line of out P times)."""
    n = out.shape[0]
    buffer = np.empty((len(columns), min(n, _TRANSPOSE_ROWS)))
    for a in range(0, n, _TRANSPOSE_ROWS):
        b = min(a + _TRANSPOSE_ROWS, n)
        for k, column in enumerate(columns):
            buffer[k, : b - a] = column[a:b]
        out[a:b] = buffer[:, : b - a].T


def _float_options() -> dict:
    """pandas 3 parses floats correctly rounded by default (and deprecates float_precision); before 3 only
    float_precision='round_trip' (Python's own strtod) gives the exact float() of every cell."""
    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
