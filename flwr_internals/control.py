"""The SuperLink's Control API as `flwr run` and `flwr supernode register` call it, and the FAB build.

Flower 1.41 offers these as CLI commands only; fedgc calls the same requests from Python (protobuf
messages of flwr.proto.control_pb2 over flwr.cli's HTTP client), so `fedgc --engine flower` can
submit a run, follow its status and register SuperNode keys without a `flwr` process per call.

    build_fab(folder)               a FAB (bytes, sha256) of an app folder (what `flwr build` writes)
    submit(address, fab, config)    StartRun: the run id
    run_status(address, run_id)     ListRuns: (status, sub-status, details)
    check_reachable(address)        one ListRuns call
    register_supernodes(address, keys)  RegisterNode per public key not registered yet

Connection failures become fedgc.errors.FedGCError naming what to check (the address, TLS).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.build import build_fab_from_disk
from flwr.cli.typing import SuperLinkConnection
from flwr.cli.utils import init_http_client_from_connection
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import (  # pylint: disable=E0611
    ListNodesRequest,
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
)
from flwr.supercore.fab import Fab
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from fedgc.errors import ConfigError, FedGCError


def unreachable(address: str, root_certificates: str | None, exc: BaseException) -> FedGCError:
    if root_certificates:
        hint = f"is it up, and is its TLS certificate signed by {root_certificates} and valid for {address}?"
    else:
        hint = "is it up? a SuperLink with TLS needs --root-certificates (its CA certificate)"
    return FedGCError(f"cannot reach the SuperLink at {address} ({type(exc).__name__}: {exc}); {hint}")


@contextlib.contextmanager
def control_client(address: str, root_certificates: str | None) -> Iterator[Any]:
    """A Control API client (closed on exit); connection failures as a FedGCError that says what to check."""
    conn = SuperLinkConnection(
        name="fedgc", address=address, root_certificates=root_certificates, insecure=root_certificates is None
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the connection it uses
            client = init_http_client_from_connection(conn)
        try:
            yield client
        finally:
            client.close()
    except httpx.TransportError as exc:
        raise unreachable(address, root_certificates, exc) from exc


def build_fab(folder: Path) -> tuple[bytes, str]:
    """The FAB of the app in `folder` (its pyproject.toml's [tool.flwr.app] and fab-include): (bytes, sha256).
    Flower's builder reads every file under `folder` before filtering: give it a staging copy."""
    fab_bytes = build_fab_from_disk(Path(folder))
    return fab_bytes, hashlib.sha256(fab_bytes).hexdigest()


def submit(
    address: str, fab: tuple[bytes, str], run_config: Mapping[str, Any], *, root_certificates: str | None = None
) -> int:
    """Start the app on the SuperLink (StartRun, what `flwr run` sends); returns the run id."""
    fab_bytes, fab_hash = fab
    request = StartRunRequest(
        fab=fab_to_proto(Fab(fab_hash, fab_bytes, {})),
        override_config=user_config_to_proto(dict(run_config)),
        federation="",
    )
    with control_client(address, root_certificates) as client:
        res = client.StartRun(request)
    if not res.HasField("run_id"):
        raise FedGCError(f"the SuperLink at {address} did not start the run")
    return int(res.run_id)


def check_reachable(address: str, root_certificates: str | None = None) -> None:
    """One Control API call (FedGCError if the SuperLink cannot be reached, or TLS does not match)."""
    with control_client(address, root_certificates) as client:
        client.ListRuns(ListRunsRequest(limit=1))


def run_status(client, run_id: int) -> tuple[str, str, str]:
    """(status, sub-status, details) of a run, through an open control_client."""
    run = client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
    return run.status.status, run.status.sub_status, run.status.details


def register_supernodes(
    address: str, public_keys: Mapping[str, str | Path], *, root_certificates: str | None, timeout: float = 0.0
) -> dict[str, int]:
    """Register each named SuperNode's public key (OpenSSH EC, e.g. supernodes/NAME.pub from
    scripts/make_certs.py) with the SuperLink's Control API, as `flwr supernode register` does;
    returns name -> node id. A key registered before keeps its node id. timeout: seconds to keep
    retrying while the SuperLink is not up yet (compose starts the register job next to it)."""
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
            with control_client(address, root_certificates) as client:
                known = {bytes(n.public_key): int(n.node_id) for n in client.ListNodes(ListNodesRequest()).nodes_info}
                ids = {}
                for name, key in keys.items():
                    if key not in known:
                        known[key] = int(client.RegisterNode(RegisterNodeRequest(public_key=key, name=name)).node_id)
                    ids[name] = known[key]
                return ids
        except FedGCError:  # not up (yet), or TLS does not match
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
