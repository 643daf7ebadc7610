"""Tennessee Eastman process data (Braatz set) split into process-unit clients.

Files (whitespace-separated floats, see the data folder's README.md):

    d00.dat       52 x 500, stored transposed (variables are rows): normal operation, training
    d00_te.dat    960 x 52: normal operation, test
    dNN_te.dat    960 x 52: fault NN switched on at sample 161 (0-based index 160)
    dNN.dat       480 x 52 (full Braatz set only): training runs, recorded from the fault's onset

Columns 1-41 are XMEAS(1..41), 42-52 are XMV(1..11). A *split* maps each client (a process unit)
to variable names; the default is the README's four units (tep_layout.TEP_UNITS). The flowsheet's
material flows between those units are tep_layout.FLOWSHEET_EDGES, as (source, target).

Where the data are: `load_tep(path)` takes a folder; `default_data_path()` is $FEDGC_TEP_DATA if
set, else the repository's own copy `data/tep`. The names (variables, units, flowsheet, runs) are in
fedgc.data.tep_layout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgc.data.csv import write_client_csv
from fedgc.data.tep_layout import ENV_VAR, VARIABLES, default_data_path, parse_run_name, resolve_split
from fedgc.errors import DataError


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
