"""pyarrow's CSV reader for plain files with a one-character delimiter: fedgc.data.csv's fast path (looked up
by name, FAST_PARSER, when a plain file is parsed; the one module of fedgc.data that imports pyarrow).

fedgc.data.csv has already decided the file's layout on its raw bytes and first lines (delimiter, header,
number of fields, timestamp column, rows); `read_values` reads the sensor values into one row-major float64
array and returns None whenever pyarrow reads anything other than that layout or converts a cell in a way
float() might not: the file then goes to pandas' parser (fedgc.data.csv_pandas), which also reads the files
separated by runs of whitespace, and from there to the Python parser, which names the problem. pyarrow
refuses a row of another number of fields itself, so fedgc.data.csv counts a comma file's cells per line
only before pandas, which would pad a short row.

pyarrow converts a number cell (blanks and tabs around it trimmed) with fast_float, correctly rounded like
float() (tests/test_data_arrow.py checks it against float() on random decimal strings); what it refuses
(an underscore, a cell of blanks, a padded missing marker) sends the file on. It also reads "nan(...)" as
NaN, which float() refuses: a NaN that is not one of the missing cells sends the file on too, so "-nan" and
"+nan" (which float() reads) go to pandas. Infinities are read as float() reads them and refused by
fedgc.data.csv.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

# Parse on the calling thread: a run reads its clients on two threads already (fedgc.app.clients.LOCAL_WORKERS),
# and the streaming reader on pyarrow's threads read a 250 MB file no faster here (wall or CPU; 2 cores).
USE_THREADS = False


def read_values(
    raw: bytes, *, sep: str | None, skip_header: bool, n_fields: int, ts_index: int | None, sensor_fields: list[int],
    n_rows: int, na_values: Sequence[str],
) -> tuple[np.ndarray, list[str] | None] | None:  # fmt: skip
    """(values (n_rows, len(sensor_fields)), the stripped timestamp cells or None) of the file's bytes, or None
    when pyarrow does not find exactly n_rows rows of n_fields fields with float64 sensor cells that float()
    reads alike (module docstring). sep: the delimiter, None for runs of whitespace (then None: pandas reads
    those); na_values: the cells that are missing values."""
    if sep is None:
        return None
    names = [str(j) for j in range(n_fields)]
    types = {name: (pa.string() if j == ts_index else pa.float64()) for j, name in enumerate(names)}
    values = np.empty((n_rows, len(sensor_fields)))
    cells: list[str] | None = None if ts_index is None else []
    row = 0
    try:
        # Batch by batch (~1 MB of the file each), each transposed into `values` as it comes: the memory of
        # pyarrow's columns stays that of one batch (read_csv's whole table would add the table's size).
        reader = pa_csv.open_csv(
            pa.py_buffer(raw),
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1 if skip_header else 0, use_threads=USE_THREADS),
            parse_options=pa_csv.ParseOptions(delimiter=sep, quote_char=False, escape_char=False, newlines_in_values=False,
                                              ignore_empty_lines=True),
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=list(na_values), strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
        )  # fmt: skip
        for batch in reader:
            n = batch.num_rows
            if batch.num_columns != n_fields or row + n > n_rows:
                return None
            sensors = batch.select(sensor_fields)
            block = values[row : row + n]
            block[...] = sensors.to_tensor(null_to_nan=True, row_major=True).to_numpy()  # pyarrow's transposition
            if np.count_nonzero(np.isnan(block)) != sum(column.null_count for column in sensors.columns):
                return None  # a cell pyarrow read as NaN but not a missing cell ("nan(1)", "-nan")
            if cells is not None:
                cells.extend(cell.strip() for cell in batch.column(ts_index).to_pylist())
            row += n
    except pa.ArrowException:  # ArrowInvalid: a row with another number of fields, a cell that is not a number
        return None
    if row != n_rows:
        return None
    return values, cells
