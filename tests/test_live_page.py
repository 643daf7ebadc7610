"""`fedgc serve DIR`: the stream snapshot a streaming run writes after every window (DIR/stream.json,
atomic), the server's routes, and the live page in headless Chromium gaining windows and alerts
without a reload, fed at a monitor's pace and following a real `fedgc simulate` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import fedgc.files
import fedgc.report.web.live as live
from fedgc.cli import main
from fedgc.report.web.live import SNAPSHOT_FILE, LiveServer, read_snapshot, write_stream_snapshot

REPO = Path(__file__).resolve().parents[1]
MEAN_SHIFT = REPO / "simulations" / "mean_shift.yaml"
SHOWN_WITHIN_S = 3.0  # the page polls every 0.25 s here: a new window must show within this


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished mean_shift monitor's folder (result.json and its final stream.json)."""
    out = tmp_path_factory.mktemp("mean_shift")
    assert main(["simulate", str(MEAN_SHIFT), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def server(tmp_path):
    """A live server on a free port of 127.0.0.1 for tmp_path/monitor, polled every 0.25 s; stopped after."""
    folder = tmp_path / "monitor"
    srv = LiveServer(folder, port=0, poll_seconds=0.25)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _prefix(record: dict, k: int) -> dict:
    """The streaming record as it stood after k windows (no evaluation yet)."""
    last = record["windows"][k - 1]["end"]
    return {**record, "windows": record["windows"][:k], "alerts": [a for a in record["alerts"] if a["window"] < k],
            "evaluation": None, "unprocessed_steps": record["n_steps"] - last}  # fmt: skip


# ---------------------------------------------------------------------------------------------- snapshot


def test_snapshot_is_replaced_atomically(tmp_path, monkeypatch):
    record = {
        "window": 4,
        "windows": [{"index": 0, "strength": np.array([[np.nan, 0.5], [0.25, np.nan]])}],
        "alerts": [],
    }
    path = write_stream_snapshot(tmp_path, record, clients=("a", "b"), name="n", alpha=0.05)
    first = json.loads(path.read_text())
    assert first["streaming"]["windows"][0]["strength"] == [[None, 0.5], [0.25, None]]
    assert first["clients"] == ["a", "b"] and first["complete"] is False and first["format"] == live.SNAPSHOT_FORMAT
    write_stream_snapshot(tmp_path, {**record, "window": 5}, clients=("a", "b"), complete=True)
    assert json.loads(path.read_text())["streaming"]["window"] == 5
    before = path.read_bytes()

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fedgc.files.os, "replace", broken)
    with pytest.raises(OSError):
        write_stream_snapshot(tmp_path, {**record, "window": 6}, clients=("a", "b"))
    assert path.read_bytes() == before  # a failed write leaves the last snapshot whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_FILE]  # and no temporary file behind


def test_streaming_run_writes_a_snapshot_after_every_window(tmp_path, monkeypatch):
    seen = []
    real = live.write_stream_snapshot

    def spy(out_dir, record, **kw):
        seen.append((len(record["windows"]), len(record["alerts"]), kw["complete"]))
        return real(out_dir, record, **kw)

    monkeypatch.setattr(live, "write_stream_snapshot", spy)
    out = tmp_path / "run"
    assert main(["simulate", str(MEAN_SHIFT), "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    n = len(result["streaming"]["windows"])
    assert [w for w, _, _ in seen] == [*range(1, n + 1), n]
    assert [c for _, _, c in seen] == [False] * n + [True]
    first_alert = result["streaming"]["alerts"][0]["window"]
    assert [a for _, a, _ in seen][first_alert - 1 : first_alert + 1] == [0, 1]  # the alert shows with its window
    snapshot = json.loads((out / SNAPSHOT_FILE).read_text())
    assert snapshot["complete"] and snapshot["streaming"] == result["streaming"]
    assert snapshot["clients"] == result["clients"] and snapshot["alpha"] == result["alpha"]


def test_batch_runs_write_no_snapshot(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\nsynthetic: {n_clients: 3, state_dims: 2, obs_dims: 4, n_steps: 400}\nevaluation: {oracle: false}\n"
    )
    assert main(["simulate", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert not (out / SNAPSHOT_FILE).exists()


# ---------------------------------------------------------------------------------------------- server


def test_server_routes(server, finished):
    assert server.server_address[0] == "127.0.0.1"
    status, kind, body = _get(server.url)
    assert status == 200 and kind.startswith("text/html") and 'data-page="live"' in body
    status, kind, body = _get(server.url + SNAPSHOT_FILE)
    assert status == 200 and json.loads(body)["waiting"] is True
    assert _get(server.url + "report.html")[0] == 404
    assert _get(server.url + "result.json")[0] == 404  # only the three routes are served
    assert _get(server.url + "../" + SNAPSHOT_FILE)[0] == 404
    record = json.loads((finished / "result.json").read_text())["streaming"]
    write_stream_snapshot(server.directory, _prefix(record, 3), clients=[f"client{k}" for k in range(5)], alpha=0.05)
    snap = json.loads(_get(server.url + SNAPSHOT_FILE)[2])
    assert len(snap["streaming"]["windows"]) == 3 and snap["complete"] is False and snap["has_report"] is False
    shutil.copy(finished / "result.json", server.directory / "result.json")
    assert _get(server.url + "report.html")[0] == 200


def test_a_finished_run_without_snapshot_is_shown_complete(finished, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(finished / "result.json", folder / "result.json")
    snap = read_snapshot(folder)
    result = json.loads((finished / "result.json").read_text())
    assert snap["complete"] and snap["has_report"] and snap["clients"] == result["clients"]
    assert snap["streaming"]["alerts"] == result["streaming"]["alerts"]
    assert read_snapshot(tmp_path / "nothing-here") is None


# ---------------------------------------------------------------------------------------------- live page


def _wait_windows(driver, web, k: int) -> float:
    """Seconds until the open page shows k windows (fails after a few seconds)."""
    start = time.monotonic()
    web.wait_for(driver, f"return window.fedgcReport.live && window.fedgcReport.live.windows === {k}",
                 timeout=SHOWN_WITHIN_S, what=f"the page to show window {k}")  # fmt: skip
    return time.monotonic() - start


def test_live_page_shows_each_new_window_and_its_alerts(server, finished, chromium, web, tmp_path):
    result = json.loads((finished / "result.json").read_text())
    record, clients = result["streaming"], result["clients"]
    alert = record["alerts"][0]
    first = max(1, alert["window"] - 2)
    write = lambda rec, **kw: write_stream_snapshot(
        server.directory, rec, clients=clients, name="mean_shift", alpha=0.05, **kw
    )
    write(_prefix(record, first))
    assert web.open_page(chromium, server.url) == []
    _wait_windows(chromium, web, first)
    chromium.execute_script("window.fedgcSamePage = true")  # gone if the page reloaded
    delays = []
    for k in range(first + 1, alert["window"] + 3):
        time.sleep(0.8)  # a monitor's pace, compressed
        write(_prefix(record, k))
        delays.append(_wait_windows(chromium, web, k))
        drawn = chromium.execute_script(
            "return document.getElementById('timeline').data.find((t) => t.meta.role === 'counts').x"
        )
        assert drawn == [w["end"] for w in record["windows"][:k]]
        rows = chromium.find_elements("css selector", "#timeline-alerts tr[data-alert]")
        assert len(rows) == len([a for a in record["alerts"] if a["window"] < k])
        if k == alert["window"] + 1:  # the window that raised the alert: shown, and marked new
            assert "new" in rows[0].get_attribute("class")
            assert f"{alert['source']} -> {alert['target']}" in rows[0].text
            marks = chromium.execute_script(
                "const t = document.getElementById('timeline').data.find((t) => t.meta.role === 'alerts'); return t.x"
            )
            assert marks == [alert["time"]]
            rows[0].click()  # the reader picks the alert: its test shows, and stays shown through the next update
            web.wait_for(chromium, "return document.getElementById('timeline-alert-detail').dataset.alert === '0'")
            chromium.save_screenshot(str(tmp_path / "live-alert.png"))
        if k > alert["window"] + 1:
            detail = chromium.find_element("id", "timeline-alert-detail")
            assert (
                detail.get_attribute("data-alert") == "0" and f"{alert['source']} -> {alert['target']}" in detail.text
            )
    assert chromium.execute_script("return window.fedgcSamePage === true")
    assert max(delays) < SHOWN_WITHIN_S
    # the run finishes: the page says so and links to the full report
    write(record, complete=True)
    shutil.copy(finished / "result.json", server.directory / "result.json")
    os.utime(server.directory / "result.json")
    web.wait_for(
        chromium, "return window.fedgcReport.live.complete && window.fedgcReport.live.hasReport", timeout=SHOWN_WITHIN_S
    )
    assert chromium.find_element("id", "live-status").text.startswith(f"Finished: {len(record['windows'])} windows")
    chromium.save_screenshot(str(tmp_path / "live-finished.png"))
    assert web.console_errors(chromium) == []
    chromium.find_element("css selector", "#report-link a").click()
    web.wait_for(
        chromium, "return window.fedgcReport && window.fedgcReport.kind === 'report' && window.fedgcReport.ready"
    )
    assert web.console_errors(chromium) == []


def test_fedgc_serve_follows_a_running_monitor(chromium, web, tmp_path):
    """`fedgc serve` and `fedgc simulate` in two subprocesses: the page, open before the run starts,
    ends with every window and alert the run's result.json lists."""
    folder = tmp_path / "monitor"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen([sys.executable, "-m", "fedgc.cli", "serve", str(folder), "--port", "0", "--poll", "0.25"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        line = serve.stdout.readline()
        assert "serving the live page of" in line and "http://127.0.0.1:" in line, line + serve.stderr.read()
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert web.open_page(chromium, url) == []
        assert "Waiting for the first window" in chromium.find_element("id", "live-status").text
        run = subprocess.run([sys.executable, "-m", "fedgc.cli", "simulate", str(MEAN_SHIFT), "--out", str(folder), "--quiet"],
                             capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr
        result = json.loads((folder / "result.json").read_text())
        web.wait_for(
            chromium, "return window.fedgcReport.live.complete && window.fedgcReport.live.hasReport", timeout=10
        )
        live_state = chromium.execute_script("return window.fedgcReport.live")
        assert live_state["windows"] == len(result["streaming"]["windows"])
        assert live_state["alerts"] == len(result["streaming"]["alerts"])
        rows = chromium.find_elements("css selector", "#timeline-alerts tr[data-alert]")
        assert [r.find_elements("tag name", "td")[3].text for r in rows] == [
            f"{a['source']} -> {a['target']}" for a in result["streaming"]["alerts"]
        ]
        chromium.save_screenshot(str(tmp_path / "serve.png"))
        assert web.console_errors(chromium) == []
    finally:
        serve.terminate()
        serve.wait(timeout=10)
        serve.stdout.close()
        serve.stderr.close()
