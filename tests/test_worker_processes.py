"""Clients built on forked worker processes (fedgc.app.worker_processes, read_sessions): the same sessions as on
threads, warnings raised again in the parent in client order, the first faulty client's error naming its file,
and the runs that stay on threads."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedgc.app import clients
from fedgc.app.config import parse_config
from fedgc.app.worker_processes import can_fork, map_in_processes
from fedgc.data.csv import write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import DataError, FedGCWarning

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are forked")

M = 9  # at least PROCESS_MIN_CLIENTS


def _square_or_fail(x: int) -> int:
    if x == 3:
        warnings.warn(FedGCWarning("three is odd"), stacklevel=1)
    if x in (5, 7):
        raise DataError(f"item {x} is bad")
    return x * x


def test_results_in_order_warnings_raised_again_and_the_first_error():
    with pytest.warns(FedGCWarning, match="three is odd"):
        assert map_in_processes(_square_or_fail, [0, 1, 2, 3, 4], workers=2) == [0, 1, 4, 9, 16]
    with pytest.raises(DataError, match="item 5 is bad"), pytest.warns(FedGCWarning, match="three is odd"):
        map_in_processes(_square_or_fail, list(range(9)), workers=2)


def _ctrl_c_handler(_: int) -> bool:
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_workers_leave_ctrl_c_to_the_parent(ctrl_c_deliverable):
    """A terminal's Ctrl-C reaches the whole process group: the workers ignore it (no traceback of theirs),
    the parent stops after the pieces under way."""
    assert map_in_processes(_ctrl_c_handler, [0, 1], workers=2) == [True, True]
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


def _sites(folder: Path, *, constant_in: int | None = None, short: int | None = None) -> dict:
    data = simulate(SystemSpec(n_clients=M, state_dims=2, obs_dims=6, edge_density=0.2, n_steps=600),
                    np.random.default_rng(7))  # fmt: skip
    specs = []
    for m, y in enumerate(data.y):
        y = y[:500] if m == short else y.copy()
        if m == constant_in:
            y = np.hstack([y, np.ones((y.shape[0], 1))])
        path = folder / f"site{m}.csv"
        write_client_csv(path, y, columns=[f"s{j}" for j in range(y.shape[1])])
        specs.append({"name": f"site{m}", "data": str(path)})
    return {"name": "procs", "clients": specs, "server": {"test": "siv"}}


def _build(raw: dict, processes: bool, monkeypatch) -> tuple[list, dict]:
    cfg = parse_config(raw)
    monkeypatch.setattr(clients, "PROCESS_MIN_CLIENTS", M if processes else M + 1)
    assert clients._in_processes(cfg, None, clients.ClientSession) == processes
    return clients.read_sessions(cfg, None, workers=2, snapshots=clients.snapshot_request(cfg))


def test_processes_build_the_sessions_threads_build(tmp_path, monkeypatch):
    raw = _sites(tmp_path, constant_in=4)
    with pytest.warns(FedGCWarning, match="site4.*dropped constant column"):
        on_processes, notes_p = _build(raw, True, monkeypatch)
    with pytest.warns(FedGCWarning, match="site4.*dropped constant column"):
        on_threads, notes_t = _build(raw, False, monkeypatch)
    assert notes_p == notes_t
    for p, t in zip(on_processes, on_threads, strict=True):
        assert p.name == t.name and p.model.state_dim == t.model.state_dim
        np.testing.assert_array_equal(p.window.ytil, t.window.ytil)
        np.testing.assert_array_equal(p.states, t.states)
        np.testing.assert_array_equal(p.snapshot, t.snapshot)
        assert p.exact_window is p.window  # one object after the trip back, as built


def test_a_faulty_client_on_a_process_is_named_with_its_file(tmp_path, monkeypatch):
    raw = _sites(tmp_path)
    Path(raw["clients"][6]["data"]).write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"client 'site6'.*site6\.csv"):
        _build(raw, True, monkeypatch)


def test_rows_of_different_lengths_are_refused_after_processes_as_after_threads(tmp_path, monkeypatch):
    raw = _sites(tmp_path, short=2)
    with pytest.raises(DataError) as on_processes:
        _build(raw, True, monkeypatch)
    with pytest.raises(DataError) as on_threads:
        _build(raw, False, monkeypatch)
    assert str(on_processes.value) == str(on_threads.value)


def test_private_streaming_learning_and_few_or_large_clients_stay_on_threads(tmp_path, monkeypatch):
    raw = _sites(tmp_path)
    cfg = parse_config(raw)
    assert clients._in_processes(cfg, None, clients.ClientSession)
    assert not clients._in_processes(cfg, None, clients.StreamingSession)
    assert not clients._in_processes(
        parse_config({**raw, "client": {"learn_theta": True}}), None, clients.ClientSession
    )
    assert not clients._in_processes(parse_config({**raw, "clients": raw["clients"][:7]}), None, clients.ClientSession)
    monkeypatch.setattr(clients, "PROCESS_MAX_FILE_BYTES", 1000)
    assert not clients._in_processes(cfg, None, clients.ClientSession)
