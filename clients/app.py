"""Flower ClientApp: thin handlers over fedgc's client side (fedgc.protocol.session.ClientSession).

Messages (fedgc.protocol.wire describes the payloads):

    query.setup   the node reads its own CSV (node config `data-path`), builds its local model
                  (node config `model-path` = a given .npz, else identified from its data) and
                  answers name, state_dim, n_steps.
    query.round   augmentation in (ArrayRecord "fedgc.arrays"), ClientReply out (arrays + ConfigRecord "fedgc.app.config").

Node config keys (flower-supernode --node-config "data-path='/data/feed.csv' client-name='feed'"):

    data-path          the client's CSV file (required)
    client-name        its name (default: the file stem)
    model-path         a given local model .npz (default: identify from the data)
    state-dim          D_m for identification (default: auto)
    explained-variance choose D_m by explained variance instead
    timestamp-column   auto | none | column name (default: auto)

Per-node state: the built ClientSession is cached per process, keyed by (run id, node id); what
is needed to rebuild it deterministically (its setup, and theta plus last states when theta is
learned) lives in the Flower context's state, so a fresh process (Flower's own per-message
ClientApp processes) gives the same replies. Nothing is pickled.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedgc.app.config import ClientSpec
from fedgc.protocol import wire
from fedgc.protocol.messages import ClientInfo
from fedgc.errors import ConfigError

ARRAYS = "fedgc.arrays"  # the ArrayRecord of every message
CONFIG = "fedgc.app.config"  # the ConfigRecord of every message
PACKED = "packed"  # every float64 field, concatenated: the one Array of ARRAYS, or bytes in CONFIG
STATE_SETUP = "fedgc.setup"
STATE_THETA = "fedgc.theta"
STATE_ROUND = "fedgc.round"  # the last round this node answered (a repeated or older round is refused)

_CACHE: dict[tuple[int, int], Any] = {}
_LOCK = threading.Lock()


# ------------------------------------------------------------------------------- records <-> dicts


def to_records(payload: Mapping[str, Any], *, message_format: str = "arrays") -> RecordDict:
    """A fedgc payload as a RecordDict. Its float64 arrays are packed into one buffer
    (fedgc.protocol.wire.pack_arrays) whose layout (names and shapes) goes into ConfigRecord CONFIG with
    the scalars. message_format "arrays": the buffer is the one Array PACKED of ArrayRecord ARRAYS,
    what Flower's tooling and mods read. "compact": the buffer is PACKED's value in CONFIG, as
    little-endian float64 bytes (never a pickle): a message is then 3 Flower objects instead of 6,
    and on the deployed runtime every object is a request on every hop (see README)."""
    wire.check_message_format(message_format)
    arrays, scalars = wire.split_payload(payload)
    if PACKED in scalars or wire.LAYOUT_KEY in scalars:
        raise wire.MessageError(f"fields {PACKED!r} and {wire.LAYOUT_KEY!r} are reserved for the packed arrays")
    content = RecordDict()
    buffer, layout = wire.pack_arrays(arrays) if arrays else (np.zeros(0), "")
    if message_format == "compact":
        scalars[PACKED] = np.ascontiguousarray(buffer, dtype="<f8").tobytes()
        scalars[wire.LAYOUT_KEY] = layout
    elif arrays:
        content[ARRAYS] = ArrayRecord({PACKED: _array(buffer)})
        scalars[wire.LAYOUT_KEY] = layout
    content[CONFIG] = ConfigRecord({k: _scalar(v) for k, v in scalars.items()})
    return content


def message_format_of(content: RecordDict) -> str:
    """"compact" when the arrays travel as bytes in CONFIG (a reply uses the request's format)."""
    config = content.config_records.get(CONFIG)
    return "compact" if config is not None and PACKED in config else "arrays"


def from_records(content: RecordDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if CONFIG in content.config_records:
        out.update(dict(content.config_records[CONFIG].items()))
    layout = out.pop(wire.LAYOUT_KEY, None)
    if PACKED in out:
        packed = out.pop(PACKED)
        if ARRAYS in content.array_records:
            raise wire.MessageError(f"a message carries its arrays either in ArrayRecord {ARRAYS!r} or as {PACKED!r}, not both")
        if not isinstance(packed, bytes) or len(packed) % 8 or layout is None:
            raise wire.MessageError(
                f"{PACKED!r} must be bytes of little-endian float64 values described by {wire.LAYOUT_KEY!r}"
            )
        out.update(wire.unpack_arrays(np.frombuffer(packed, dtype="<f8").astype(np.float64), layout))
    elif ARRAYS in content.array_records:
        record = content.array_records[ARRAYS]
        if layout is None or list(record.keys()) != [PACKED]:
            raise wire.MessageError(f"ArrayRecord {ARRAYS!r} must hold one array {PACKED!r} described by {wire.LAYOUT_KEY!r}")
        out.update(wire.unpack_arrays(record[PACKED].numpy(), layout))
    return out


def record_bytes(content: RecordDict) -> int:
    """Serialized size of the arrays of a message (Flower's own .npy encoding) plus its config values."""
    total = 0
    for rec in content.array_records.values():
        total += sum(len(a.data) for a in rec.values())
    for rec in content.config_records.values():
        total += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in rec.values())
    return total


def _array(v: np.ndarray):
    from flwr.app import Array

    return Array(np.ascontiguousarray(v))


def _scalar(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------- node settings


def node_settings(node_config: Mapping[str, Any], overrides: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """This node's client settings: its node config, or (simulation) the entry for its partition-id, validated
    and written out as a node config (fedgc.app.config.ClientSpec.from_node_config / to_node_config)."""
    cfg = dict(node_config)
    if overrides is not None:
        pid = cfg.get("partition-id")
        if pid is None or int(pid) not in overrides:
            raise ConfigError(f"simulated node with partition-id {pid!r} has no client assigned")
        cfg.update(overrides[int(pid)])
    if not cfg.get("data-path"):
        raise ConfigError(
            "this SuperNode has no 'data-path' in its node config; start it with "
            "--node-config \"data-path='/path/to/client.csv' client-name='name'\""
        )
    keys = ClientSpec.NODE_CONFIG_KEYS.values()
    return ClientSpec.from_node_config({k: v for k, v in cfg.items() if k in keys and v != ""}).to_node_config()


def client_spec(settings: Mapping[str, Any]) -> ClientSpec:
    """The client these node settings describe (validated)."""
    return ClientSpec.from_node_config(settings)


# ------------------------------------------------------------------------------- sessions


def build(settings: Mapping[str, Any], setup: wire.SetupRequest, fallback_index: int = 0):
    """The node's ClientSession (fedgc.app.runner.build_session: reads only this node's file)."""
    from fedgc.app.config import ClientOptions
    from fedgc.app.clients import build_session

    spec = client_spec(settings)
    options = ClientOptions(learn_theta=setup.learn_theta, theta=setup.theta)
    return build_session(spec, options, seed=setup.seed_for(spec.name, fallback_index))


def _raw_bytes(session) -> int:
    return int(session.n_steps * session.model.obs_dim * 8)


def _key(context: Context) -> tuple[int, int]:
    return int(context.run_id), int(context.node_id)


def _save_state(context: Context, settings: Mapping[str, Any], setup: wire.SetupRequest, fallback: int) -> None:
    record = {**{f"node.{k}": _scalar(v) for k, v in settings.items()}, **wire.encode_setup(setup)}
    record["fallback_index"] = int(fallback)
    context.state[STATE_SETUP] = ConfigRecord(record)


def _restore(context: Context):
    """Rebuild the session from the context (cache miss: a fresh ClientApp process)."""
    if STATE_SETUP not in context.state.config_records:
        raise RuntimeError("query.round before query.setup: this node has no session for the run")
    rec = dict(context.state.config_records[STATE_SETUP].items())
    settings = {k[len("node."):]: v for k, v in rec.items() if k.startswith("node.")}
    session = build(settings, wire.decode_setup(rec), int(rec.get("fallback_index", 0)))
    if STATE_THETA in context.state.array_records:
        session.restore_state({k: v.numpy() for k, v in context.state.array_records[STATE_THETA].items()})
    if STATE_ROUND in context.state.config_records:
        session.last_round = int(context.state.config_records[STATE_ROUND]["last"])
    return session


def session_for(context: Context):
    key = _key(context)
    with _LOCK:
        session = _CACHE.get(key)
    if session is None:
        session = _restore(context)
        with _LOCK:
            _CACHE[key] = session
    return session


# ------------------------------------------------------------------------------- handlers


def handle_setup(message: Message, context: Context, overrides=None) -> Message:
    setup = wire.decode_setup(from_records(message.content))
    settings = node_settings(context.node_config, overrides)
    fallback = int(context.node_config.get("partition-id", 0))
    session = build(settings, setup, fallback)
    with _LOCK:
        # one run per node at a time: forget sessions of earlier runs on this node
        for k in [k for k in _CACHE if k[1] == int(context.node_id)]:
            del _CACHE[k]
        _CACHE[_key(context)] = session
    _save_state(context, settings, setup, fallback)
    for key in (STATE_THETA, STATE_ROUND):
        if key in context.state:
            del context.state[key]
    info = ClientInfo(session.name, session.state_dim, session.n_steps)
    reply = wire.encode_setup_reply(info, _raw_bytes(session))
    return Message(to_records(reply, message_format=message_format_of(message.content)), reply_to=message)


def handle_round(message: Message, context: Context) -> Message:
    """Decode and validate the augmentation (fedgc.protocol.validation: shape (T, D_m), float64, finite, a new
    round); a bad one raises, which Flower returns to the server as this node's error reply."""
    augmentation, request, round_index = wire.decode_request(from_records(message.content))
    session = session_for(context)
    reply = session.round(augmentation, request, round_index)
    if session.learn_theta:
        context.state[STATE_THETA] = ArrayRecord({k: _array(v) for k, v in session.checkpoint_state().items()})
    context.state[STATE_ROUND] = ConfigRecord({"last": int(round_index)})
    return Message(to_records(wire.encode_reply(reply), message_format=message_format_of(message.content)), reply_to=message)


def make_client_app(overrides: Mapping[int, Mapping[str, Any]] | None = None) -> ClientApp:
    """The ClientApp. overrides: partition-id -> node settings (the simulation runtime, whose
    virtual nodes only carry partition-id in their node config)."""
    table = None if overrides is None else {int(k): dict(v) for k, v in overrides.items()}
    client_app = ClientApp()

    @client_app.query("setup")
    def _setup(message: Message, context: Context) -> Message:
        return handle_setup(message, context, table)

    @client_app.query("round")
    def _round(message: Message, context: Context) -> Message:
        return handle_round(message, context)

    return client_app


app = make_client_app()
