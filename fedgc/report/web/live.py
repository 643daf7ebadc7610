"""`fedgc serve DIR`: a live page of a streaming monitor that is still running, and the snapshot file it reads.

The snapshot. A streaming run with an output folder writes DIR/stream.json after every window
(`write_stream_snapshot`, called by `StreamSnapshots`, the `on_window` callback the command line gives
fedgc.protocol.streaming.run_stream): the "streaming" record of result.json so far, with the client names, the
run's name and FDR level, `complete` (false until the last window is in and the run's evaluation
added) and `written_at` (Unix time). It is written to a temporary file in DIR and moved over
stream.json with os.replace, so a reader sees the previous snapshot or the new one, never a torn file.

    {"format": "fedgc-stream-snapshot/1", "name", "clients", "alpha", "complete", "written_at",
     "streaming": {"window", "step", ..., "windows": [...], "alerts": [...], "evaluation"}}

The server (http.server's ThreadingHTTPServer; 127.0.0.1 unless --host says otherwise) answers
    /              the live page (fedgc.report.web.html.live_page), which polls
    /stream.json   the snapshot as the page draws it (fedgc.report.web.html.live_model), or
                   {"waiting": true} while there is none;
    /report.html   the full report of DIR's result.json once the run has written it;
and nothing else (404). A folder that holds a finished streaming run's result.json but no
stream.json (a run from before snapshots) is shown as a complete snapshot of that record.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from fedgc.analysis.stream import StreamRecord
from fedgc.app.config import RunConfig
from fedgc.errors import FedGCError
from fedgc.files import write_text
from fedgc.protocol.streaming import Alert, StreamResult, WindowResult
from fedgc.report.result_json import read_result, streaming_json
from fedgc.report.web.html import json_ready, live_model, live_page, report_page

SNAPSHOT_FILE = "stream.json"
SNAPSHOT_FORMAT = "fedgc-stream-snapshot/1"
RESULT_FILE = "result.json"
DEFAULT_PORT = 8765


# ---------------------------------------------------------------------------------------------- snapshot


def write_stream_snapshot(out_dir: str | Path, record: Mapping, *, clients: Sequence[str], name: str | None = None,
                          alpha: float | None = None, complete: bool = False) -> Path:  # fmt: skip
    """Write DIR/stream.json atomically (temporary file in DIR, then os.replace): the streaming record so
    far (`record`, the "streaming" key of result.json; numpy arrays allowed) with the client names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot = {
        "format": SNAPSHOT_FORMAT, "name": name, "clients": list(clients), "alpha": alpha, "complete": bool(complete),
        "written_at": time.time(), "streaming": record,
    }  # fmt: skip
    text = json.dumps(json_ready(snapshot), allow_nan=False, separators=(",", ":"))
    return write_text(out_dir / SNAPSHOT_FILE, text)


class StreamSnapshots:
    """`on_window` callback of fedgc.protocol.streaming.run_stream: keeps the windows and alerts so far and
    rewrites DIR/stream.json after every window; `finish(record)` writes the run's final record, complete."""

    def __init__(self, out_dir: str | Path, cfg: RunConfig) -> None:
        if cfg.streaming is None:
            raise FedGCError(f"{cfg.source or 'config'} has no 'streaming' section: nothing to snapshot")
        self.out_dir = Path(out_dir)
        self.cfg = cfg
        self.settings = cfg.streaming
        self.windows: list[WindowResult] = []
        self.alerts: list[Alert] = []

    def __call__(self, window: WindowResult, alerts: Sequence[Alert]) -> None:
        self.windows.append(window)
        self.alerts.extend(alerts)
        clients = tuple(window.gc.clients)
        so_far = StreamResult(clients, list(self.windows), list(self.alerts), [], np.zeros((0, 0)), window.end, [])
        self._write(streaming_json(StreamRecord(self.settings, so_far)), clients, complete=False)

    def finish(self, record: StreamRecord) -> None:
        """The run's own streaming record (with its evaluation), marked complete."""
        self._write(streaming_json(record), record.result.clients, complete=True)

    def _write(self, record: Mapping, clients: Sequence[str], *, complete: bool) -> None:
        write_stream_snapshot(self.out_dir, record, clients=clients, name=self.cfg.name,
                              alpha=float(self.cfg.server.alpha), complete=complete)  # fmt: skip


def read_snapshot(directory: str | Path) -> dict | None:
    """DIR's snapshot as the live page draws it, or None while there is none. Falls back to a finished
    streaming run's result.json (shown complete) when DIR has no stream.json."""
    directory = Path(directory)
    path, result = directory / SNAPSHOT_FILE, directory / RESULT_FILE
    has_report = result.is_file() and (not path.is_file() or result.stat().st_mtime >= path.stat().st_mtime)
    if path.is_file():
        snapshot = json.loads(path.read_text(encoding="utf-8"))
        return live_model(snapshot, has_report=has_report)
    if result.is_file():
        data = json.loads(result.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("streaming"):
            snapshot = {"name": data.get("name"), "clients": data.get("clients"), "alpha": data.get("alpha"),
                        "complete": True, "written_at": result.stat().st_mtime, "streaming": data["streaming"]}  # fmt: skip
            return live_model(snapshot, has_report=True)
    return None


# ---------------------------------------------------------------------------------------------- server


class LiveHandler(BaseHTTPRequestHandler):
    """GET /, /stream.json and /report.html of the served folder (`server.directory`)."""

    server: LiveServer
    server_version = "fedgc-live"

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        if route in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page())
        elif route == "/" + SNAPSHOT_FILE:
            self._send_json(self._snapshot())
        elif route == "/report.html":
            self._report()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", f"{route} is not served here\n")

    def _snapshot(self) -> dict[str, Any]:
        try:
            snapshot = read_snapshot(self.server.directory)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"waiting": True, "message": f"snapshot unreadable ({exc})"}
        if snapshot is None:
            return {"waiting": True, "message": f"no {SNAPSHOT_FILE} in {self.server.directory} yet"}
        return snapshot

    def _report(self) -> None:
        try:
            data = read_result(self.server.directory)
        except FedGCError as exc:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", f"no report yet: {exc}\n")
            return
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", report_page(data))

    def _send_json(self, value: Any) -> None:
        self._send(HTTPStatus.OK, "application/json", json.dumps(value, allow_nan=False, separators=(",", ":")))

    def _send(self, status: HTTPStatus, content_type: str, body: str) -> None:
        payload = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class LiveServer(ThreadingHTTPServer):
    """The live page's server for one folder; the page is built once, on first request."""

    daemon_threads = True

    def __init__(self, directory: str | Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 poll_seconds: float = 1.0, verbose: bool = False) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.poll_seconds = float(poll_seconds)
        self.verbose = verbose
        self._page: str | None = None
        self._lock = threading.Lock()
        super().__init__((host, port), LiveHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def page(self) -> str:
        with self._lock:
            if self._page is None:
                self._page = live_page(
                    snapshot_url=SNAPSHOT_FILE, report_url="report.html", poll_seconds=self.poll_seconds
                )
            return self._page


def serve(directory: str | Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, poll_seconds: float = 1.0,
          verbose: bool = False) -> int:  # fmt: skip
    """Serve DIR's live page until interrupted (Ctrl-C); prints the URL first (port 0: a free port)."""
    if poll_seconds <= 0:
        raise FedGCError(f"--poll {poll_seconds}: give a positive number of seconds")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FedGCError(f"{directory} is not a folder (give the streaming run's output folder)")
    try:
        server = LiveServer(directory, host=host, port=port, poll_seconds=poll_seconds, verbose=verbose)
    except OSError as exc:
        raise FedGCError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    with server:
        waiting = "" if (directory / SNAPSHOT_FILE).is_file() else f" (waiting for {directory / SNAPSHOT_FILE})"
        print(f"serving the live page of {directory} at {server.url}{waiting}; Ctrl-C stops", flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0


__all__ = [
    "DEFAULT_PORT",
    "SNAPSHOT_FILE",
    "SNAPSHOT_FORMAT",
    "LiveServer",
    "StreamSnapshots",
    "read_snapshot",
    "serve",
    "write_stream_snapshot",
]  # fmt: skip
