"""server.test: which Granger test a run uses, and SIV runs end to end (CSV clients with identified models)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedgc.app import clients, runner
from fedgc.app.config import ClientOptions, ClientSpec, parse_config
from fedgc.app.results import load_fit, save_fit
from fedgc.app.runner import run
from fedgc.core.siv import INSTRUMENTS, siv_tests
from fedgc.core.snapshots import snapshot
from fedgc.data import cleaning
from fedgc.data import ground_truth as gt
from fedgc.data.csv import write_client_csv
from fedgc.errors import ConfigError, FedGCError
from fedgc.protocol import loop, wire
from fedgc.protocol.loop import snapshot_series
from fedgc.protocol.messages import ClientInfo
from fedgc.protocol.settings import SIV_INSTRUMENTS
from fedgc.report.result_json import read_result, write_outputs
from fedgc.report.schema import schema_errors

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 1500}
PRIVATE = {"epsilon": math.inf, "delta": 1e-5, "clip": 5}


def test_auto_picks_siv_for_identified_models_only() -> None:
    assert parse_config({"synthetic": SYNTHETIC}).gc_test == "lr"  # given (true) models
    assert parse_config({"synthetic": SYNTHETIC, "local_models": "identify"}).gc_test == "siv"
    private = {"synthetic": SYNTHETIC, "local_models": "identify", "privacy": PRIVATE, "evaluation": {"oracle": False}}
    assert parse_config(private).gc_test == "lr"
    assert parse_config({"synthetic": SYNTHETIC, "local_models": "identify", "streaming": "on"}).gc_test == "lr"
    forced = parse_config({"synthetic": SYNTHETIC, "local_models": "identify", "server": {"test": "lr"}})
    assert forced.gc_test == "lr"
    assert parse_config({"synthetic": SYNTHETIC, "server": {"test": "siv"}}).gc_test == "siv"
    # TEP units identify their models from the plant data (on tep.identify_on or the run itself)
    tep = {"path": str(REPO / "data" / "tep"), "identify_on": "d00"}
    assert parse_config({"tep": tep}).gc_test == "siv"
    assert parse_config({"tep": tep, "streaming": "on"}).gc_test == "lr"


def test_siv_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(ConfigError, match="not an accounted release"):
        parse_config({"synthetic": SYNTHETIC, "server": {"test": "siv"}, "privacy": PRIVATE,
                      "evaluation": {"oracle": False}})  # fmt: skip
    with pytest.raises(ConfigError, match="streaming"):
        parse_config({"synthetic": SYNTHETIC, "server": {"test": "siv"}, "streaming": "on"})
    with pytest.raises(ConfigError, match=r"server.test"):
        parse_config({"synthetic": SYNTHETIC, "server": {"test": "wald"}})


def test_setup_messages_carry_the_snapshot_only_when_asked() -> None:
    assert "snapshots" not in wire.encode_setup(wire.SetupRequest(seed=1))
    for request in ("auto", "siv"):
        assert wire.decode_setup(wire.encode_setup(wire.SetupRequest(seed=1, snapshots=request))).snapshots == request
    with pytest.raises(wire.MessageError, match="snapshots"):
        wire.SetupRequest(snapshots="yes")
    x = np.random.default_rng(0).standard_normal((50, 2))
    payload = wire.encode_setup_reply(ClientInfo("a", 2, 50, snapshot=x), 0)
    info, _ = wire.decode_setup_reply(payload)
    np.testing.assert_array_equal(info.snapshot, x)
    assert (
        wire.payload_bytes(payload) == wire.payload_bytes(wire.encode_setup_reply(ClientInfo("a", 2, 50), 0)) + x.nbytes
    )
    with pytest.raises(wire.MessageError, match="snapshot"):
        wire.decode_setup_reply({**payload, "snapshot": "x"})


def test_the_server_checks_every_snapshot_series() -> None:
    good = np.zeros((50, 2))
    assert snapshot_series([ClientInfo("a", 2, 50, snapshot=good), ClientInfo("b", 2, 50)], "auto", 50) is None
    assert (
        snapshot_series([ClientInfo("a", 2, 50, snapshot=good), ClientInfo("b", 2, 50, snapshot=good)], "lr", 50)
        is None
    )
    pending = snapshot_series([ClientInfo("a", 2, 50, snapshot=good), ClientInfo("b", 2, 50)], "siv", 50)
    assert pending is not None and pending[1] is None  # refused by the tests if 'b' is still a member then
    with pytest.raises(FedGCError, match=r"client 'b'.*\(50, r >= 1\)"):
        snapshot_series([ClientInfo("a", 2, 50, snapshot=good), ClientInfo("b", 2, 50, snapshot=good[:40])], "siv", 50)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(FedGCError, match=r"client 'b'.*non-finite"):
        snapshot_series([ClientInfo("a", 2, 50, snapshot=good), ClientInfo("b", 2, 50, snapshot=bad)], "siv", 50)


@pytest.fixture(scope="module")
def tanks_csvs(tmp_path_factory) -> tuple[list[ClientSpec], gt.System, list[np.ndarray]]:
    """The tanks line A -> B -> C plus an independent utility, written as four CSV files."""
    system = gt.make("tanks", 0)
    ys, _ = gt.simulate(system, 20000, np.random.default_rng(0))
    folder = tmp_path_factory.mktemp("tanks")
    specs = []
    for name, y in zip("ABCU", ys):
        write_client_csv(folder / f"{name}.csv", y, columns=[f"s{j}" for j in range(y.shape[1])])
        specs.append(ClientSpec(name, folder / f"{name}.csv"))
    return specs, system, ys


def test_a_run_with_identified_models_uses_siv_and_finds_only_the_true_edges(tanks_csvs, tmp_path: Path) -> None:
    specs, system, ys = tanks_csvs
    cfg = parse_config({"name": "tanks", "evaluation": {"oracle": False}, "server": {"max_rounds": 3}})
    cfg = replace(cfg, clients=tuple(specs))
    result = run(cfg, mode="run", out_dir=tmp_path / "run")
    gc = result.fit.gc
    assert gc.test == "siv"
    np.testing.assert_array_equal(gc.edges, system.edges)
    # the p-values are SIV's on the clients' own snapshot series (the CSV round trip keeps the values)
    reference = siv_tests([snapshot(y).series for y in ys])
    np.testing.assert_allclose(gc.log10_pvalue, reference.log10_pvalue, rtol=1e-6, atol=1e-9)
    # the snapshots are counted once, as setup bytes to the server
    assert result.communication["setup_bytes"] == sum(20000 * r * 8 for r in reference.ranks)
    write_outputs(result, tmp_path / "out")
    data = read_result(tmp_path / "out")
    assert data["test"] == "siv" and not schema_errors(data)
    assert np.array_equal(np.array(data["siv_via_source"], dtype=bool), reference.via_source)
    # a deployed run's submitter reads the fit from the job's file: which test carried each pair travels too
    back = load_fit(save_fit(tmp_path / "fit.npz", result.fit)).gc
    assert back.test == "siv" and np.array_equal(back.via_source, reference.via_source)
    assert "| Granger test | snapshot IV" in (tmp_path / "out" / "report.md").read_text()


def test_a_run_takes_the_lagged_instruments_alone_when_told(tanks_csvs, tmp_path: Path) -> None:
    specs, system, ys = tanks_csvs
    server = {"max_rounds": 3, "siv_instruments": "lagged"}
    cfg = replace(
        parse_config({"name": "tanks", "evaluation": {"oracle": False}, "server": server}), clients=tuple(specs)
    )
    gc = run(cfg, mode="run", out_dir=tmp_path / "run").fit.gc
    reference = siv_tests([snapshot(y).series for y in ys], instruments="lagged")
    np.testing.assert_allclose(gc.log10_pvalue, reference.log10_pvalue, rtol=1e-6, atol=1e-9)
    both = siv_tests([snapshot(y).series for y in ys])
    off = ~np.eye(system.M, dtype=bool)
    assert not np.allclose(gc.log10_pvalue[off], both.log10_pvalue[off])
    assert SIV_INSTRUMENTS == INSTRUMENTS  # the setting's values (fedgc.protocol) are the test's (fedgc.core)
    with pytest.raises(ConfigError, match=r"server\.siv_instruments must be 'both' or 'lagged'"):
        parse_config({"name": "tanks", "server": {"siv_instruments": "own"}})


def test_siv_alongside_the_rounds_or_after_them_gives_the_same_test(tanks_csvs, tmp_path: Path, monkeypatch) -> None:
    """The SIV test runs on a thread of its own during the rounds (small series) or after them (series over
    SIV_ALONGSIDE_BYTES: memory), with two threads for its pieces (the local engine) or none: the same numbers."""
    specs, _, _ = tanks_csvs
    cfg = parse_config({"name": "tanks", "evaluation": {"oracle": False}, "server": {"max_rounds": 3}})
    cfg = replace(cfg, clients=tuple(specs))
    started: list[str] = []
    background = loop.in_background

    def recorded(work):
        started.append("siv")
        return background(work)

    monkeypatch.setattr(loop, "in_background", recorded)
    alongside = run(cfg, mode="run", out_dir=tmp_path / "alongside").fit.gc
    assert started == ["siv"]
    monkeypatch.setattr(loop, "SIV_ALONGSIDE_BYTES", 0)
    after = run(cfg, mode="run", out_dir=tmp_path / "after").fit.gc
    assert started == ["siv"]  # not started again
    monkeypatch.setattr(runner, "LOCAL_WORKERS", 1)
    serial = run(cfg, mode="run", out_dir=tmp_path / "serial").fit.gc
    for other in (after, serial):
        np.testing.assert_array_equal(other.log10_pvalue, alongside.log10_pvalue)
        np.testing.assert_array_equal(other.statistic, alongside.statistic)


def test_the_lr_test_can_still_be_asked_for(tanks_csvs, tmp_path: Path) -> None:
    specs, _, _ = tanks_csvs
    cfg = parse_config({"name": "tanks", "evaluation": {"oracle": False}, "server": {"max_rounds": 3, "test": "lr"}})
    result = run(replace(cfg, clients=tuple(specs)), mode="run", out_dir=tmp_path / "run")
    assert result.fit.gc.test == "lr"
    assert result.communication["setup_bytes"] == 0


def test_auto_falls_back_to_lr_where_the_data_cannot_give_snapshots(tmp_path: Path) -> None:
    """Too few steps for the snapshot directions: 'auto' warns and keeps the LR test, 'siv' refuses."""
    raw = {"synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 12, "n_steps": 150}, "local_models": "identify",
           "evaluation": {"oracle": False}, "server": {"max_rounds": 3}}  # fmt: skip
    with pytest.warns(UserWarning, match=r"too few.*LR test"):
        result = run(parse_config(raw), mode="simulate", out_dir=tmp_path / "auto")
    assert result.fit.gc.test == "lr"
    with pytest.raises(FedGCError, match=r"client 'client0'.*too few"):
        run(parse_config({**raw, "server": {"test": "siv"}}), mode="simulate", out_dir=tmp_path / "siv")


def test_a_client_leaves_its_held_columns_out_of_its_snapshot_finding_them_once(tmp_path, monkeypatch) -> None:
    """The cleaning's search for held analyser columns is the snapshot's: find_held runs once per client (it is a
    pass over the whole table), and the snapshot is that of the other columns, with or without the cleaning."""
    rng = np.random.default_rng(7)
    T = 1200
    h = np.zeros((T, 2))
    for t in range(1, T):
        h[t] = 0.8 * h[t - 1] + rng.standard_normal(2)
    y = h @ rng.standard_normal((2, 6)) + 0.3 * rng.standard_normal((T, 6))
    y[:, 4] = y[(np.arange(T) // 5) * 5, 4]  # an analyser: sampled every 5 rows, held in between
    path = tmp_path / "unit.csv"
    write_client_csv(path, y, columns=[f"s{j}" for j in range(6)])
    calls = []
    find_held = cleaning.find_held

    def counted(values: np.ndarray) -> dict:
        calls.append(values.shape)
        return find_held(values)

    monkeypatch.setattr(cleaning, "find_held", counted)
    monkeypatch.setattr(clients, "find_held", counted)
    spec = ClientSpec("unit", path, state_dim=2)
    session = clients.build_session(spec, ClientOptions(), snapshots="siv")
    assert len(calls) == 1  # the cleaning's
    table = clients.read_table(spec)
    assert [c.column for c in table.cleaning.held] == ["s4"] and len(calls) == 2
    expected = snapshot(np.delete(table.values, 4, axis=1), rank=2).series
    assert session.snapshot is not None
    np.testing.assert_allclose(session.snapshot, expected, rtol=1e-10, atol=1e-12)
    # a table the cleaning has not searched (a private run's): the snapshot searches itself, with the same result
    unsearched = table._replace(cleaning=table.cleaning._replace(held_searched=False, held=()))
    again = clients.build_session(spec, ClientOptions(), snapshots="siv", table=unsearched)
    assert len(calls) == 3
    np.testing.assert_allclose(again.snapshot, expected, rtol=1e-10, atol=1e-12)
