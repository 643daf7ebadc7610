"""What crosses the client/server boundary, as plain dicts of numpy arrays and scalars.

Transports (the Flower apps in clients/ and server/) turn these dicts into their own records
(ndarrays -> ArrayRecord, scalars and strings -> ConfigRecord) and back; nothing here imports
Flower and nothing is ever pickled. The same encoders define the communication accounting:
`payload_bytes` of an encoded message is what that message costs, whatever the transport.

Messages of one run:

    setup   server -> client  {"seed", "client_order", "learn_theta", "theta"}
            client -> server  {"name", "state_dim", "n_steps", "raw_data_bytes"}
    round   server -> client  {"augmentation": (T, D_m), "request": "newton"|"gd"|"stats", "round"}
            client -> server  {"states": (T, D_m), "pseudo_obs"?: (T, D_m), "information"?: (D_m, D_m),
                               "gradient"?: (T, D_m), "loss", "client", "round"}   (absent keys: None in ClientReply)

Decoding checks structure only (fields present, arrays are arrays, scalars are scalars) and keeps the
dtypes it received; whether the content is acceptable (shapes, float64, finite, round, client, J)
is fedgc.protocol.validation's job, on the server for replies and on the client for augmentations.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fedgc.protocol.session import ClientReply, RequestKind
from fedgc.errors import ConfigError, FedGCError
from fedgc.core.granger import GCResult
from fedgc.protocol.loop import ClientInfo, FitResult, RoundRecord
from fedgc.protocol.state import Dropout

Payload = dict[str, Any]
REQUEST_KINDS = ("newton", "gd", "stats")
_REPLY_ARRAYS = ("states", "pseudo_obs", "information", "gradient")


class MessageError(FedGCError):
    """A message that does not decode: missing or malformed fields."""


# ---------------------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class SetupRequest:
    """What every client needs from the run before it builds its session. client_order: the
    configured client names in order (a client's identification seed is seed + its index there)."""

    seed: int = 0
    client_order: tuple[str, ...] = ()
    learn_theta: bool = False
    theta: str = "linear"

    def seed_for(self, name: str, fallback_index: int) -> int:
        index = self.client_order.index(name) if name in self.client_order else fallback_index
        return int(self.seed) + int(index)


def encode_setup(req: SetupRequest) -> Payload:
    return {
        "seed": int(req.seed),
        "client_order": ",".join(req.client_order),
        "learn_theta": bool(req.learn_theta),
        "theta": str(req.theta),
    }


def decode_setup(payload: Mapping[str, Any]) -> SetupRequest:
    _require(payload, ("seed", "client_order", "learn_theta", "theta"), "setup request")
    order = str(payload["client_order"])
    return SetupRequest(
        seed=int(payload["seed"]),
        client_order=tuple(n for n in order.split(",") if n),
        learn_theta=bool(payload["learn_theta"]),
        theta=str(payload["theta"]),
    )


def encode_setup_reply(info: ClientInfo, raw_data_bytes: int) -> Payload:
    return {
        "name": str(info.name),
        "state_dim": int(info.state_dim),
        "n_steps": int(info.n_steps),
        "raw_data_bytes": int(raw_data_bytes),
    }


def decode_setup_reply(payload: Mapping[str, Any]) -> tuple[ClientInfo, int]:
    _require(payload, ("name", "state_dim", "n_steps"), "setup reply")
    info = ClientInfo(str(payload["name"]), int(payload["state_dim"]), int(payload["n_steps"]))
    return info, int(payload.get("raw_data_bytes", 0))


# ---------------------------------------------------------------------------------------- rounds


def encode_request(augmentation: np.ndarray, request: RequestKind, round_index: int) -> Payload:
    if request not in REQUEST_KINDS:
        raise MessageError(f"unknown request kind {request!r}; expected one of {REQUEST_KINDS}")
    return {
        "augmentation": np.ascontiguousarray(augmentation, dtype=np.float64),
        "request": str(request),
        "round": int(round_index),
    }


def decode_request(payload: Mapping[str, Any]) -> tuple[np.ndarray, RequestKind, int]:
    """(augmentation as received, request kind, round); fedgc.protocol.validation.validate_augmentation checks the content."""
    _require(payload, ("augmentation", "request", "round"), "round request")
    request = payload["request"]
    if not isinstance(request, str) or request not in REQUEST_KINDS:
        raise MessageError(f"round request: unknown request kind {request!r}")
    aug = payload["augmentation"]
    if not isinstance(aug, np.ndarray):
        raise MessageError(f"round request: augmentation is {type(aug).__name__}, not an array")
    rnd = payload["round"]
    if isinstance(rnd, (bool, np.bool_)) or not isinstance(rnd, (int, np.integer)):
        raise MessageError(f"round request: round is {rnd!r}, not an integer")
    return aug, request, int(rnd)  # type: ignore[return-value]


def encode_reply(reply: ClientReply) -> Payload:
    out: Payload = {}
    for key in _REPLY_ARRAYS:
        value = getattr(reply, key)
        if value is not None:
            out[key] = np.ascontiguousarray(value, dtype=np.float64)
    out["loss"] = float(reply.loss)
    if reply.client is not None:
        out["client"] = str(reply.client)
    if reply.round is not None:
        out["round"] = int(reply.round)
    if reply.noise is not None:  # privacy: noise covariances and state sensitivity (no data in them)
        for key in ("state_cov", "cross_cov", "pseudo_obs_cov"):
            out[f"noise_{key}"] = np.ascontiguousarray(getattr(reply.noise, key), dtype=np.float64)
        out["noise_state_sensitivity"] = float(reply.noise.state_sensitivity)
    return out


def decode_reply(payload: Mapping[str, Any]) -> ClientReply:
    """The ClientReply in a payload, arrays with the dtype they arrived in (validated by the server)."""
    _require(payload, ("states", "loss", "client", "round"), "client reply")
    for key in (*_REPLY_ARRAYS, "noise_state_cov", "noise_cross_cov", "noise_pseudo_obs_cov"):
        if key in payload and not isinstance(payload[key], np.ndarray):
            raise MessageError(f"client reply: field {key!r} is {type(payload[key]).__name__}, not an array")
    for key in ("loss", "noise_state_sensitivity"):
        value = payload.get(key, 0.0)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise MessageError(f"client reply: field {key!r} is {value!r}, not a number")
    arrays = {k: payload.get(k) for k in _REPLY_ARRAYS}
    noise = None
    if "noise_state_sensitivity" in payload:
        from fedgc.privacy.mechanism import ReleaseNoise

        _require(payload, ("noise_state_cov", "noise_cross_cov", "noise_pseudo_obs_cov"), "client reply")
        noise = ReleaseNoise(
            *(payload[f"noise_{k}"] for k in ("state_cov", "cross_cov", "pseudo_obs_cov")),
            float(payload["noise_state_sensitivity"]),
        )
    rnd = payload["round"]  # left as received unless an integer: validation names a bad one
    if isinstance(rnd, (int, np.integer)) and not isinstance(rnd, (bool, np.bool_)):
        rnd = int(rnd)
    return ClientReply(
        arrays["states"], arrays["pseudo_obs"], arrays["information"], arrays["gradient"], float(payload["loss"]), noise,
        str(payload["client"]), rnd,
    )  # fmt: skip


def split_payload(payload: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, scalars): how a transport files a payload into array and config records."""
    arrays = {k: v for k, v in payload.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in payload.items() if not isinstance(v, np.ndarray)}
    for k, v in scalars.items():
        if not isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_)):
            raise MessageError(f"field {k!r} is neither an array nor a scalar: {type(v).__name__}")
    return arrays, scalars


LAYOUT_KEY = "fedgc.layout"  # the scalar field that describes a packed buffer
MESSAGE_FORMATS = ("arrays", "compact")  # how a Flower transport carries the packed buffer (clients.app.to_records)


def check_message_format(message_format: str) -> str:
    if message_format not in MESSAGE_FORMATS:
        raise ConfigError(f"message format {message_format!r}: choose from {', '.join(MESSAGE_FORMATS)}")
    return message_format


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """All of a message's float64 arrays as one contiguous 1-D buffer, and its layout
    ("name:4000x3;information:3x3", in order). A transport then moves one array per message instead
    of one per field: on Flower's deployed runtime every array is several objects, each its own
    request on every hop, so fewer arrays is fewer round trips."""
    parts, layout = [], []
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype != np.float64:
            raise MessageError(f"field {name!r}: only float64 arrays are packed, got {getattr(value, 'dtype', type(value))}")
        if not name or ":" in name or ";" in name:
            raise MessageError(f"field name {name!r} cannot be packed")
        parts.append(value.reshape(-1))
        layout.append(f"{name}:{'x'.join(str(n) for n in value.shape)}")
    buffer = np.concatenate(parts) if parts else np.zeros(0)
    return buffer, ";".join(layout)


def unpack_arrays(buffer: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    """The reverse of pack_arrays; MessageError when the layout does not describe the buffer."""
    buffer = np.asarray(buffer)
    if buffer.ndim != 1 or buffer.dtype != np.float64:
        raise MessageError(f"packed buffer must be 1-D float64, got {buffer.dtype} with shape {buffer.shape}")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for entry in filter(None, str(layout).split(";")):
        name, sep, dims = entry.partition(":")
        try:
            shape = tuple(int(n) for n in dims.split("x")) if dims else ()
        except ValueError:
            shape = (-1,)
        if not sep or not name or any(n < 0 for n in shape) or name in out:
            raise MessageError(f"packed layout entry {entry!r} is malformed")
        size = int(np.prod(shape, dtype=np.int64))
        if offset + size > buffer.size:
            raise MessageError(f"packed layout {layout!r} needs more than the buffer's {buffer.size} values")
        out[name] = buffer[offset : offset + size].reshape(shape)
        offset += size
    if offset != buffer.size:
        raise MessageError(f"packed layout {layout!r} covers {offset} of the buffer's {buffer.size} values")
    return out


def payload_bytes(payload: Mapping[str, Any]) -> int:
    """Bytes of a payload's content: array data (8 bytes per float64), 8 per number, UTF-8 of strings.
    Field names and transport framing are not counted (they do not grow with T or D)."""
    total = 0
    for v in payload.values():
        if isinstance(v, np.ndarray):
            total += int(v.nbytes)
        elif isinstance(v, str):
            total += len(v.encode())
        else:
            total += 8
    return total


def _require(payload: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in payload]
    if missing:
        raise MessageError(f"{what} is missing field(s) {missing}; got {sorted(payload)}")


# ----------------------------------------------------------------------------------- accounting


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

    def clients(self) -> list[ClientInfo]:
        return self.inner.clients()

    def exchange(self, augmentations: Sequence[np.ndarray | None], request: RequestKind, round_index: int | None = None):
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


# ------------------------------------------------------------------------------- fit (results)


_GC_ARRAYS = ("strength", "gc", "statistic", "dof", "pvalue", "log10_pvalue", "edges", "A_s")
_DROPOUT_FIELDS = ("client", "round", "reason")


def encode_fit(fit: FitResult) -> dict[str, np.ndarray]:
    """A FitResult as named arrays (np.savez-able without pickles)."""
    gc = fit.gc
    out = {f"gc_{k}": np.asarray(getattr(gc, k)) for k in _GC_ARRAYS}
    out["gc_clients"] = np.asarray(list(gc.clients), dtype=str)
    out["gc_dims"] = np.asarray(gc.dims, dtype=np.int64)
    out["gc_alpha"] = np.asarray(float(gc.alpha))
    out["A_s"] = np.asarray(fit.A_s, dtype=np.float64)
    out["history"] = np.asarray([[r.round, r.loss, r.change] for r in fit.history], dtype=np.float64).reshape(-1, 3)
    out["converged"] = np.asarray(bool(fit.converged))
    if gc.unknown is not None:
        out["gc_unknown"] = np.asarray(gc.unknown, dtype=bool)
    out["dropouts"] = np.asarray([[d.client, str(d.round), d.reason] for d in fit.dropouts], dtype=str).reshape(-1, 3)
    return out


def decode_fit(arrays: Mapping[str, np.ndarray]) -> FitResult:
    gc = GCResult(
        clients=tuple(str(c) for c in arrays["gc_clients"].tolist()),
        dims=tuple(int(d) for d in arrays["gc_dims"].tolist()),
        alpha=float(arrays["gc_alpha"]),
        **{k: np.asarray(arrays[f"gc_{k}"]) for k in _GC_ARRAYS},
        unknown=np.asarray(arrays["gc_unknown"], dtype=bool) if "gc_unknown" in arrays else None,
    )
    history = [RoundRecord(int(r), float(l), float(c)) for r, l, c in np.asarray(arrays["history"]).reshape(-1, 3)]
    dropouts = [Dropout(str(c), int(r), str(why)) for c, r, why in np.asarray(arrays.get("dropouts", np.empty((0, 3)))).reshape(-1, 3)]
    return FitResult(gc, np.asarray(arrays["A_s"], dtype=np.float64), history, bool(arrays["converged"]), dropouts)


def save_fit(path: str | Path, fit: FitResult) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **encode_fit(fit))
    tmp.replace(path)
    return path


def load_fit(path: str | Path) -> FitResult:
    with np.load(Path(path), allow_pickle=False) as data:
        return decode_fit({k: data[k] for k in data.files})


def server_config_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)
