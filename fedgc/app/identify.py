"""`fedgc identify`: a client's local model fitted on data it is willing to spend, saved as the model file a
private run reads (`model: file.npz`).

A private run must not take anything from the window it protects except through its one accounted
release: which columns it uses, how it standardises them and its model (A, C, Q, R) come from the model
file. `fedgc identify` makes that file from other data (historical or public), with the same column
policies and identification as a non-private run, and names the columns it kept so the private run takes
them by name. The config form (`identify_on:` in a client entry) does the same inside a run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from fedgc.app.clients import identify_model, read_table
from fedgc.app.config import ClientSpec
from fedgc.core.local_model import LocalModel, save_npz
from fedgc.errors import ConfigError
from fedgc.files import file_digest


class Identified(NamedTuple):
    """client: its name; path: the model file written; model: what it holds; dropped: columns left out;
    identified_on: the sha256 of the data file it was identified on (recorded in the model file)."""

    client: str
    path: Path
    model: LocalModel
    dropped: tuple[str, ...]
    identified_on: str


def identify_to_file(spec: ClientSpec, out: Path, *, seed: int = 0, overwrite: bool = False) -> Identified:
    """Identify `spec`'s model on its data file (spec.identify_on when given) and save it to `out`."""
    check_model_path(spec, out, overwrite=overwrite)
    return save_identified(identify_client(spec, out, seed=seed))


def check_model_path(spec: ClientSpec, out: Path, *, overwrite: bool) -> None:
    """`out` may take spec's model file: a .npz path, not an existing file unless `overwrite`."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"client '{spec.name}': the model file {out} must end in .npz")
    if out.is_dir():
        raise ConfigError(f"client '{spec.name}': {out} is a folder; give the model file's path (.npz)")
    if out.exists() and not overwrite:
        raise ConfigError(f"client '{spec.name}': {out} exists; give another path, or --overwrite to replace it")


def identify_client(spec: ClientSpec, out: Path, *, seed: int = 0) -> Identified:
    """`spec`'s model identified on its data file (spec.identify_on when given), to be saved to `out`."""
    source = spec if spec.identify_on is None else replace(spec, data=spec.identify_on)
    table = read_table(source)
    model = identify_model(spec, table, seed)
    dropped = (*table.cleaning.dropped_constant, *(c for c, _ in table.cleaning.dropped_missing))
    return Identified(spec.name, Path(out), model, tuple(dropped), file_digest(source.data))


def save_identified(done: Identified) -> Identified:
    """Write the model file (atomically: an interrupted save leaves the old file or none)."""
    done.path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(done.path, done.model, identified_on=done.identified_on)
    return done
