"""What crosses the client/server boundary, as plain dicts of numpy arrays and scalars.

Transports (the Flower apps in clients/ and server/) turn these dicts into their own records
(ndarrays -> ArrayRecord, scalars and strings -> ConfigRecord) and back; nothing here imports
Flower and nothing is ever pickled. The same encoders define the communication accounting:
`payload_bytes` of an encoded message is what that message costs, whatever the transport.

Messages of one run:

    setup   server -> client  {"seed", "client_order", "learn_theta", "theta"}
                              + private runs: {"privacy" (the privacy settings, JSON), "privacy_plan" (JSON), "run"}
                              + SIV runs: {"snapshots": "siv" | "auto"}
            client -> server  {"name", "state_dim", "n_steps", "raw_data_bytes"}
                              + private runs: {"noise_std", "clip", "signal_to_noise"} (of the model, not the data)
                              + SIV runs: {"snapshot": (T, r)} (the snapshot series when the setup asks for it;
                                under "auto" a client whose data cannot give one sends none)
    round   server -> client  {"augmentation": (T, D_m), "request": "newton"|"gd"|"stats", "round"}
            client -> server  {"states": (T, D_m), "pseudo_obs"?: (T, D_m), "information"?: (D_m, D_m),
                               "gradient"?: (T, D_m), "loss", "client", "round"}   (absent keys: None in ClientReply)

Decoding checks structure only (fields present, arrays are arrays, scalars are scalars) and keeps the
dtypes it received; whether the content is acceptable (shapes, float64, finite, round, client, J)
is fedgc.protocol.validation's job, on the server for replies and on the client for augmentations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgc.errors import ConfigError, FedGCError
from fedgc.privacy.budget import PrivacyPlan
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.protocol.messages import REQUEST_KINDS, ClientInfo, ClientReply, ReleaseFigures, RequestKind
from fedgc.protocol.settings import MESSAGE_FORMATS

Payload = dict[str, Any]
_REPLY_ARRAYS = ("states", "pseudo_obs", "information", "gradient")


class MessageError(FedGCError):
    """A message that does not decode: missing or malformed fields."""


# ---------------------------------------------------------------------------------------- setup


SNAPSHOT_REQUESTS = ("", "auto", "siv")


@dataclass(frozen=True)
class SetupRequest:
    """What every client needs from the run before it builds its session. client_order: the
    configured client names in order (a client's identification seed is seed + its index there).
    A private run adds privacy: its privacy settings as JSON text (fedgc.app.config.to_plain of the
    `privacy:` section; the client parses them), plan: the noise multiplier and releases solved before
    any data was touched, and run: the run's id (its config fingerprint), under which the client's ledger
    keeps the noise seed of this run's release."""

    seed: int = 0
    client_order: tuple[str, ...] = ()
    learn_theta: bool = False
    theta: str = "linear"
    privacy: str = ""
    plan: PrivacyPlan | None = None
    run: str = ""
    snapshots: str = ""  # send the snapshot series (fedgc.core.snapshots): "" no, "siv" yes, "auto" if it can

    def __post_init__(self) -> None:
        if bool(self.privacy) != (self.plan is not None):
            raise MessageError("setup request: a private run sends both its privacy settings and its plan")
        if self.snapshots not in SNAPSHOT_REQUESTS:
            raise MessageError(f"setup request: snapshots must be one of {SNAPSHOT_REQUESTS}, got {self.snapshots!r}")

    def index_of(self, name: str, fallback_index: int) -> int:
        """The client's position in the configured order (fallback_index when it is not listed)."""
        return self.client_order.index(name) if name in self.client_order else int(fallback_index)

    def seed_for(self, name: str, fallback_index: int) -> int:
        return int(self.seed) + self.index_of(name, fallback_index)


def encode_setup(req: SetupRequest) -> Payload:
    out: Payload = {
        "seed": int(req.seed),
        "client_order": ",".join(req.client_order),
        "learn_theta": bool(req.learn_theta),
        "theta": str(req.theta),
    }
    if req.plan is not None:
        out["privacy"] = str(req.privacy)
        out["privacy_plan"] = json.dumps(req.plan._asdict())
        out["run"] = str(req.run)
    if req.snapshots:  # only when asked: a run with the LR test sends what it always sent
        out["snapshots"] = str(req.snapshots)
    return out


def decode_setup(payload: Mapping[str, Any]) -> SetupRequest:
    _require(payload, ("seed", "client_order", "learn_theta", "theta"), "setup request")
    order = str(payload["client_order"])
    privacy, plan, run = "", None, ""
    if "privacy" in payload or "privacy_plan" in payload:
        _require(payload, ("privacy", "privacy_plan", "run"), "setup request")
        privacy, plan, run = str(payload["privacy"]), _decode_plan(payload["privacy_plan"]), str(payload["run"])
    return SetupRequest(
        seed=int(payload["seed"]),
        client_order=tuple(n for n in order.split(",") if n),
        learn_theta=bool(payload["learn_theta"]),
        theta=str(payload["theta"]),
        privacy=privacy,
        plan=plan,
        run=run,
        snapshots=str(payload.get("snapshots", "")),
    )


def _decode_plan(text: Any) -> PrivacyPlan:
    """The PrivacyPlan of its JSON text: every field present and of its type."""
    try:
        raw = json.loads(text) if isinstance(text, str) else None
        if not isinstance(raw, dict) or set(raw) != set(PrivacyPlan._fields):
            raise ValueError(f"fields {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
        numbers = [raw[k] for k in ("noise_multiplier", "epsilon", "delta")]
        counts = [raw[k] for k in ("client_releases", "server_releases", "rounds")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise ValueError("noise_multiplier, epsilon and delta must be numbers")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise ValueError("client_releases, server_releases and rounds must be integers >= 0")
        if not isinstance(raw["accountant"], str) or not isinstance(raw["augmentation_noise"], bool):
            raise ValueError("accountant must be text and augmentation_noise true or false")
    except ValueError as exc:
        raise MessageError(f"setup request: privacy_plan is not a privacy plan ({exc})") from None
    return PrivacyPlan(**{k: raw[k] for k in PrivacyPlan._fields})


def encode_setup_reply(info: ClientInfo, raw_data_bytes: int) -> Payload:
    out: Payload = {
        "name": str(info.name),
        "state_dim": int(info.state_dim),
        "n_steps": int(info.n_steps),
        "raw_data_bytes": int(raw_data_bytes),
    }
    if info.release is not None:
        out.update({key: float(value) for key, value in info.release._asdict().items()})
    if info.snapshot is not None:
        out["snapshot"] = np.ascontiguousarray(info.snapshot, dtype=np.float64)
    return out


def decode_setup_reply(payload: Mapping[str, Any]) -> tuple[ClientInfo, int]:
    """(ClientInfo, raw data bytes); a snapshot arrives as received (the server validates it before its test)."""
    _require(payload, ("name", "state_dim", "n_steps"), "setup reply")
    release = None
    if any(key in payload for key in ReleaseFigures._fields):
        _require(payload, ReleaseFigures._fields, "setup reply")
        values = [payload[key] for key in ReleaseFigures._fields]
        numbers = (int, float, np.integer, np.floating)
        if not all(isinstance(v, numbers) and not isinstance(v, (bool, np.bool_)) for v in values):
            raise MessageError(f"setup reply: {', '.join(ReleaseFigures._fields)} must be numbers, got {values}")
        release = ReleaseFigures(*(float(v) for v in values))
    snapshot = payload.get("snapshot")
    if snapshot is not None and not isinstance(snapshot, np.ndarray):
        raise MessageError(f"setup reply: field 'snapshot' is {type(snapshot).__name__}, not an array")
    info = ClientInfo(str(payload["name"]), int(payload["state_dim"]), int(payload["n_steps"]), release, snapshot)
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
    noise = None
    if "noise_state_sensitivity" in payload:
        _require(payload, ("noise_state_cov", "noise_cross_cov", "noise_pseudo_obs_cov"), "client reply")
        noise = ReleaseNoise(
            state_cov=payload["noise_state_cov"], cross_cov=payload["noise_cross_cov"],
            pseudo_obs_cov=payload["noise_pseudo_obs_cov"], state_sensitivity=float(payload["noise_state_sensitivity"]),
        )  # fmt: skip
    rnd = payload["round"]  # left as received unless an integer: validation names a bad one
    if isinstance(rnd, (int, np.integer)) and not isinstance(rnd, (bool, np.bool_)):
        rnd = int(rnd)
    return ClientReply(
        payload["states"], payload.get("pseudo_obs"), payload.get("information"), payload.get("gradient"),
        float(payload["loss"]), noise, str(payload["client"]), rnd,
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
            raise MessageError(
                f"field {name!r}: only float64 arrays are packed, got {getattr(value, 'dtype', type(value))}"
            )
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
