"""The deployed layout: one definition of every process's program and command line, used by
docker-compose.yml (checked by tests/test_compose.py), by server.local_deployment (the integration
tests, benchmarks/bench_engines.py) and by README's plain-process commands.

    superlink            python -m flwr_internals.superlink --insecure --isolation process --host H --port 8000
                         --disable-runtime-dependency-installation
                         (flower-superlink with held message polls)
    superexec-serverapp  python -m flwr_internals.superexec --insecure --runtime-api-address superlink:8000
                         (flower-superexec that reaps the flwr-serverapp process it starts per run: server.app:app)
    supernode-i          python -m flwr_internals.supernode --insecure --superlink superlink:8000
                         --host H --port 9094 --isolation process --node-config "data-path=... client-name=..."
    clientapp-i          python -m flwr_internals.runtime --insecure --runtime-api-address supernode-i:9094
                         (a warm ClientApp runtime: clients.app:app in one process)

Each launcher takes exactly the arguments of the Flower program it wraps (STOCK): replace the program
and the same deployment runs on stock Flower, only slower (tests/test_stock_flower.py).

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
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedgc.app.clients import simulate_scenario, write_scenario_files
from fedgc.app.config import load_config
from fedgc.errors import FedGCError
from fedgc.files import write_text
from flwr_internals.control import register_supernodes

FLWR_VERSION = "1.41.0"
SUPERLINK_PORT = 8000
SUPERNODE_PORT = 9094

# The program of each role. fedgc's launchers (flwr_internals/, Flower 1.41 only) take the arguments
# of the Flower program in STOCK; "clientapp" is the runtime next to a SuperNode (a ClientApp per task).
LAUNCHERS: dict[str, tuple[str, ...]] = {
    "superlink": ("python", "-m", "flwr_internals.superlink"),
    "superexec": ("python", "-m", "flwr_internals.superexec"),
    "supernode": ("python", "-m", "flwr_internals.supernode"),
    "clientapp": ("python", "-m", "flwr_internals.runtime"),
}
STOCK: dict[str, tuple[str, ...]] = {
    "superlink": ("flower-superlink",),
    "superexec": ("flower-superexec",),
    "supernode": ("flower-supernode",),
    "clientapp": ("flower-superexec",),  # starts flwr-clientapp, a new process per message
}


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


def superlink_args(
    host: str = "0.0.0.0",
    port: int = SUPERLINK_PORT,
    *,
    tls: Mapping[str, str] | None = None,
    supernode_auth: bool = False,
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
    """The ClientApp runtime's (fedgc's warm one, or flower-superexec) connection to its SuperNode.
    The SuperNode's Runtime API stays plain HTTP inside the node (TLS is on the SuperLink links)."""
    return ["--insecure", "--runtime-api-address", supernode]


# ------------------------------------------------------------------------------ prepare


def prepare(scenario: str | Path, directory: str | Path, *, container_dir: str = "/data") -> dict[str, Any]:
    """Write a scenario's per-client CSV files (and given models) into `directory`, a run config
    for them (run.yaml) and each SuperNode's node config as seen inside its container."""
    cfg = load_config(scenario)
    directory = Path(directory)
    files_cfg = write_scenario_files(cfg, simulate_scenario(cfg), directory)
    nodes = {}
    for c in files_cfg.clients:  # ClientSpec -> node config (conversion site: see clients.app.node_settings)
        nc = {"data-path": f"{container_dir}/{Path(c.data).name}", "client-name": c.name}
        if c.model != "identify":
            nc["model-path"] = f"{container_dir}/{Path(c.model).name}"
        nodes[c.name] = nc
    raw = {  # RunConfig -> plain mapping (conversion site: see server.app.config_to_raw)
        "name": cfg.name,
        "seed": cfg.seed,
        "engine": "flower",
        "clients": [
            {
                "name": c.name,
                "data": Path(c.data).name,
                "model": "identify" if c.model == "identify" else Path(c.model).name,
            }
            for c in files_cfg.clients
        ],
        "server": {k: v for k, v in vars(cfg.server).items()},
        "evaluation": {"oracle": False},
    }
    write_text(directory / "run.yaml", yaml.safe_dump(raw, sort_keys=False))
    return nodes


# ------------------------------------------------------------------------------ python -m server.deploy


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server.deploy")
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="write a scenario's client files and run config for docker-compose")
    prep.add_argument("scenario", type=Path)
    prep.add_argument("directory", type=Path)
    prep.add_argument("--container-dir", default="/data")
    reg = sub.add_parser(
        "register", help="register SuperNodes' public keys with a SuperLink run with --enable-supernode-auth"
    )
    reg.add_argument("public_keys", type=Path, nargs="+", help="OpenSSH public keys (NAME.pub: the node is named NAME)")
    reg.add_argument("--superlink", required=True, help="host:port of the SuperLink")
    reg.add_argument("--root-certificates", required=True, help="the SuperLink's CA certificate (PEM)")
    reg.add_argument("--wait", type=float, default=0.0, help="seconds to retry while the SuperLink is not up yet")
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "register":
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
        print(f'{name}: --node-config "{node_config_string(nc)}"')
    print(f"run config: {args.directory / 'run.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
