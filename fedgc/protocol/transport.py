"""Transports move one exchange's messages between the server and the clients; the local engine's
transport calls in-process sessions, and CountingTransport wraps any transport to record what each
exchange put on the wire (fedgc.protocol.wire.payload_bytes of the encoded messages).

The Flower engines' transports live in server/ (clients/ and server/ are the only Flower code).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedgc.errors import ConfigError, FedGCError
from fedgc.protocol.messages import ClientFailure, ClientInfo, ClientReply, RequestKind
from fedgc.protocol.session import ClientSession, StreamingSession
from fedgc.protocol.wire import encode_reply, encode_request, payload_bytes

Reply = ClientReply | ClientFailure | None


class Transport(Protocol):
    """Moves one exchange's messages. Replies come back in the order of `clients()`; a None augmentation
    (a client that dropped out) is not sent and gets None back; round_index: the exchange's index in
    the run (clients refuse an index they have answered already)."""

    def clients(self) -> list[ClientInfo]: ...

    def exchange(
        self, augmentations: Sequence[np.ndarray | None], request: RequestKind, round_index: int | None = None
    ) -> list[Reply]: ...


class StreamTransport(Transport, Protocol):
    """A Transport whose clients also move from window to window of a long series."""

    def open_window(self, start: int, end: int) -> None: ...


class LocalTransport:
    """The `local` engine: direct calls into ClientSession objects in this process. A client that
    refuses a message (a FedGCError, e.g. an invalid augmentation) answers with a ClientFailure.
    clients() reports each client's whole series (a StreamingSession's stream).

    workers > 1: the clients of an exchange run on that many threads (their rounds are independent and
    numpy releases the GIL in the array work, so on long windows the cores share it); the replies are
    the same, in the same order."""

    def __init__(self, sessions: Sequence[ClientSession], *, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        self.sessions = list(sessions)
        self.workers = workers

    def clients(self) -> list[ClientInfo]:
        return [ClientInfo(s.name, s.state_dim, s.series_steps, s.release, s.snapshot) for s in self.sessions]

    def open_window(self, start: int, end: int) -> None:
        for s in self.sessions:
            if not isinstance(s, StreamingSession):
                raise FedGCError(f"client '{s.name}' is not a streaming client: it has one window")
            s.open_window(start, end)

    def exchange(
        self, augmentations: Sequence[np.ndarray | None], request: RequestKind, round_index: int | None = None
    ) -> list[Reply]:

        def answer(s: ClientSession, a: np.ndarray | None) -> Reply:
            try:
                return None if a is None else s.round(a, request, round_index)
            except FedGCError as exc:
                return ClientFailure(s.name, f"failed: {exc}")

        if self.workers == 1 or len(self.sessions) < 2:
            return [answer(s, a) for s, a in zip(self.sessions, augmentations)]
        with ThreadPoolExecutor(min(self.workers, len(self.sessions))) as pool:
            return list(pool.map(answer, self.sessions, augmentations))


def common_length(infos: Sequence[ClientInfo], what: str) -> int:
    """The number of steps every client has; ConfigError naming each client's when they differ."""
    lengths = {c.n_steps for c in infos}
    if len(lengths) != 1:
        detail = ", ".join(f"{c.name}: {c.n_steps}" for c in infos)
        raise ConfigError(f"clients have {what} of different lengths ({detail}); align them first")
    return lengths.pop()


@dataclass
class CommunicationLog:
    """Bytes per exchange in each direction (payload_bytes of the encoded messages).
    Exchange 0 is the opening exchange (zero augmentation); exchange r >= 1 follows server round r."""

    exchanges: list[dict[str, Any]] = field(default_factory=list)
    setup_to_clients: int = 0
    setup_to_server: int = 0

    def record(self, request: str, to_clients: Sequence[int], to_server: Sequence[int], seconds: float) -> None:
        self.exchanges.append({
            "exchange": len(self.exchanges),
            "request": request,
            "to_clients": int(sum(to_clients)),
            "to_server": int(sum(to_server)),
            "seconds": float(seconds),
        })  # fmt: skip

    def summary(self, raw_data_bytes: int = 0) -> dict[str, Any]:
        down = self.setup_to_clients + sum(e["to_clients"] for e in self.exchanges)
        up = self.setup_to_server + sum(e["to_server"] for e in self.exchanges)
        out: dict[str, Any] = {
            "exchanges": len(self.exchanges),
            "bytes_to_clients": int(down),
            "bytes_to_server": int(up),
            "bytes_total": int(down + up),
            "setup_bytes": int(self.setup_to_clients + self.setup_to_server),
            "per_exchange": [dict(e) for e in self.exchanges],
        }
        if raw_data_bytes:
            out["raw_data_bytes_kept"] = int(raw_data_bytes)
            out["raw_to_sent_ratio"] = float(raw_data_bytes) / max(down + up, 1)
        return out


class CountingTransport:
    """Wraps any Transport and records what each exchange would put on the wire."""

    def __init__(self, inner: Any, log: CommunicationLog | None = None) -> None:
        self.inner = inner
        self.log = log if log is not None else CommunicationLog()
        self._exchange = 0
        self._setup_counted = False

    def clients(self) -> list[ClientInfo]:
        """The inner transport's clients; the snapshot series they sent at setup count once as setup bytes
        to the server (a Flower transport counts its whole setup itself: then nothing is added here)."""
        infos = self.inner.clients()
        if not self._setup_counted and not hasattr(self.inner, "setup_to_server"):
            self.log.setup_to_server += int(sum(i.snapshot.nbytes for i in infos if i.snapshot is not None))
            self._setup_counted = True
        return infos

    def open_window(self, start: int, end: int) -> None:
        self.inner.open_window(start, end)

    def exchange(
        self, augmentations: Sequence[np.ndarray | None], request: RequestKind, round_index: int | None = None
    ) -> list[Reply]:
        """Forwards to the inner transport (round_index only when given); counts what was sent and what
        came back as a reply (a None augmentation is not sent; a failure carries no payload)."""
        t0 = time.perf_counter()
        if round_index is None:
            replies = self.inner.exchange(augmentations, request)
        else:
            replies = self.inner.exchange(augmentations, request, round_index=round_index)
        seconds = time.perf_counter() - t0
        r = self._exchange if round_index is None else round_index
        down = [payload_bytes(encode_request(a, request, r)) for a in augmentations if a is not None]
        up = [_reply_bytes(x) for x in replies if isinstance(x, ClientReply)]
        self.log.record(request, down, up, seconds)
        self._exchange += 1
        return replies


def _reply_bytes(reply: ClientReply) -> int:
    """Bytes of a reply's payload; a malformed reply (which validation will reject) counts its arrays as they are."""
    try:
        return payload_bytes(encode_reply(reply))
    except (TypeError, ValueError, AttributeError):
        return int(sum(getattr(v, "nbytes", 0) for v in reply))
