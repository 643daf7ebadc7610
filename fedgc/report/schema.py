"""result.schema.json (JSON Schema, draft 2020-12, shipped beside this module): what result.json holds.

`check_result(data, file)` validates a parsed result.json and turns the first violation into a
FedGCError naming the file and the JSON path of the problem, e.g.

    runs/x/result.json: strength[0][1]: expected a number or null, got "big"
    runs/x/result.json: origin["d04_te"].ranking: missing key(s) ['ranking']

A file that is not an object or lacks the top-level keys of a result is "not a fedgc result".
Sizes that depend on other keys (M rows of M entries, one dims entry per client) are checked by the
reader that builds the typed view (fedgc.report.inspected).
"""

from __future__ import annotations

import functools
import json
from collections import deque
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from fedgc.errors import FedGCError

SCHEMA_FILE = Path(__file__).with_name("result.schema.json")

_TYPE_NAMES = {
    "number": "a number", "integer": "an integer", "string": "a string", "boolean": "true or false",
    "null": "null", "array": "a list", "object": "an object",
}  # fmt: skip
_JSON_TYPES = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}


@functools.cache
def result_schema() -> dict[str, Any]:
    """The schema as a dict (read once)."""
    return json.loads(SCHEMA_FILE.read_text())


@functools.cache
def _validator() -> Draft202012Validator:
    schema = result_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(data: Any) -> list[ValidationError]:
    """Every violation of the schema by `data` (empty: valid)."""
    return list(_validator().iter_errors(data))


def check_result(data: Any, file: str | Path) -> None:
    """Raise a FedGCError naming `file`, the JSON path and the problem when `data` violates the schema."""
    errors = schema_errors(data)
    if not errors:
        return
    required = result_schema()["required"]
    if not isinstance(data, dict) or not any(k in data for k in ("clients", "strength", "pvalue")):
        kind = _JSON_TYPES.get(type(data), type(data).__name__)
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        raise FedGCError(f"{file} is not a fedgc result: missing {missing} (it holds a JSON {kind})")
    error = best_match(errors)
    problems = len({(tuple(e.absolute_path), e.validator) for e in errors})  # one per missing key otherwise
    more = f" ({problems - 1} more problem(s) in the file)" if problems > 1 else ""
    raise FedGCError(f"{file}: {json_path(error) or 'the top level'}: {_problem(error)}{more}")


def json_path(error: ValidationError) -> str:
    """Where the error is, written as in the messages: a.b[0][1], with free-form keys quoted: origin["d01_te"]."""
    instance_path = deque(error.absolute_path)
    schema_path = list(error.absolute_schema_path)
    out = ""
    for i, token in enumerate(schema_path):
        if not instance_path:
            break
        if token == "properties" and i + 1 < len(schema_path) and schema_path[i + 1] == instance_path[0]:
            key = instance_path.popleft()
            out += f".{key}" if out else str(key)
        elif token in ("additionalProperties", "patternProperties"):
            out += f"[{json.dumps(instance_path.popleft())}]"
        elif token in ("items", "prefixItems") and isinstance(instance_path[0], int):
            out += f"[{instance_path.popleft()}]"
    for rest in instance_path:  # paths the schema walk did not account for
        out += f"[{rest}]" if isinstance(rest, int) else f"[{json.dumps(rest)}]"
    return out


def _shown(value: Any) -> str:
    return json.dumps(value)[:40]


def _problem(error: ValidationError) -> str:
    """What is wrong, in words; the validator's own message where there is nothing clearer to say."""
    kind, value, limit = error.validator, error.instance, error.validator_value
    if kind == "type":
        types = [limit] if isinstance(limit, str) else list(limit)
        return f"expected {' or '.join(_TYPE_NAMES.get(t, t) for t in types)}, got {_shown(value)}"
    if kind == "required":
        return f"missing key(s) {[k for k in limit if k not in value]}"
    if kind == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        return f"unexpected key(s) {[k for k in value if k not in known]}"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{_shown(value)} is below the {'exclusive ' if kind.startswith('ex') else ''}minimum {limit}"
    if kind in ("maximum", "exclusiveMaximum"):
        return f"{_shown(value)} is above the {'exclusive ' if kind.startswith('ex') else ''}maximum {limit}"
    if kind == "enum":
        return f"{_shown(value)} is not one of {limit}"
    if kind == "uniqueItems":
        seen = [v if isinstance(v, str) else json.dumps(v) for v in value]
        return f"duplicate names {sorted({v for v in seen if seen.count(v) > 1})}"
    if kind == "minItems":
        return f"has {len(value)} entries, expected at least {limit}"
    if kind == "minLength":
        return f"expected a non-empty string, got {_shown(value)}"
    if kind == "maxProperties" and limit == 0:
        return f"expected an empty object (or the per-client record), got keys {list(value)[:5]}"
    return error.message
