"""pyarrow's reader on the fast CSV path (fedgc.data.csv_fast) against float() and the Python parser.

pyarrow reads a plain file with a one-character delimiter; what it reads must be what the Python parser
reads, bit for bit, and what it might read otherwise (a cell float() refuses, a padded marker, a file of
whitespace-separated cells) must go on to pandas' parser (fedgc.data.csv_pandas) or the Python parser.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Context, Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_fast import outcome  # the fast chain against the Python parser, bit for bit

import fedgc.data.csv as data
import fedgc.data.csv_fast as arrow
import fedgc.data.csv_pandas as pandas_reader

CLIENT = "plant-4"
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def arrow_values(cells: list[str]) -> np.ndarray | None:
    """csv_fast's values of a two-column file: a column of 1s, then `cells` (None: pyarrow left the file)."""
    raw = ("".join(f"1,{cell}\n" for cell in cells)).encode()
    read = arrow.read_values(raw, sep=",", skip_header=False, n_fields=2, ts_index=None, sensor_fields=[0, 1],
                             n_rows=len(cells), na_values=data._NA_SPELLINGS)  # fmt: skip
    return None if read is None else read[0][:, 1]


def python_value(cell: str) -> float:
    text = cell.strip()
    return np.nan if text.lower() in data.MISSING_MARKERS else float(text)


def bits(x: np.ndarray) -> bytes:
    return np.where(np.isnan(x), np.nan, x).tobytes()  # NaN payloads aside; -0.0 differs from 0.0


@st.composite
def decimal_cell(draw) -> str:
    """A decimal number as float() reads it: sign, digits (up to 800), point, exponent (subnormal to overflow)."""
    digits = st.text("0123456789", min_size=0, max_size=draw(st.sampled_from([3, 20, 40, 800])))
    whole, fraction = draw(digits), draw(digits)
    if not whole and not fraction:
        whole = "0"
    point = "." if fraction or draw(st.booleans()) else ""
    exponent = ""
    if draw(st.booleans()):
        exponent = draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + str(draw(st.integers(0, 400)))
    return draw(st.sampled_from(["", "-", "+"])) + whole + point + fraction + exponent


def _halfway(x: float) -> str:
    """The decimal exactly between x and the next double up (rounds half to even)."""
    exact = Context(prec=800)
    return str(exact.divide(exact.add(Decimal(x), Decimal(float(np.nextafter(x, np.inf)))), 2))


finite_repr = st.floats(allow_nan=False, allow_infinity=False).map(repr)
halfway = st.floats(5e-324, 1e300).map(_halfway)


@SETTINGS
@given(cells=st.lists(st.one_of(decimal_cell(), finite_repr, halfway), min_size=1, max_size=40))
def test_pyarrow_converts_numbers_like_float(cells):
    """Every decimal spelling float() reads (long mantissas, exponents, subnormals, halfway cases, -0) is
    read by pyarrow, as the same double; inf stays inf (fedgc.data.csv refuses it afterwards)."""
    got = arrow_values(cells)
    assert got is not None, cells
    assert bits(got) == bits(np.array([float(c) for c in cells])), cells


SPELLINGS = (
    "nan", "NaN", "-nan", "+nan", "nan(1)", "-nan(x)", "nan()", "inf", "-Infinity", "iNf", "infinity(1)", "1_000",
    " NA", "NA ", "\tnull", " ", "  ", " nan", "1 2", "1\t", " 1.5", "+ 1", "1e", ".", "e5", "0x10", "1d5", "True",
    "NULL", "None", "#N/A", "n/a", "", "-0", "007", "5.", ".5", "+.5", "1e400", "-1e400", "9" * 400, "2e-324",
)  # fmt: skip


@pytest.mark.parametrize("cell", SPELLINGS)
def test_pyarrow_reads_a_cell_as_float_would_or_leaves_the_file(cell):
    """A cell pyarrow reads (a number, a missing marker) has float()'s value or is missing; a cell float()
    refuses or pyarrow might read otherwise ("nan(1)": pyarrow says NaN) sends the file on (None)."""
    got = arrow_values(["2.5", cell])
    try:
        expected = python_value(cell)
    except ValueError:
        assert got is None
        return
    if got is not None:
        assert bits(got) == bits(np.array([2.5, expected]))


@st.composite
def near_numbers_file(draw) -> bytes:
    """A small file of numbers and missing markers, padded or not, and in some files cells made of
    number-like characters (signs, points, exponents, the letters of nan/inf/null, underscores), with a
    comma, semicolon or tab delimiter, LF or CRLF."""
    sep = draw(st.sampled_from([",", ";", "\t"]))
    pad = st.sampled_from(["", "", "", "", "", " ", "  "] + (["\t"] if sep != "\t" else []))
    small = st.floats(-1e6, 1e6).map(repr)
    marker = st.sampled_from(["", "NA", "nan", "NaN", "null", "None", "n/a", "-0"])
    good = st.one_of(small, small, small, decimal_cell(), finite_repr, marker)
    junk = st.text("0123456789+-.eEnaNAifINFulLy _", max_size=6)
    cell = st.tuples(pad, st.one_of(good, junk) if draw(st.booleans()) else good, pad).map("".join)
    n_cols, n_rows = draw(st.integers(2, 4)), draw(st.integers(2, 5))
    rows = [sep.join(draw(cell) for _ in range(n_cols)) for _ in range(n_rows)]
    return (draw(st.sampled_from(["\n", "\r\n"])).join(rows) + "\n").encode()


@SETTINGS
@given(raw=near_numbers_file())
def test_near_numbers_read_like_the_python_parser(tmp_path, raw):
    """Cells that are almost numbers, read with pyarrow first: the Python parser's outcome, whoever reads them."""
    path = tmp_path / "near.csv"
    path.write_bytes(raw)
    assert outcome(path, {"timestamp_column": None}, True) == outcome(path, {"timestamp_column": None}, False), raw


@pytest.fixture
def readers(monkeypatch) -> list[str]:
    """The readers (csv_fast: pyarrow, csv_pandas: pandas) whose read_values gave a table, in order."""
    used: list[str] = []
    for name, module in (("arrow", arrow), ("pandas", pandas_reader)):
        original = module.read_values

        def spy(*args, _original=original, _name=name, **kwargs):
            read = _original(*args, **kwargs)
            if read is not None:
                used.append(_name)
            return read

        monkeypatch.setattr(module, "read_values", spy)
    return used


ARROW_FILES = [
    ("a,b,c\n1,2,3\n4,,6\n7,8,NA\n-0,1e-320,null\n", {}),  # missing cells, -0, a subnormal
    ("\ufeffx;y\r\n1;2\r\n3;4\r\n\r\n", {}),  # BOM, CRLF, a trailing blank line
    ("0.5\t2\n1.5\t\n2.5\t7\n", {}),  # tab, no header
    ("x|y\n1|2\n3| 4\n5 |7\n\n\n", {"delimiter": "|"}),  # padded numbers, blank lines at the end
    ("time,a,b\n2024-01-01T00:00, 1,2\n2024-01-01T00:01,NA,3\n2024-01-01T00:02,4,5\n", {}),  # ISO timestamps
    ("t,x,y\n3 ,1,2\n1,2,3\n2,4,5\n", {"sort_timestamps": True}),  # numeric timestamps, padded, sorted
    ("a,when,b\n1,10,2\n3,20,4\n", {"timestamp_column": "when"}),  # a timestamp column in the middle
    ("1,NA,3\n4,5,6\n", {"timestamp_column": None}),  # no header, a missing first row cell
]


@pytest.mark.parametrize("text, kwargs", ARROW_FILES)
def test_pyarrow_reads_plain_files_as_the_python_parser_does(tmp_path, readers, text, kwargs):
    path = tmp_path / "plain.csv"
    path.write_bytes(text.encode())
    expected = outcome(path, kwargs, False)
    assert expected[0][0] == "table"
    assert outcome(path, kwargs, True) == expected
    assert readers == ["arrow"]


LEFT_FILES = [  # the file, and the readers that gave a table in turn
    (" 0.5  2\n1.5 7\n", ["pandas"]),  # whitespace-separated: pandas' parser
    ("a,b\n1, NA\n3,4\n", ["pandas"]),  # a padded marker: pyarrow refuses it, pandas skips the blank
    ("a,b\n1, \n3,4\n", ["pandas"]),  # a cell of blanks: missing for the Python parser
    ("a,b\n1,-nan\n3,4\n", []),  # float() reads it; pyarrow's NaN is not a missing cell, pandas refuses it
    ("a,b\n1,1_000\n3,4\n", []),  # float() reads it, pyarrow and pandas refuse it: the Python parser
    ("a,b\n1,nan(1)\n3,4\n", []),  # pyarrow reads NaN, float() refuses: the Python parser names it
    ("a,b\n1,inf\n3,4\n", ["arrow"]),  # read as inf, refused by fedgc.data.csv: the Python parser names it
]


@pytest.mark.parametrize("text, used", LEFT_FILES)
def test_files_pyarrow_leaves_go_on_to_pandas_or_the_python_parser(tmp_path, readers, text, used):
    path = tmp_path / "odd.csv"
    path.write_bytes(text.encode())
    assert outcome(path, {}, True) == outcome(path, {}, False)
    assert readers == used


def test_a_cell_pyarrow_reads_but_float_refuses_is_named(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_bytes(b"a,b\n1,2\n3,nan(1)\n5,6\n")
    (kind, message), _ = outcome(path, {}, True)
    assert kind == "error" and "row 3, column 'b': non-numeric value 'nan(1)'" in message


def test_many_batches_are_transposed_in_order(tmp_path, readers):
    """A file of several of pyarrow's ~1 MB batches, with a timestamp column and missing cells: the same
    table as the Python parser (rows and timestamps in file order across the batches)."""
    rng = np.random.default_rng(11)
    values = rng.normal(size=(60_000, 7))
    values[rng.random(values.shape) < 0.02] = np.nan
    path = tmp_path / "long.csv"
    stamps = np.datetime64("2024-01-01T00:00") + np.arange(60_000) * np.timedelta64(1, "m")
    data.write_client_csv(path, values, columns=[f"c{k}" for k in range(7)], timestamps=stamps)
    assert path.stat().st_size > 3 * 2**20
    assert outcome(path, {}, True) == outcome(path, {}, False)
    assert readers == ["arrow"]
    table = data.read_client_csv(path, client=CLIENT)
    np.testing.assert_array_equal(table.values, values)
    assert table.values.flags.c_contiguous


def test_a_file_pyarrow_reads_loads_no_pandas(tmp_path):
    """Reading a comma-separated file loads pyarrow and not pandas; a whitespace-separated one loads pandas."""
    comma, spaces = tmp_path / "comma.csv", tmp_path / "spaces.csv"
    comma.write_text("a,b\n1,2\n3,NA\n")
    spaces.write_text("1 2\n3 4\n")
    code = textwrap.dedent(f"""
        import sys
        from fedgc.data.csv import read_client_csv
        read_client_csv({str(comma)!r}, client="a")
        print("pyarrow" in sys.modules, "pandas" in sys.modules)
        read_client_csv({str(spaces)!r}, client="a")
        print("pyarrow" in sys.modules, "pandas" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "False", "True", "True"]


def test_the_readers_are_looked_up_under_these_names():
    """fedgc.data.csv imports its readers by name, pyarrow's first: a renamed module cannot go unnoticed."""
    assert data.FAST_CHAIN == (arrow.__name__, pandas_reader.__name__) == (data.FAST_PARSER, data.PANDAS_PARSER)


@pytest.mark.parametrize("sep", [",", ";"])
def test_signed_padded_numbers_are_read_like_float(tmp_path, sep):
    """pandas' C parser (3.1.1) rounds a quarter of the cells with a leading '+' and trailing blanks wrongly
    ('+.10e31 ' -> 9.999999999999999e+29): a file pyarrow leaves (a padded missing cell) and that holds such
    cells is read by the Python parser, so every value is float()'s."""
    rng = np.random.default_rng(7)
    cells = []
    for _ in range(400):
        digits = str(rng.integers(1, 10 ** int(rng.integers(2, 17))))
        cut = int(rng.integers(0, len(digits) + 1))
        cells.append(f"+{digits[:cut]}.{digits[cut:]}e{int(rng.integers(-140, 130))}{' ' * int(rng.integers(1, 3))}")
    rows = [f" {sep}{cells[0]}"] + [f"1.5{sep}{cell}" for cell in cells[1:]]  # the padded blank cell: not pyarrow's
    path = tmp_path / "signed.csv"
    path.write_text("a" + sep + "b\n" + "\n".join(rows) + "\n")
    table = data.read_client_csv(path, client=CLIENT)
    expected = np.array([float(cell) for cell in cells])
    assert bits(table.values[:, -1]) == bits(expected)
    assert pandas_reader._signed_and_padded(path.read_bytes(), sep)
    assert not pandas_reader._signed_and_padded(b"1e+5 ,2\n1,2\n", ",")  # padded, but '+' only in exponents
    assert not pandas_reader._signed_and_padded(b"+1,2\n3,+4\n", ",")  # signed, but nothing padded
