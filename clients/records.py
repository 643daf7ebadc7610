"""The records codec: a fedgc payload (fedgc.protocol.wire: plain dict of float64 arrays and
scalars) as a Flower RecordDict and back. Both ends use it: the ClientApp (clients.app) and the
ServerApp's transport (server.transport).

Every float64 array of a payload is packed into one buffer (fedgc.protocol.wire.pack_arrays); its
layout (names and shapes) goes into ConfigRecord CONFIG with the scalars. Message format "arrays":
the buffer is the one Array PACKED of ArrayRecord ARRAYS, what Flower's tooling and mods read.
"compact": the buffer is PACKED's value in CONFIG, as little-endian float64 bytes (never a pickle):
a message is then 3 Flower objects instead of 6, and on the deployed runtime every object is a
request on every hop (see README). A reply uses the format of its request (message_format_of).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedgc.protocol import wire

ARRAYS = "fedgc.arrays"  # the ArrayRecord of every message
CONFIG = "fedgc.app.config"  # the ConfigRecord of every message
PACKED = "packed"  # every float64 field, concatenated: the one Array of ARRAYS, or bytes in CONFIG


def to_records(payload: Mapping[str, Any], *, message_format: str = "arrays") -> RecordDict:
    """A fedgc payload as a RecordDict, in `message_format` ("arrays" or "compact")."""
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
        content[ARRAYS] = ArrayRecord({PACKED: array(buffer)})
        scalars[wire.LAYOUT_KEY] = layout
    content[CONFIG] = ConfigRecord({k: scalar(v) for k, v in scalars.items()})
    return content


def message_format_of(content: RecordDict) -> str:
    """ "compact" when the arrays travel as bytes in CONFIG (a reply uses the request's format)."""
    config = content.config_records.get(CONFIG)
    return "compact" if config is not None and PACKED in config else "arrays"


def from_records(content: RecordDict) -> dict[str, Any]:
    """The payload of a RecordDict written by to_records (wire.MessageError if it is malformed)."""
    out: dict[str, Any] = {}
    if CONFIG in content.config_records:
        out.update(dict(content.config_records[CONFIG].items()))
    layout = out.pop(wire.LAYOUT_KEY, None)
    if PACKED in out:
        packed = out.pop(PACKED)
        if ARRAYS in content.array_records:
            raise wire.MessageError(
                f"a message carries its arrays either in ArrayRecord {ARRAYS!r} or as {PACKED!r}, not both"
            )
        if not isinstance(packed, bytes) or len(packed) % 8 or layout is None:
            raise wire.MessageError(
                f"{PACKED!r} must be bytes of little-endian float64 values described by {wire.LAYOUT_KEY!r}"
            )
        out.update(wire.unpack_arrays(np.frombuffer(packed, dtype="<f8").astype(np.float64), layout))
    elif ARRAYS in content.array_records:
        record = content.array_records[ARRAYS]
        if layout is None or list(record.keys()) != [PACKED]:
            raise wire.MessageError(
                f"ArrayRecord {ARRAYS!r} must hold one array {PACKED!r} described by {wire.LAYOUT_KEY!r}"
            )
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


def array(v: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(v))


def scalar(v: Any) -> Any:
    """A ConfigRecord value: numpy scalars as Python's, anything else but bytes as text."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v if isinstance(v, bytes) else str(v)
