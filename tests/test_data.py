"""Per-client CSV files: round trips, format variants, and precise errors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fedgc.data.cleaning import ColumnPolicy
from fedgc.data.csv import ClientTable, read_client_csv, write_client_csv
from fedgc.errors import DataError, FedGCWarning

CLIENT = "plant-7"


def _write(tmp_path, text: str, name: str = "plant7.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _read(path, **kw) -> ClientTable:
    return read_client_csv(path, client=CLIENT, **kw)


def _error(path, *fragments, **kw) -> str:
    """Reading `path` fails with a DataError naming the client, the file and every fragment."""
    with pytest.raises(DataError) as info:
        _read(path, **kw)
    msg = str(info.value)
    for fragment in (CLIENT, path.name, *fragments):
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------- round trips


def test_round_trip_without_header(tmp_path):
    values = np.random.default_rng(0).normal(size=(50, 3))
    path = tmp_path / "a.csv"
    write_client_csv(path, values)
    assert not path.read_text().splitlines()[0].startswith("s0")
    table = _read(path)
    assert table.client == CLIENT and table.path == path
    assert table.columns == ("s0", "s1", "s2")
    assert table.values.dtype == np.float64 and table.values.shape == (50, 3)
    np.testing.assert_array_equal(table.values, values)  # exact: full precision
    assert table.timestamps is None


def test_round_trip_with_header(tmp_path):
    values = np.random.default_rng(1).normal(size=(20, 4)) * 1e-7
    cols = ["temp", "pressure", "flow", "level"]
    path = tmp_path / "b.csv"
    write_client_csv(path, values, columns=cols)
    table = _read(path)
    assert table.columns == tuple(cols)
    np.testing.assert_array_equal(table.values, values)
    assert table.timestamps is None


def test_round_trip_with_float_timestamps(tmp_path):
    values = np.random.default_rng(2).normal(size=(30, 2))
    ts = np.arange(30) * 0.5 + 100.0
    path = tmp_path / "c.csv"
    write_client_csv(path, values, timestamps=ts)
    table = _read(path)
    assert table.columns == ("s0", "s1")
    np.testing.assert_array_equal(table.values, values)
    assert table.timestamps.dtype == np.float64
    np.testing.assert_array_equal(table.timestamps, ts)


def test_round_trip_with_datetime_timestamps(tmp_path):
    values = np.random.default_rng(3).normal(size=(25, 3))
    ts = np.datetime64("2024-03-01T00:00:00") + np.arange(25) * np.timedelta64(10, "s")
    path = tmp_path / "d.csv"
    write_client_csv(path, values, columns=["x", "y", "z"], timestamps=ts)
    table = _read(path)
    assert table.columns == ("x", "y", "z")
    assert table.timestamps.dtype.kind == "M"
    np.testing.assert_array_equal(table.timestamps, ts)
    np.testing.assert_array_equal(table.values, values)


def test_timestamp_column_ignored_when_none(tmp_path):
    path = _write(tmp_path, "time,a\n1,5\n2,7\n3,6\n")
    table = _read(path, timestamp_column=None)
    assert table.columns == ("time", "a") and table.timestamps is None


# ----------------------------------------------------------------------------- format variants


@pytest.mark.parametrize("sep", [",", ";", "\t", " ", "   "])
def test_delimiter_variants(tmp_path, sep):
    rng = np.random.default_rng(4)
    values = rng.normal(size=(10, 3))
    lines = [sep.join(["time", "a", "b", "c"])]
    lines += [sep.join([str(t), *map(repr, row)]) for t, row in enumerate(values.tolist())]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    table = _read(path)
    assert table.columns == ("a", "b", "c")
    np.testing.assert_array_equal(table.values, values)
    np.testing.assert_array_equal(table.timestamps, np.arange(10.0))
    # Given explicitly, the same file reads the same.
    explicit = _read(path, delimiter="whitespace" if sep.isspace() and sep != "\t" else sep)
    np.testing.assert_array_equal(explicit.values, values)


def test_semicolon_with_decimal_comma_is_not_read_as_comma_file(tmp_path):
    path = _write(tmp_path, "a;b\n1,5;2,0\n3,5;1,0\n")
    _error(path, "row 2", "column 'a'", "'1,5'", "decimal comma")


def test_headerless_iso_timestamps_detected(tmp_path):
    path = _write(
        tmp_path,
        "2024-01-01T00:00:00Z,1.0,2.0\n2024-01-01T00:00:01Z,2.0,1.5\n2024-01-01T00:00:03Z,0.5,1.0\n",
    )
    table = _read(path)
    assert table.columns == ("s0", "s1")
    assert table.timestamps[2] == np.datetime64("2024-01-01T00:00:03")
    np.testing.assert_array_equal(table.values[:, 0], [1.0, 2.0, 0.5])


def test_timestamp_time_zones_converted_to_utc(tmp_path):
    path = _write(tmp_path, "when,a\n2024-01-01T01:00+01:00,1\n2024-01-01T00:30Z,2\n")
    table = _read(path)
    assert table.columns == ("a",)
    np.testing.assert_array_equal(
        table.timestamps, np.array(["2024-01-01T00:00", "2024-01-01T00:30"], dtype="datetime64[us]")
    )


@pytest.mark.parametrize("name", ["Time", "TIMESTAMP", "date", "DateTime", "t"])
def test_timestamp_header_names(tmp_path, name):
    path = _write(tmp_path, f"{name},a\n1,5\n2,7\n4,6\n")
    table = _read(path)
    assert table.columns == ("a",)
    np.testing.assert_array_equal(table.timestamps, [1.0, 2.0, 4.0])


def test_timestamp_column_explicit(tmp_path):
    path = _write(tmp_path, "a,clock,b\n5,10,1\n7,20,3\n6,30,2\n")
    by_name = _read(path, timestamp_column="clock")
    by_index = _read(path, timestamp_column=1)
    for table in (by_name, by_index):
        assert table.columns == ("a", "b")
        np.testing.assert_array_equal(table.timestamps, [10.0, 20.0, 30.0])
        np.testing.assert_array_equal(table.values, [[5, 1], [7, 3], [6, 2]])
    # "auto" only looks at the first column.
    assert _read(path).timestamps is None


def test_blank_lines_bom_crlf_and_spaces(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes("\ufeffa, b\r\n\r\n1.0, 2.0\r\n3.0, 5.0\r\n\r\n".encode("utf-8"))
    table = _read(path)
    assert table.columns == ("a", "b")
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 5]])


def test_single_column_file(tmp_path):
    path = _write(tmp_path, "1\n2\n4\n")
    table = _read(path)
    assert table.columns == ("s0",) and table.values.shape == (3, 1)


def test_large_file_is_fast(tmp_path):
    values = np.random.default_rng(5).normal(size=(10_000, 50))
    path = tmp_path / "big.csv"
    write_client_csv(path, values, columns=[f"sensor{k}" for k in range(50)], timestamps=np.arange(10_000))
    start = time.perf_counter()
    table = _read(path)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(table.values, values)
    assert elapsed < 5.0, f"reading 10000 x 50 took {elapsed:.2f}s"


# ----------------------------------------------------------------------------- errors: the file


def test_missing_file(tmp_path):
    _error(tmp_path / "nope.csv", "not found")


def test_directory(tmp_path):
    d = tmp_path / "dir.csv"
    d.mkdir()
    _error(d, "directory")


def test_empty_file(tmp_path):
    _error(_write(tmp_path, ""), "empty")
    _error(_write(tmp_path, "\n  \n", "blank.csv"), "empty")


def test_header_only(tmp_path):
    _error(_write(tmp_path, "a,b,c\n"), "header", "no data rows")


def test_binary_file(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x01\x80")
    _error(path, "not UTF-8")


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root can read anything"
)
def test_unreadable_file(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n3,4\n")
    path.chmod(0)
    try:
        _error(path, "cannot be read")
    finally:
        path.chmod(0o644)


# ----------------------------------------------------------------------------- errors: the content


def test_ragged_row(tmp_path):
    path = _write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n\n7,8\n9,10,11\n")
    _error(path, "row 5", "2 cells", "expected 3")


def test_ragged_row_without_header(tmp_path):
    path = _write(tmp_path, "1,2,3\n4,5,6,7\n")
    _error(path, "row 2", "4 cells", "expected 3", "row 1")


def test_non_numeric_cell(tmp_path):
    path = _write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n7,oops,9\n1,2,4\n")
    _error(path, "row 4", "column 'b'", "non-numeric", "'oops'")


def test_non_numeric_cell_without_header(tmp_path):
    path = _write(tmp_path, "1,2,3\n4,5,6\n7,8,x9\n")
    _error(path, "row 3", "'s2'", "non-numeric", "'x9'")


@pytest.mark.parametrize("cell", ["", "NaN", "nan", "NA", "null", "#N/A"])
def test_missing_value_is_read_as_nan(tmp_path, cell):
    path = _write(tmp_path, f"a,b\n1,2\n3,{cell}\n5,7\n4,1\n")
    table = _read(path)
    assert np.isnan(table.values[1, 1]) and np.isfinite(np.delete(table.values.ravel(), 3)).all()
    assert table.cleaning.missing_values == 1


def test_missing_value_first_row_without_header(tmp_path):
    path = _write(tmp_path, ",2\n3,4\n5,7\n")
    table = _read(path)
    assert table.columns == ("s0", "s1") and np.isnan(table.values[0, 0])


def test_first_bad_cell_reported_with_count(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n3,\nx,4\n5,oops\n")
    msg = _error(path, "row 4", "column 'a'", "non-numeric")
    assert "1 more" in msg


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_infinite_value(tmp_path, cell):
    path = _write(tmp_path, f"a,b\n1,2\n3,4\n{cell},5\n")
    _error(path, "row 4", "column 'a'", "infinite")


def test_constant_columns_are_dropped_with_a_warning(tmp_path):
    path = _write(tmp_path, "a,b,c,d\n1,2,3,4\n1,5,3,6\n1,7,3,8\n")
    with pytest.warns(FedGCWarning) as record:
        table = _read(path)
    assert table.columns == ("b", "d")
    np.testing.assert_array_equal(table.values, [[2, 4], [5, 6], [7, 8]])
    assert table.cleaning.dropped_constant == ("a", "c")
    msg = str(record[0].message)
    for fragment in (CLIENT, path.name, "constant", "'a'", "'c'"):
        assert fragment in msg


def test_constant_columns_error_policy(tmp_path):
    path = _write(tmp_path, "a,b,c,d\n1,2,3,4\n1,5,3,6\n1,7,3,8\n")
    _error(path, "constant", "'a'", "'c'", policy=ColumnPolicy(constant_columns="error"))


def test_all_columns_constant(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n1,2\n1,2\n")
    with pytest.warns(FedGCWarning):
        _error(path, "no usable sensor column")


def test_too_few_rows(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n3,4\n5,6\n")
    _error(path, "3 data row", "10", "min_rows", min_rows=10)
    assert _read(path, min_rows=3).values.shape == (3, 2)


def test_duplicate_column_names(tmp_path):
    path = _write(tmp_path, "a,b,a\n1,2,3\n4,5,6\n")
    _error(path, "duplicate", "'a'")


def test_empty_column_name(tmp_path):
    path = _write(tmp_path, ",a,b\n0,1,2\n1,3,4\n")
    _error(path, "column 1", "empty name")


def test_timestamps_not_increasing(tmp_path):
    path = _write(tmp_path, "time,a\n1,5\n2,7\n3,6\n3,8\n4,1\n")
    _error(path, "not strictly increasing", "row 5", "row 4")


def test_datetimes_going_backwards(tmp_path):
    path = _write(
        tmp_path,
        "timestamp,a\n2024-01-01T00:00,1\n2024-01-01T00:02,2\n2024-01-01T00:01,3\n",
    )
    _error(path, "not strictly increasing", "row 4", "2024-01-01T00:01")


def test_bad_timestamp(tmp_path):
    path = _write(tmp_path, "date,a\n2024-01-01,1\n01/02/2024,2\n")
    _error(path, "row 3", "'date'", "'01/02/2024'", "ISO-8601")


def test_missing_timestamp(tmp_path):
    path = _write(tmp_path, "time,a\n1,5\n,7\n3,6\n")
    _error(path, "row 3", "'time'", "missing timestamp")


def test_timestamp_column_not_found(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n3,4\n")
    _error(path, "'clock'", "not found", timestamp_column="clock")
    _error(path, "index 5", "out of range", timestamp_column=5)
    headerless = _write(tmp_path, "1,2\n3,4\n", "nohead.csv")
    _error(headerless, "no header", timestamp_column="clock")


def test_only_timestamp_column(tmp_path):
    path = _write(tmp_path, "time\n1\n3\n")
    _error(path, "no sensor columns", timestamp_column=0)
    # Under "auto", a lone "time" column is a sensor column, not a timestamp.
    assert _read(path).columns == ("time",)


# ----------------------------------------------------------------------------- writer guards


def test_writer_rejects_bad_input(tmp_path):
    path = tmp_path / "w.csv"
    with pytest.raises(ValueError, match="shape"):
        write_client_csv(path, np.zeros(5))
    with pytest.raises(ValueError, match="column names"):
        write_client_csv(path, np.zeros((3, 2)), columns=["a"])
    with pytest.raises(ValueError, match="duplicate"):
        write_client_csv(path, np.zeros((3, 2)), columns=["a", "a"])
    with pytest.raises(ValueError, match="look like data"):
        write_client_csv(path, np.zeros((3, 2)), columns=["1", "2"])
    with pytest.raises(ValueError, match="timestamps"):
        write_client_csv(path, np.zeros((3, 2)), timestamps=[1, 2])
