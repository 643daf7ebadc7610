"""Command lines of fedgc's Flower launchers (flwr_internals.supernode, .superlink): their own
`--fedgc-NAME VALUE` / `--fedgc-NAME=VALUE` flags (numbers), every other argument passed on to
Flower's program unchanged and in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PREFIX = "--fedgc-"


def split_flags(argv: Sequence[str], defaults: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """(values by NAME with "-" as "_", the rest of argv). `defaults` is keyed by NAME."""
    values = {name: float(v) for name, v in defaults.items()}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        key, eq, value = arg.partition("=")
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else None
        if name in values:
            if not eq:
                value = next(it, None)
                if value is None:
                    raise SystemExit(f"{key} needs a value")
            try:
                values[name] = float(value)
            except ValueError:
                raise SystemExit(f"{key}: {value!r} is not a number") from None
        else:
            rest.append(arg)
    return {name.replace("-", "_"): v for name, v in values.items()}, rest
