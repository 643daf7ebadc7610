"""Fuzzing the two inputs users write by hand: client CSV files and YAML run configs.

Each generated input must either be read correctly or end in a DataError / ConfigError that
names the file (and for CSVs the client); any other exception (KeyError, IndexError, csv.Error,
OverflowError, ...) is a bug. Inputs are a valid table or config with one kind of fault applied
(the `fault` parameter), so every kind gets its own examples; `--hypothesis-show-statistics`
prints the outcome split per kind (hypothesis.event). Examples per kind: EXAMPLES.

A failed run must not damage an output folder a previous run wrote (test_failed_run_keeps_earlier_outputs).
Deeper one-off run with fresh examples: FEDGC_FUZZ_RANDOM=1 FEDGC_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz_inputs.py --hypothesis-show-statistics
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fedgc.app.config import RunConfig, load_config
from fedgc.data.csv import read_client_csv
from fedgc.errors import ConfigError, DataError

EXAMPLES = int(os.environ.get("FEDGC_FUZZ_EXAMPLES", "60"))  # per kind; raise it for a deeper one-off run
# CI replays the same examples every time (a red CI must be reproducible); FEDGC_FUZZ_RANDOM=1 explores new ones.
RANDOM = os.environ.get("FEDGC_FUZZ_RANDOM", "") not in ("", "0")
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=not RANDOM, database=None if not RANDOM else settings.default.database,
)  # fmt: skip
CLIENT = "plant-7"

# ---------------------------------------------------------------------------------------------- CSV

CSV_FAULTS = (
    "clean", "ragged_rows", "non_numeric", "empty", "extreme_values", "duplicate_header", "bom",
    "delimiters", "timestamps", "quotes_and_nul", "long_cells", "line_endings", "random_text", "random_bytes",
)  # fmt: skip

ODD_CELLS = (
    "abc", "1,5", "-", "--", "1.2.3", "0x1F", "1_000", "١٢", "½", "1e", "e5", "+-1", "TRUE", "∞", "1 2",
    "NaN", "nan", "NA", "n/a", "null", "None", "#N/A", "", " ", "inf", "-inf", "Infinity", "1e309",
    "2024-01-01", "2024-13-45", "12:00", "\u00a0", "'1'", '"1"', "1;2", "1\t2",
)  # fmt: skip
EXTREME_CELLS = (
    "inf", "-inf", "1e309", "-1e400", "nan", "NaN", "1e308", "-1e308", "1.7976931348623157e308",
    "-1.7976931348623157e308", "5e-324", "-0.0", "0", "1e-320",
)  # fmt: skip
ODD_TIMESTAMPS = (
    "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "2024-01-01T00:00:00+00:00", "2024-01-01",
    "2024-02-30", "1e309", "nan", "", "-1", "0", "2024-01-01T00:00:00Z", "24:00", "1970-01-01T00:00:00.000001",
)  # fmt: skip
DELIMITER_ARGS = (None, None, ",", ";", "\t", "|", " ", "whitespace", '"', "\n", "", "ab", "\r", "\x00")
TIMESTAMP_ARGS = ("auto", "auto", None, 0, -1, 7, -9, "time", "nope", 1.5, True)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def base_table(draw, *, min_rows: int = 0, values_from=finite) -> dict[str, Any]:
    """A table: header (or None), rows of cell strings, delimiter, optional timestamps first, and
    the sensor values it holds (`expected`, what a correct reader returns for it)."""
    n_cols = draw(st.integers(1, 4))
    n_rows = draw(st.integers(min_rows, 6))
    values = [[draw(values_from) for _ in range(n_cols)] for _ in range(n_rows)]
    ts_kind = draw(st.sampled_from([None, "numeric", "iso"]))
    rows = [[repr(v) for v in row] for row in values]
    header = [f"s{k}" if draw(st.booleans()) else f"sensor {k}" for k in range(n_cols)] if draw(st.booleans()) else None
    if ts_kind is not None:
        start = draw(st.integers(0, 10**6))
        ts = [str(start + 10 * i) if ts_kind == "numeric" else f"2024-01-01T00:00:{i:02d}" for i in range(n_rows)]
        rows = [[t, *r] for t, r in zip(ts, rows)]
        header = None if header is None else ["time", *header]
    # numeric timestamps without a 'time' header are indistinguishable from a sensor column
    expected = [[float(r[0]), *v] for r, v in zip(rows, values)] if ts_kind == "numeric" and header is None else values
    return {"header": header, "rows": rows, "sep": ",", "ts": ts_kind, "expected": expected}


def _join(table: dict[str, Any], newline: str = "\n") -> str:
    lines = [] if table["header"] is None else [table["sep"].join(table["header"])]
    lines += [table["sep"].join(r) for r in table["rows"]]
    return newline.join(lines) + newline


def _pick_cell(draw, rows) -> tuple[int, int] | None:
    cells = [(i, j) for i, r in enumerate(rows) for j in range(len(r))]
    return draw(st.sampled_from(cells)) if cells else None


@st.composite
def faulty_csv(draw, fault: str) -> tuple[bytes, dict[str, Any]]:
    """(file bytes, read_client_csv keyword arguments) for one kind of fault."""
    kwargs: dict[str, Any] = {"timestamp_column": "auto"}
    if fault == "clean":  # well-formed, at least two rows, no constant column: must be read exactly
        t = draw(base_table(min_rows=2, values_from=st.floats(-1e6, 1e6, allow_nan=False)))
        assume(all(len(set(col)) > 1 for col in zip(*t["expected"])))
        kwargs["expected"] = np.array(t["expected"], dtype=np.float64)
        return _join(t).encode(), kwargs
    t = draw(base_table())
    if fault == "ragged_rows" and t["rows"]:
        i = draw(st.integers(0, len(t["rows"]) - 1))
        row = t["rows"][i]
        t["rows"][i] = row[:-1] if draw(st.booleans()) else [*row, draw(st.sampled_from(["1", "", "x"]))]
    elif fault == "non_numeric":
        for _ in range(draw(st.integers(1, 3))):
            if (ij := _pick_cell(draw, t["rows"])) is not None:
                cell = draw(st.one_of(st.sampled_from(ODD_CELLS), st.text(max_size=6)))
                t["rows"][ij[0]][ij[1]] = cell
    elif fault == "empty":
        return draw(
            st.sampled_from([b"", b"\n", b"  \n\t\n", b"\xef\xbb\xbf", b"a,b\n", b"time\n", b"\r\n\r\n"])
        ), kwargs
    elif fault == "extreme_values":
        for _ in range(draw(st.integers(1, 3))):
            if (ij := _pick_cell(draw, t["rows"])) is not None and not (t["ts"] and ij[1] == 0):
                t["rows"][ij[0]][ij[1]] = draw(st.sampled_from(EXTREME_CELLS))
    elif fault == "duplicate_header":
        names = t["header"] or [f"s{k}" for k in range(len(t["rows"][0]) if t["rows"] else 2)]
        dup = draw(st.sampled_from(names))
        t["header"] = [*names[:-1], dup] if len(names) > 1 else [dup, dup]
        t["header"] = [draw(st.sampled_from([n, n.upper(), f" {n} ", n])) for n in t["header"]]
    elif fault == "bom":
        text = _join(t)
        where = draw(st.sampled_from(["utf8-start", "utf16", "utf32", "middle", "twice"]))
        if where == "utf16":
            return text.encode("utf-16"), kwargs
        if where == "utf32":
            return text.encode("utf-32"), kwargs
        if where == "middle":
            k = draw(st.integers(0, len(text)))
            return (text[:k] + "\ufeff" + text[k:]).encode(), kwargs
        return (("\ufeff" * (2 if where == "twice" else 1)) + text).encode(), kwargs
    elif fault == "delimiters":
        t["sep"] = draw(st.sampled_from([";", "\t", "|", " ", "  ", ", ", " ,", ":", ";;"]))
        if draw(st.booleans()) and t["rows"]:  # one row uses another delimiter
            i = draw(st.integers(0, len(t["rows"]) - 1))
            t["rows"][i] = [draw(st.sampled_from([";", ",", "\t"])).join(t["rows"][i])]
        kwargs["delimiter"] = draw(st.sampled_from(DELIMITER_ARGS))
    elif fault == "timestamps":
        if not t["ts"]:
            t["rows"] = [[str(i), *r] for i, r in enumerate(t["rows"])]
            t["header"] = None if t["header"] is None else ["time", *t["header"]]
        ts = [r[0] for r in t["rows"]]
        how = draw(st.sampled_from(["shuffle", "reverse", "duplicate", "odd", "mixed_tz", "edge_of_time"]))
        if how == "shuffle":
            ts = draw(st.permutations(ts))
        elif how == "reverse":
            ts = ts[::-1]
        elif how == "duplicate" and len(ts) > 1:
            k = draw(st.integers(1, len(ts) - 1))
            ts[k] = ts[k - 1]
        elif how == "odd" and ts:
            ts[draw(st.integers(0, len(ts) - 1))] = draw(st.sampled_from(ODD_TIMESTAMPS))
        elif how == "mixed_tz":
            ts = [f"2024-01-01T00:00:{i:02d}" + ("+01:00" if i % 2 else "") for i in range(len(ts))]
        elif how == "edge_of_time":  # valid locally, outside datetime's range once converted to UTC
            late = draw(st.booleans())
            ts = [
                (f"9999-12-31T23:59:{i:02d}-12:00" if late else f"0001-01-01T00:00:{i:02d}+14:00")
                for i in range(len(ts))
            ]
        for r, s in zip(t["rows"], ts):
            r[0] = s
        kwargs["timestamp_column"] = draw(st.sampled_from(TIMESTAMP_ARGS))
    elif fault == "quotes_and_nul":
        text = _join(t)
        for _ in range(draw(st.integers(1, 3))):
            k = draw(st.integers(0, len(text)))
            text = text[:k] + draw(st.sampled_from(['"', "'", '""', "\x00", '"\n"', "\\", "\x1a"])) + text[k:]
        return text.encode(), kwargs
    elif fault == "long_cells" and t["rows"]:  # beyond the csv module's 131072-character field limit
        i, j = _pick_cell(draw, t["rows"])
        t["rows"][i][j] = draw(
            st.sampled_from(["1" * 140_000, "0." + "1" * 140_000, '"' + "1" * 140_000 + '"', "9" * 400])
        )
    elif fault == "line_endings":
        text = _join(t, newline=draw(st.sampled_from(["\r\n", "\r", "\n\n", "\n \n", "\u2028", "\x0b", "\x85"])))
        return text.encode(), kwargs
    elif fault == "random_text":
        alphabet = st.sampled_from(list("0123456789.,;-+eE \t\n\"'naifNTx:"))
        return draw(st.one_of(st.text(alphabet, max_size=80), st.text(max_size=40))).encode(
            "utf-8", "surrogatepass"
        ), kwargs
    elif fault == "random_bytes":
        return draw(st.binary(max_size=80)), kwargs
    return _join(t).encode("utf-8", "surrogatepass"), kwargs


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check_table(table) -> None:
    T, P = table.values.shape
    assert table.client == CLIENT and len(table.columns) == P >= 1 and T >= 2
    assert len(set(table.columns)) == P
    assert table.values.dtype == np.float64 and not np.isinf(table.values).any()
    # NaN is a missing measurement (held analyser repeats add more); every kept column has data
    assert np.isnan(table.values).sum() >= table.cleaning.missing_values
    assert np.isfinite(table.values).any(axis=0).all()
    if table.timestamps is not None:
        assert table.timestamps.shape == (T,)
        assert (table.timestamps[1:] > table.timestamps[:-1]).all()


@pytest.mark.parametrize("fault", CSV_FAULTS)
@FUZZ
@given(data=st.data())
def test_malformed_csv_is_read_or_refused_clearly(fault, scratch, data):
    content, kwargs = data.draw(faulty_csv(fault), label="file and arguments")
    expected = kwargs.pop("expected", None)
    path = scratch / f"{fault}.csv"
    path.write_bytes(content)
    if expected is not None:
        np.testing.assert_array_equal(read_client_csv(path, client=CLIENT, **kwargs).values, expected)
        event("read exactly")
        return
    try:
        table = read_client_csv(path, client=CLIENT, **kwargs)
    except DataError as exc:
        message = str(exc)
        assert str(path) in message and repr(CLIENT) in message, message
        event("DataError")
        return
    _check_table(table)
    event("read")


# ---------------------------------------------------------------------------------------------- YAML config

CONFIG_FAULTS = (
    "clean", "wrong_type", "unknown_key", "missing_key", "negative_or_zero", "wrong_nesting", "odd_keys",
    "random_yaml", "random_bytes",
)  # fmt: skip

BASE_SYNTHETIC = {
    "name": "fuzz",
    "seed": 0,
    "engine": "local",
    "synthetic": {
        "n_clients": 3, "state_dims": 2, "obs_dims": [5, 6, 7], "edge_density": 0.3, "edge_strength": 0.3,
        "self_eig_range": [0.3, 0.7], "snr": 1.0, "n_steps": 200, "max_spectral_radius": 0.95,
        "perturbations": [{"time": 100, "target": 0, "source": 1, "action": "on", "factor": 1.0}],
    },
    "local_models": "given",
    "server": {"rule": "newton", "max_rounds": 5, "tol": 1e-6, "penalty": 0.0, "diagonal": "fixed",
               "learning_rate": None, "alpha": 0.05, "burn_in": 1},
    "client": {"learn_theta": False, "theta": "linear"},
    "privacy": "off",
    "evaluation": {"oracle": True},
}  # fmt: skip
BASE_CLIENTS = {
    "name": "fuzz-run",
    "seed": 1,
    "clients": [
        {"name": "a", "data": "a.csv", "timestamp_column": "auto", "model": "identify", "state_dim": "auto",
         "explained_variance": None},
        {"name": "b", "data": "/abs/b.csv", "timestamp_column": 0, "model": "b.npz", "state_dim": 2},
        {"name": "c", "data": "c.csv", "timestamp_column": None, "explained_variance": 0.9},
    ],
    "server": {"max_rounds": 3},
    "privacy": {"epsilon": 10.0, "delta": 1e-5, "clip": 7.0, "accountant": "rdp", "clip_space": "whitened",
                "debias": "client", "max_noise_multiplier": 100.0, "shrink": True, "augmentation_noise": False},
    "evaluation": {"oracle": False},
}  # fmt: skip

any_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
    st.sampled_from(["auto", "none", "off", "on", "1e-6", "-1", ".inf", "yes", "newton", "identify"]),
    st.lists(st.integers(-3, 10), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into a nested dict/list (leaves and sections)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


def _parent(raw: Any, path: tuple) -> Any:
    for k in path[:-1]:
        raw = raw[k]
    return raw


@st.composite
def faulty_config(draw, fault: str) -> bytes:
    import copy

    raw = copy.deepcopy(draw(st.sampled_from([BASE_SYNTHETIC, BASE_CLIENTS])))
    paths = _paths(raw)
    mappings = [()] + [p for p in paths if isinstance(_parent(raw, (*p, None)), dict)]
    if fault == "wrong_type":
        for _ in range(draw(st.integers(1, 2))):
            p = draw(st.sampled_from(_paths(raw)))
            _parent(raw, p)[p[-1]] = draw(any_value)
    elif fault == "unknown_key":
        where = draw(st.sampled_from(mappings))
        target = _parent(raw, (*where, None))
        target[draw(st.sampled_from(["nme", "Seed", "rounds", "extra", "max_round", "data_path", "epsilon "]))] = 1
    elif fault == "missing_key":
        for _ in range(draw(st.integers(1, 3))):
            ps = [p for p in _paths(raw) if isinstance(_parent(raw, p), dict)]
            if ps:
                p = draw(st.sampled_from(ps))
                del _parent(raw, p)[p[-1]]
    elif fault == "negative_or_zero":
        numeric = [p for p in _paths(raw) if isinstance(_parent(raw, p)[p[-1]], (int, float))]
        for p in draw(st.lists(st.sampled_from(numeric), min_size=1, max_size=3)):
            value = _parent(raw, p)[p[-1]]
            _parent(raw, p)[p[-1]] = draw(st.sampled_from([0, -1, -value, -1e-300, -(2**64), 0.0]))
    elif fault == "wrong_nesting":
        sections = [p for p in paths if isinstance(_parent(raw, p)[p[-1]], (dict, list))]
        p = draw(st.sampled_from(sections))
        value = _parent(raw, p)[p[-1]]
        how = draw(st.sampled_from(["listed", "scalar", "moved", "flattened", "doubled"]))
        if how == "listed":
            _parent(raw, p)[p[-1]] = [value]
        elif how == "scalar":
            _parent(raw, p)[p[-1]] = draw(st.sampled_from([1, "x", True, None, 2.5]))
        elif how == "moved":  # into another mapping (not one inside the moved value)
            dest = _parent(raw, (*draw(st.sampled_from([m for m in mappings if m[: len(p)] != p])), None))
            del _parent(raw, p)[p[-1]]
            dest[p[-1] if not isinstance(p[-1], int) else "moved"] = value
        elif how == "flattened" and isinstance(value, dict):
            del _parent(raw, p)[p[-1]]
            _parent(raw, p).update(value) if isinstance(_parent(raw, p), dict) else None
        else:
            _parent(raw, p)[p[-1]] = {"x": value}
    elif fault == "odd_keys":
        where = draw(st.sampled_from(mappings))
        _parent(raw, (*where, None))[draw(st.one_of(st.integers(), st.booleans(), st.none(), st.floats()))] = 1
    elif fault == "random_yaml":
        alphabet = st.sampled_from(list("abcdeimnrst_:- {}[],'\"\n\t#&*!|>%@01.9"))
        return draw(st.one_of(st.text(alphabet, max_size=60), st.text(max_size=30))).encode("utf-8", "surrogatepass")
    elif fault == "random_bytes":
        return draw(st.binary(max_size=60))
    return yaml.safe_dump(raw, sort_keys=False).encode()


def _check_config(cfg: RunConfig) -> None:
    """What the rest of fedgc assumes of a config that loaded."""
    assert isinstance(cfg, RunConfig)
    assert isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and cfg.seed >= 0
    np.random.default_rng(cfg.seed)  # every run seeds Generators with it
    s = cfg.server
    assert type(s.max_rounds) is int and s.max_rounds >= 1 and type(s.burn_in) is int and s.burn_in >= 1
    for name in ("tol", "penalty", "alpha"):
        value = getattr(s, name)
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), (name, value)
    assert s.learning_rate is None or (math.isfinite(s.learning_rate) and s.learning_rate > 0)
    assert (cfg.evaluation.oracle is None or isinstance(cfg.evaluation.oracle, bool)) and isinstance(
        cfg.client.learn_theta, bool
    )
    for c in cfg.clients:
        assert isinstance(c.name, str) and isinstance(c.data, Path)
        assert c.state_dim is None or (type(c.state_dim) is int and c.state_dim >= 1)
        assert c.timestamp_column is None or isinstance(c.timestamp_column, (str, int))
        assert c.model == "identify" or isinstance(c.model, Path)
    if cfg.synthetic is not None:
        sy = cfg.synthetic
        assert type(sy.n_clients) is int and type(sy.n_steps) is int
        assert all(type(d) is int and d >= 1 for d in (*sy.state_dims, *sy.obs_dims))
        for name in ("edge_density", "edge_strength", "snr", "max_spectral_radius", *("self_eig_range",)):
            values = getattr(sy, name)
            for v in values if isinstance(values, tuple) else (values,):
                assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (name, v)
        assert sy.self_eig_range[1] < sy.max_spectral_radius < 1
        for p in sy.perturbations:
            assert all(type(getattr(p, k)) is int for k in ("time", "target", "source"))
            assert isinstance(p.factor, (int, float)) and math.isfinite(p.factor)


@pytest.mark.parametrize("fault", CONFIG_FAULTS)
@FUZZ
@given(data=st.data())
def test_malformed_config_is_loaded_or_refused_clearly(fault, scratch, data):
    content = data.draw(faulty_config(fault), label="config file")
    path = scratch / f"{fault}.yaml"
    path.write_bytes(content)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc), str(exc)
        event("ConfigError")
        return
    _check_config(cfg)
    event("loaded")


# ---------------------------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    "content, kwargs, message",
    [  # the faults the fuzzing above found, each once by hand
        ("time,a\n9999-12-31T23:00:00-12:00,1\n9999-12-31T23:30:00-12:00,2\n", {}, "is out of range in UTC"),
        ("time,a\n0001-01-01T00:00:00+14:00,1\n0001-01-01T01:00:00+14:00,2\n", {}, "is out of range in UTC"),
        ("a,b\n" + "1" * 140_000 + ",2\n3,4\n", {}, "row 2 is not a valid CSV line (field larger than field limit"),
        ('a,b\n"1\n2",3\n4,5\n6,7\n', {}, "row 2 is not a valid CSV line"),  # was read silently as 12
        ("a,b\n1e308,1\n-1e308,2\n", {}, "column 'a' holds values up to 1e+308"),
        ("a,b\n1,2\n3,4\n", {"delimiter": '"'}, "delimiter '\"' cannot separate numbers"),
        ("a,b\n1,2\n3,4\n", {"delimiter": "\n"}, "cannot separate numbers"),
    ],
)
def test_csv_faults_found_by_fuzzing(tmp_path, content, kwargs, message):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        read_client_csv(path, client=CLIENT, **kwargs)
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("\x80", "is not UTF-8 text"),
        ("seed: 2024-13-45\n", "is not valid YAML"),  # PyYAML raises ValueError for impossible dates
        ("1: a\nfoo: b\n", "unknown key(s) ['foo', 1]"),  # sorting int and str keys raised TypeError
        ("clients: 5\n", "clients must be a list"),
        ("clients: [{name: a, data: null}]\n", "data must be a file path"),
        ("clients: [{name: a, data: a.csv, timestamp_column: 0.5}]\n", "timestamp_column must be"),
        ("clients: [{name: a, data: a.csv, state_dim: true}]\n", "state_dim must be 'auto' or a positive integer"),
        ("synthetic: {n_clients: 3, perturbations: [{target: 0, source: 1, action: 'on'}]}\n", "missing 1 required"),
        ("synthetic: {n_clients: 3, self_eig_range: [0.5]}\n", "self_eig_range must be [lo, hi]"),
        ("synthetic: {n_clients: 3, obs_dims: [a, b, c]}\n", "obs_dims must be an integer or a list of integers"),
        ("synthetic: {n_clients: 100000000000}\n", "n_clients must be at most"),
        ("synthetic: {n_clients: 3, max_spectral_radius: null}\n", "max_spectral_radius must be a finite number"),
        ("server: {penalty: .nan}\n", "penalty must be a finite number"),
        ("server: {max_rounds: true}\n", "max_rounds must be an integer"),
        ("client: {learn_theta: 'no'}\n", "learn_theta must be true or false"),
        ("evaluation: {oracle: 'no'}\n", "evaluation.oracle must be true, false or 'auto'"),
        ("name: [a]\n", "name must be a non-empty string"),
        ("seed: -1\n", "seed must be an integer >= 0"),  # numpy's default_rng raised later, mid-run
        ("synthetic: {n_clients: 3, max_spectral_radius: 0.5}\n", "max_spectral_radius must lie between"),
    ],
)
def test_config_faults_found_by_fuzzing(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\x80" if text == "\x80" else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_one_column_with_a_spaced_header_found_by_fuzzing(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("flow rate\n0.5\n1.5\n2.0\n")  # was split on the space: 'row 2 has 1 cells, expected 2'
    table = read_client_csv(path, client=CLIENT)
    assert table.columns == ("flow rate",) and table.values[:, 0].tolist() == [0.5, 1.5, 2.0]
    path.write_text("a b\n1 2\n3 4\n")  # whitespace-delimited files are unchanged
    assert read_client_csv(path, client=CLIENT).columns == ("a", "b")


# ---------------------------------------------------------------------------------------------- output folders


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A folder with a finished local run on two small clients (with its figures), and its files' bytes and
    mtimes."""
    from fedgc.cli import main
    from fedgc.data.csv import write_client_csv
    from fedgc.data.synthetic import SystemSpec, simulate

    base = tmp_path_factory.mktemp("keep")
    data = simulate(SystemSpec(n_clients=2, state_dims=1, obs_dims=3, n_steps=400), np.random.default_rng(5))
    good = []
    for m, y in enumerate(data.y):
        write_client_csv(base / f"site{m}.csv", y)
        good.append(base / f"site{m}.csv")
    out = base / "out"
    argv = ["run", *(a for p in good for a in ("--data", str(p))), "--out", str(out), "--figures", "--quiet"]
    assert main(argv) == 0
    return base, good, out, _snapshot(out)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@settings(FUZZ, max_examples=12, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_failed_run_keeps_earlier_outputs(finished_run, capsys, data):
    """A later run into the same folder (--overwrite) that fails on a bad client file leaves every file as it
    was, and no staging folder beside it."""
    from fedgc.cli import main

    base, good, out, before = finished_run
    assert set(before) >= {"result.json", "report.md", "gc_heatmap.png", "convergence.png"}
    content, kwargs = data.draw(faulty_csv(data.draw(st.sampled_from(CSV_FAULTS[1:]))), label="bad file")
    bad = base / "site1.bad.csv"
    bad.write_bytes(content)
    try:
        read_client_csv(bad, client="x", **kwargs)
        assume(False)  # this variant happens to be a valid file: a run on it would rightly replace the results
    except DataError:
        pass
    # the default timestamp handling ('auto') is what a run uses; only files that fail with it matter
    assume(kwargs.get("timestamp_column", "auto") == "auto" and kwargs.get("delimiter") is None)
    # --overwrite: the folder's run would be replaced by a successful one; this one fails
    assert main(["run", "--data", str(good[0]), "--data", str(bad), "--out", str(out), "--quiet", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "client 'site1.bad'" in err and str(bad) in err and "Traceback" not in err
    assert _snapshot(out) == before and not out.with_name(out.name + ".fedgc-staging").exists()


def test_failed_config_keeps_earlier_outputs(finished_run, capsys):
    from fedgc.cli import main

    base, good, out, before = finished_run
    bad = base / "bad.yaml"
    bad.write_text(yaml.safe_dump({"clients": [{"name": "a", "data": str(good[0])}, {"name": "b", "data": str(good[1])}],
                                   "server": {"max_rounds": -3}}))  # fmt: skip
    assert main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    assert str(bad) in capsys.readouterr().err
    assert _snapshot(out) == before
