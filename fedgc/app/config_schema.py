"""The machinery under fedgc.app.config's typed model: pydantic's validator and serialiser of a settings
dataclass (SettingsCodec, numbers strict), its problems as ONE ConfigError naming the file and each setting
at fault, in the words of the file, and the reference table of every key (`reference_table`).

    c.yaml: server.rule must be 'newton' or 'gd', got 'adam'            (a value of the wrong form)
    c.yaml: server: unknown key(s) ['rull']; allowed: ['alpha', ...]     (keys are never ignored)
    c.yaml: clients[1] needs 'name' and 'data' (missing 1 required: 'data')
    c.yaml: clients[0] (feed): state_dim must be 'auto' or a positive integer, got -2
    c.yaml: synthetic: edge_density must lie in [0, 1], got 2           (a section's own check)

A section's own checks are its dataclass's __post_init__: their ConfigError message is kept, under the
section's name. How a value is written (`accepts`) comes from the field's annotation ("an integer",
"'newton' or 'gd'", "a list of mappings"), or from a string in its Annotated metadata where the type alone
does not say it ("'auto' or a positive integer").
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import SchemaValidator, core_schema

from fedgc.errors import ConfigError

Loc = tuple[str | int, ...]
UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument", "invalid_key")  # pydantic's error types
CHECK_FAILED = ("value_error", "assertion_error")  # a ValueError (ConfigError) raised by a check: its message is kept
_WRITTEN = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", Path: "a file path",
            type(None): "null"}  # fmt: skip
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings", Path: "file paths"}


# ---------------------------------------------------------------------------------------------- the types


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A settings dataclass's fields and their annotations (Annotated metadata kept)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def setting_names(cls: type) -> list[str]:
    """The keys a file may set in a section of this class: its fields, but those marked Field(exclude=True)
    (left out of the plain mapping and refused on input)."""
    return [name for name, tp in field_types(cls).items() if not _excluded(tp)]


def settings_class(tp: Any) -> type | None:
    """The settings dataclass a field of this type holds (also through Annotated and `| None`), else None."""
    tp = _bare(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        return settings_class(members[0]) if len(members) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def item_class(tp: Any) -> type | None:
    """The settings dataclass of the entries of a list field (tuple[Section, ...]), else None."""
    args = typing.get_args(_bare(tp))
    return settings_class(args[0]) if typing.get_origin(_bare(tp)) is tuple and args[1:] == (Ellipsis,) else None


def accepts(tp: Any) -> str:
    """How a value of this type is written in a config file: 'an integer', "'newton' or 'gd'",
    'a list of mappings', or the string in its Annotated metadata."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        said = [m for m in args[1:] if isinstance(m, str)]
        return said[0] if said else accepts(args[0])
    if origin is Literal:
        return " or ".join(map(repr, args)) if len(args) <= 2 else f"one of {args!r}"
    if origin in (Union, types.UnionType):
        return _or([accepts(member) for member in args])
    if origin is tuple:
        count = "" if args[1:] == (Ellipsis,) else f"{len(args)} "
        return f"a list of {count}{'mappings' if settings_class(args[0]) else _PLURAL.get(_bare(args[0]), 'values')}"
    return "a mapping" if origin is dict or settings_class(tp) else _WRITTEN.get(tp, f"a {getattr(tp, '__name__', tp)}")


def _bare(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _excluded(tp: Any) -> bool:
    extras = typing.get_args(tp)[1:] if typing.get_origin(tp) is Annotated else ()
    return any(isinstance(m, FieldInfo) and m.exclude is True for m in extras)


def _or(parts: list[str], word: str = "or") -> str:
    parts = list(dict.fromkeys(parts))
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} {word} {parts[-1]}"


# ---------------------------------------------------------------------------------------------- parse and serialise


class SettingsCodec:
    """pydantic's validator (numbers strict) and serialiser of one settings dataclass."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.adapter = TypeAdapter(kind)
        self.validator = SchemaValidator(strict_numbers(self.adapter.core_schema))

    def parse(
        self, raw: Any, *, where: str, context: dict[str, Any] | None = None, keys: Mapping[str, str] | None = None
    ) -> Any:
        """The settings in `raw`, or one ConfigError naming `where` and every problem (config_error)."""
        try:
            return self.validator.validate_python(raw, context=context)
        except ValidationError as exc:
            raise config_error(exc, raw, root=self.kind, where=where, keys=keys) from None

    def plain(self, settings: Any) -> dict[str, Any]:
        """The settings as plain JSON types (and .inf), by their fields' serialisers."""
        return self.adapter.dump_python(settings, mode="json")


@functools.cache
def codec_for(kind: type) -> SettingsCodec:
    return SettingsCodec(kind)


def strict_numbers(schema: Any) -> Any:
    """pydantic's validation schema with every int, float and bool strict: a bool is never a number nor a
    number a bool, and a string is neither (pydantic's lax mode takes True as 1, 5.0 as 5 and 'yes' as true).
    One YAML 1.1 spelling is kept: '1e-6' (no dot: a string to PyYAML) is the float it spells."""
    if isinstance(schema, list):
        return [strict_numbers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: value if key in ("metadata", "serialization") else strict_numbers(value) for key, value in schema.items()
    }
    if out.get("type") in ("int", "bool"):
        out["strict"] = True
    elif out.get("type") == "float":
        out = core_schema.no_info_before_validator_function(_yaml_number, {**out, "strict": True})
    return out


def _yaml_number(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


# ---------------------------------------------------------------------------------------------- errors


def config_error(
    exc: ValidationError, raw: Any, *, root: type, where: str, keys: Mapping[str, str] | None = None
) -> ConfigError:
    """One ConfigError for every problem pydantic found in `raw` (validated as `root`), each naming its setting.
    where: the file (or 'config', 'node config'); keys: field name -> the key the file uses for it, when
    that is not the field's name (a node config's 'data-path' for 'data')."""
    spelled = dict(keys or {})
    groups: dict[tuple[str, Loc], list[Any]] = {}
    for error in exc.errors():
        path, tp, rest = _resolve(root, error["loc"])
        if error["type"] in UNKNOWN_KEY:  # a key under `path` (a non-string key is its input), or `path` itself
            key = (error["input"] if error["type"] == "invalid_key" else rest[0]) if rest else path[-1]
            parent = path if rest else path[:-1]
            groups.setdefault(("unknown", parent), []).append(key)
        elif error["type"] == "missing" and not rest:
            groups.setdefault(("missing", path[:-1]), []).append(path[-1])
        else:
            groups.setdefault(("value", path), []).append((tp, error))
    problems = [_problem(kind, path, found, raw, root, spelled) for (kind, path), found in groups.items()]
    if len(problems) == 1:
        return ConfigError(f"{where}: {problems[0]}")
    return ConfigError(f"{where}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def _problem(kind: str, path: Loc, found: list[Any], raw: Any, root: type, spelled: Mapping[str, str]) -> str:
    label = _label(path, raw, spelled, named=kind != "missing")
    cls = settings_class(_resolve(root, path)[1])
    if kind == "unknown":
        allowed = sorted(spelled.get(n, n) for n in setting_names(cls)) if cls else []
        return _under(label, f"unknown key(s) {sorted(set(found), key=repr)}; allowed: {allowed}")  # keys: any scalar
    if kind == "missing":
        needed = [spelled.get(f.name, f.name) for f in dataclasses.fields(cls) if _required(f)] if cls else []
        missing = [spelled.get(n, n) for n in found]
        text = f"{label or 'the config'} needs {_or([repr(n) for n in needed or missing], 'and')}"
        if set(missing) == set(needed):
            return text
        return f"{text} (missing {len(missing)} required: {_or([repr(n) for n in missing], 'and')})"
    checks = [e for _, e in found if e["type"] in CHECK_FAILED and isinstance(e.get("ctx", {}).get("error"), Exception)]
    if checks:
        return _under(label, str(checks[0]["ctx"]["error"]))
    value = _value_at(raw, path, default=found[0][1]["input"])
    text = repr(value)
    return (
        f"{label or 'the config'} must be {accepts(found[0][0])}, got {text if len(text) <= 80 else text[:77] + '...'}"
    )


def _resolve(root: type, loc: Loc) -> tuple[Loc, Any, Loc]:
    """Split a pydantic error location into the setting it names (field names, and indices into lists of
    sections), that setting's annotation, and the rest (a position inside its value, a union member's tag)."""
    tp: Any = root
    for i, seg in enumerate(loc):
        cls = settings_class(tp)
        if cls is not None and isinstance(seg, str) and seg in field_types(cls):
            tp = field_types(cls)[seg]
        elif isinstance(seg, int) and item_class(tp) is not None:
            tp = item_class(tp)
        else:
            return tuple(loc[:i]), tp, tuple(loc[i:])
    return tuple(loc), tp, ()


def _label(path: Loc, raw: Any, spelled: Mapping[str, str], *, named: bool) -> str:
    """A setting as a person finds it in the file: server.rule, synthetic.perturbations[1].time,
    clients[0] (feed): state_dim (an entry's name when it has one, unless `named` is false)."""
    text, after_name = "", False
    for i, seg in enumerate(path):
        if isinstance(seg, int):
            name = _value_at(raw, (*path[: i + 1], "name"), default=None)
            after_name = (
                named and isinstance(name, (str, int)) and not isinstance(name, bool) and bool(str(name).strip())
            )
            text += f"[{seg}]" + (f" ({name})" if after_name else "")
        else:
            text += (": " if after_name else "." if text else "") + spelled.get(seg, seg)
            after_name = False
    return text


def _under(label: str, message: str) -> str:
    """A check's message under its setting's label, without naming the section twice: 'server.tol must be
    > 0' under 'server' stays as it is, 'origin.quantile ...' under 'tep.origin' becomes 'tep.origin.quantile ...'."""
    first = message.split(" ", 1)[0]
    head = first.split(".", 1)[0] if "." in first else None
    if not label or (head and label == head):
        return message
    return label[: -len(head)] + message if head and label.endswith("." + head) else f"{label}: {message}"


def _value_at(raw: Any, path: Loc, *, default: Any) -> Any:
    for seg in path:
        if (isinstance(raw, dict) and seg in raw) or (
            isinstance(raw, list) and isinstance(seg, int) and 0 <= seg < len(raw)
        ):
            raw = raw[seg]
        else:
            return default
    return raw


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# ---------------------------------------------------------------------------------------------- reference


def reference_table(root: type) -> str:
    """Every key of the model as a Markdown table: key (sections dotted, list entries `[]`), type as written in
    the file, default, and meaning (the docstring under the field), in the model's order."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def section(cls: type, prefix: str) -> None:
        meanings = {name: " ".join(doc.split()) for name, doc in field_docstrings(cls).items()}
        defaults = {f.name: f for f in dataclasses.fields(cls)}
        for name in setting_names(cls):
            tp = field_types(cls)[name]
            nested = item_class(tp) or settings_class(tp)
            key = f"{prefix}{name}{'[]' if item_class(tp) else ''}"
            cells = (f"`{key}`", accepts(tp), _default(defaults[name], nested is not None), meanings.get(name, ""))
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            if nested is not None:
                section(nested, f"{key}.")

    section(root, "")
    return "\n".join(lines) + "\n"


def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each field of a settings dataclass and of its dataclass bases, by name: the string
    literal that follows the field's annotated assignment in the class body (PEP 257's attribute docstrings),
    read from the source (none for a class whose source is not installed). Only the reference needs them, so
    the codecs never parse source (pydantic's use_attribute_docstrings did that for every run, 0.1 s of its
    start)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        except (OSError, TypeError):
            continue
        if not isinstance(body, ast.ClassDef):
            continue
        for stmt, after in zip(body.body, body.body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
            ):  # fmt: skip
                docs[stmt.target.id] = after.value.value
    return docs


def _default(f: dataclasses.Field, is_section: bool) -> str:
    if _required(f):
        return "required"
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return "" if is_section and value is not None else json.dumps(value)  # a section's defaults: its keys' rows
