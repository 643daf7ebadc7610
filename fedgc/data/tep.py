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
    from fedgc.data.csv import write_client_csv

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for unit, values in run.clients.items():
        paths[unit] = directory / f"{run.name}_{unit}.csv"
        write_client_csv(paths[unit], values, columns=run.columns[unit])
    return paths


# ----------------------------------------------------------------------------- config section


@dataclass(frozen=True)
class TEPSettings:
    """The `tep:` section of a run config (fedgc.app.config):

        tep:
          path: null            # data folder, relative to the YAML file; null: $FEDGC_TEP_DATA, else the repository's data/tep
          run: d00_te           # the window the GC protocol runs on (normal operation)
          identify_on: d00      # the run each client identifies its local model on (null: `run` itself)
          split: default        # or {unit: [XMEAS(1), XMV(2), ...], ...}
          fault_runs: [d01_te, d04_te]   # fault-origin analysis (fedgc.analysis.origin), thresholds calibrated on `run`
          origin: {quantile: 0.99, run_length: 3, tie_window: 2}
    """

    path: Path | None = None
    run: str = "d00_te"
    identify_on: str | None = None
    split: dict[str, tuple[str, ...]] | None = None
    fault_runs: tuple[str, ...] = ()
    origin: "OriginSettings | None" = None

    @property
    def folder(self) -> Path:
        return default_data_path() if self.path is None else self.path

    def load(self, run: str) -> TEPRun:
        return load_tep(self.folder, run=run, split=self.split)


def parse_tep_section(section: object, *, base_dir: Path, where: str, streaming: bool = False) -> TEPSettings:
    """A TEPSettings from the YAML mapping; every problem is a ConfigError naming the key.
    streaming: the run is streamed, so tep.run may be a fault run (the GC of a batch run needs normal operation)."""
    from fedgc.analysis.origin import OriginSettings

    label = f"{where}: tep"
    allowed = {"path", "run", "identify_on", "split", "fault_runs", "origin"}
    if not isinstance(section, dict):
        raise ConfigError(f"{label} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    path = section.get("path")
    if path is not None:
        path = Path(str(path)).expanduser()
        path = path if path.is_absolute() else base_dir / path
    runs = {}
    for key, default in (("run", "d00_te"), ("identify_on", None)):
        value = section.get(key, default)
        if value is not None:
            try:
                parse_run_name(str(value))
            except ConfigError as exc:
                raise ConfigError(f"{label}.{key}: {exc}") from None
            if parse_run_name(str(value))[0] is not None and not (streaming and key == "run"):
                raise ConfigError(
                    f"{label}.{key} must be a normal-operation run (d00, d00_te), got {value!r}"
                    + ("" if key != "run" else " (a fault run can be streamed: add a 'streaming' section)")
                )
        runs[key] = None if value is None else str(value)
    fault_runs = section.get("fault_runs") or []
    if isinstance(fault_runs, str) or not isinstance(fault_runs, list):
        raise ConfigError(f"{label}.fault_runs must be a list of run names, got {fault_runs!r}")
    for r in fault_runs:
        try:
            fault, _ = parse_run_name(str(r))
        except ConfigError as exc:
            raise ConfigError(f"{label}.fault_runs: {exc}") from None
        if fault is None:
            raise ConfigError(f"{label}.fault_runs: {r!r} is normal operation, not a fault run")
    split = section.get("split", "default")
    try:
        split = None if split in (None, "default") else resolve_split(split)
    except ConfigError as exc:
        raise ConfigError(f"{label}.split: {exc}") from None
    origin = section.get("origin") or {}
    if not isinstance(origin, dict) or set(origin) - set(OriginSettings._fields):
        raise ConfigError(f"{label}.origin must be a mapping with keys among {list(OriginSettings._fields)}, got {origin!r}")
    return TEPSettings(
        path=path,
        run=runs["run"],
        identify_on=runs["identify_on"],
        split=split,
        fault_runs=tuple(str(r) for r in fault_runs),
        origin=OriginSettings(**origin).validated(f"{label}.origin"),
    )


# ----------------------------------------------------------------------------- flowsheet comparison


def flowsheet_comparison(
    clients: Sequence[str],
    edges: np.ndarray,
    strength: np.ndarray,
    log10_pvalue: np.ndarray,
    *,
    flowsheet: Sequence[tuple[str, str]] = FLOWSHEET_EDGES,
) -> dict:
    """Every ordered pair (source, target) of units: flowsheet edge yes/no next to the learned edge,
    strength and p-value; counts and the AUROC of the p-value ranking against the flowsheet.

    Matrices are (M, M) indexed [target, source] (fedgc.core.granger.GCResult). Pairs of units the
    flowsheet does not name (a user-given split) are left out and listed under "not_compared".
    """
    from fedgc.analysis.metrics import auroc

    known = {u for pair in flowsheet for u in pair}
    flows = set(map(tuple, flowsheet))
    pairs, outside = [], []
    for m, target in enumerate(clients):
        for n, source in enumerate(clients):
            if m == n:
                continue
            if source not in known or target not in known:
                outside.append([source, target])
                continue
            logp = float(log10_pvalue[m, n])
            pairs.append(
                {
                    "source": source,
                    "target": target,
                    "flowsheet": (source, target) in flows,
                    "learned": bool(edges[m, n]),
                    "strength": float(strength[m, n]),
                    "pvalue": 10.0**logp,
                    "log10_pvalue": logp,
                }
            )
    flow = np.array([p["flowsheet"] for p in pairs], dtype=bool)
    learned = np.array([p["learned"] for p in pairs], dtype=bool)
    counts = {
        "pairs": len(pairs),
        "both": int((flow & learned).sum()),
        "flowsheet_only": int((flow & ~learned).sum()),
        "learned_only": int((~flow & learned).sum()),
        "neither": int((~flow & ~learned).sum()),
    }
    counts["agreement"] = (counts["both"] + counts["neither"]) / len(pairs) if pairs else None
    score = -np.array([p["log10_pvalue"] for p in pairs], dtype=float)
    return {
        "pairs": pairs,
        "counts": counts,
        "auroc": auroc(score, flow) if pairs else None,
        "not_compared": outside,
        "note": (
            "Flowsheet edges are the material flows between units; closed-loop control adds feedback "
            "paths (a controller in one unit acting on a valve in another), so learned edges that are not "
            "material flows are expected and are not errors of the test."
        ),
    }


def flowsheet_markdown(data: Mapping) -> list[str]:
    """Report lines for result.json's "flowsheet"."""
    fs = data.get("flowsheet") if isinstance(data, Mapping) else None
    if not fs:
        return []
    c = fs["counts"]
    auroc = fs.get("auroc")
    lines = [
        "## Learned unit graph vs the flowsheet",
        "",
        "| source -> target | flowsheet edge | learned edge | strength | p-value |",
        "|---|:---:|:---:|---:|---:|",
    ]
    for p in sorted(fs["pairs"], key=lambda p: (not p["flowsheet"], p["log10_pvalue"])):
        lines.append(
            f"| {p['source']} -> {p['target']} | {'yes' if p['flowsheet'] else 'no'} | {'yes' if p['learned'] else 'no'} "
            f"| {p['strength']:.3g} | {_pvalue(p['log10_pvalue'])} |"
        )
    agreement = "n/a" if c["agreement"] is None else f"{c['agreement']:.2f}"
    lines += [
        "",
        f"Of {c['pairs']} ordered pairs: {c['both']} flowsheet edges learned, {c['flowsheet_only']} flowsheet edges "
        f"missed, {c['learned_only']} learned edges that are not material flows, {c['neither']} pairs with neither "
        f"(agreement {agreement}); AUROC of the p-value ranking against the flowsheet "
        f"{'n/a' if auroc is None or auroc != auroc else f'{auroc:.2f}'}.",
        "",
        fs.get("note", ""),
        "",
    ]
    if fs.get("not_compared"):
        lines += [f"Not compared (units the flowsheet does not name): {fs['not_compared']}.", ""]
    return lines


def _pvalue(log10_p: float) -> str:
    from fedgc.report.result_json import format_pvalue

    return format_pvalue(log10_p)
