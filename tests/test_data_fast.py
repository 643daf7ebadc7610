"""The fast CSV path (pandas' C parser under fedgc's checks) against the Python parser that defines the format.

For every file, `read_client_csv` must give the same outcome with the fast path on and off: the same
DataError message, or the same columns, values (bit for bit, NaN and the sign of zero included),
timestamps, cleaning record and warnings. The files are built to sit on the fast path's edges: missing
markers in every case, padded cells, integers and "-0", infinities, booleans, underscores, CRLF, BOMs,
blank and whitespace-only lines, ragged rows, timestamps, every delimiter.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedgc.data.csv as data
from fedgc.errors import DataError

CLIENT = "plant-9"
GOOD_CELLS = (  # read by both parsers (numbers, missing markers, padding)
    "1.5", "-2.25", "0", "-0", "-0.0", "007", "+5", "1e5", "1E-3", ".5", "5.", " 1.5", "1.5 ", " ", "", "  3",
    "NaN", "nan", "NAN", "NA", "na", "nA", "N/A", "n/a", "#N/A", "#n/a", "null", "NULL", "Null", "None", "none",
    "nOnE", " NA", "NA ", "-1e400", "-nan", "+nan", "1_000", "1e-320", "5e-324", "0.1", "12345678901234567890", "\t2",
    "9007199254740993", "-9223372036854775809", "18446744073709551616",
)  # fmt: skip
BAD_CELLS = ("inf", "-inf", "Infinity", "1e309", "nan(1)", "True", "False", "0x10", "abc", "1e", "-", "<NA>", "1.#IND",
             "9" * 400, "1,5")  # fmt: skip
SEPARATORS = (",", ";", "\t", " ", "  ", "|")
DELIMITER_ARGS = (None, None, None, ",", ";", "\t", "whitespace", "|")
TIMESTAMP_ARGS = ("auto", "auto", None, 0, "time")
FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip


def outcome(path, kwargs: dict, fast: bool):
    """What reading `path` gives: ("error", message) or ("table", ...), plus the warnings' messages."""
    saved = data.FAST_PATH
    data.FAST_PATH = fast
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                t = data.read_client_csv(path, client=CLIENT, **kwargs)
            except DataError as exc:
                result = ("error", str(exc))
            else:
                ts = None if t.timestamps is None else (t.timestamps.dtype.str, t.timestamps.tobytes())
                # bit for bit: NaN payloads aside, -0.0 differs from 0.0 here
                bits = np.where(np.isnan(t.values), np.nan, t.values).tobytes()
                result = ("table", t.columns, t.values.shape, bits, ts, t.cleaning, t.rows_sorted)
    finally:
        data.FAST_PATH = saved
    return result, [str(w.message) for w in caught]


def assert_same(path, kwargs: dict) -> None:
    fast, slow = outcome(path, kwargs, True), outcome(path, kwargs, False)
    assert fast == slow, (path.read_bytes()[:400], kwargs)


@st.composite
def plain_file(draw) -> tuple[bytes, dict]:
    n_cols = draw(st.integers(1, 4))
    n_rows = draw(st.integers(0, 7)) if draw(st.integers(0, 4)) == 0 else draw(st.integers(2, 7))
    sep = draw(st.sampled_from(SEPARATORS))
    numbers = st.one_of(st.floats(-1e6, 1e6, allow_nan=False).map(repr), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                        st.integers(-10**6, 10**6).map(str))  # fmt: skip
    odd = st.sampled_from(GOOD_CELLS + BAD_CELLS) if draw(st.integers(0, 3)) == 0 else st.sampled_from(GOOD_CELLS)
    cell = st.one_of(numbers, numbers, numbers, odd)
    rows = [[draw(cell) for _ in range(n_cols)] for _ in range(n_rows)]
    ts = draw(st.sampled_from([None, "numeric", "iso", "iso_tz"]))
    header = [f"s{k}" for k in range(n_cols)] if draw(st.booleans()) else None
    if ts is not None:
        order = list(range(n_rows))
        if draw(st.booleans()):
            order = draw(st.permutations(order))
        stamps = [str(10 * i) if ts == "numeric" else f"2024-01-01T00:00:{i:02d}" + ("+01:00" if ts == "iso_tz" else "")
                  for i in order]  # fmt: skip
        rows = [[s, *r] for s, r in zip(stamps, rows)]
        header = None if header is None else ["time", *header]
    lines = ([sep.join(header)] if header is not None else []) + [sep.join(r) for r in rows]
    fault = draw(st.sampled_from(["none"] * 8 + ["ragged", "blank", "spaces", "trailing", "leading_blank"]))
    if fault == "ragged" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i] + sep + "1" if draw(st.booleans()) else lines[i].rpartition(sep)[0]
    elif fault == "blank" and lines:
        lines.insert(draw(st.integers(0, len(lines))), "")
    elif fault == "spaces" and lines:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from([" ", "\t", "  \t"])))
    elif fault == "leading_blank":
        lines.insert(0, "")
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    if fault == "trailing":
        text += draw(st.sampled_from(["\n\n", "\r\n\r\n", "\n \n", "\n\t"]))
    raw = text.encode()
    if draw(st.integers(0, 5)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    kwargs = {
        "timestamp_column": draw(st.sampled_from(TIMESTAMP_ARGS)),
        "delimiter": draw(st.sampled_from(DELIMITER_ARGS)) if draw(st.integers(0, 3)) == 0 else None,
    }
    if draw(st.booleans()):
        kwargs["sort_timestamps"] = True
    return raw, kwargs


@FAST
@given(case=plain_file())
def test_fast_path_reads_like_the_python_parser(tmp_path, case):
    raw, kwargs = case
    path = tmp_path / "site.csv"
    path.write_bytes(raw)
    assert_same(path, kwargs)


# Bytes the fast path refuses wherever they stand (a CR only when no LF follows it; a BOM past the start).
ODD_BYTES = (b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1e", b"\x7f", b'"', b"\r", b"\xc3\xa9", b"\xef\xbb\xbf", b"\xff")


def plain_bytes(raw: bytes) -> bool:
    """The fast path's byte rule as it was first written: nothing but data._FAST_BYTES after an optional BOM,
    every CR in a CRLF."""
    start = len(data._BOM) if raw.startswith(data._BOM) else 0
    return raw.translate(None, data._FAST_BYTES) == raw[:start] and raw.count(b"\r") == raw.count(b"\r\n")


def fast_parse(raw: bytes, **options):
    """The fast path's parse of `raw` (values as bytes: comparable with ==), or None when it refuses the file."""
    parsed = data._parse_fast(raw, min_rows=2, fail=lambda m: DataError(m), **options)
    return None if parsed is None else parsed._replace(values=parsed.values.tobytes(), line_nos=list(parsed.line_nos))


@FAST
@given(case=plain_file(), odd=st.sampled_from(ODD_BYTES), where=st.floats(0, 1), block=st.sampled_from([1, 2, 5, 64]))
def test_fast_path_checks_every_byte_in_blocks_of_any_size(tmp_path, monkeypatch, case, odd, where, block):
    """The one pass over the bytes (_line_layout) finds line breaks, delimiters and refused bytes in blocks
    of _COUNT_BLOCK bytes: with blocks that cut lines and cells anywhere, a file reads as with the Python
    parser, and one byte out of place anywhere sends the file to the Python parser."""
    raw, kwargs = case
    options = {"timestamp_column": kwargs["timestamp_column"], "delimiter": kwargs["delimiter"]}
    whole = fast_parse(raw, **options)  # one block
    monkeypatch.setattr(data, "_COUNT_BLOCK", block)
    assert fast_parse(raw, **options) == whole
    path = tmp_path / "site.csv"
    path.write_bytes(raw)
    assert_same(path, kwargs)
    i = int(where * len(raw))
    spoiled = raw[:i] + odd + raw[i:]
    if not plain_bytes(spoiled):
        assert fast_parse(spoiled, **options) is None
    path.write_bytes(spoiled)
    assert_same(path, kwargs)


@pytest.mark.parametrize(
    "text",
    ["a,b,c\n1,2,3\n4,,6\n7,8,NA\n", "\ufeffx;y\r\n1;2\r\n3;4\r\n\r\n", "0.5\t2\n1.5\t\n2.5\t7", " 1  2\n3 4 \n5\t6\n",
     "time,a\n2024-01-01T00:00,1\n2024-01-01T00:01,2\n"],
)  # fmt: skip
def test_plain_files_are_read_alike_in_blocks_of_every_size(monkeypatch, text):
    raw = text.encode()
    whole = fast_parse(raw, timestamp_column="auto", delimiter=None)
    assert whole is not None
    for block in range(1, len(raw) + 1):
        monkeypatch.setattr(data, "_COUNT_BLOCK", block)
        assert fast_parse(raw, timestamp_column="auto", delimiter=None) == whole, block


@pytest.mark.parametrize(
    "text, kwargs",
    [
        ("time,a,b\n1,0.5,2\n2,1.5,-1\n3,2.5,7\n", {}),
        ("a;b\n0.5;2\n1.5;NA\n2.5;7\n", {}),
        ("0.5\t2\n1.5\t\n2.5\t7\n", {}),
        ("  0.5   2\n  1.5  nan\n 2.5 7\n", {}),
        ("\ufeffa, b\r\n1.0, 2.0\r\n3.0, 5.0\r\n\r\n", {}),
        ("timestamp,x,y\n2024-01-01T00:00,1,2\n2024-01-01T00:01,-0,3\n2024-01-01T00:02,4,NULL\n", {}),
        ("t,x,y\n3,1,2\n1,2,3\n2,4,5\n", {"sort_timestamps": True}),
        ("x|y\n1|2\n3|4\n5|7\n", {"delimiter": "|"}),
    ],
)
def test_plain_files_take_the_fast_path(tmp_path, monkeypatch, text, kwargs):
    path = tmp_path / "plain.csv"
    path.write_bytes(text.encode())
    expected = outcome(path, kwargs, False)
    assert expected[0][0] == "table"

    def refuse(*args, **kw):
        raise AssertionError("the Python parser was used for a plain file")

    monkeypatch.setattr(data, "_parse_python", refuse)
    assert outcome(path, kwargs, True) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a,b\n1,2\n3,4,5\n6,7\n", "row 3 has 3 cells, expected 2 as in the header (row 1)"),
        ("a,b\n1,2\n\n3\n6,7\n", "row 4 has 1 cells"),
        ("a,b\n1,2\n3,inf\n6,7\n", "row 3, column 'b': infinite value 'inf'"),
        ("a,b\n1,2\n3,x\n6,y\n", "row 3, column 'b': non-numeric value 'x' (1 more bad cell(s) in the file)"),
        ("time,a\n1,2\n1,3\n2,4\n", "row 3 (1) is not after row 2 (1)"),
        ("a,b\n1,2\n3,True\n", "non-numeric value 'True'"),
    ],
)
def test_problems_found_by_the_fast_path_keep_their_rows(tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode())
    (kind, message), _ = outcome(path, {}, True)
    assert kind == "error" and fragment in message and CLIENT in message and str(path) in message
    assert outcome(path, {}, True) == outcome(path, {}, False)


@pytest.mark.parametrize("chain", [None, (data.PANDAS_PARSER,)])
@pytest.mark.parametrize("first, bad", [("1,2", "17"), ("1,2", "17,18,0"), ("1,  ", "17")])
def test_a_ragged_row_past_the_first_lines_reaches_no_parser_that_pads_it(tmp_path, monkeypatch, chain, first, bad):
    """The cells of a comma-separated file past its first lines are counted only before pandas, which would
    pad a short row with a missing value: with pyarrow first (which refuses the row), a cell that only pandas
    reads (a cell of blanks), or pandas alone, the fast path refuses the file and the Python parser names the row."""
    if chain is not None:
        monkeypatch.setattr(data, "FAST_CHAIN", chain)
    rows = [first] + [f"{k},{k + 1}" for k in range(3, 60, 2)]
    rows[25] = bad  # file line 27, past the _SNIFF_LINES lines that decide the layout
    text = "\n".join(["a,b", *rows]) + "\n"
    assert data._parse_fast(text.encode(), timestamp_column="auto", min_rows=2, delimiter=None,
                            fail=lambda m: DataError(m)) is None  # fmt: skip
    path = tmp_path / "ragged.csv"
    path.write_bytes(text.encode())
    (kind, message), _ = outcome(path, {}, True)
    assert kind == "error" and "row 27 has" in message


def test_large_file_matches_and_is_read_fast(tmp_path):
    rng = np.random.default_rng(7)
    values = rng.normal(size=(20_000, 30))
    values[rng.random(values.shape) < 0.01] = np.nan
    path = tmp_path / "big.csv"
    data.write_client_csv(path, values, columns=[f"c{k}" for k in range(30)], timestamps=np.arange(20_000) * 60.0)
    fast = data._parse_fast(path.read_bytes(), timestamp_column="auto", min_rows=2, delimiter=None,
                            fail=lambda m: DataError(m))  # fmt: skip
    assert fast is not None
    assert_same(path, {})
    np.testing.assert_array_equal(data.read_client_csv(path, client=CLIENT).values, values)


@pytest.mark.parametrize(
    "text",
    ["x\ty\n1\t2\n\t\n3\t4\n", "x\ty\n1\t2\n \t \r\n3\t4\n", "x\ty\n1\t2\n3\t4\n\t", "x,y\n1,2\n \t \n3,4\n",
     "x;y\n1;2\n\t\n3;4\n", "1 2\n \t\n3 4\n5 6\n"],
)  # fmt: skip
def test_lines_of_blanks_and_tabs_read_like_the_python_parser(tmp_path, text):
    """Such a line is left out by the Python parser; with a tab delimiter it has as many cells as a row,
    so only the fast path's own check (_has_blank_line) keeps pandas from reading it as one."""
    path = tmp_path / "blank.csv"
    path.write_bytes(text.encode())
    assert outcome(path, {}, True) == outcome(path, {}, False)
