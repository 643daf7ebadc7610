"""Per-client sensor data as CSV files: one file per client, read only by that client.

File format
-----------
* One row per time step, one column per sensor. Blank lines are ignored.
* Delimiter: ``,``, ``;``, tab, or runs of whitespace; detected from the first
  lines unless given.
* Optional header line. The first row is a header if some cell in it is neither a
  number, an empty/missing marker, nor an ISO-8601 datetime. Without a header the
  sensor columns are named ``s0``, ``s1``, ...
* Optional timestamp column. With ``timestamp_column="auto"`` the *first* column
  is the timestamp column if its header is one of ``time``, ``timestamp``,
  ``date``, ``datetime``, ``t`` (any case) or if its first value is an ISO-8601
  datetime. An int (0-based field index; negative counts from the end) or a str
  (header name) selects the column explicitly; ``None`` means there is none.
  Timestamps are returned as ``datetime64[us]`` if they are ISO-8601 datetimes
  (time-zone-aware ones converted to UTC), else as float64. They must be
  strictly increasing, unless ``sort_timestamps`` (alignment by timestamp) asks
  to put the rows in order; equal timestamps are always an error.
* Sensor values are numbers. Missing values (empty cells, ``NaN``, ``NA``, ``null``,
  ...) are read as NaN: missing measurements, which the filter skips exactly.
  Infinities and non-numeric cells are errors.
* Column policies (fedgc.data.cleaning): mostly-missing columns and constant columns
  (stuck sensors) are dropped with a warning (``constant_columns="error"``
  refuses the latter), and held analyser values become missing between samples.

Every problem raises :class:`fedgc.errors.DataError` naming the client, the
file and the problem; rows are numbered as lines in the file (1-based). Every
repair warns with :class:`fedgc.errors.FedGCWarning`, naming the same.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import itertools
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedgc.data.cleaning import Cleaning, ColumnPolicy, apply_policies
from fedgc.errors import DataError, FedGCWarning
from fedgc.files import replacing

__all__ = ["ClientTable", "read_client_csv", "write_client_csv"]

TIMESTAMP_NAMES = frozenset({"time", "timestamp", "date", "datetime", "t"})
MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "#n/a", "null", "none"})
_DELIMITER_PREFERENCE = ("\t", ";", ",")  # ',' last: it may be a decimal comma
_WHITESPACE = "whitespace"
_SNIFF_LINES = 20


class ClientTable(NamedTuple):
    """One client's data file. values: (T, P) float64, NaN for missing; columns: P kept sensor names;
    timestamps: (T,) or None; cleaning: what the column policies dropped or masked;
    rows_sorted: whether the rows were put in timestamp order."""

    client: str
    path: Path
    columns: tuple[str, ...]
    values: np.ndarray
    timestamps: np.ndarray | None
    cleaning: Cleaning = Cleaning()
    rows_sorted: bool = False


# ----------------------------------------------------------------------------- reading


def read_client_csv(
    path: str | os.PathLike,
    *,
    client: str,
    timestamp_column: str | int | None = "auto",
    min_rows: int = 2,
    delimiter: str | None = None,
    policy: ColumnPolicy | None = None,
    sort_timestamps: bool = False,
) -> ClientTable:
    """Read one client's sensor file (format in the module docstring).

    `delimiter` is ``","``, ``";"``, ``"\\t"``, any other single character, or
    ``" "`` / ``"whitespace"`` for runs of whitespace; ``None`` detects it.
    `policy`: the column policies (default ColumnPolicy(): drop mostly-missing and
    constant columns, held values become missing). `sort_timestamps`: rows out of
    timestamp order are sorted (with a warning) instead of refused.
    Reads exactly `path` and nothing else.

    Parsing: plain files (ASCII, no quotes, one record per line, every line with as many
    cells as the first) are read by pyarrow's CSV reader, or pandas' C parser for what pyarrow
    does not read alike (`_parse_fast`); anything else, and
    every file the fast path finds a problem in, by the Python parser (`_parse_python`),
    which defines the format and names the first problem with its row. Both give the same
    table for every file the fast path accepts (tests/test_data_fast.py).
    """
    path = Path(path)
    policy = ColumnPolicy() if policy is None else policy

    def fail(problem: str) -> DataError:
        return DataError(f"client {client!r}: data file {str(path)!r}: {problem}")

    raw = _read_bytes(path, fail)
    parsed = None
    if FAST_PATH:
        parsed = _parse_fast(raw, timestamp_column=timestamp_column, min_rows=min_rows, delimiter=delimiter, fail=fail)
    if parsed is None:
        parsed = _parse_python(
            raw, timestamp_column=timestamp_column, min_rows=min_rows, delimiter=delimiter, fail=fail
        )
    del raw
    values, columns, line_nos, ts_index = parsed.values, parsed.columns, parsed.line_nos, parsed.ts_index
    if policy.clean:  # standardisation from the data needs finite variances; a given model brings its own
        _check_magnitude(values, columns, line_nos, fail)

    timestamps, rows_sorted = None, False
    if ts_index is not None:
        cells = parsed.ts_cells
        timestamps = _parse_timestamps(cells, line_nos, parsed.label(ts_index), fail)
        order = _timestamp_order(timestamps, cells, line_nos, sort_timestamps, fail)
        if order is not None:
            values, timestamps, rows_sorted = values[order], timestamps[order], True
            warnings.warn(
                FedGCWarning(
                    f"client {client!r}: data file {str(path)!r}: rows were not in timestamp order; sorted them"
                ),
                stacklevel=2,
            )
    del parsed
    values, columns, cleaning = apply_policies(
        values, columns, policy, fail=fail, where=f"client {client!r}: data file {str(path)!r}", copy=False
    )
    return ClientTable(client, path, columns, values, timestamps, cleaning, rows_sorted)


# Reading through pyarrow's or pandas' parser (`_parse_fast`) first; False: the Python parser only (benchmarks,
# tests).
FAST_PATH = True
# The fast path's readers import pyarrow and pandas: they are looked up by name when a plain file is parsed, so
# a run that reads no CSV file (a config check, a synthetic or TEP run) loads neither, and a run whose files
# pyarrow reads never loads pandas. FAST_PARSER: pyarrow, for files with a one-character delimiter;
# PANDAS_PARSER: pandas' C parser, for files of whitespace-separated cells and what pyarrow leaves.
FAST_PARSER = "fedgc.data.csv_fast"
PANDAS_PARSER = "fedgc.data.csv_pandas"
FAST_CHAIN = (FAST_PARSER, PANDAS_PARSER)
# The parsers of FAST_CHAIN that refuse a row of another number of fields than the first line's (pandas pads
# a short one with missing values).
CHECKS_WIDTHS = (FAST_PARSER,)


class _Parsed(NamedTuple):
    """A parsed file before the value checks shared by both parsers. line_nos: the file line (1-based) of
    every data row; values: (T, P) sensor values (NaN for missing); ts_cells: the stripped timestamp cells."""

    header: list[str] | None
    ts_index: int | None
    sensor_fields: list[int]
    columns: tuple[str, ...]
    line_nos: Sequence[int]
    values: np.ndarray
    ts_cells: list[str] | None

    def label(self, j: int) -> str:  # j: field index in the file
        if self.header is not None:
            return f"column {self.header[j]!r}"
        name = f"s{self.sensor_fields.index(j)}" if j != self.ts_index else "timestamp"
        return f"column {name!r} (field {j + 1})"


def _read_bytes(path: Path, fail) -> bytes:
    if not path.exists():
        raise fail("file not found")
    if path.is_dir():
        raise fail("is a directory, not a CSV file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise fail(f"cannot be read: {e.strerror or e}") from None


def _columns(header, ts_index, n_fields: int, fail) -> tuple[list[int], tuple[str, ...]]:
    sensor_fields = [j for j in range(n_fields) if j != ts_index]
    if not sensor_fields:
        raise fail("has no sensor columns (only a timestamp column)")
    if header is not None:
        return sensor_fields, tuple(header[j] for j in sensor_fields)
    return sensor_fields, tuple(f"s{k}" for k in range(len(sensor_fields)))


def _parse_python(raw: bytes, *, timestamp_column, min_rows: int, delimiter, fail) -> _Parsed:
    """The reference parser: every line through csv.reader (or str.split), every cell checked."""
    line_nos, lines = _decode_lines(raw, fail)
    sep = _choose_delimiter(lines, delimiter, fail)
    rows = _split(lines, sep, line_nos, fail)
    del lines

    # Header, then every row must have as many cells as the first.
    header: list[str] | None = None
    where = f"row {line_nos[0]}"
    if not all(_is_data_like(cell) for cell in rows[0]):
        header = [cell.strip() for cell in rows[0]]
        where = f"the header (row {line_nos[0]})"
        _check_names(header, fail)
        if len(rows) == 1:
            raise fail(f"has a header line (row {line_nos[0]}) but no data rows")
        rows, line_nos = rows[1:], line_nos[1:]
    n_fields = len(header) if header is not None else len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != n_fields:
            raise fail(f"row {line_nos[i]} has {len(row)} cells, expected {n_fields} as in {where}")

    # Timestamp column and sensor columns.
    ts_index = _timestamp_index(timestamp_column, header, rows, n_fields, fail)
    sensor_fields, columns = _columns(header, ts_index, n_fields, fail)
    parsed = _Parsed(header, ts_index, sensor_fields, columns, line_nos, np.empty((0, 0)), None)

    if len(rows) < min_rows:
        raise fail(f"has {len(rows)} data row(s), fewer than the {min_rows} required (min_rows)")

    if ts_index is None:
        sensor_rows = rows
    else:
        sensor_rows = [row[:ts_index] + row[ts_index + 1 :] for row in rows]
    values = _parse_values(sensor_rows, sensor_fields, line_nos, parsed.label, fail)
    del sensor_rows
    ts_cells = None if ts_index is None else [row[ts_index].strip() for row in rows]
    return parsed._replace(values=values, ts_cells=ts_cells)


def _decode_lines(raw: bytes, fail) -> tuple[list[int], list[str]]:
    """Non-blank lines of the file and their 1-based line numbers."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise fail(f"is not UTF-8 text (byte {e.start}); is it a binary file?") from None
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise fail("is empty")
    line_nos, lines = zip(*numbered)
    return list(line_nos), list(lines)


# ----------------------------------------------------------------------------- the fast path

_BOM = b"\xef\xbb\xbf"
# Bytes a file may hold for the fast path: printable ASCII but the quote, tab, LF, and CR (only in CRLF).
# Everything else (non-ASCII text, quotes, NUL, \v, \f, \x1c-\x1e, a lone CR: what str.splitlines or
# csv.reader treat specially) goes to the Python parser.
_FAST_BYTES = bytes(range(0x20, 0x7F)).replace(b'"', b"") + b"\t\n\r"
# Every spelling of the missing markers that `.lower()` maps onto one (pyarrow and pandas match them exactly).
_NA_SPELLINGS = sorted(
    {
        "".join(chars)
        for marker in MISSING_MARKERS
        for chars in itertools.product(*({c.lower(), c.upper()} for c in marker))
    }
)
_FAST_TABLE = np.zeros(256, dtype=bool)
_FAST_TABLE[list(_FAST_BYTES)] = True
_WS_TABLE = np.zeros(256, dtype=bool)
_WS_TABLE[[ord(c) for c in " \t\r\n"]] = True
_COUNT_BLOCK = 1 << 23  # bytes per block when counting cells per line (bounds the temporaries)


def _parse_fast(raw: bytes, *, timestamp_column, min_rows: int, delimiter, fail) -> _Parsed | None:
    """The same table as `_parse_python` for a plain file, or None when the file is not plain or has
    any problem (the Python parser then reads it and names the problem). The values are read by the
    modules of FAST_CHAIN, tried in turn."""
    try:
        return _parse_fast_unchecked(
            raw, timestamp_column=timestamp_column, min_rows=min_rows, delimiter=delimiter, fail=fail
        )
    except (DataError, ValueError, TypeError, OverflowError, csv.Error):  # pandas' ParserError is a ValueError
        return None


def _parse_fast_unchecked(raw: bytes, *, timestamp_column, min_rows: int, delimiter, fail) -> _Parsed | None:
    start = len(_BOM) if raw.startswith(_BOM) else 0
    end = len(raw)
    while end > start and raw[end - 1] in b"\r\n":
        end -= 1
    if end == start:
        return None
    tail = raw[end:]  # line breaks only
    if tail.count(b"\r") != tail.count(b"\r\n") or b'"' in raw:
        return None
    data = np.frombuffer(raw, dtype=np.uint8, count=end - start, offset=start)
    if data.max() >= 0x7F:  # non-ASCII or DEL; control bytes are checked by _line_layout
        return None
    head = _head_lines(raw, start, end)
    sep = _choose_delimiter(head, delimiter, fail)
    first = _split(head[:1], sep, [1], fail)[0]
    n_fields = len(first)
    header = None if all(_is_data_like(cell) for cell in first) else [cell.strip() for cell in first]
    if n_fields == 0 or (n_fields < 2 and sep != _WHITESPACE):
        return None  # one column: a blank line would not show in the cell counts
    if sep != _WHITESPACE and ord(sep) >= 0x7F:
        return None  # a delimiter the file cannot hold (it is ASCII)
    # Cells per line are counted here when that is nearly free (a tab is among the control bytes the pass finds
    # anyway) and before a parser that would pad a short row; pyarrow refuses any row of another width itself.
    counted = sep == _WHITESPACE or ord(sep) < 0x20
    layout = _line_layout(data, ord(sep) if sep != _WHITESPACE and counted else None)
    if layout is None:
        return None
    starts, cells = layout
    if np.diff(np.append(starts, data.size)).max() > csv.field_size_limit():
        return None  # csv.reader refuses such a field
    n_data = starts.size - (header is not None)
    if n_data < max(min_rows, 1):
        return None
    if header is not None:
        _check_names(header, fail)
    if sep == _WHITESPACE:
        cells = _whitespace_cells(data, starts)
    if counted and not (cells == n_fields).all():
        return None  # a ragged row or a blank line
    if not counted and any(line.count(sep) + 1 != n_fields for line in head):
        return None  # the same among the first lines, which decide the header and the timestamp column
    if sep == "\t" and _has_blank_line(data, starts):
        # A line of blanks and tabs only: the Python parser leaves it out, pandas would read a row. With
        # any other delimiter such a line has 1 cell (0 for whitespace), which pyarrow or a cell count refuses.
        return None
    second = _split([head[1 if header is not None else 0]], sep, [1], fail)
    ts_index = _timestamp_index(timestamp_column, header, second, n_fields, fail)
    sensor_fields, columns = _columns(header, ts_index, n_fields, fail)
    read = None
    for module in FAST_CHAIN:
        if module not in CHECKS_WIDTHS and not counted:
            layout = _line_layout(data, ord(sep))
            if layout is None or not (layout[1] == n_fields).all():
                return None  # a ragged row or a blank line
            counted = True
        read = importlib.import_module(module).read_values(
            raw, sep=None if sep == _WHITESPACE else sep, skip_header=header is not None, n_fields=n_fields,
            ts_index=ts_index, sensor_fields=sensor_fields, n_rows=n_data, na_values=_NA_SPELLINGS,
        )  # fmt: skip
        if read is not None:
            break
    if read is None:
        return None
    values, ts_cells = read
    if np.isinf(values).any():
        return None  # the Python parser names the infinite cell
    first_row = 2 if header is not None else 1
    line_nos = range(first_row, first_row + n_data)
    return _Parsed(header, ts_index, sensor_fields, columns, line_nos, values, ts_cells)


def _head_lines(raw: bytes, start: int, end: int) -> list[str]:
    """The first _SNIFF_LINES lines of raw[start:end] (ASCII), without their line breaks."""
    head: list[str] = []
    pos = start
    while len(head) < _SNIFF_LINES:
        stop = raw.find(b"\n", pos, end)
        head.append(raw[pos : end if stop < 0 else stop].decode("ascii").rstrip("\r\n"))
        if stop < 0:
            break
        pos = stop + 1
    return head


def _line_layout(data: np.ndarray, sep: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(starts, cells): the offset of every line in `data` (0 and every byte after a LF) and, for a one-byte
    delimiter `sep`, the cells on each line (its delimiters + 1; for sep None, the cells are not counted: an
    empty array). None when `data` holds a control byte other than tab, LF and CR, or a CR that is not
    followed by a LF (the other bytes are ASCII and no quote: checked before). One pass over the bytes, in
    blocks of _COUNT_BLOCK bytes (no file-sized temporary): the control bytes' positions give the line breaks,
    the delimiters' positions the cells (a line's delimiters: those between its break and the one before)."""
    parts, at_breaks = [np.zeros(1, dtype=np.int64)], []
    total = 0  # delimiters before the current block
    for a in range(0, data.size, _COUNT_BLOCK):
        block = data[a : a + _COUNT_BLOCK]
        hits = np.flatnonzero(block < 0x20)
        kinds = block[hits]
        if not _FAST_TABLE[kinds].all():
            return None
        cr = hits[kinds == 13] + (a + 1)
        if cr.size and not (data[cr] == 10).all():  # data ends in neither CR nor LF: cr < data.size
            return None
        breaks = hits[kinds == 10]
        parts.append(breaks + (a + 1))
        if sep is not None:
            seps = hits[kinds == sep] if sep < 0x20 else np.flatnonzero(block == sep)
            at_breaks.append(np.searchsorted(seps, breaks) + total)  # delimiters before each break
            total += seps.size
    starts = np.concatenate(parts)
    if sep is None:
        return starts, np.empty(0, dtype=np.int64)
    return starts, np.diff(np.concatenate([[0], *at_breaks, [total]])) + 1


def _whitespace_cells(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cells on every line of `data` (the file's bytes without a trailing line break, lines beginning at
    `starts`) of a whitespace-separated file: the runs of non-whitespace (0 for a blank line). Counted in
    blocks of whole lines, so the temporaries stay small whatever the file's size."""
    out = np.empty(starts.size, dtype=np.int64)
    bounds = np.append(starts, data.size)
    for i, j in _line_blocks(bounds):
        a, b = int(bounds[i]), int(bounds[j])
        ws = _WS_TABLE[data[a:b]]
        marks = np.empty(ws.size, dtype=bool)  # a run of non-whitespace begins here
        marks[0] = not ws[0]  # a line's first byte follows a LF (or the file's start)
        np.logical_and(~ws[1:], ws[:-1], out=marks[1:])
        out[i:j] = np.diff(np.searchsorted(np.flatnonzero(marks), bounds[i : j + 1] - a))
    return out


def _line_blocks(bounds: np.ndarray) -> Iterator[tuple[int, int]]:
    """(i, j): runs of whole lines i..j-1 (line k spans bytes bounds[k]..bounds[k+1]) of about
    _COUNT_BLOCK bytes each, at least one line, covering every line in order."""
    n, i = bounds.size - 1, 0
    while i < n:
        j = int(np.searchsorted(bounds, bounds[i] + _COUNT_BLOCK, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _has_blank_line(data: np.ndarray, starts: np.ndarray) -> bool:
    """Whether a line of `data` (lines beginning at `starts`) holds only blanks, tabs and CRs: its
    whitespace bytes (its LF included) are all its bytes. Counted in blocks like `_whitespace_cells`."""
    bounds = np.append(starts, data.size)
    for i, j in _line_blocks(bounds):
        a, b = int(bounds[i]), int(bounds[j])
        ws = np.flatnonzero(_WS_TABLE[data[a:b]])
        if (np.diff(np.searchsorted(ws, bounds[i : j + 1] - a)) == np.diff(bounds[i : j + 1])).any():
            return True
    return False


def _choose_delimiter(lines: list[str], delimiter: str | None, fail) -> str:
    if delimiter is not None:
        if delimiter in (" ", _WHITESPACE):
            return _WHITESPACE
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise fail(f"delimiter must be one character or 'whitespace', got {delimiter!r}")
        if delimiter in '"\r\n\x00.+-' or delimiter.isalnum():
            raise fail(f"delimiter {delimiter!r} cannot separate numbers (a quote, line break, sign, digit or letter)")
        return delimiter
    sample = lines[:_SNIFF_LINES]
    # Prefer a delimiter that occurs equally often on every sampled line ...
    for sep in _DELIMITER_PREFERENCE:
        counts = {line.count(sep) for line in sample}
        if len(counts) == 1 and counts != {0}:
            return sep
    # ... else one that occurs on the first line (the ragged-row check will explain).
    for sep in _DELIMITER_PREFERENCE:
        if sep in sample[0]:
            return sep
    if len(sample) > 1 and all(len(line.split()) == 1 for line in sample[1:]):
        return ","  # one column: a header name with spaces ('flow rate') stays one name
    return _WHITESPACE


def _split(lines: list[str], sep: str, line_nos: list[int], fail) -> list[list[str]]:
    """Cells of each line. Each line is one record: a quoted cell never continues on the next line
    (csv.reader over all lines would join them silently into one number, '"1' + '2"' -> 12)."""
    if sep == _WHITESPACE:
        return [line.split() for line in lines]
    rows = []
    for no, line in zip(line_nos, lines):
        try:
            rows.append(next(csv.reader([line], delimiter=sep, strict=True), []))
        except csv.Error as e:
            hint = "; a quoted cell must close on its own line" if '"' in line else ""
            raise fail(f"row {no} is not a valid CSV line ({e}){hint}") from None
    return rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_datetime(cell: str) -> _dt.datetime | None:
    cell = cell.strip()
    if not cell or _is_number(cell):  # "2024" is a number, not a date
        return None
    try:
        return _dt.datetime.fromisoformat(cell)
    except ValueError:
        return None


def _is_data_like(cell: str) -> bool:
    cell = cell.strip()
    return cell.lower() in MISSING_MARKERS or _is_number(cell) or _parse_datetime(cell) is not None


def _check_names(header: list[str], fail) -> None:
    for j, name in enumerate(header):
        if not name:
            raise fail(f"column {j + 1} has an empty name in the header (an index column?)")
    seen: set[str] = set()
    dups = [n for n in header if n in seen or seen.add(n)]
    if dups:
        raise fail(f"duplicate column name(s) in the header: {', '.join(map(repr, dict.fromkeys(dups)))}")


def _timestamp_index(spec, header, rows, n_fields: int, fail) -> int | None:
    if spec is None:
        return None
    if isinstance(spec, str) and spec == "auto":
        by_name = header is not None and header[0].lower() in TIMESTAMP_NAMES
        if n_fields > 1 and (by_name or _parse_datetime(rows[0][0]) is not None):
            return 0
        return None
    if isinstance(spec, str):
        if header is None:
            raise fail(f"timestamp column {spec!r} requested but the file has no header line")
        if spec not in header:
            raise fail(f"timestamp column {spec!r} not found; columns are {', '.join(map(repr, header))}")
        return header.index(spec)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not -n_fields <= spec < n_fields:
            raise fail(f"timestamp column index {spec} out of range for {n_fields} columns")
        return int(spec) % n_fields
    raise fail(f"timestamp_column must be 'auto', a column name, an index or None, got {spec!r}")


def _parse_values(rows: list[list[str]], fields, line_nos, label, fail) -> np.ndarray:
    """Rows of sensor cells -> (T, P) float64 with NaN for missing cells, reporting the first bad cell
    (non-numeric or infinite) in file order."""
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and not np.isinf(values).any():
        return values

    # Slow path, for files with missing markers or bad cells: convert cell by cell.
    bad = []
    values = np.empty((len(rows), len(rows[0]) if rows else 0))
    for i, row in enumerate(rows):
        for k, cell in enumerate(row):
            problem = _cell_problem(cell)
            if problem is None:
                text = cell.strip()
                values[i, k] = np.nan if text.lower() in MISSING_MARKERS else float(text)
            else:
                bad.append((i, k, problem))
    if not bad:
        return values
    i, k, problem = bad[0]
    more = f" ({len(bad) - 1} more bad cell(s) in the file)" if len(bad) > 1 else ""
    raise fail(f"row {line_nos[i]}, {label(fields[k])}: {problem}{more}")


_MAGNITUDE_BLOCK_ROWS = 8192  # rows per block when scanning for magnitudes
GLITCH_SHARE = 0.01  # values too large to standardise in at most this share of a column's rows: glitches


def _check_magnitude(values: np.ndarray, columns: Sequence[str], line_nos: Sequence[int], fail) -> None:
    """A column's sum of squares must fit in float64, else its variance (standardisation) overflows. A few
    such values among ordinary ones are glitches (a logger's overflow, a sentinel): the error names the
    first one's row; a column of them is in the wrong units."""
    T = max(values.shape[0], 1)
    limit = np.sqrt(np.finfo(np.float64).max / T)
    # blocks of rows: no (T, P) temporaries; fmax skips NaN (values hold no infinities here)
    peak = np.zeros(values.shape[1])
    for a in range(0, values.shape[0], _MAGNITUDE_BLOCK_ROWS):
        np.fmax(peak, np.fmax.reduce(np.abs(values[a : a + _MAGNITUDE_BLOCK_ROWS]), axis=0, initial=0.0), out=peak)
    huge = np.flatnonzero(peak > limit)
    if not huge.size:
        return
    k = int(huge[0])
    column = np.abs(values[:, k])
    over = np.flatnonzero(column > limit)
    ordinary = column[np.isfinite(column) & (column <= limit)]
    if ordinary.size and over.size <= max(1, GLITCH_SHARE * T):
        i = int(over[0])
        more = f" ({over.size - 1} more such value(s) in the column)" if over.size > 1 else ""
        raise fail(
            f"row {line_nos[i]}, column {columns[k]!r}: value {values[i, k]:.3g} is far outside the column's other "
            f"values (median magnitude {float(np.median(ordinary)):.3g}){more}; it looks like a glitch (a logger "
            "overflow or a sentinel value): empty that cell (a missing measurement, which the filter skips) or "
            "correct it, then run again"
        )
    raise fail(
        f"column {columns[k]!r} holds values up to {peak[k]:.3g} in magnitude; over {T} rows their "
        f"variance overflows float64 (keep |x| below {limit:.3g}: rescale the column)"
    )


def _cell_problem(cell: str) -> str | None:
    """What is wrong with a sensor cell (None: a number or a missing-value marker)."""
    text = cell.strip()
    if text.lower() in MISSING_MARKERS:
        return None
    try:
        x = float(text)
    except ValueError:
        hint = " (decimal comma? use '.' or a ';' delimiter)" if re.fullmatch(r"[-+]?\d+,\d+", text) else ""
        return f"non-numeric value {text!r}{hint}"
    if np.isinf(x):
        return f"infinite value {text!r}"
    return None


def _parse_timestamps(cells: list[str], line_nos, label: str, fail) -> np.ndarray:
    """Timestamps as float64 if all numeric, else datetime64[us] from ISO-8601 (cells stripped)."""
    for i, c in enumerate(cells):
        if c.lower() in MISSING_MARKERS:
            raise fail(f"row {line_nos[i]}, timestamp {label}: missing timestamp")
    try:
        ts = np.array(cells, dtype=np.float64)
    except ValueError:
        ts = None
    if ts is not None:
        for i in np.flatnonzero(~np.isfinite(ts)):
            raise fail(f"row {line_nos[i]}, timestamp {label}: invalid timestamp {cells[i]!r}")
    else:
        parsed = []
        for i, c in enumerate(cells):
            d = _parse_datetime(c)
            if d is None:
                raise fail(f"row {line_nos[i]}, timestamp {label}: {c!r} is neither a number nor an ISO-8601 datetime")
            parsed.append(d)
        aware = [d.tzinfo is not None for d in parsed]
        if any(aware) and not all(aware):
            i = aware.index(not aware[0])
            raise fail(f"row {line_nos[i]}, timestamp {label}: mixes time zones with zone-less timestamps")
        if aware[0]:
            for i, d in enumerate(parsed):
                try:
                    parsed[i] = d.astimezone(_dt.UTC).replace(tzinfo=None)
                except OverflowError:
                    raise fail(f"row {line_nos[i]}, timestamp {label}: {cells[i]!r} is out of range in UTC") from None
        ts = np.array(parsed, dtype="datetime64[us]")
    return ts


def _timestamp_order(ts: np.ndarray, cells: list[str], line_nos, sort: bool, fail) -> np.ndarray | None:
    """None if ts is strictly increasing; else the sorting permutation (sort=True, no equal timestamps)
    or a DataError naming the first offending row."""
    backwards = np.flatnonzero(ts[1:] <= ts[:-1])
    if not backwards.size:
        return None
    order = np.argsort(ts, kind="stable")
    same = np.flatnonzero(ts[order][1:] == ts[order][:-1])
    if sort and not same.size:
        return order
    if sort:
        a, b = sorted((order[same[0]], order[same[0] + 1]))
        raise fail(f"rows {line_nos[a]} and {line_nos[b]} have the same timestamp ({cells[a]})")
    i = backwards[0] + 1
    raise fail(
        f"timestamps not strictly increasing: row {line_nos[i]} ({cells[i]}) is not after "
        f"row {line_nos[i - 1]} ({cells[i - 1]}); use align: timestamp (or --align timestamp) to sort them"
    )


# ----------------------------------------------------------------------------- writing


def write_client_csv(
    path: str | os.PathLike,
    values: np.ndarray,
    *,
    columns: Sequence[str] | None = None,
    timestamps: Sequence | None = None,
) -> None:
    """Write a (T, P) array as a comma-separated client file that `read_client_csv` reads back.

    A header line is written if `columns` or `timestamps` are given (sensor names
    default to ``s0``, ``s1``, ...). Timestamps go first, in a column named
    ``timestamp``: datetimes as ISO-8601, numbers as floats. Floats are written
    with full precision (exact round trip).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be a (T, P) array, got shape {values.shape}")
    T, P = values.shape
    write_header = columns is not None or timestamps is not None
    names = [f"s{k}" for k in range(P)] if columns is None else [str(c) for c in columns]
    if len(names) != P:
        raise ValueError(f"{len(names)} column names for {P} columns")
    if len(set(names)) != P:
        raise ValueError(f"duplicate column names: {names}")
    for name in names:
        if not name.strip() or name != name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"column name {name!r} is empty, padded with spaces or spans lines")
    if columns is not None and timestamps is None and all(map(_is_data_like, names)):
        raise ValueError(f"column names {names} look like data; the header would be read as a data row")

    rows = values.tolist()
    if timestamps is not None:
        if "timestamp" in names:
            raise ValueError("a sensor column is already named 'timestamp'")
        ts = np.asarray(timestamps)
        if ts.shape != (T,):
            raise ValueError(f"timestamps must have shape ({T},), got {ts.shape}")
        if ts.dtype.kind == "M":
            ts_text = list(np.datetime_as_string(ts))
        elif ts.dtype.kind in "iuf":
            ts_text = ts.astype(np.float64).tolist()
        else:  # e.g. datetime.datetime objects or strings
            ts_text = [t.isoformat() if hasattr(t, "isoformat") else str(t) for t in ts.tolist()]
        names = ["timestamp", *names]
        rows = [[t, *row] for t, row in zip(ts_text, rows)]

    with replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        if write_header:
            writer.writerow(names)
        writer.writerows(rows)
