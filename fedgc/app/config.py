"""The run config: one typed model of the YAML file, its only parser and its only serialiser.

    name: default                 # every key, its type, default and meaning: config_reference()
    synthetic: {n_clients: 8, state_dims: 3, obs_dims: 20}       # `fedgc simulate`, or
    clients: [{name: feed, data: data/feed.csv, model: identify}]  # `fedgc run`, or
    tep: {run: d00_te, identify_on: d00, fault_runs: [d01_te]}    # Tennessee Eastman units
    server: {rule: newton, max_rounds: 20, tol: 1.0e-6}
    privacy: off
    streaming: off

The settings are frozen dataclasses (here, and ServerConfig, StreamingConfig in fedgc.protocol.settings,
SystemSpec in fedgc.data.synthetic_spec, OriginSettings in fedgc.analysis.origin_settings) whose __post_init__ keeps
their invariants (ConfigError) however they are built; pydantic reads and writes them from their annotations.

- parse_config / load_config: a mapping (a YAML file) -> RunConfig. Unknown keys are errors; a bool is never
  a number nor a number a bool; numbers are finite (privacy.epsilon may be .inf); paths are relative to the
  YAML file (the validation context's base_dir). YAML 1.1 spellings are kept: '1e-6' (a string to PyYAML)
  is the number it spells; `state_dim: auto`, `timestamp_column: none`, `privacy: off`, `streaming: off |
  on | true`; an empty section (`server:` with nothing under it) has its defaults. All problems become one
  ConfigError naming the file and each setting (fedgc.app.config_schema).
- config_from_files: the RunConfig of `fedgc run --data a.csv --data b.csv` (one client per file).
- to_plain: a RunConfig, or one of its sections -> the plain mapping parse_config reads back (JSON types,
  paths absolute): the deployed engine's run config, the checkpoint's fingerprint, result.json's "server".
- ClientSpec.to_node_config / from_node_config: a client <-> a SuperNode's node config (its `clients:`
  entry under the keys of ClientSpec.NODE_CONFIG_KEYS: data-path, client-name, model-path, state-dim, ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, ValidationInfo
from pydantic_core import PydanticCustomError

from fedgc.analysis.origin_settings import OriginSettings
from fedgc.app.config_schema import codec_for, reference_table
from fedgc.data.column_policy import ColumnPolicy
from fedgc.data.synthetic_spec import SystemSpec
from fedgc.data.tep_layout import default_data_path, parse_run_name, resolve_split
from fedgc.errors import ConfigError
from fedgc.privacy.budget import check_target
from fedgc.protocol.settings import ServerConfig, StreamingConfig
from fedgc.settings_config import SETTINGS_CONFIG

Engine = Literal["local", "flower-sim", "flower"]
AlignMode = Literal["none", "timestamp"]
ENGINES: tuple[str, ...] = get_args(Engine)
ALIGN_MODES: tuple[str, ...] = get_args(AlignMode)
# The YAML parser is looked up by name when a config file is read: `fedgc run --data ...` reads none.
YAML_MODULE = "yaml"


# ---------------------------------------------------------------------------------------------- spellings


def _reads(*spellings: tuple[Any, Any]) -> BeforeValidator:
    """(word, value) pairs: a setting written as `word` (a string, or None, False, True) reads as `value`."""

    def read(given: Any) -> Any:
        said = (value for word, value in spellings if given is word or (isinstance(word, str) and given == word))
        return next(said, given)

    return BeforeValidator(read)


def _path_text(value: Any) -> Any:
    """A path is a non-empty string without NUL characters."""
    if isinstance(value, Path) or (isinstance(value, str) and value.strip() and "\0" not in value):
        return value
    raise PydanticCustomError("path_type", "Input is not a valid path")


def _in_config_folder(path: Path, info: ValidationInfo) -> Path:
    """A relative path is relative to the config file's folder (the validation context's base_dir)."""
    return path if path.is_absolute() else Path((info.context or {}).get("base_dir", ".")) / path


def _not_in_the_file(value: Any) -> Any:
    raise PydanticCustomError("unexpected_keyword_argument", "Unexpected keyword argument")


def _fault_of(key: str, run: str) -> int | None:
    """The fault of a TEP run name (None: normal operation); a bad name is a ConfigError under `key`."""
    try:
        return parse_run_name(run)[0]
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


Name = Annotated[str, "a non-empty string", BeforeValidator(lambda v: str(v) if type(v) is int else v)]  # `name: 2024`
_ABSOLUTE = PlainSerializer(lambda path: str(path.resolve()))  # written out absolute: read back from anywhere
FilePath = Annotated[Path, BeforeValidator(_path_text), AfterValidator(_in_config_folder), _ABSOLUTE]
FolderPath = Annotated[
    Path, "a folder path", BeforeValidator(_path_text), AfterValidator(Path.expanduser),
    AfterValidator(_in_config_folder), _ABSOLUTE,
]  # fmt: skip
EMPTY_IF_NULL, EMPTY_LIST_IF_NULL = _reads((None, {})), _reads((None, []))  # `server:` with nothing under it


# ---------------------------------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class ClientSpec:
    """One real client: its data file and how its local model is obtained (an entry of `clients:`)."""

    __pydantic_config__ = SETTINGS_CONFIG
    NODE_CONFIG_KEYS: ClassVar[dict[str, str]] = {
        "name": "client-name", "data": "data-path", "timestamp_column": "timestamp-column", "model": "model-path",
        "state_dim": "state-dim", "explained_variance": "explained-variance", "constant_columns": "constant-columns",
        "held_values": "held-values", "max_missing": "max-missing", "identify_on": "identify-on",
    }  # fmt: skip

    name: Name
    """The client's name, unique in the run."""
    data: FilePath
    """Its CSV file (relative to the config file)."""
    timestamp_column: Annotated[
        str | int | None, "'auto', 'none', a column name or index", _reads(("none", None)),
        PlainSerializer(lambda ts: "none" if ts is None else ts),
    ] = "auto"  # fmt: skip
    """'auto': the first column when it holds times; 'none': no timestamps; or a column name or index."""
    model: Literal["identify"] | FilePath = "identify"
    """'identify': learned from the data; or a .npz file, relative to the config file (arrays A, C, Q, R[, mean, scale])."""
    state_dim: Annotated[int | None, "'auto' or a positive integer", _reads(("auto", None))] = None
    """D_m when the model is identified; 'auto' (null): by parallel analysis."""
    explained_variance: float | None = None
    """Or choose D_m by the share of variance it explains, in (0, 1)."""
    constant_columns: Literal["drop", "error"] = "drop"
    """A stuck sensor's constant column: 'drop' (with a warning) or 'error' (fedgc.data.cleaning)."""
    held_values: Literal["missing", "keep"] = "missing"
    """Analyser values repeated between samples: 'missing' (the repeats become missing values) or 'keep'."""
    max_missing: float = 0.5
    """A column missing in more than this share of its rows is dropped (with a warning), in [0, 1)."""
    identify_on: FilePath | None = None
    """Identify the model on this file instead (other data the client may spend: historical or public), with
    the column policies above; the run then takes the model's columns by name (a private run may). A stream's
    streaming.alert_calibration takes it as the client's normal operation."""

    def __post_init__(self) -> None:
        if self.identify_on is not None and self.model != "identify":
            raise ConfigError("give either model (a .npz) or identify_on (a file to identify it on), not both")
        if not str(self.name).strip():
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        sd = self.state_dim
        if sd is not None and (isinstance(sd, bool) or not isinstance(sd, int) or sd < 1):
            raise ConfigError(f"state_dim must be 'auto' or a positive integer, got {sd!r}")
        ev = self.explained_variance
        if ev is not None and not 0 < ev < 1:
            raise ConfigError(f"explained_variance must lie in (0, 1), got {ev!r}")
        try:
            _ = self.policy  # the column policy checks its own values
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def policy(self) -> ColumnPolicy:
        return ColumnPolicy(self.constant_columns, self.held_values, self.max_missing)

    def to_node_config(self) -> dict[str, str | int | float]:
        """This client as a SuperNode's node config: its settings under their NODE_CONFIG_KEYS (paths absolute;
        unset ones left out)."""
        return {self.NODE_CONFIG_KEYS[key]: value for key, value in to_plain(self).items() if value is not None}

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> ClientSpec:
        """The client a SuperNode's node config describes, validated as a `clients:` entry (relative paths are
        relative to the working directory); client-name defaults to the data file's name without suffix."""
        field_of = {key: name for name, key in cls.NODE_CONFIG_KEYS.items()}
        entry = {field_of.get(key, key): value for key, value in node_config.items()}
        if "name" not in entry and isinstance(entry.get("data"), str):
            entry["name"] = Path(entry["data"]).stem
        return codec_for(cls).parse(entry, where="node config", keys=cls.NODE_CONFIG_KEYS)


@dataclass(frozen=True)
class ClientOptions:
    """What every client does besides filtering (the `client:` section)."""

    __pydantic_config__ = SETTINGS_CONFIG

    learn_theta: bool = False
    """Learn f_theta, each client's map of the augmentation term, on its own prediction loss (fedgc.core.theta)."""
    theta: Literal["linear", "mlp"] = "linear"
    """Form of f_theta: 'linear' (theta s) or 'mlp' (plus a residual two-layer correction)."""


@dataclass(frozen=True)
class PrivacySettings:
    """Differential privacy for the whole run, per client (the `privacy:` section; DESIGN.md section 4)."""

    __pydantic_config__ = SETTINGS_CONFIG

    epsilon: Annotated[float, Field(allow_inf_nan=True), "a number > 0 (.inf: noise-free)"]
    """The whole run's epsilon per client, > 0 (.inf: noise-free, for sweeps)."""
    delta: float
    """The whole run's delta per client, in (0, 1)."""
    clip: Annotated[float | Literal["auto"], "'auto' or a number > 0"] = "auto"
    """Clipping bound c > 0 of each time step's measurements (in clip_space); 'auto': each client derives c from
    its model (the 0.99 quantile of the row norm under it)."""
    accountant: Literal["rdp", "prv"] = "rdp"
    """Privacy accountant: 'rdp' or 'prv'."""
    clip_space: Literal["whitened", "measurement"] = "whitened"
    """'whitened': ||J^{-1/2} C^T R^{-1} y_t|| <= c; 'measurement': ||y_t|| <= c."""
    debias: Literal["client", "server", "none"] = "client"
    """'client': noise-aware client filter; 'server': errors-in-variables correction of the Gram matrices; 'none'."""
    max_noise_multiplier: float = 100.0
    """A target needing a larger noise multiplier sigma is refused as absurd (> 0)."""
    shrink: bool = True
    """Empirical-Bayes shrinkage of each block of A_s toward zero by its own noise level (newton rule)."""
    augmentation_noise: bool = False
    """Also noise every augmentation the server sends (composed as extra releases); off, they are
    post-processing of the clients' privatised releases (fedgc.privacy.accounting)."""
    event_steps: int = 1
    """An event is this many consecutive time steps of one client; epsilon protects every event (and one step
    alone at the smaller one-step epsilon); the noise grows by sqrt(event_steps)."""
    budget: float | None = None
    """The largest epsilon a client may spend on one data file over all runs; its ledger beside the file
    refuses a run that would exceed it, before releasing anything; null: no cap (spends are still recorded)."""
    reproducible_noise: bool = False
    """Derive the noise from the run seed (tests and benchmarks only): such a run is NOT private."""

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
        if self.budget is not None and not self.budget > 0:
            raise ConfigError(f"privacy.budget must be a number > 0, got {self.budget!r}")


@dataclass(frozen=True)
class EvaluationSettings:
    """What a run is scored against besides a synthetic scenario's truth (the `evaluation:` section)."""

    __pydantic_config__ = SETTINGS_CONFIG

    oracle: Annotated[bool | None, "true, false or 'auto'", _reads(("auto", None))] = None
    """Also fit the centralized oracle (every client's raw window pooled in one place; evaluation only) and
    report the distance to it. 'auto' (null): on for `fedgc simulate` on the local engine, off for `fedgc run`;
    the Flower engines never pool raw data (true is an error there)."""


@dataclass(frozen=True)
class TEPSettings:
    """Tennessee Eastman units as clients (the `tep:` section, instead of `synthetic:` or `clients:`)."""

    __pydantic_config__ = SETTINGS_CONFIG

    path: FolderPath | None = None
    """The data folder (relative to the config file); null: $FEDGC_TEP_DATA, else the repository's data/tep."""
    run: str = "d00_te"
    """The run the protocol works on: normal operation (d00, d00_te), or a fault run when streamed."""
    identify_on: str | None = None
    """The normal-operation run each unit identifies its local model on; null: `run` itself."""
    split: Annotated[
        dict[str, tuple[str, ...]] | None, "'default' or a mapping unit -> list of variables", _reads(("default", None))
    ] = None  # fmt: skip
    """The units and their variables (XMEAS(1)..XMEAS(41), XMV(1)..XMV(11)); 'default': feed, reactor,
    separator, stripper (fedgc.data.tep_layout.TEP_UNITS)."""
    fault_runs: Annotated[tuple[str, ...], EMPTY_LIST_IF_NULL] = ()
    """Fault runs to locate the fault's origin in (fedgc.analysis.origin), thresholds calibrated on `run`."""
    origin: Annotated[OriginSettings, EMPTY_IF_NULL] = field(default_factory=OriginSettings)
    """How each unit's threshold and first crossing are set."""

    def __post_init__(self) -> None:
        _fault_of("tep.run", self.run)  # a fault run only when streamed: RunConfig checks
        if self.identify_on is not None and _fault_of("tep.identify_on", self.identify_on) is not None:
            raise ConfigError(f"tep.identify_on must be a normal-operation run (d00, d00_te), got {self.identify_on!r}")
        for run in self.fault_runs:
            if _fault_of("tep.fault_runs", run) is None:
                raise ConfigError(f"tep.fault_runs: {run!r} is normal operation, not a fault run")
        if self.split is not None:
            try:
                object.__setattr__(self, "split", resolve_split(self.split))
            except ConfigError as exc:
                raise ConfigError(f"tep.split: {exc}") from None

    @property
    def folder(self) -> Path:
        return default_data_path() if self.path is None else self.path


@dataclass(frozen=True)
class RunConfig:
    """A run: its clients (synthetic, CSV files or TEP units), the server, the engine and the evaluation."""

    __pydantic_config__ = SETTINGS_CONFIG

    name: Name = "run"
    """The run's name; default: the config file's name without its suffix."""
    seed: int = 0
    """Seed of every random draw (>= 0)."""
    engine: Engine = "local"
    """'local' (in process), 'flower-sim' (Flower's simulation runtime) or 'flower' (a deployed SuperLink)."""
    align: AlignMode = "none"
    """`fedgc run`: 'none' (row t of every file is time step t) or 'timestamp' (rows aligned by their timestamps)."""
    synthetic: SystemSpec | None = None
    """`fedgc simulate`: the generated system."""
    local_models: Literal["given", "identify"] = "given"
    """`fedgc simulate`: 'given' (each client runs its true local model) or 'identify' (learned from its data)."""
    clients: Annotated[tuple[ClientSpec, ...], EMPTY_LIST_IF_NULL] = ()
    """`fedgc run`: one entry per client."""
    server: Annotated[ServerConfig, EMPTY_IF_NULL] = field(default_factory=ServerConfig)
    """The server's rounds and tests."""
    client: Annotated[ClientOptions, EMPTY_IF_NULL] = field(default_factory=ClientOptions)
    """What every client does besides filtering."""
    privacy: Annotated[PrivacySettings | None, "'off' or a mapping", _reads((False, None), ("off", None))] = None
    """Differential privacy; 'off' (null): none."""
    evaluation: Annotated[EvaluationSettings, EMPTY_IF_NULL] = field(default_factory=EvaluationSettings)
    """What the run is scored against."""
    tep: TEPSettings | None = None
    """Tennessee Eastman units as clients."""
    streaming: Annotated[
        StreamingConfig | None, "'off', 'on' or a mapping", _reads((False, None), ("off", None), (True, {}), ("on", {}))
    ] = None  # fmt: skip
    """Streaming windows; 'off' (null): one batch fit; 'on': the default windows."""
    source: Annotated[Path | None, Field(exclude=True), BeforeValidator(_not_in_the_file)] = None
    """The file the config was read from (set by load_config; not a key of the file)."""

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:  # numpy's seeds are >= 0
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ConfigError(f"client names must be unique, got {names}")
        if self.server.test == "siv" and self.privacy is not None:
            raise ConfigError(
                "server.test: siv needs every client's snapshot series, which the privacy accounting does not cover "
                "(not an accounted release); a private run uses the LR test (server.test: lr or auto)"
            )
        if self.server.test == "siv" and self.streaming is not None:
            raise ConfigError(
                "server.test: siv is a batch test; streaming windows use the LR test (server.test: lr or auto)"
            )
        if self.streaming is not None and self.streaming.alert_calibration != "none":
            self._check_alert_reference(self.streaming.alert_calibration)
        if self.tep is not None and self.streaming is None and _fault_of("tep.run", self.tep.run) is not None:
            raise ConfigError(
                f"tep.run must be a normal-operation run (d00, d00_te), got {self.tep.run!r} "
                "(a fault run can be streamed: add a 'streaming' section)"
            )

    def _check_alert_reference(self, calibration: str) -> None:
        """streaming.alert_calibration streams the normal operation the models are identified on: TEP's
        tep.identify_on (a run other than tep.run), or every CSV client's identify_on file."""
        what = f"streaming.alert_calibration: {calibration} streams the normal operation the models were identified on"
        if self.tep is not None:
            if self.tep.identify_on in (None, self.tep.run):
                raise ConfigError(f"{what}: it needs tep.identify_on, a normal-operation run other than tep.run")
        elif self.clients:
            missing = [spec.name for spec in self.clients if spec.identify_on is None]
            if missing:
                raise ConfigError(
                    f"{what}: every client needs identify_on (a file of its normal operation, its model identified "
                    f"on it); client(s) {', '.join(repr(m) for m in missing)} have none"
                )
        else:
            raise ConfigError(f"{what}: it needs CSV clients with identify_on or a tep section with tep.identify_on")

    @property
    def identified_models(self) -> bool:
        """Whether some client runs a model identified from data (synthetic local_models: identify, or a
        `clients:` entry with model: identify, on its own file or identify_on), or TEP units (each identified on
        tep.identify_on or the run)."""
        if self.clients:
            return any(spec.model == "identify" for spec in self.clients)
        if self.tep is not None:
            return True
        return self.synthetic is not None and self.local_models == "identify"

    @property
    def gc_test(self) -> str:
        """The Granger test the run uses: server.test, with 'auto' resolved to 'siv' when models are
        identified (identified_models) and privacy and streaming are off, else 'lr'."""
        if self.server.test != "auto":
            return self.server.test
        siv = self.identified_models and self.privacy is None and self.streaming is None
        return "siv" if siv else "lr"


# ---------------------------------------------------------------------------------------------- parse and serialise


def load_config(path: str | Path) -> RunConfig:
    """The RunConfig of a YAML file; ConfigError naming the file for anything wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    yaml = importlib.import_module(YAML_MODULE)
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: e.g. a date like 2024-13-45
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    if "sweep" in raw:
        raise ConfigError(
            f"config file {path} is a sweep (its 'sweep' section lists many runs), not one run's config; run it with "
            f"`.venv/bin/python simulations/privacy_sweep.py {path} --out DIR`"
        )
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path = Path("."), source: Path | None = None) -> RunConfig:
    """The RunConfig of a config mapping (a YAML file's content, or to_plain's); its relative paths are
    relative to base_dir. source: the file it came from (errors name it; the default name is its stem)."""
    if source is not None and isinstance(raw, Mapping) and "name" not in raw:
        raw = {"name": source.stem, **raw}
    cfg = codec_for(RunConfig).parse(raw, where=str(source or "config"), context={"base_dir": Path(base_dir)})
    return cfg if source is None else replace(cfg, source=Path(source))


def config_from_files(paths: Sequence[str | Path], **overrides: Any) -> RunConfig:
    """A first look without a config: one client per file, named after the file, D_m from the data."""
    files = [Path(p) for p in paths]
    names = [p.stem for p in files]
    if len(files) < 2:
        raise ConfigError("--data needs at least two client files")
    if len(set(names)) != len(names):
        raise ConfigError(f"--data files must have distinct names, got {names}")
    return RunConfig(name="run", clients=tuple(ClientSpec(n, p) for n, p in zip(names, files)), **overrides)


def to_plain(settings: Any) -> dict[str, Any]:
    """A RunConfig, or one of its sections, as the plain mapping parse_config reads back: JSON types (and
    .inf), every default written out, paths absolute, `source` left out."""
    return codec_for(type(settings)).plain(settings)


def config_reference() -> str:
    """Every key of a run config as a Markdown table (key, type, default, meaning), for docs/config.md."""
    return reference_table(RunConfig)
