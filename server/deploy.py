"""The deployed layout: one definition of every process's command line, used by docker-compose.yml
(checked by tests/test_compose.py), by the integration tests and by benchmarks/bench_engines.py.

    superlink            python -m server.superlink --insecure --isolation process --host H --port 8000
                         --disable-runtime-dependency-installation
                         (flower-superlink with held message polls: server/superlink.py)
    superexec-serverapp  flower-superexec --insecure --runtime-api-address superlink:8000
                         (starts one flwr-serverapp process per run: server.app:app)
    supernode-i          python -m clients.supernode --insecure --superlink superlink:8000
                         --host H --port 9094 --isolation process --node-config "data-path=... client-name=..."
    clientapp-i          python -m clients.runtime --insecure --runtime-api-address supernode-i:9094

With TLS and SuperNode authentication (docker-compose.tls.yml; certificates and keys from
scripts/make_certs.py) the SuperLink gets --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile and
--enable-supernode-auth, everything connecting to it --root-certificates instead of --insecure, and
each SuperNode --auth-supernode-private-key: only SuperNodes whose public key was registered
beforehand through the Control API (`flwr supernode register`, or `python -m server.deploy register`)
are let in.

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


def superlink_args(
    host: str = "0.0.0.0", port: int = SUPERLINK_PORT, *, tls: Mapping[str, str] | None = None, supernode_auth: bool = False
) -> list[str]:
    """tls: {"ca", "cert", "key"} paths; supernode_auth: only registered SuperNodes may connect (needs tls)."""
    args = ["--isolation", "process", "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if supernode_auth and not tls:
        raise ValueError("SuperNode authentication needs TLS (Flower refuses --enable-supernode-auth with --insecure)")
    if tls:
        sec = [f"--ssl-ca-certfile={tls['ca']}", f"--ssl-certfile={tls['cert']}", f"--ssl-keyfile={tls['key']}"]
        return [*sec, *(["--enable-supernode-auth"] if supernode_auth else []), *args]
    return ["--insecure", *args]


def superexec_args(superlink: str, *, root_certificates: str | None = None) -> list[str]:
    sec = ["--root-certificates", root_certificates] if root_certificates else ["--insecure"]
    return [*sec, "--runtime-api-address", superlink]


def supernode_args(
    superlink: str, node_config: Mapping[str, Any], *, host: str = "0.0.0.0", port: int = SUPERNODE_PORT,
    root_certificates: str | None = None, auth_key: str | None = None,
) -> list[str]:  # fmt: skip
    """auth_key: the node's private key (OpenSSH EC), for a SuperLink with --enable-supernode-auth."""
    sec = ["--root-certificates", root_certificates] if root_certificates else ["--insecure"]
    if auth_key:
        sec += ["--auth-supernode-private-key", auth_key]
    return [
        *sec, "--superlink", superlink, "--host", host, "--port", str(port),
        "--isolation", "process", "--node-config", node_config_string(node_config),
    ]  # fmt: skip


def runtime_args(supernode: str) -> list[str]:
    # The SuperNode's Runtime API stays plain HTTP inside the node (TLS is on the SuperLink links).
    return ["--insecure", "--runtime-api-address", supernode]


# ------------------------------------------------------------------------------ SuperNode registration


def register_supernodes(
    address: str, public_keys: Mapping[str, str | Path], *, root_certificates: str | None, timeout: float = 0.0
) -> dict[str, int]:
    """Register each named SuperNode's public key (OpenSSH EC, e.g. supernodes/NAME.pub from
    scripts/make_certs.py) with the SuperLink's Control API, as `flwr supernode register` does;
    returns name -> node id. A key registered before keeps its node id. timeout: seconds to keep
    retrying while the SuperLink is not up yet (compose starts the register job next to it)."""
    import httpx
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.proto.control_pb2 import ListNodesRequest, RegisterNodeRequest  # pylint: disable=E0611
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    from fedgc.errors import ConfigError
    from server.engine import _control_client, unreachable

    keys = {}
    for name, path in public_keys.items():
        try:
            key = serialization.load_ssh_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"SuperNode {name!r}: {path} is not an OpenSSH public key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigError(f"SuperNode {name!r}: {path} is not an elliptic-curve key (Flower needs a NIST curve)")
        keys[name] = public_key_to_bytes(key)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = _control_client(address, root_certificates)
            try:
                known = {bytes(n.public_key): int(n.node_id) for n in client.ListNodes(ListNodesRequest()).nodes_info}
                ids = {}
                for name, key in keys.items():
                    if key not in known:
                        known[key] = int(client.RegisterNode(RegisterNodeRequest(public_key=key, name=name)).node_id)
                    ids[name] = known[key]
                return ids
            finally:
                client.close()
        except httpx.TransportError as exc:  # not up (yet), or TLS does not match
            if time.monotonic() >= deadline:
                raise unreachable(address, root_certificates, exc) from exc
            time.sleep(0.5)


# ------------------------------------------------------------------------------ prepare


def prepare(scenario: str | Path, directory: str | Path, *, container_dir: str = "/data") -> dict[str, Any]:
    """Write a scenario's per-client CSV files (and given models) into `directory`, a run config
    for them (run.yaml) and each SuperNode's node config as seen inside its container."""
    import yaml

    from fedgc.app.config import load_config
    from fedgc.app.clients import simulate_scenario, write_scenario_files

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
    processes on 127.0.0.1 with the command lines of docker-compose.yml (free ports).
    certs: a scripts/make_certs.py folder: TLS on every link to the SuperLink (docker-compose.tls.yml);
    supernode_auth: the SuperLink admits registered SuperNodes only; each node signs with
    certs/supernodes/<client-name>.key, and the keys of `registered` (default: every node's client)
    are registered before the nodes start. Use as a context manager: every process it started is
    stopped on exit."""

    node_configs: Sequence[Mapping[str, Any]]
    workdir: Path
    supernode_poll: float | None = 0.01  # None: the stock 3 s poll (flower-supernode itself)
    certs: Path | None = None
    supernode_auth: bool = False
    registered: Sequence[str] | None = None
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
            tls = None
            if self.certs is not None:
                c = Path(self.certs)
                tls = {"ca": str(c / "ca.crt"), "cert": str(c / "server.pem"), "key": str(c / "server.key")}
            link_args = superlink_args("127.0.0.1", self.superlink_port, tls=tls, supernode_auth=self.supernode_auth)
            link = self._start("superlink", [sys.executable, "-m", "server.superlink", *link_args])
            wait_for_port(self.superlink_port, timeout, link)
            if self.supernode_auth:
                names = self.registered if self.registered is not None else [nc["client-name"] for nc in self.node_configs]
                pubs = {n: self.auth_key(n, ".pub") for n in names}
                self.node_ids = register_supernodes(self.address, pubs, root_certificates=self.root_certificates)
            sx = superexec_args(self.address, root_certificates=self.root_certificates)
            self._start("superexec-serverapp", [_bin("flower-superexec"), *sx])
            ports = [self.start_supernode(f"supernode-{i}", nc) for i, nc in enumerate(self.node_configs)]
            for i, port in enumerate(ports):
                wait_for_port(port, timeout, self.procs[f"supernode-{i}"])
                self._start(f"clientapp-{i}", [sys.executable, "-m", "clients.runtime", *runtime_args(f"127.0.0.1:{port}")])
            self._wait_for_runtimes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_runtimes(self, timeout: float) -> None:
        """Until every ClientApp runtime has imported the app and polls its SuperNode (numpy, scipy,
        torch: seconds each, all at once on a small machine), so a first run is not timed against it."""
        from clients.runtime import READY_LINE

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

    def start_supernode(self, name: str, node_config: Mapping[str, Any], *, auth_key: Path | None | str = "default") -> int:
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
        if self.supernode_poll is None:
            argv = [_bin("flower-supernode"), *args]
        else:
            argv = [sys.executable, "-m", "clients.supernode", f"--fedgc-poll-interval={self.supernode_poll}", *args]
        self._start(name, argv)
        return port

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server.deploy")
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="write a scenario's client files and run config for docker-compose")
    prep.add_argument("scenario", type=Path)
    prep.add_argument("directory", type=Path)
    prep.add_argument("--container-dir", default="/data")
    reg = sub.add_parser("register", help="register SuperNodes' public keys with a SuperLink run with --enable-supernode-auth")
    reg.add_argument("public_keys", type=Path, nargs="+", help="OpenSSH public keys (NAME.pub: the node is named NAME)")
    reg.add_argument("--superlink", required=True, help="host:port of the SuperLink")
    reg.add_argument("--root-certificates", required=True, help="the SuperLink's CA certificate (PEM)")
    reg.add_argument("--wait", type=float, default=0.0, help="seconds to retry while the SuperLink is not up yet")
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "register":
        from fedgc.errors import FedGCError

        try:
            ids = register_supernodes(
                args.superlink, {k.stem: k for k in args.public_keys}, root_certificates=args.root_certificates,
                timeout=args.wait,
            )  # fmt: skip
        except FedGCError as exc:
            print(f"server.deploy register: error: {exc}", file=sys.stderr)
            return 2
        for name, node_id in ids.items():
            print(f"{name}: SuperNode {node_id}")
        return 0
    nodes = prepare(args.scenario, args.directory, container_dir=args.container_dir)
    for name, nc in nodes.items():
        print(f"{name}: --node-config \"{node_config_string(nc)}\"")
    print(f"run config: {args.directory / 'run.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
