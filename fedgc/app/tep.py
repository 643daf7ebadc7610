"""Tennessee Eastman units as clients (a config's `tep:` section), and the sections their runs add:

    result.json "flowsheet"     the learned unit graph next to the flowsheet's material flows
    result.json "origin"        {fault run: origin record} when tep.fault_runs is set
    result.json "fault_stream"  a streamed run's alerts against its fault's known start

Each unit is a client. Its local model is identified on `tep.identify_on` (default: the GC run itself)
and the protocol runs on `tep.run`. For the origin analysis every client scores its own innovations
with that same model: it calibrates its threshold on the GC run (normal operation, data it already
holds) and sends the server only its first crossing, onset strength and peak per fault run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from fedgc.analysis.origin import calibrate
from fedgc.analysis.tep import TEPSections, fault_stream_summary, flowsheet_comparison, locate
from fedgc.app.alert_reference import NormalOperation
from fedgc.app.config import ClientSpec, RunConfig, TEPSettings
from fedgc.app.results import RunResult
from fedgc.core.local_model import LocalModel, identify, save_npz
from fedgc.data.tep import TEPRun, load_tep, write_client_csvs
from fedgc.errors import ConfigError


def load_run(settings: TEPSettings, run: str) -> TEPRun:
    """Run `run` of the data folder the `tep:` section names, split into its units."""
    return load_tep(settings.folder, run=run, split=settings.split)


def identify_unit(cfg: RunConfig, i: int, unit: str, values: np.ndarray) -> LocalModel:
    """Unit i's model identified on its (T, P) rows, with the run's seed (TEPClients, the cross-fit reference)."""
    return identify(values, client=unit, rng=np.random.default_rng(cfg.seed + i))


def tep_reference(cfg: RunConfig) -> NormalOperation:
    """tep.identify_on's units, the normal operation that calibrates a stream's alerts, and how a unit
    identifies its model on part of it (identify_unit, as TEPClients does)."""
    tep = cfg.tep
    assert tep is not None and tep.identify_on is not None  # RunConfig refuses a reference without them
    return NormalOperation(load_run(tep, tep.identify_on).clients, partial(identify_unit, cfg))


@dataclass(frozen=True)
class TEPClients:
    """The GC run's data and every unit's local model (identified on tep.identify_on, else on the run)."""

    settings: TEPSettings
    run: TEPRun
    models: dict[str, LocalModel]

    @classmethod
    def of(cls, cfg: RunConfig) -> TEPClients:
        tep = cfg.tep
        if tep is None:
            raise ConfigError(f"{cfg.source or 'config'} has no 'tep' section")
        if cfg.streaming is not None and tep.identify_on in (None, tep.run):
            raise ConfigError(
                f"{cfg.source or 'config'}: streaming over TEP needs tep.identify_on (normal operation, e.g. d00) set "
                f"to a run other than tep.run ({tep.run}): a model identified on the faulty run has learned the fault"
            )
        run = load_run(tep, tep.run)
        train = run if tep.identify_on in (None, tep.run) else load_run(tep, tep.identify_on)
        models = {unit: identify_unit(cfg, i, unit, values) for i, (unit, values) in enumerate(train.clients.items())}
        return cls(tep, run, models)

    @property
    def raw_data_bytes(self) -> int:
        return int(sum(v.nbytes for v in self.run.clients.values()))

    def write(self, cfg: RunConfig, directory: Path) -> RunConfig:
        """Per-client CSVs of the GC run and each unit's identified model (.npz) in `directory`; returns the
        config that reads them (clients list, no tep section) for `fedgc run` and the Flower engines, with the
        Granger test the TEP config resolves to (its units' models are identified, the files' are given)."""
        csvs = write_client_csvs(self.run, directory)
        specs = []
        for unit, model in self.models.items():
            path = Path(directory) / f"{unit}_model.npz"
            save_npz(path, model)
            # held_values: keep, as the in-process run feeds the arrays as they are (both engines see the same data);
            # a private client reads every value as it is anyway, and refuses any cleaning setting
            held = "missing" if cfg.privacy is not None else "keep"
            specs.append(ClientSpec(unit, csvs[unit], None, path, held_values=held))
        return replace(cfg, clients=tuple(specs), tep=None, server=replace(cfg.server, test=cfg.gc_test))

    def add_sections(self, result: RunResult) -> None:
        """The flowsheet comparison, the fault origins (tep.fault_runs) and a stream's fault record."""
        gc = result.fit.gc
        t0 = time.perf_counter()
        flowsheet = flowsheet_comparison(gc.clients, gc.edges, gc.strength, gc.log10_pvalue)
        flowsheet["data"] = {
            "run": self.run.name, "identify_on": self.settings.identify_on or self.run.name, "source": str(self.run.source),
        }  # fmt: skip
        sections = TEPSections(flowsheet)
        if self.settings.fault_runs:
            origin = self.settings.origin
            monitors = {u: calibrate(m, self.run.clients[u], client=u, settings=origin) for u, m in self.models.items()}
            sections.origin = {
                name: locate(load_run(self.settings, name), self.run, monitors, gc, origin)
                for name in self.settings.fault_runs
            }
            result.timings["origin_s"] = time.perf_counter() - t0
        if result.streaming is not None:
            stream = result.streaming.result
            sections.fault_stream = fault_stream_summary(stream.alerts, stream.clients, self.run)
        result.tep = sections
