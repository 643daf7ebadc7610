"""The YAML config: clients, server, engine, evaluation. Unknown keys are errors, never ignored.

    name: default
    seed: 0
    engine: local                 # local | flower-sim | flower
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
    server: {rule: newton, max_rounds: 20, tol: 1.0e-6, penalty: 0.0, diagonal: fixed,
             learning_rate: null, alpha: 0.05, burn_in: 1,
             on_dropout: stop}        # stop | continue (without the client; its pairs unknown)
    client: {learn_theta: false, theta: linear}
    privacy: off                  # or {epsilon: 10, delta: 1.0e-5, clip: 7.0, accountant: rdp,
                                  #     clip_space: whitened, debias: client, shrink: true, augmentation_noise: false,
                                  #     max_noise_multiplier: 100}
    evaluation: {oracle: true}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fedgc.errors import ConfigError
from fedgc.protocol import ServerConfig
from fedgc.synthetic import Perturbation, SystemSpec

ENGINES = ("local", "flower-sim", "flower")


@dataclass(frozen=True)
class ClientSpec:
    """One real client: its data file and how its local model is obtained."""

    name: str
    data: Path
    timestamp_column: str | int | None = "auto"
    model: str | Path = "identify"
    state_dim: int | None = None
    explained_variance: float | None = None


@dataclass(frozen=True)
class ClientOptions:
    learn_theta: bool = False
    theta: str = "linear"


@dataclass(frozen=True)
class PrivacySettings:
    """Differential privacy for the whole run, per client (DESIGN.md section 4).

    epsilon > 0 (.inf: noise-free, for sweeps), 0 < delta < 1: the whole-run target per client;
    clip: c > 0; clip_space: 'whitened' (||J^{-1/2} C^T R^{-1} y_t|| <= c) or 'measurement' (||y_t|| <= c);
    accountant: 'rdp' | 'prv'; debias: 'client' (noise-aware client filter), 'server' (errors-in-variables
    correction of the Gram matrices) or 'none'; max_noise_multiplier: larger sigma is refused as absurd;
    shrink: empirical-Bayes shrinkage of each block of A_s toward zero by its own noise level (newton rule);
    augmentation_noise: also noise every augmentation the server sends (composed as extra releases). Off by
    default: the augmentations are post-processing of the clients' privatised releases (fedgc.privacy.accounting).
    """

    epsilon: float
    delta: float
    clip: float
    accountant: str = "rdp"
    clip_space: str = "whitened"
    debias: str = "client"
    max_noise_multiplier: float = 100.0
    shrink: bool = True
    augmentation_noise: bool = False

    def __post_init__(self) -> None:
        from fedgc.privacy.accounting import PrivacyAccountant

        PrivacyAccountant(self.epsilon, self.delta, self.accountant, self.max_noise_multiplier)  # validates
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or not 0 < self.clip < float("inf"):
            raise ConfigError(f"privacy.clip must be a finite number > 0, got {self.clip!r}")
        if self.clip_space not in ("whitened", "measurement"):
            raise ConfigError(f"privacy.clip_space must be 'whitened' or 'measurement', got {self.clip_space!r}")
        for flag in ("shrink", "augmentation_noise"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"privacy.{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.debias not in ("client", "server", "none"):
            raise ConfigError(f"privacy.debias must be 'client', 'server' or 'none', got {self.debias!r}")


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


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: dict[str, Any], *, base_dir: Path = Path("."), source: Path | None = None) -> RunConfig:
    where = str(source) if source else "config"
    _check_keys(raw, {"name", "seed", "engine", "synthetic", "local_models", "clients", "server", "client", "evaluation", "privacy"}, where)
    engine = raw.get("engine", "local")
    if engine not in ENGINES:
        raise ConfigError(f"{where}: engine must be one of {ENGINES}, got {engine!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{where}: seed must be an integer, got {seed!r}")
    local_models = raw.get("local_models", "given")
    if local_models not in ("given", "identify"):
        raise ConfigError(f"{where}: local_models must be 'given' or 'identify', got {local_models!r}")
    synthetic = _parse_synthetic(raw["synthetic"], where) if raw.get("synthetic") is not None else None
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
    privacy = _parse_privacy(raw.get("privacy"), where)
    return RunConfig(
        name=str(raw.get("name", source.stem if source else "run")),
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
    )


def _parse_privacy(section: Any, where: str) -> PrivacySettings | None:
    """Absent, null, false or 'off': no privacy. Otherwise a mapping with epsilon, delta and clip."""
    if section is None or section is False or section == "off":
        return None
    _check_keys(section, {f.name for f in fields(PrivacySettings)}, f"{where}: privacy")
    missing = [k for k in ("epsilon", "delta", "clip") if k not in section]
    if missing:
        raise ConfigError(f"{where}: privacy needs {missing} (or `privacy: off`)")
    return _build(PrivacySettings, section, f"{where}: privacy")


def _check_keys(section: Any, allowed: set[str], where: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _build(cls: type, section: Any, where: str) -> Any:
    _check_keys(section, {f.name for f in fields(cls)}, where)
    try:
        return cls(**{k: _number_or_value(v) for k, v in section.items()})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


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
    perturbations = []
    for i, p in enumerate(section.pop("perturbations", None) or []):
        _check_keys(p, {f.name for f in fields(Perturbation)}, f"{where}: synthetic.perturbations[{i}]")
        if p.get("action") not in ("on", "off", "scale"):
            raise ConfigError(f"{where}: synthetic.perturbations[{i}].action must be on, off or scale")
        perturbations.append(Perturbation(**p))
    if "self_eig_range" in section:
        section["self_eig_range"] = tuple(section["self_eig_range"])
    return _build(SystemSpec, {**section, "perturbations": tuple(perturbations)}, f"{where}: synthetic")


def _parse_client(entry: Any, i: int, base_dir: Path, where: str) -> ClientSpec:
    label = f"{where}: clients[{i}]"
    _check_keys(entry, {f.name for f in fields(ClientSpec)}, label)
    if "name" not in entry or "data" not in entry:
        raise ConfigError(f"{label} needs 'name' and 'data'")
    data = Path(entry["data"])
    data = data if data.is_absolute() else base_dir / data
    model = entry.get("model", "identify")
    if model != "identify":
        model = Path(model) if Path(model).is_absolute() else base_dir / model
    state_dim = entry.get("state_dim", "auto")
    if state_dim == "auto":
        state_dim = None
    elif not (isinstance(state_dim, int) and state_dim >= 1):
        raise ConfigError(f"{label} ({entry['name']}): state_dim must be 'auto' or a positive integer, got {state_dim!r}")
    ev = entry.get("explained_variance")
    if ev is not None and not (isinstance(ev, (int, float)) and 0 < ev < 1):
        raise ConfigError(f"{label} ({entry['name']}): explained_variance must lie in (0, 1), got {ev!r}")
    ts = entry.get("timestamp_column", "auto")
    ts = None if ts in ("none", None) else ts
    return ClientSpec(str(entry["name"]), data, ts, model, state_dim, ev)
