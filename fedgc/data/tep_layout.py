"""The layout of the Tennessee Eastman data (Braatz set): its variables, the process units that are
fedgc's clients (a *split*), the flowsheet between them, where each fault starts, the runs' names and
where the files are. Only names and paths: reading the files is fedgc.data.tep's (a run config checks
its `tep:` section with these, without loading numeric libraries)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedgc.errors import ConfigError

N_XMEAS, N_XMV = 41, 11
VARIABLES: tuple[str, ...] = tuple(f"XMEAS({k})" for k in range(1, N_XMEAS + 1)) + tuple(
    f"XMV({k})" for k in range(1, N_XMV + 1)
)
FAULT_START_TE = 160  # dNN_te: fault on at sample 161 (1-based), after 8 h of 3-minute samples
ENV_VAR = "FEDGC_TEP_DATA"


def _names(xmeas: Sequence[int], xmv: Sequence[int]) -> tuple[str, ...]:
    return tuple(f"XMEAS({k})" for k in xmeas) + tuple(f"XMV({k})" for k in xmv)


TEP_UNITS: dict[str, tuple[str, ...]] = {
    "feed": _names(range(1, 5), range(1, 5)),
    "reactor": _names([5, 6, 7, 8, 9, 21, *range(23, 29)], [10]),
    "separator": _names([10, 11, 12, 13, 14, 20, 22, *range(29, 37)], [5, 6, 7, 11]),
    "stripper": _names([*range(15, 20), *range(37, 42)], [8, 9]),
}

# Material flows of the flowsheet (README): feeds 1-3 to the reactor, feed 4 to the stripper, reactor
# effluent to the separator, recycle back to the reactor, separator underflow to the stripper,
# stripper overhead to the reactor feed.
FLOWSHEET_EDGES: tuple[tuple[str, str], ...] = (
    ("feed", "reactor"),
    ("feed", "stripper"),
    ("reactor", "separator"),
    ("separator", "reactor"),
    ("separator", "stripper"),
    ("stripper", "reactor"),
)

# Where each fault of the README originates (IDV numbers of Downs & Vogel).
FAULT_ORIGINS: dict[int, str] = {1: "feed", 2: "feed", 6: "feed", 7: "feed", 4: "reactor", 11: "reactor"}

_RUN = re.compile(r"^d(\d{2})(_te)?$")


def default_data_path() -> Path:
    """$FEDGC_TEP_DATA if set, else the repository's own copy `data/tep` (with its LICENSE)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "tep"


def parse_run_name(run: str) -> tuple[int | None, int | None]:
    """(fault, fault_start) of a run name: d00/d00_te -> (None, None), d04_te -> (4, 160), d04 -> (4, 0)."""
    match = _RUN.match(run)
    if match is None:
        raise ConfigError(f"TEP run name must look like 'd00', 'd00_te' or 'd04_te', got {run!r}")
    fault = int(match.group(1))
    if fault == 0:
        return None, None
    return fault, FAULT_START_TE if match.group(2) else 0


def resolve_split(split: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Validate a split (unit -> variable names, e.g. 'XMEAS(7)', 'XMV(10)'; case and spaces are ignored).

    None is TEP_UNITS. Variables may be left out (they are dropped); every unit needs at least two
    (a local model needs more sensors than states); a variable may belong to one unit only.
    """
    if split is None:
        return dict(TEP_UNITS)
    if not isinstance(split, Mapping) or not split:
        raise ConfigError(f"TEP split must be a non-empty mapping unit -> list of variable names, got {split!r}")
    known = set(VARIABLES)
    owner: dict[str, str] = {}
    out: dict[str, tuple[str, ...]] = {}
    for unit, names in split.items():
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ConfigError(f"TEP split: unit {unit!r} must list variable names, got {names!r}")
        clean = []
        for raw in names:
            name = re.sub(r"\s+", "", str(raw)).upper()
            if name not in known:
                raise ConfigError(
                    f"TEP split: unit {unit!r} names unknown variable {raw!r}; variables are XMEAS(1)..XMEAS(41) "
                    "and XMV(1)..XMV(11)"
                )
            if name in owner:
                where = "twice" if owner[name] == unit else f"in both {owner[name]!r} and {unit!r}"
                raise ConfigError(f"TEP split: variable {name} is listed {where}; units must not overlap")
            owner[name] = str(unit)
            clean.append(name)
        if len(clean) < 2:
            raise ConfigError(f"TEP split: unit {unit!r} has {len(clean)} variable(s); a client needs at least 2")
        out[str(unit)] = tuple(clean)
    if len(out) < 2:
        raise ConfigError(f"TEP split needs at least two units, got {list(out)}")
    return out
