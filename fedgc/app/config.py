"""The YAML config: clients, server, engine, evaluation. Unknown keys are errors, never ignored.

    name: default
    seed: 0
    engine: local                 # local | flower-sim | flower
    align: none                   # `fedgc run`: none (row t is step t) | timestamp (fedgc.data.align)
    synthetic:                    # `fedgc simulate` only: the generated system
      n_clients: 8
      state_dims: 3               # int or one per client
      obs_dims: 20
      edge_density: 0.25
      edge_strength: 0.3
      snr: 1.0
      n_steps: 4000
      perturbations: [{time: 2000, target: 0, source: 1, action: on}]
    local_models: given           # simulate: given (the true models) | identify
    clients:                      # `fedgc run` only: one entry per client
      - name: feed
        data: data/feed.csv       # relative to this file
        timestamp_column: auto    # auto | none | column name | column index
        model: identify           # identify | path/to/model.npz (arrays A, C, Q, R[, mean, scale])
        state_dim: auto           # auto (parallel analysis) | int
        explained_variance: null  # or a fraction: choose D_m by explained variance
        constant_columns: drop    # drop (with a warning) | error: stuck sensors (fedgc.data.cleaning)
        held_values: missing      # missing | keep: analyser values repeated between samples
        max_missing: 0.5          # drop (with a warning) columns missing in more of their rows
    server: {rule: newton, max_rounds: 20, tol: 1.0e-6, penalty: 0.0, diagonal: fixed,
             learning_rate: null, alpha: 0.05, burn_in: 1,
             on_dropout: stop}        # stop | continue (without the client; its pairs unknown)
    client: {learn_theta: false, theta: linear}
    privacy: off                  # or {epsilon: 10, delta: 1.0e-5, clip: 7.0, accountant: rdp,
                                  #     clip_space: whitened, debias: client, shrink: true, augmentation_noise: false,
                                  #     max_noise_multiplier: 100}
    evaluation: {oracle: true}
    tep: {run: d00_te, identify_on: d00, fault_runs: [d01_te]}   # Tennessee Eastman units as clients
                                  # (instead of synthetic/clients; see fedgc.data.tep.TEPSettings)
    streaming: off                # or {window: 500, step: 500, forgetting: 0.9, alert_alpha: 0.01,
                                  #     max_rounds: 10, tol: 1.0e-4, reset_on_alert: true} (fedgc/streaming.py)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fedgc.data.cleaning import ColumnPolicy
from fedgc.errors import ConfigError
from fedgc.privacy.budget import check_target
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.settings import StreamingConfig
from fedgc.data.synthetic import Perturbation, SystemSpec
from fedgc.analysis.origin import OriginSettings
from fedgc.data.tep import TEPRun, default_data_path, load_tep, parse_run_name, resolve_split

ENGINES = ("local", "flower-sim", "flower")
ALIGN_MODES = ("none", "timestamp")
MAX_SYNTHETIC_CLIENTS = 1000  # a synthetic joint system is (sum D_m)^2 dense: beyond this it cannot be held


@dataclass(frozen=True)
class ClientSpec:
    """One real client: its data file and how its local model is obtained."""

    name: str
    data: Path
    timestamp_column: str | int | None = "auto"
    model: str | Path = "identify"
    state_dim: int | None = None
    explained_variance: float | None = None
    constant_columns: str = "drop"
    held_values: str = "missing"
    max_missing: float = 0.5
    identify_on: Path | None = None

    @property
    def policy(self) -> ColumnPolicy:
        return ColumnPolicy(self.constant_columns, self.held_values, self.max_missing)


@dataclass(frozen=True)
class ClientOptions:
    learn_theta: bool = False
    theta: str = "linear"


@dataclass(frozen=True)
class PrivacySettings:
    """Differential privacy for the whole run, per client (docs/privacy.md).

    epsilon > 0 (.inf: noise-free, for sweeps), 0 < delta < 1: the whole-run target per client and per event;
    event_steps: k, an event is any k consecutive time steps of one client (1: one time step);
    clip: c > 0, or 'auto' (each client derives c from its model: the 0.99 quantile of ||v_t|| under it);
    clip_space: 'whitened' (||J^{-1/2} C^T R^{-1} y_t|| <= c) or 'measurement' (||y_t|| <= c);
    accountant: 'rdp' | 'prv'; debias: 'client' (noise-aware client filter), 'server' (errors-in-variables
    correction of the Gram matrices) or 'none'; max_noise_multiplier: larger sigma is refused as absurd;
    shrink: empirical-Bayes shrinkage of each block of A_s toward zero by its own noise level (newton rule);
    augmentation_noise: also noise every augmentation the server sends (composed as extra releases). Off by
    default: the augmentations are post-processing of the clients' privatised releases (fedgc.privacy.accounting);
    budget: the largest epsilon a client spends on one data file over all runs (its ledger beside the file
    refuses a run that would exceed it); reproducible_noise: derive the noise from the run seed, for tests
    and benchmarks only: such a run is NOT private.
    """

    epsilon: float
    delta: float
    clip: float | str = "auto"
    accountant: str = "rdp"
    clip_space: str = "whitened"
    debias: str = "client"
    max_noise_multiplier: float = 100.0
    shrink: bool = True
    augmentation_noise: bool = False
    event_steps: int = 1
    budget: float | None = None
    reproducible_noise: bool = False

    def __post_init__(self) -> None:
        check_target(epsilon=self.epsilon, delta=self.delta, accountant=self.accountant,
                     max_noise_multiplier=self.max_noise_multiplier)  # fmt: skip
        if self.clip != "auto" and (
            isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or not 0 < self.clip < float("inf")
        ):
            raise ConfigError(f"privacy.clip must be 'auto' or a finite number > 0, got {self.clip!r}")
        if self.clip_space not in ("whitened", "measurement"):
            raise ConfigError(f"privacy.clip_space must be 'whitened' or 'measurement', got {self.clip_space!r}")
        for flag in ("shrink", "augmentation_noise", "reproducible_noise"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"privacy.{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.debias not in ("client", "server", "none"):
            raise ConfigError(f"privacy.debias must be 'client', 'server' or 'none', got {self.debias!r}")
        if isinstance(self.event_steps, bool) or not isinstance(self.event_steps, int) or self.event_steps < 1:
            raise ConfigError(f"privacy.event_steps must be an integer >= 1, got {self.event_steps!r}")
        if self.budget is not None and (
            isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not self.budget > 0
        ):
            raise ConfigError(f"privacy.budget must be a number > 0, got {self.budget!r}")


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    seed: int = 0
    engine: str = "local"
    synthetic: SystemSpec | None = None
    local_models: str = "given"
    clients: tuple[ClientSpec, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    client: ClientOptions = field(default_factory=ClientOptions)
    oracle: bool = True
    source: Path | None = None
    privacy: PrivacySettings | None = None
    tep: TEPSettings | None = None
    streaming: StreamingConfig | None = None
    align: str = "none"


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: e.g. a date like 2024-13-45
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: dict[str, Any], *, base_dir: Path = Path("."), source: Path | None = None) -> RunConfig:
    where = str(source) if source else "config"
    _check_keys(raw, {"name", "seed", "engine", "synthetic", "local_models", "clients", "server", "client", "evaluation", "privacy", "tep", "streaming", "align"}, where)
    align = raw.get("align", "none")
    if align not in ALIGN_MODES:
        raise ConfigError(f"{where}: align must be one of {ALIGN_MODES}, got {align!r}")
    engine = raw.get("engine", "local")
    if engine not in ENGINES:
        raise ConfigError(f"{where}: engine must be one of {ENGINES}, got {engine!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:  # numpy Generators take seeds >= 0
        raise ConfigError(f"{where}: seed must be an integer >= 0, got {seed!r}")
    local_models = raw.get("local_models", "given")
    if local_models not in ("given", "identify"):
        raise ConfigError(f"{where}: local_models must be 'given' or 'identify', got {local_models!r}")
    name = raw.get("name", source.stem if source else "run")
    if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
        raise ConfigError(f"{where}: name must be a non-empty string, got {name!r}")
    synthetic = _parse_synthetic(raw["synthetic"], where) if raw.get("synthetic") is not None else None
    if not isinstance(raw.get("clients") or [], list):
        raise ConfigError(f"{where}: clients must be a list of client entries, got {type(raw['clients']).__name__}")
    clients = tuple(_parse_client(c, i, base_dir, where) for i, c in enumerate(raw.get("clients") or []))
    names = [c.name for c in clients]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: client names must be unique, got {names}")
    server = _build(ServerConfig, raw.get("server") or {}, f"{where}: server")
    client = _build(ClientOptions, raw.get("client") or {}, f"{where}: client")
    if client.theta not in ("linear", "mlp"):
        raise ConfigError(f"{where}: client.theta must be 'linear' or 'mlp', got {client.theta!r}")
    evaluation = raw.get("evaluation") or {}
    _check_keys(evaluation, {"oracle"}, f"{where}: evaluation")
    if not isinstance(evaluation.get("oracle", True), bool):
        raise ConfigError(f"{where}: evaluation.oracle must be true or false, got {evaluation['oracle']!r}")
    privacy = _parse_privacy(raw.get("privacy"), where)
    streamed = raw.get("streaming") not in (None, False, "off")
    tep = parse_tep_section(raw["tep"], base_dir=base_dir, where=where, streaming=streamed) if raw.get("tep") is not None else None
    return RunConfig(
        name=str(name),
        seed=seed,
        engine=engine,
        synthetic=synthetic,
        local_models=local_models,
        clients=clients,
        server=server,
        client=client,
        oracle=bool(evaluation.get("oracle", True)),
        source=source,
        privacy=privacy,
        tep=tep,
        streaming=_parse_streaming(raw.get("streaming"), where),
        align=align,
    )


def _parse_privacy(section: Any, where: str) -> PrivacySettings | None:
    """Absent, null, false or 'off': no privacy. Otherwise a mapping with epsilon, delta and clip."""
    if section is None or section is False or section == "off":
        return None
    _check_keys(section, {f.name for f in fields(PrivacySettings)}, f"{where}: privacy")
    missing = [k for k in ("epsilon", "delta") if k not in section]
    if missing:
        raise ConfigError(f"{where}: privacy needs {missing} (or `privacy: off`)")
    return _build(PrivacySettings, section, f"{where}: privacy")


def _parse_streaming(section: Any, where: str) -> StreamingConfig | None:
    """Absent, null, false or 'off': batch mode. Otherwise a mapping of StreamingConfig fields."""
    if section is None or section is False or section == "off":
        return None
    if section is True or section == "on":
        return StreamingConfig()
    return _build(StreamingConfig, section, f"{where}: streaming")


def _check_keys(section: Any, allowed: set[str], where: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed, key=repr)  # keys may be any YAML scalar
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _build(cls: type, section: Any, where: str) -> Any:
    _check_keys(section, {f.name for f in fields(cls)}, where)
    values = {k: _number_or_value(v) for k, v in section.items()}
    _check_types(cls, values, where)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a missing field, int('abc'), a huge int
        raise ConfigError(f"{where}: {exc}") from exc


# Settings whose YAML type the dataclasses do not check themselves: ints (not bools, not floats) and
# finite real numbers. privacy.epsilon is left out: .inf is a valid (noise-free) target.
_INTS = {"max_rounds", "burn_in", "n_clients", "n_steps", "time", "target", "source", "event_steps"}
_REALS = {
    "tol", "penalty", "alpha", "learning_rate", "edge_density", "edge_strength", "snr", "max_spectral_radius",
    "factor", "delta", "max_noise_multiplier",
}  # fmt: skip
_BOOLS = {"learn_theta", "shrink", "augmentation_noise", "reproducible_noise"}


def _check_types(cls: type, values: dict[str, Any], where: str) -> None:
    nullable = {f.name for f in fields(cls) if f.default is None}
    for key, value in values.items():
        if value is None and key in nullable:
            continue
        if key in _INTS and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        if key in _REALS and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        if key in _BOOLS and not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")


def _number_or_value(value: Any) -> Any:
    """YAML 1.1 reads '1e-6' (no dot) as a string; take it as the number a person meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _parse_synthetic(section: Any, where: str) -> SystemSpec:
    section = dict(section) if isinstance(section, dict) else section
    _check_keys(section, {f.name for f in fields(SystemSpec)}, f"{where}: synthetic")
    n = section.get("n_clients")
    if isinstance(n, int) and not isinstance(n, bool) and n > MAX_SYNTHETIC_CLIENTS:
        raise ConfigError(f"{where}: synthetic.n_clients must be at most {MAX_SYNTHETIC_CLIENTS}, got {n}")
    for key in ("state_dims", "obs_dims"):
        dims = section.get(key, 1)
        items = dims if isinstance(dims, list) else [dims]
        if not items or any(isinstance(d, bool) or not isinstance(d, int) for d in items):
            raise ConfigError(f"{where}: synthetic.{key} must be an integer or a list of integers, got {dims!r}")
    listed = section.pop("perturbations", None) or []
    if not isinstance(listed, list):
        raise ConfigError(f"{where}: synthetic.perturbations must be a list, got {listed!r}")
    perturbations = []
    for i, p in enumerate(listed):
        label = f"{where}: synthetic.perturbations[{i}]"
        _check_keys(p, {f.name for f in fields(Perturbation)}, label)
        if p.get("action") not in ("on", "off", "scale"):
            raise ConfigError(f"{label}.action must be on, off or scale")
        perturbations.append(_build(Perturbation, p, label))
    if "self_eig_range" in section:
        lo_hi = section["self_eig_range"]
        if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in lo_hi
        )):  # fmt: skip
            raise ConfigError(f"{where}: synthetic.self_eig_range must be [lo, hi], two numbers, got {lo_hi!r}")
        section["self_eig_range"] = tuple(lo_hi)
    spec = _build(SystemSpec, {**section, "perturbations": tuple(perturbations)}, f"{where}: synthetic")
    if not spec.self_eig_range[1] < spec.max_spectral_radius < 1:  # reachable only by shrinking cross blocks
        raise ConfigError(
            f"{where}: synthetic.max_spectral_radius must lie between self_eig_range's upper end "
            f"({spec.self_eig_range[1]}) and 1, got {spec.max_spectral_radius}"
        )
    return spec


def _parse_client(entry: Any, i: int, base_dir: Path, where: str) -> ClientSpec:
    label = f"{where}: clients[{i}]"
    _check_keys(entry, {f.name for f in fields(ClientSpec)}, label)
    if "name" not in entry or "data" not in entry:
        raise ConfigError(f"{label} needs 'name' and 'data'")
    name = entry["name"]
    if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
        raise ConfigError(f"{label}: name must be a non-empty string, got {name!r}")
    label = f"{label} ({name})"
    for key in ("data", "model", "identify_on"):
        if key in entry and not (isinstance(entry[key], str) and entry[key].strip() and "\0" not in entry[key]):
            raise ConfigError(f"{label}: {key} must be a file path, got {entry[key]!r}")
    data = Path(entry["data"])
    data = data if data.is_absolute() else base_dir / data
    identify_on = None
    if entry.get("identify_on") is not None:
        identify_on = Path(entry["identify_on"])
        identify_on = identify_on if identify_on.is_absolute() else base_dir / identify_on
        if entry.get("model", "identify") != "identify":
            raise ConfigError(f"{label}: give either model (a .npz) or identify_on (a file to identify it on), not both")
    model = entry.get("model", "identify")
    if model != "identify":
        model = Path(model) if Path(model).is_absolute() else base_dir / model
    state_dim = entry.get("state_dim", "auto")
    if state_dim == "auto":
        state_dim = None
    elif isinstance(state_dim, bool) or not (isinstance(state_dim, int) and state_dim >= 1):
        raise ConfigError(f"{label}: state_dim must be 'auto' or a positive integer, got {state_dim!r}")
    ev = entry.get("explained_variance")
    if ev is not None and (isinstance(ev, bool) or not (isinstance(ev, (int, float)) and 0 < ev < 1)):
        raise ConfigError(f"{label}: explained_variance must lie in (0, 1), got {ev!r}")
    ts = entry.get("timestamp_column", "auto")
    ts = None if ts in ("none", None) else ts
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (str, int))):
        raise ConfigError(f"{label}: timestamp_column must be 'auto', 'none', a column name or index, got {ts!r}")
    columns = {k: _number_or_value(entry[k]) for k in ("constant_columns", "held_values", "max_missing") if k in entry}
    spec = ClientSpec(str(name), data, ts, model, state_dim, ev, **columns, identify_on=identify_on)
    try:
        spec.policy
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    return spec


# ----------------------------------------------------------------------------- tep section


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
    origin: OriginSettings | None = None

    @property
    def folder(self) -> Path:
        return default_data_path() if self.path is None else self.path

    def load(self, run: str) -> TEPRun:
        return load_tep(self.folder, run=run, split=self.split)


def parse_tep_section(section: object, *, base_dir: Path, where: str, streaming: bool = False) -> TEPSettings:
    """A TEPSettings from the YAML mapping; every problem is a ConfigError naming the key.
    streaming: the run is streamed, so tep.run may be a fault run (the GC of a batch run needs normal operation)."""
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
