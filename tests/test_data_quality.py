"""Malformed real data: held analyser columns, mostly-missing and stuck columns, mismatched lengths,
timestamps out of order, alignment by timestamp, and `fedgc run` end to end on such files."""

from __future__ import annotations

import functools
import json
import operator
import warnings

import numpy as np
import pytest
import yaml

from fedgc.app.clients import local_model, read_tables
from fedgc.app.config import config_from_files, parse_config
from fedgc.app.runner import check_run
from fedgc.cli import main
from fedgc.core.local_model import save_npz
from fedgc.data.align import align_tables, check_lengths
from fedgc.data.cleaning import ColumnPolicy, detect_held
from fedgc.data.csv import read_client_csv, write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ConfigError, DataError, FedGCWarning


def held(rng, T, period, phase, repeat_some=True):
    """An analyser column: a new value at rows phase + j*period, held in between (rows before the
    first sample hold the previous one); a few samples equal their predecessor."""
    samples = np.cumsum(rng.standard_normal(T // period + 2))
    if repeat_some:
        samples[5] = samples[4]
    idx = (np.arange(T) - phase) // period + 1
    return samples[idx]


def _read(path, **kw):
    return read_client_csv(path, client="unit", **kw)


# ----------------------------------------------------------------------------- held columns


@pytest.mark.parametrize("period, phase", [(2, 0), (5, 3), (15, 7)])
def test_detect_held_finds_period_and_phase(period, phase):
    x = held(np.random.default_rng(period), 600, period, phase)
    x[100] = np.nan
    assert detect_held(x) == (period, phase)


def test_detect_held_rejects_continuous_and_quantised_sensors():
    rng = np.random.default_rng(0)
    assert detect_held(rng.standard_normal(500)) is None
    walk = np.round(np.cumsum(rng.standard_normal(500)) * 0.3)  # coarse quantisation: irregular runs
    assert detect_held(walk) is None
    assert detect_held(np.r_[np.full(250, 1.0), np.full(250, 2.0)]) is None  # a level shift is not sampling


def test_quick_held_screen_never_hides_a_held_column():
    """apply_policies screens every column in one pass (_maybe_held) before detect_held; a column it
    passes over must be one detect_held rejects."""
    from fedgc.data.cleaning import _maybe_held

    rng = np.random.default_rng(5)
    T = 400
    columns = [
        rng.standard_normal(T),
        np.round(np.cumsum(rng.standard_normal(T)) * 0.3),
        np.round(rng.standard_normal(T)),
        np.r_[np.full(200, 1.0), np.full(200, 2.0)],
        np.full(T, 3.0),
        np.repeat(rng.standard_normal(T // 2), 2),
        np.repeat(rng.standard_normal(T // 3 + 1), 3)[:T],
        np.tile([0.0, 1.0], T // 2),
        np.tile([0.0, 0.0, 1.0, 1.0], T // 4),
    ]
    columns += [held(rng, T, p, ph) for p, ph in ((2, 0), (2, 1), (3, 2), (7, 4))]
    for k in range(30):  # random runs of repeats
        runs = rng.integers(1, 1 + k % 5 + 1, size=T)
        columns.append(np.repeat(rng.standard_normal(T), runs)[:T])
    gappy = held(rng, T, 4, 1)
    gappy[50] = np.nan
    columns.append(gappy)
    values = np.column_stack(columns)
    screen = _maybe_held(values)
    found = [detect_held(values[:, j]) for j in range(values.shape[1])]
    assert all(screen[j] for j, f in enumerate(found) if f is not None)
    assert not screen.all() and screen[-1]  # it skips some columns; gappy ones always go to detect_held


@pytest.mark.parametrize("held_values", ["missing", "keep"])
def test_complete_tables_clean_like_tables_with_gaps(held_values):
    """apply_policies takes a shortcut for tables without a missing value; with an empty column added (dropped:
    the table then takes the general path) the kept columns come out the same, bit for bit."""
    from fedgc.data.cleaning import apply_policies

    rng = np.random.default_rng(8)
    T = 300
    values = np.column_stack([rng.standard_normal(T), held(rng, T, 3, 1), np.full(T, 2.0), rng.standard_normal(T)])
    names = ("a", "b", "stuck", "c")
    policy = ColumnPolicy(held_values=held_values)
    fail = functools.partial(DataError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FedGCWarning)
        got, kept_names, cleaning = apply_policies(values.copy(), names, policy, fail=fail, where="w")
        gappy = np.column_stack([values, np.full(T, np.nan)])
        ref, ref_names, ref_cleaning = apply_policies(gappy, (*names, "empty"), policy, fail=fail, where="w")
    assert kept_names == ref_names == ("a", "b", "c")
    np.testing.assert_array_equal(got, ref)
    assert ref_cleaning.dropped_missing == (("empty", 1.0),)
    assert cleaning == ref_cleaning._replace(dropped_missing=(), file_columns=4)
    assert (cleaning.empty_rows, cleaning.missing_values) == (0, 0)
    assert cleaning.held[0].n_masked == (200 if held_values == "missing" else 0)


def test_held_columns_become_missing_between_samples(tmp_path):
    rng = np.random.default_rng(1)
    T = 200
    values = np.column_stack([rng.standard_normal(T), held(rng, T, 5, 2), held(rng, T, 2, 1)])
    path = tmp_path / "reactor.csv"
    write_client_csv(path, values, columns=["flow", "xmeas23", "xmeas37"])
    with pytest.warns(FedGCWarning) as record:
        table = _read(path)
    msg = str(record[0].message)
    for fragment in ("'unit'", "reactor.csv", "every 2 rows: 'xmeas37'", "every 5 rows: 'xmeas23'", "missing"):
        assert fragment in msg
    assert [(h.column, h.period, h.phase) for h in table.cleaning.held] == [("xmeas23", 5, 2), ("xmeas37", 2, 1)]
    kept = ~np.isnan(table.values[:, 1])
    np.testing.assert_array_equal(np.flatnonzero(kept), np.arange(2, T, 5))  # each sample once, repeats included
    np.testing.assert_array_equal(table.values[kept, 1], values[kept, 1])
    assert not np.isnan(table.values[:, 0]).any()
    kept_all = _read(path, policy=ColumnPolicy(held_values="keep"))
    np.testing.assert_array_equal(kept_all.values, values)


# ----------------------------------------------------------------------------- missing and stuck columns


def test_mostly_missing_column_is_dropped_and_named(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.standard_normal((40, 3))
    values[:30, 1] = np.nan  # 75% missing
    values[:, 2][rng.random(40) < 0.2] = np.nan
    values[7] = np.nan  # a whole row: kept as a prediction step
    path = tmp_path / "feed.csv"
    write_client_csv(path, values, columns=["a", "sparse", "c"])
    with pytest.warns(FedGCWarning, match=r"'unit'.*feed\.csv.*'sparse' \(7[58]% missing\)"):
        table = _read(path)
    assert table.columns == ("a", "c") and table.values.shape == (40, 2)
    assert np.isnan(table.values[7]).all() and table.cleaning.empty_rows == 1
    assert _read(path, policy=ColumnPolicy(max_missing=0.9)).columns == ("a", "sparse", "c")


def test_column_policy_values_are_checked():
    with pytest.raises(ValueError, match="constant_columns"):
        ColumnPolicy(constant_columns="ignore")
    with pytest.raises(ValueError, match="held_values"):
        ColumnPolicy(held_values="interpolate")
    with pytest.raises(ValueError, match="max_missing"):
        ColumnPolicy(max_missing=1.0)
    with pytest.raises(ConfigError, match=r"\(feed\): constant_columns must be"):
        parse_config({"clients": [{"name": "feed", "data": "f.csv", "constant_columns": "keep"}]})
    with pytest.raises(ConfigError, match="align must be 'none' or 'timestamp', got 'nearest'"):
        parse_config({"align": "nearest"})
    cfg = parse_config(
        {
            "align": "timestamp",
            "clients": [
                {
                    "name": "feed",
                    "data": "f.csv",
                    "constant_columns": "error",
                    "held_values": "keep",
                    "max_missing": 0.2,
                }
            ],
        }
    )
    assert cfg.align == "timestamp" and cfg.clients[0].policy == ColumnPolicy("error", "keep", 0.2)


# ----------------------------------------------------------------------------- timestamps and lengths


def _stamped(path, values, stamps, names=None):
    write_client_csv(path, values, columns=names or [f"s{j}" for j in range(values.shape[1])], timestamps=stamps)
    return path


def test_out_of_order_rows_error_or_sorted(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.standard_normal((6, 2))
    path = _stamped(tmp_path / "sep.csv", values, [0.0, 1.0, 2.0, 4.0, 3.0, 5.0])
    with pytest.raises(
        DataError, match=r"'unit'.*sep\.csv.*row 6 \(3\.0\) is not after row 5 \(4\.0\).*align: timestamp"
    ):
        _read(path)
    with pytest.warns(FedGCWarning, match="sorted"):
        table = _read(path, sort_timestamps=True)
    np.testing.assert_array_equal(table.timestamps, np.arange(6.0))
    np.testing.assert_array_equal(table.values, values[[0, 1, 2, 4, 3, 5]])
    dup = _stamped(tmp_path / "dup.csv", values, [0.0, 1.0, 2.0, 4.0, 2.0, 5.0])
    with pytest.raises(DataError, match=r"rows 4 and 6 have the same timestamp"):
        _read(dup, sort_timestamps=True)


def test_mismatched_lengths_name_every_client_and_file(tmp_path):
    rng = np.random.default_rng(4)
    a = _read(_stamped(tmp_path / "a.csv", rng.standard_normal((10, 2)), np.arange(10.0)))
    b = _read(_stamped(tmp_path / "b.csv", rng.standard_normal((8, 2)), np.arange(8.0)))._replace(client="other")
    with pytest.raises(DataError) as info:
        check_lengths([a, b])
    msg = str(info.value)
    for fragment in ("'unit'", "a.csv", "10 rows", "'other'", "b.csv", "8 rows", "align: timestamp"):
        assert fragment in msg
    c = _read(_stamped(tmp_path / "c.csv", rng.standard_normal((10, 2)), np.arange(10.0) + 0.5))._replace(client="c")
    with pytest.warns(FedGCWarning, match="paired by position"):
        check_lengths([a, c])


def test_align_on_the_union_grid_inside_the_overlap(tmp_path):
    rng = np.random.default_rng(5)
    # a: steps 0..19 with an outage at 8, 9; b: steps 3..24.
    ta = np.setdiff1d(np.arange(20.0), [8.0, 9.0])
    tb = np.arange(3.0, 25.0)
    va, vb = rng.standard_normal((ta.size, 2)), rng.standard_normal((tb.size, 3))
    a = _read(_stamped(tmp_path / "a.csv", va, ta))._replace(client="a")
    b = _read(_stamped(tmp_path / "b.csv", vb, tb))._replace(client="b")
    with pytest.warns(FedGCWarning, match=r"'a': 3 dropped, 2 missing inserted; 'b': 5 dropped, 0 missing"):
        (a2, b2), rows = align_tables([a, b])
    grid = np.arange(3.0, 20.0)
    np.testing.assert_array_equal(a2.timestamps, grid)
    np.testing.assert_array_equal(b2.timestamps, grid)
    assert np.isnan(a2.values[[5, 6]]).all()  # times 8, 9: prediction steps for a
    np.testing.assert_array_equal(a2.values[0], va[3])
    np.testing.assert_array_equal(b2.values, vb[:17])
    assert rows["a"]._asdict() == {"rows_in_file": 18, "dropped": 3, "inserted": 2, "rows": 17}
    assert rows["b"]._asdict() == {"rows_in_file": 22, "dropped": 5, "inserted": 0, "rows": 17}


def test_align_refuses_what_it_cannot_align(tmp_path):
    rng = np.random.default_rng(6)
    a = _read(_stamped(tmp_path / "a.csv", rng.standard_normal((10, 2)), np.arange(10.0)))._replace(client="a")
    shifted = _read(_stamped(tmp_path / "s.csv", rng.standard_normal((10, 2)), np.arange(10.0) + 0.5))._replace(
        client="s"
    )
    with pytest.raises(DataError, match=r"'a'.*a\.csv.*do not share a sampling grid"):
        align_tables([a, shifted])
    late = _read(_stamped(tmp_path / "late.csv", rng.standard_normal((5, 2)), np.arange(20.0, 25.0)))._replace(
        client="late"
    )
    with pytest.raises(DataError, match=r"do not overlap.*'late'"):
        align_tables([a, late])
    path = tmp_path / "plain.csv"
    write_client_csv(path, rng.standard_normal((10, 2)), columns=["x", "y"])
    plain = _read(path)._replace(client="plain")
    with pytest.raises(DataError, match=r"timestamp column in every file.*'plain'"):
        align_tables([a, plain])


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def messy_plant(tmp_path_factory):
    """Three clients of a known system, written with NaNs, a stuck sensor, a held analyser column,
    and (for alignment) shifted, gappy, shuffled timestamps."""
    folder = tmp_path_factory.mktemp("messy")
    data = simulate(
        SystemSpec(n_clients=3, state_dims=2, obs_dims=8, edge_density=0.5, n_steps=2000), np.random.default_rng(21)
    )
    rng = np.random.default_rng(22)
    files, stamped = [], []
    for m, y in enumerate(data.y):
        y = y.copy()
        y[rng.random(y.shape) < 0.05] = np.nan
        y[rng.choice(len(y), 10, replace=False)] = np.nan
        names = [f"x{j}" for j in range(y.shape[1])]
        stuck = np.full((len(y), 1), 3.25)
        if m == 0:  # an analyser: sensor 1 sampled every 3 steps and held
            y[:, 1] = y[(np.arange(len(y)) // 3) * 3, 1]
        values = np.hstack([y, stuck])
        files.append(folder / f"unit{m}.csv")
        write_client_csv(files[-1], values, columns=[*names, "stuck"])
        # The same data with timestamps: client m starts 5 m steps late and loses 3 rows; rows shuffled locally.
        keep = np.arange(5 * m, len(y))
        keep = np.delete(keep, [100 + m, 200 + m, 300 + m])
        order = keep.copy()
        order[[10, 11]] = order[[11, 10]]
        stamped.append(folder / f"timed{m}.csv")
        write_client_csv(stamped[-1], values[order], columns=[*names, "stuck"], timestamps=order.astype(float))
    return data, files, stamped


def _run(args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(args)
    return code, [str(w.message) for w in caught if issubclass(w.category, FedGCWarning)]


def test_run_on_messy_csvs_recovers_the_edges(messy_plant, tmp_path):
    data, files, _ = messy_plant
    out = tmp_path / "out"
    code, warned = _run(
        ["run", *functools.reduce(operator.iadd, (["--data", str(p)] for p in files), []), "--out", str(out), "--quiet"]
    )
    assert code == 0
    assert any("'unit1'" in w and "unit1.csv" in w and "'stuck'" in w for w in warned)
    assert any("'unit0'" in w and "every 3 rows: 'x1'" in w for w in warned)
    result = json.loads((out / "result.json").read_text())
    assert np.array_equal(np.array(result["edges"]), data.system.edges) and data.system.edges.sum() >= 1
    info = result["data"]["clients"]["unit0"]
    assert info["dropped_constant_columns"] == ["stuck"] and info["columns"] == 8
    assert info["held_columns"] == {"x1": {"period": 3, "phase": 0, "masked": info["held_columns"]["x1"]["masked"]}}
    assert 0.05 < info["missing_fraction"] < 0.2
    assert "## Data" in (out / "report.md").read_text()


def test_run_aligns_by_timestamp_and_reports_dropped_rows(messy_plant, tmp_path):
    data, _, stamped = messy_plant
    args = [
        "run",
        *functools.reduce(operator.iadd, (["--data", str(p)] for p in stamped), []),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    code, _ = _run(args)
    assert code == 2  # lengths differ and rows are out of order
    code, _warned = _run([*args, "--align", "timestamp"])
    assert code == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    rows = {c: v["alignment"] for c, v in result["data"]["clients"].items()}
    assert rows["timed0"] == {"rows_in_file": 1997, "dropped": 10, "inserted": 3, "rows": 1990}
    assert rows["timed2"] == {"rows_in_file": 1987, "dropped": 0, "inserted": 3, "rows": 1990}
    assert all(result["data"]["clients"][c]["rows_sorted"] for c in rows)
    assert np.array_equal(np.array(result["edges"]), data.system.edges)


def test_mismatched_lengths_error_through_the_cli(messy_plant, tmp_path, capsys):
    _, files, _ = messy_plant
    short = tmp_path / "short.csv"
    short.write_text("\n".join(files[1].read_text().splitlines()[:1500]) + "\n")
    assert main(["run", "--data", str(files[0]), "--data", str(short), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    for fragment in ("'unit0'", "unit0.csv", "2000 rows", "'short'", "short.csv", "1499 rows"):
        assert fragment in err


def test_given_model_follows_the_kept_columns(messy_plant, tmp_path, capsys):
    """A model of every file column is restricted to the kept ones; any other size is a clear error."""
    data, files, _ = messy_plant
    m0 = data.system.local_model(0)
    P = m0.obs_dim
    full = tmp_path / "full.npz"  # 9 sensors, the stuck one included (its noise made up)
    C = np.vstack([m0.C, np.zeros((1, m0.state_dim))])
    R = np.diag(np.r_[np.diag(m0.R), 1.0])
    save_npz(full, type(m0)(A=m0.A, C=C, Q=m0.Q, R=R, mean=np.r_[m0.mean, 3.25], scale=np.r_[m0.scale, 1.0]))
    cfg = {
        "clients": [
            {"name": "unit0", "data": str(files[0]), "model": str(full)},
            {"name": "unit1", "data": str(files[1])},
        ]
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FedGCWarning)
        tables, _ = read_tables(parse_config(cfg))
        model, _ = local_model(parse_config(cfg).clients[0], tables[0], 0)
    assert model.obs_dim == P
    np.testing.assert_array_equal(model.C, m0.C)
    np.testing.assert_array_equal(model.R, m0.R)
    wrong = tmp_path / "wrong.npz"
    save_npz(wrong, type(m0)(A=m0.A, C=m0.C[:5], Q=m0.Q, R=m0.R[:5, :5]))
    cfg["clients"][0]["model"] = str(wrong)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, _ = _run(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    for fragment in ("client 'unit0'", "5 sensors", "8 columns", "'stuck'", "9 in the file"):
        assert fragment in err


def test_align_is_refused_by_flower_engines(messy_plant, tmp_path):
    from dataclasses import replace

    _, _, stamped = messy_plant
    cfg = replace(config_from_files(stamped), align="timestamp", engine="flower-sim")
    with pytest.raises(ConfigError, match="local engine only"):
        check_run(cfg, mode="run", resume=False)
    check_run(replace(cfg, engine="local"), mode="run", resume=False)  # the local engine is the one that aligns
