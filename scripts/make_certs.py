#!/usr/bin/env python3
"""Certificates and keys for the TLS + SuperNode-authentication deployment (docker-compose.tls.yml).

    python scripts/make_certs.py [--out deploy/certs] [--n-clients 8 | --clients feed reactor ...]
                                 [--host NAME_OR_IP ...] [--days 365] [--force]

writes into --out (git-ignored):

    ca.crt, ca.key             a local certificate authority (ECDSA P-384, self-signed)
    server.pem, server.key     the SuperLink's TLS certificate, signed by the CA; its subject
                               alternative names are superlink, localhost, 127.0.0.1 and every --host
    supernodes/NAME.key        one SuperNode authentication key pair per client (ECDSA P-384, OpenSSH
    supernodes/NAME.pub        format: what flower-supernode --auth-supernode-private-key reads and
                               `flwr supernode register` / `python -m server.deploy register` take)

Private keys are written with mode 0600. Existing files are never overwritten without --force (a
re-run must not silently invalidate keys that are already registered on a SuperLink).
Flower's containers run as uid 49999: on Linux give them the files with
`sudo chown -R 49999:49999 deploy/certs` before `docker compose up`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("superlink", "localhost", "127.0.0.1")
CURVE = ec.SECP384R1  # a NIST curve, as Flower's SuperNode authentication requires


class CertFiles(NamedTuple):
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    supernode_keys: dict[str, tuple[Path, Path]]  # client name -> (private key, public key)


def planned_files(out: Path, clients: Sequence[str]) -> CertFiles:
    nodes = out / "supernodes"
    return CertFiles(
        out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key",
        {name: (nodes / f"{name}.key", nodes / f"{name}.pub") for name in clients},
    )  # fmt: skip


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_certs(
    out: Path, *, clients: Sequence[str], hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 365, force: bool = False
) -> CertFiles:
    files = planned_files(Path(out), clients)
    if len(set(clients)) != len(clients) or not all(c and "/" not in c and not c.startswith(".") for c in clients):
        raise ValueError(f"client names must be distinct file names, got {list(clients)}")
    existing = [p for p in (files.ca, files.ca_key, files.server_cert, files.server_key) if p.exists()]
    existing += [p for pair in files.supernode_keys.values() for p in pair if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(map(str, existing))} already exist; keep them, or pass --force to replace them"
        )
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(CURVE())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedgc local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )  # fmt: skip

    server_key = ec.generate_private_key(CURVE())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )  # fmt: skip

    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM), private=False)
    _write(files.ca_key, _pem_key(ca_key), private=True)
    _write(files.server_cert, server.public_bytes(serialization.Encoding.PEM), private=False)
    _write(files.server_key, _pem_key(server_key), private=True)
    for name, (key_path, pub_path) in files.supernode_keys.items():
        key = ec.generate_private_key(CURVE())
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(key_path, private, private=True)
        _write(pub_path, public + f" {name}\n".encode(), private=False)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make_certs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "deploy" / "certs")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--n-clients", type=int, default=8, help="key pairs for client0 .. client{N-1} (default 8)")
    who.add_argument("--clients", nargs="+", help="key pairs for these client names (each SuperNode's client-name)")
    p.add_argument("--host", action="append", default=[], help="another name or IP in the server certificate")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--force", action="store_true", help="replace existing files")
    args = p.parse_args(argv)
    clients = args.clients or [f"client{i}" for i in range(args.n_clients)]
    try:
        files = make_certs(
            args.out, clients=clients, hosts=(*DEFAULT_HOSTS, *args.host), days=args.days, force=args.force
        )
    except (FileExistsError, ValueError) as exc:
        print(f"make_certs.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"CA {files.ca}; SuperLink certificate {files.server_cert}; {len(clients)} SuperNode key pairs in "
          f"{files.ca.parent / 'supernodes'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
