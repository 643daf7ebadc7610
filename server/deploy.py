"""The deployed layout: one definition of every process's command line, used by docker-compose.yml
(checked by tests/test_compose.py), by the integration tests and by benchmarks/bench_engines.py.

    superlink            flower-superlink --insecure --isolation process --host H --port 8000
                         --disable-runtime-dependency-installation
    superexec-serverapp  flower-superexec --insecure --runtime-api-address superlink:8000
                         (starts one flwr-serverapp process per run: server.app:app)
    supernode-i          python -m clients.supernode --insecure --superlink superlink:8000
                         --host H --port 9094 --isolation process --node-config "data-path=... client-name=..."
    clientapp-i          python -m clients.runtime --insecure --runtime-api-address supernode-i:9094

Prepare a scenario's client files and node configs for it with

    python -m server.deploy prepare simulations/default.yaml deploy/data
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

FLWR_VERSION = "1.41.0"
SUPERLINK_PORT = 8000
SUPERNODE_PORT = 9094


# ------------------------------------------------------------------------------ command lines


def node_config_string(settings: Mapping[str, Any]) -> str:
    """--node-config value: space-separated key=value, strings quoted (TOML values)."""
    parts = []
    for k, v in settings.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            parts.append(f"{k}={v}")
        else:
            text = str(v)
            if "'" in text or " " in text:
                raise ValueError(f"node config value {text!r} must not contain quotes or spaces")
            parts.append(f"{k}='{text}'")
    return " ".join(parts)


def parse_node_config(text: str) -> dict[str, Any]:
    """The reverse of node_config_string, as Flower reads it (flwr.common.config.parse_config_args)."""
    from flwr.common.config import parse_config_args

    return dict(parse_config_args([text]))


def superlink_args(host: str = "0.0.0.0", port: int = SUPERLINK_PORT, *, tls: Mapping[str, str] | None = None) -> list[str]:
    args = ["--isolation", "process", "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if tls:
        return [f"--ssl-ca-certfile={tls['ca']}", f"--ssl-certfile={tls['cert']}", f"--ssl-keyfile={tls['key']}", *args]
    return ["--insecure", *args]


def superexec_args(superlink: str, *, root_certificates: str | None = None) -> list[str]:
    sec = ["--root-certificates", root_certificates] if root_certificates else ["--insecure"]
    return [*sec, "--runtime-api-address", superlink]


def supernode_args(
    superlink: str, node_config: Mapping[str, Any], *, host: str = "0.0.0.0", port: int = SUPERNODE_PORT,
    root_certificates: str | None = None,
) -> list[str]:  # fmt: skip
    sec = ["--root-certificates", root_certificates] if root_certificates else ["--insecure"]
    return [
        *sec, "--superlink", superlink, "--host", host, "--port", str(port),
        "--isolation", "process", "--node-config", node_config_string(node_config),
    ]  # fmt: skip


def runtime_args(supernode: str) -> list[str]:
    # The SuperNode's Runtime API stays plain HTTP inside the node (TLS is on the SuperLink links).
    return ["--insecure", "--runtime-api-address", supernode]


# ------------------------------------------------------------------------------ prepare


def prepare(scenario: str | Path, directory: str | Path, *, container_dir: str = "/data") -> dict[str, Any]:
    """Write a scenario's per-client CSV files (and given models) into `directory`, a run config
    for them (run.yaml) and each SuperNode's node config as seen inside its container."""
    import yaml

    from fedgc.config import load_config
    from fedgc.run import simulate_scenario, write_scenario_files

    cfg = load_config(scenario)
    directory = Path(directory)
    files_cfg = write_scenario_files(cfg, simulate_scenario(cfg), directory)
    nodes = {}
    for c in files_cfg.clients:
        nc = {"data-path": f"{container_dir}/{Path(c.data).name}", "client-name": c.name}
        if c.model != "identify":
            nc["model-path"] = f"{container_dir}/{Path(c.model).name}"
        nodes[c.name] = nc
    raw = {
        "name": cfg.name,
        "seed": cfg.seed,
        "engine": "flower",
        "clients": [
            {"name": c.name, "data": Path(c.data).name, "model": "identify" if c.model == "identify" else Path(c.model).name}
            for c in files_cfg.clients
        ],
        "server": {k: v for k, v in vars(cfg.server).items()},
        "evaluation": {"oracle": False},
    }
    (directory / "run.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return nodes


# ------------------------------------------------------------------------------ local processes


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


def _bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started the deployment dies, so a
    killed test or benchmark leaves no SuperLink or SuperNode behind (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class LocalDeployment:
    """A SuperLink, a ServerApp SuperExec, and per client a SuperNode and its ClientApp runtime, as
    processes on 127.0.0.1 with the command lines of docker-compose.yml (free ports, no TLS).
    Use as a context manager: every process it started is stopped on exit."""

    node_configs: Sequence[Mapping[str, Any]]
    workdir: Path
    supernode_poll: float | None = 0.01  # None: the stock 3 s poll (flower-supernode itself)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    superlink_port: int = 0
    node_ports: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.superlink_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env["PYTHONUNBUFFERED"] = "1"
        # flower-superexec starts flwr-serverapp by name: this interpreter's scripts come first
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir,
                                start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, *, timeout: float = 90.0) -> "LocalDeployment":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.superlink_port = free_port()
            link = self._start("superlink", [_bin("flower-superlink"), *superlink_args("127.0.0.1", self.superlink_port)])
            wait_for_port(self.superlink_port, timeout, link)
            self._start("superexec-serverapp", [_bin("flower-superexec"), *superexec_args(self.address)])
            for i, nc in enumerate(self.node_configs):
                port = free_port()
                self.node_ports.append(port)
                args = supernode_args(self.address, nc, host="127.0.0.1", port=port)
                if self.supernode_poll is None:
                    argv = [_bin("flower-supernode"), *args]
                else:
                    argv = [sys.executable, "-m", "clients.supernode", f"--fedgc-poll-interval={self.supernode_poll}", *args]
                self._start(f"supernode-{i}", argv)
            for i, port in enumerate(self.node_ports):
                wait_for_port(port, timeout, self.procs[f"supernode-{i}"])
                self._start(f"clientapp-{i}", [sys.executable, "-m", "clients.runtime", *runtime_args(f"127.0.0.1:{port}")])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every process of the deployment, the ServerApp
        processes its SuperExec started included (same session; reaped ones through their parent). Linux
        /proc; 0.0 elsewhere. Unlike wall time it does not grow when other work shares the cores."""
        sessions = {proc.pid for proc in self.procs.values()}
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        total = 0
        for entry in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = entry.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) in sessions:  # field 6 of stat: the session id
                # utime, stime, and cutime, cstime: the ServerApp process of a finished run, reaped by its SuperExec
                total += sum(int(f) for f in fields[11:15])
        return total / tick

    def logs(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def __enter__(self) -> "LocalDeployment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m server.deploy")
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="write a scenario's client files and run config for docker-compose")
    prep.add_argument("scenario", type=Path)
    prep.add_argument("directory", type=Path)
    prep.add_argument("--container-dir", default="/data")
    args = p.parse_args(argv)
    nodes = prepare(args.scenario, args.directory, container_dir=args.container_dir)
    for name, nc in nodes.items():
        print(f"{name}: --node-config \"{node_config_string(nc)}\"")
    print(f"run config: {args.directory / 'run.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
