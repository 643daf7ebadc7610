"""Plain JSON values and the layout of fedgc's JSON files (result.json, edges.json).

NaN and infinities become null (result.json is strict JSON); matrices keep their [target][source]
rows; `dumps` writes one key per line and one matrix row or list entry per line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy to lists/scalars, non-finite floats to None, paths to str, NamedTuples and
    dataclasses to objects by field name."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":  # numbers: tolist gives Python's, non-finite floats become None
            finite = np.isfinite(value) if value.dtype.kind == "f" else None
            if finite is None or finite.all():
                return value.tolist()
            objects = value.astype(object)
            objects[~finite] = None
            return objects.tolist()
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple: its fields by name
        return jsonable(value._asdict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return str(value)


def matrix_rows(a: np.ndarray, *, kind: type = float) -> list[list[Any]]:
    """(M, M) as M rows [target][source] of `kind`, None on the diagonal and for non-finite entries."""
    a = np.asarray(a)
    shown = np.isfinite(a)
    np.fill_diagonal(shown, False)
    return [[kind(x) if s else None for x, s in zip(row, keep)] for row, keep in zip(a.tolist(), shown.tolist())]


def finite_or_none(x: float | None) -> float | None:
    """x as a float, or None when it is None, NaN or infinite."""
    return None if x is None or not math.isfinite(x) else float(x)


def dumps(data: dict) -> str:
    """JSON text of a result dict: one key per line, a matrix row or a history entry per line."""
    return _dump(data, 0) + "\n"


def _dump(value: Any, depth: int) -> str:
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict) and value and depth < 2:
        items = [f"{inner}{json.dumps(str(k))}: {_dump(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and all(isinstance(v, (list, dict)) for v in value):
        rows = [inner + json.dumps(v, allow_nan=False) for v in value]
        return "[\n" + ",\n".join(rows) + "\n" + pad + "]"
    return json.dumps(value, allow_nan=False)
