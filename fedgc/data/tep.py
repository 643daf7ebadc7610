"""Tennessee Eastman process data (Braatz set) split into process-unit clients.

Files (whitespace-separated floats, see the data folder's README.md):

    d00.dat       52 x 500, stored transposed (variables are rows): normal operation, training
    d00_te.dat    960 x 52: normal operation, test
    dNN_te.dat    960 x 52: fault NN switched on at sample 161 (0-based index 160)
    dNN.dat       480 x 52 (full Braatz set only): training runs, recorded from the fault's onset

Columns 1-41 are XMEAS(1..41), 42-52 are XMV(1..11). A *split* maps each client (a process unit)
to variable names; the default is the README's four units (TEP_UNITS). The flowsheet's material
flows between those units are FLOWSHEET_EDGES, as (source, target).

Where the data are: `load_tep(path)` takes a folder; `default_data_path()` is $FEDGC_TEP_DATA if
set, else the repository's own copy `data/tep`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fedgc.data.csv import write_client_csv
from fedgc.errors import ConfigError, DataError

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


@dataclass(frozen=True)
class TEPRun:
    """One TEP run split into clients.

    clients: unit -> (T, P_m) float64 raw values;  columns: unit -> its P_m variable names;
    fault: IDV number (None for normal operation d00/d00_te);  fault_start: 0-based index of the
    first faulty sample (160 for dNN_te, 0 for training runs dNN, None for normal operation);
    name: the run ('d01_te');  source: the file read.
    """

    name: str
    clients: dict[str, np.ndarray]
    columns: dict[str, list[str]]
    fault: int | None
    fault_start: int | None
    source: Path

    @property
    def n_steps(self) -> int:
        return next(iter(self.clients.values())).shape[0]


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


def read_tep_file(file: Path) -> np.ndarray:
    """(T, 52) float64 from a Braatz .dat file; a file stored transposed (52 rows) is turned round."""
    if not file.is_file():
        raise DataError(f"TEP data file {file} does not exist")
    try:
        values = np.loadtxt(file, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"TEP data file {file} is not a whitespace-separated table of numbers: {exc}") from exc
    n_vars = len(VARIABLES)
    if values.shape[1] != n_vars:
        if values.shape[0] != n_vars:
            raise DataError(f"TEP data file {file} has shape {values.shape}; expected (T, {n_vars}) or ({n_vars}, T)")
        values = values.T
    if not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise DataError(f"TEP data file {file}: non-finite value at sample {row + 1}")
    return np.ascontiguousarray(values)


def load_tep(
    path: str | os.PathLike | None = None,
    *,
    run: str = "d00_te",
    split: Mapping[str, Sequence[str]] | None = None,
) -> TEPRun:
    """Read `<path>/<run>.dat` (path None: default_data_path()) and split its 52 variables into clients."""
    folder = default_data_path() if path is None else Path(path)
    fault, fault_start = parse_run_name(run)
    units = resolve_split(split)
    if not folder.is_dir():
        raise DataError(
            f"TEP data folder {folder} does not exist (give its path, or set {ENV_VAR} to the folder with d00_te.dat)"
        )
    file = folder / f"{run}.dat"
    if not file.is_file():
        available = sorted(p.stem for p in folder.glob("d*.dat"))
        raise DataError(f"TEP run {run!r}: {file} does not exist; runs in {folder}: {available}")
    values = read_tep_file(file)
    index = {name: j for j, name in enumerate(VARIABLES)}
    clients = {u: values[:, [index[v] for v in names]].copy() for u, names in units.items()}
    if fault_start is not None and fault_start >= values.shape[0]:
        raise DataError(f"TEP run {run!r} has {values.shape[0]} samples, none after the fault start {fault_start}")
    return TEPRun(run, clients, {u: list(n) for u, n in units.items()}, fault, fault_start, file)


def write_client_csvs(run: TEPRun, directory: str | os.PathLike) -> dict[str, Path]:
    """One CSV per client (header = variable names, no timestamps) that `fedgc run` and Flower nodes read.
    Returns unit -> path; files are named `<run>_<unit>.csv`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for unit, values in run.clients.items():
        paths[unit] = directory / f"{run.name}_{unit}.csv"
        write_client_csv(paths[unit], values, columns=run.columns[unit])
    return paths
