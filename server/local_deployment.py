"""A deployment as processes on 127.0.0.1: a SuperLink, the ServerApp's SuperExec, and per client a
SuperNode and its ClientApp runtime, with docker-compose.yml's programs and command lines
(server.deploy) on free ports. Used by the integration tests and benchmarks/bench_engines.py.

`stock=True` runs Flower's own programs instead of fedgc's launchers (server.deploy.STOCK), with the
same arguments: the app then comes to every process from the run's FAB only (no project folder on
their PYTHONPATH).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr_internals.control import register_supernodes
from flwr_internals.runtime import READY_LINE
from server.deploy import LAUNCHERS, STOCK, runtime_args, superexec_args, superlink_args, supernode_args

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _in_project(path: str) -> bool:
    return Path(path).resolve().is_relative_to(PROJECT_DIR)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode} before opening port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def program(role: str, *, stock: bool = False) -> list[str]:
    """The argv prefix of a role's program here: this interpreter for `python`, this environment's scripts."""
    argv = list((STOCK if stock else LAUNCHERS)[role])
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    exe = Path(sys.executable).parent / argv[0]
    return [str(exe) if exe.exists() else argv[0], *argv[1:]]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started the deployment dies, so a
    killed test or benchmark leaves no SuperLink or SuperNode behind (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class LocalDeployment:
    """The processes of docker-compose.yml on 127.0.0.1 (free ports).
    certs: a scripts/make_certs.py folder: TLS on every link to the SuperLink (docker-compose.tls.yml);
    supernode_auth: the SuperLink admits registered SuperNodes only; each node signs with
    certs/supernodes/<client-name>.key, and the keys of `registered` (default: every node's client)
    are registered before the nodes start. stock: Flower's own programs instead of fedgc's launchers.
    Use as a context manager: every process it started is stopped on exit."""

    node_configs: Sequence[Mapping[str, Any]]
    workdir: Path
    supernode_poll: float = 0.01  # fedgc's SuperNode launcher: first poll after a message (--fedgc-poll-interval)
    certs: Path | None = None
    supernode_auth: bool = False
    registered: Sequence[str] | None = None
    stock: bool = False
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    superlink_port: int = 0
    node_ports: list[int] = field(default_factory=list)
    node_ids: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.superlink_port}"

    @property
    def root_certificates(self) -> str | None:
        return None if self.certs is None else str(Path(self.certs) / "ca.crt")

    def auth_key(self, client: str, suffix: str = ".key") -> Path:
        return Path(self.certs or ".") / "supernodes" / f"{client}{suffix}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env["PYTHONUNBUFFERED"] = "1"
        # flower-superexec starts flwr-serverapp / flwr-clientapp by name: this interpreter's scripts come first
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # no entry in or under the project folder: a stock deployment must run the app from its FAB alone
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and not _in_project(p)]
        if not self.stock:  # fedgc's launchers and the warm runtime are modules of the project folder
            paths.insert(0, str(PROJECT_DIR))
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir,
                                start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, *, timeout: float = 90.0) -> LocalDeployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.superlink_port = free_port()
            tls = None
            if self.certs is not None:
                c = Path(self.certs)
                tls = {"ca": str(c / "ca.crt"), "cert": str(c / "server.pem"), "key": str(c / "server.key")}
            link_args = superlink_args("127.0.0.1", self.superlink_port, tls=tls, supernode_auth=self.supernode_auth)
            link = self._start("superlink", [*program("superlink", stock=self.stock), *link_args])
            wait_for_port(self.superlink_port, timeout, link)
            if self.supernode_auth:
                names = (
                    self.registered if self.registered is not None else [nc["client-name"] for nc in self.node_configs]
                )
                pubs = {n: self.auth_key(n, ".pub") for n in names}
                self.node_ids = register_supernodes(self.address, pubs, root_certificates=self.root_certificates)
            sx = superexec_args(self.address, root_certificates=self.root_certificates)
            self._start("superexec-serverapp", [*program("superexec", stock=self.stock), *sx])
            ports = [self.start_supernode(f"supernode-{i}", nc) for i, nc in enumerate(self.node_configs)]
            for i, port in enumerate(ports):
                wait_for_port(port, timeout, self.procs[f"supernode-{i}"])
                runtime = [*program("clientapp", stock=self.stock), *runtime_args(f"127.0.0.1:{port}")]
                self._start(f"clientapp-{i}", runtime)
            if not self.stock:
                self._wait_for_runtimes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_runtimes(self, timeout: float) -> None:
        """Until every ClientApp runtime has imported the app and polls its SuperNode (numpy, scipy,
        torch: seconds each, all at once on a small machine), so a first run is not timed against it."""
        deadline = time.monotonic() + timeout
        names = [n for n in self.procs if n.startswith("clientapp-")]
        while names:
            for name in list(names):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{self.logs(name)[-2000:]}")
                if READY_LINE in self.logs(name):
                    names.remove(name)
            if names and time.monotonic() > deadline:
                raise RuntimeError(f"ClientApp runtimes {names} not ready after {timeout:g} s")
            time.sleep(0.05)

    def start_supernode(
        self, name: str, node_config: Mapping[str, Any], *, auth_key: Path | str | None = "default"
    ) -> int:
        """Start one SuperNode process (log: workdir/NAME.log); returns its Runtime API port.
        auth_key: its private key; "default": certs/supernodes/<client-name>.key when auth is on."""
        if auth_key == "default":
            auth_key = self.auth_key(str(node_config["client-name"])) if self.supernode_auth else None
        port = free_port()
        self.node_ports.append(port)
        args = supernode_args(
            self.address, node_config, host="127.0.0.1", port=port, root_certificates=self.root_certificates,
            auth_key=None if auth_key is None else str(auth_key),
        )  # fmt: skip
        flags = [] if self.stock else [f"--fedgc-poll-interval={self.supernode_poll}"]
        self._start(name, [*program("supernode", stock=self.stock), *flags, *args])
        return port

    def stop(self) -> None:
        for _name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def _session_processes(self) -> list[tuple[int, str, str, int, list[str]]]:
        """(pid, command name, state, parent pid, stat fields) of every process in the deployment's
        sessions (each started process leads its own session; Linux /proc, empty elsewhere)."""
        sessions = {proc.pid for proc in self.procs.values()}
        found = []
        for entry in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = entry.read_text()
            except OSError:
                continue
            name = text[text.find("(") + 1 : text.rfind(")")]
            fields = text.rsplit(")", 1)[1].split()
            if len(fields) > 14 and int(fields[3]) in sessions:  # field 6 of stat: the session id
                found.append((int(entry.parent.name), name, fields[0], int(fields[1]), fields))
        return found

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every process of the deployment, the ServerApp
        processes its SuperExec started included (same session; reaped ones through their parent). Linux
        /proc; 0.0 elsewhere. Unlike wall time it does not grow when other work shares the cores."""
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        # utime, stime, and cutime, cstime: the ServerApp process of a finished run, reaped by its SuperExec
        return sum(sum(int(f) for f in fields[11:15]) for *_, fields in self._session_processes()) / tick

    def zombies(self) -> list[str]:
        """Finished processes of the deployment nobody has reaped ('flwr-serverapp (pid 123)')."""
        return [f"{name} (pid {pid})" for pid, name, state, _, _ in self._session_processes() if state == "Z"]

    def logs(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
