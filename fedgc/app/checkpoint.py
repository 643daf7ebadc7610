"""Checkpoint and resume: the server's ProtocolState after every round, atomically, in the output folder.

OUT/checkpoint.npz is the checkpoint: the arrays of the state (A_s, history, each client's last states,
J and privacy-noise description, the last regression statistics, server.acceleration's snapshot or
response models), a 'meta' entry (JSON text: format version, config fingerprint, round, omega, active
clients, dropouts, the accelerator's status, the server's privacy Generator state and noise levels, the
privacy releases spent so far) and, for in-process clients (local engine),
their own state (theta and last states when theta is learned; a deployed client keeps its own).
It is written to a temporary file, fsynced, renamed over the previous one (os.replace) and the folder
fsynced: a crash leaves the previous round's checkpoint or this one, never a torn file.
OUT/checkpoint.json repeats the metadata for people and tools (written after it; not read back by a
resume): the round, whether the rounds are complete, the history, and why the run stopped when it failed.

What resuming relies on (fedgc.protocol.state): the clients' replies are deterministic functions of their data,
local model, privatised window and theta. The privacy noise of a client's one release is drawn from a
Generator seeded by (seed, client index), so a restarted client re-derives the same privatised window:
the same release, not a second one (a different draw would be a second mechanism on the same data).
The fingerprint covers the seed, the privacy settings and the bytes of every client file, so a resume
that would redraw differently is refused. The server's own Generator state is restored with the state.
The accountant's figures count every round in the restored history, so nothing spent before the crash
is forgotten and the re-sent round (identical bits) is not counted twice.

Fault injection for tests: with FEDGC_FAULT_KILL_AFTER_ROUND=k the process SIGKILLs itself right after
the checkpoint of round k is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgc.app.config import RunConfig, to_plain
from fedgc.core.regression import RegressionStats
from fedgc.core.response import ResponseModel
from fedgc.errors import FedGCError
from fedgc.files import ctrl_c_deferred, file_digest, replacing
from fedgc.privacy.budget import releases_per_run
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.protocol.acceleration import SecantMemory, Snapshot
from fedgc.protocol.rules import UpdateRule
from fedgc.protocol.state import Dropout, ProtocolState, RoundRecord

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_JSON = "checkpoint.json"
FORMAT = "fedgc-checkpoint"
VERSION = 1
KILL_ENV = "FEDGC_FAULT_KILL_AFTER_ROUND"
_NOISE = ("state_cov", "cross_cov", "pseudo_obs_cov")
_SNAPSHOT = Snapshot._fields
_MODEL = ("transition", "input_gain", "lag_gain")


class CheckpointError(FedGCError):
    """A checkpoint that is missing, unreadable, of another version, or of a different config."""


@dataclass(frozen=True)
class Checkpoint:
    """state: the server's ProtocolState; fingerprint: config_fingerprint of the run;
    clients: name -> the in-process client's own state (ClientSession.checkpoint_state);
    privacy: the accounting record (noise multiplier, releases and epsilon spent so far) or None."""

    state: ProtocolState
    fingerprint: str
    clients: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None


# ------------------------------------------------------------------------------ fingerprint


# Threads hashing the client files of a fingerprint (sha256 and file reads release the GIL): a year of
# 1-minute data from 20 sites is 5 GB, ~7 s of sha256 on one core of the 2-core machine.
DIGEST_WORKERS = max(1, min(4, os.cpu_count() or 1))


def _file_digest(path: Any) -> str:
    try:
        return file_digest(path)  # in 1 MiB blocks: never a whole file in memory
    except OSError:
        return "unreadable"


def _file_digests(paths: list[Any], workers: int) -> list[str]:
    if len(paths) < 2 or workers == 1:
        return [_file_digest(p) for p in paths]
    with ThreadPoolExecutor(min(workers, len(paths))) as pool:
        return list(pool.map(_file_digest, paths))


def config_fingerprint(cfg: RunConfig, *, workers: int = DIGEST_WORKERS) -> str:
    """sha256 of everything that determines a run's messages: the config as fedgc.app.config.to_plain writes
    it (paths absolute), without name, engine, evaluation and server.on_dropout, which do not, and the bytes
    of every client file (hashed on `workers` threads)."""
    return hash_fingerprint(fingerprint_config(cfg), workers=workers)


def fingerprint_config(cfg: RunConfig) -> dict[str, Any]:
    """The config's part of config_fingerprint, as plain data (pydantic's work: see hash_fingerprint)."""
    raw = to_plain(cfg)
    for key in ("name", "engine", "evaluation"):
        del raw[key]
    del raw["server"]["on_dropout"]
    return raw


def hash_fingerprint(raw: dict[str, Any], *, workers: int = DIGEST_WORKERS) -> str:
    """config_fingerprint from its config part: the client files' bytes and sha256 only, plain Python and C,
    so it may run on a daemon thread (fedgc.protocol.background) while the process exits."""
    paths = list(dict.fromkeys(c[key] for c in raw["clients"] for key in ("data", "model") if c[key] != "identify"))
    files = dict(zip(paths, _file_digests(paths, workers), strict=True))
    text = json.dumps({"config": raw, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ files


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    with replacing(path, sync=True) as tmp, open(tmp, "wb") as f:
        write(f)


def encode(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    """The checkpoint as named arrays (np.savez without pickles)."""
    st = ckpt.state
    arrays: dict[str, np.ndarray] = {
        "A_s": np.asarray(st.A_s, dtype=np.float64),
        "history": np.asarray([tuple(r) for r in st.history], dtype=np.float64).reshape(-1, 3),
    }
    sensitivity: list[float | None] = []
    for m, (h, J, nz) in enumerate(zip(st.states, st.information, st.noise)):
        if h is not None:
            arrays[f"states.{m}"] = h
        if J is not None:
            arrays[f"information.{m}"] = J
        if nz is not None:
            arrays.update({f"noise.{m}.{k}": getattr(nz, k) for k in _NOISE})
        sensitivity.append(None if nz is None else float(nz.state_sensitivity))
    if st.stats is not None:
        arrays.update({"stats.gram": st.stats.gram, "stats.cross": st.stats.cross, "stats.zz": st.stats.zz})
    secant = None if st.secant is None else _encode_secant(st.secant, arrays)
    client_names = sorted(ckpt.clients)
    for i, name in enumerate(client_names):
        arrays.update({f"client.{i}.{k}": np.asarray(v) for k, v in ckpt.clients[name].items()})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": ckpt.fingerprint,
        "clients": list(st.clients),
        "dims": list(st.dims),
        "round": st.round,
        "exchanges": st.exchanges,
        "omega": st.omega,
        "active": list(st.active),
        "dropouts": [list(d) for d in st.dropouts],
        "finished": st.finished,
        "converged": st.converged,
        "secant": secant,
        "stats_n": None if st.stats is None else int(st.stats.n),
        "noise_sensitivity": sensitivity,
        "server_rng": st.server_rng,
        "noise_std": list(st.noise_std),
        "client_state_names": client_names,
        "privacy": ckpt.privacy,
    }
    arrays["meta"] = np.asarray(json.dumps(meta))
    return arrays


def decode(arrays: dict[str, np.ndarray], source: str = "checkpoint") -> Checkpoint:
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{source}: no readable metadata ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"{source}: format {meta.get('format')!r} version {meta.get('version')!r}; this fedgc reads {FORMAT} version {VERSION}"
        )
    M = len(meta["clients"])
    sens = meta["noise_sensitivity"]
    noise = tuple(
        None if sens[m] is None else ReleaseNoise(*(arrays[f"noise.{m}.{k}"] for k in _NOISE), float(sens[m]))
        for m in range(M)
    )
    stats = None
    if meta["stats_n"] is not None:
        stats = RegressionStats(arrays["stats.gram"], arrays["stats.cross"], arrays["stats.zz"], int(meta["stats_n"]))
    state = ProtocolState(
        clients=tuple(meta["clients"]),
        dims=tuple(int(d) for d in meta["dims"]),
        round=int(meta["round"]),
        A_s=arrays["A_s"],
        exchanges=int(meta.get("exchanges", meta["round"])),
        omega=float(meta["omega"]),
        history=tuple(RoundRecord(int(r), float(loss), float(c)) for r, loss, c in arrays["history"]),
        active=tuple(bool(a) for a in meta["active"]),
        dropouts=tuple(Dropout(str(c), int(r), str(why)) for c, r, why in meta["dropouts"]),
        states=tuple(arrays.get(f"states.{m}") for m in range(M)),
        information=tuple(arrays.get(f"information.{m}") for m in range(M)),
        noise=noise,
        stats=stats,
        finished=bool(meta["finished"]),
        converged=bool(meta["converged"]),
        secant=_decode_secant(meta.get("secant"), arrays),
        server_rng=meta["server_rng"],
        noise_std=tuple(float(x) for x in meta["noise_std"]),
    )
    clients = {}
    for i, name in enumerate(meta["client_state_names"]):
        prefix = f"client.{i}."
        clients[name] = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return Checkpoint(state, str(meta["fingerprint"]), clients, meta.get("privacy"))


def _encode_secant(memory: SecantMemory, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The accelerator's memory: its arrays into `arrays`, the rest as the returned metadata."""
    for m, snap in enumerate(memory.previous):
        if snap is not None:
            arrays.update(
                {f"secant.previous.{m}.{k}": np.asarray(getattr(snap, k), dtype=np.float64) for k in _SNAPSHOT}
            )
    for m, model in enumerate(memory.models):
        if model is not None:
            arrays.update({f"secant.model.{m}.{k}": np.asarray(getattr(model, k), dtype=np.float64) for k in _MODEL})
    return {
        "status": memory.status,
        "predicted": memory.predicted,
        "previous": [snap is not None for snap in memory.previous],
        "residuals": [None if model is None else float(model.residual) for model in memory.models],
    }


def _decode_secant(meta: dict[str, Any] | None, arrays: dict[str, np.ndarray]) -> SecantMemory | None:
    if meta is None:
        return None
    previous = tuple(
        Snapshot(*(arrays[f"secant.previous.{m}.{k}"] for k in _SNAPSHOT)) if held else None
        for m, held in enumerate(meta["previous"])
    )
    models = tuple(
        None if res is None else ResponseModel(*(arrays[f"secant.model.{m}.{k}"] for k in _MODEL), float(res))
        for m, res in enumerate(meta["residuals"])
    )
    return SecantMemory(str(meta["status"]), previous, models, bool(meta["predicted"]))  # type: ignore[arg-type]


def save_checkpoint(directory: str | Path, ckpt: Checkpoint) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    arrays = encode(ckpt)
    meta = json.loads(str(arrays["meta"]))
    meta["complete"] = bool(ckpt.state.finished)
    meta["A_s_shape"] = list(ckpt.state.A_s.shape)
    meta["history"] = [r._asdict() for r in ckpt.state.history]
    meta["error"] = None
    with ctrl_c_deferred():  # a Ctrl-C during the writes lands after them: the pair is this round's, whole
        _write_atomic(path, lambda f: np.savez(f, **arrays))
        _write_atomic(directory / CHECKPOINT_JSON, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return path


def record_error(directory: str | Path, error: str) -> Path | None:
    """Note in OUT/checkpoint.json why the run stopped (the submitter of a deployed run reads it back);
    None when no round completed (there is no checkpoint to annotate)."""
    path = Path(directory) / CHECKPOINT_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    meta["error"] = str(error)
    _write_atomic(path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return path


def recorded_error(directory: str | Path) -> str:
    """The error OUT/checkpoint.json records, or "" (no file, none recorded)."""
    try:
        error = json.loads((Path(directory) / CHECKPOINT_JSON).read_text()).get("error")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(error) if error else ""


def load_checkpoint(directory: str | Path, *, fingerprint: str | None = None) -> Checkpoint:
    """The checkpoint in `directory`; CheckpointError if missing, unreadable, of another version or
    (fingerprint given) of a different config."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: no {CHECKPOINT_FILE} in {directory}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    try:
        ckpt = decode(arrays, str(path))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a valid checkpoint: {exc!r}") from exc
    if fingerprint is not None and ckpt.fingerprint != fingerprint:
        raise CheckpointError(
            f"{path} was written by a run with a different config (or different client files): fingerprint "
            f"{ckpt.fingerprint[:12]} != {fingerprint[:12]} of this one; resume with the config and files of that run, "
            "or start afresh without --resume"
        )
    return ckpt


def completed_round(directory: str | Path) -> int | None:
    """The round of the checkpoint in `directory` (the last completed round), or None when there is none."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(json.loads(str(data["meta"]))["round"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def clear_checkpoint(directory: str | Path) -> None:
    for name in (CHECKPOINT_FILE, CHECKPOINT_JSON):
        (Path(directory) / name).unlink(missing_ok=True)


def fault_point(round_index: int) -> None:
    """Test hook: SIGKILL this process after round FEDGC_FAULT_KILL_AFTER_ROUND's checkpoint."""
    target = os.environ.get(KILL_ENV)
    if target is not None and target.strip() == str(round_index):
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------ wiring


def privacy_record(plan, accountant, rounds: int, rule: UpdateRule) -> dict[str, Any] | None:
    """Releases and epsilon spent per client after `rounds` >= 1 updates (the accountant's, fedgc.privacy.accounting)."""
    if plan is None:
        return None
    c2s, s2c = releases_per_run(
        augmentations=rule.data_dependent_augmentations(rounds), augmentation_noise=plan.augmentation_noise
    )
    return {
        "noise_multiplier": float(plan.noise_multiplier),
        "client_releases": c2s,
        "server_releases": s2c,
        "epsilon_spent": accountant.spent(noise_multiplier=plan.noise_multiplier, steps=c2s + s2c),
    }


@dataclass
class Checkpointing:
    """Saves a checkpoint after every round of a run into `directory` (and resumes from one).

    sessions: the in-process clients (their own state is saved with the server's); plan: the
    privacy plan (fedgc.app.runner.privacy_plan) or None."""

    directory: Path
    fingerprint: str
    rule: UpdateRule
    sessions: Sequence = ()
    plan: Any = None
    accountant: Any = None

    def start(self, *, resume: bool) -> ProtocolState | None:
        """resume: load, check and restore (returns the state to continue from); else clear old files."""
        if not resume:
            clear_checkpoint(self.directory)
            return None
        ckpt = load_checkpoint(self.directory, fingerprint=self.fingerprint)
        saved = (ckpt.privacy or {}).get("noise_multiplier")
        planned = None if self.plan is None else float(self.plan.noise_multiplier)
        if saved != planned:
            raise CheckpointError(
                f"{self.directory / CHECKPOINT_FILE}: noise multiplier {saved} at the checkpoint, {planned} now"
            )
        for s in self.sessions:
            own = ckpt.clients.get(s.name)
            if own:
                s.restore_state(own)
            elif s.checkpoint_state():
                raise CheckpointError(f"the checkpoint holds no state for client '{s.name}', which learns theta")
        return ckpt.state

    def __call__(self, state: ProtocolState) -> None:
        clients = {s.name: s.checkpoint_state() for s in self.sessions}
        privacy = privacy_record(self.plan, self.accountant, state.round, self.rule)
        save_checkpoint(
            self.directory, Checkpoint(state, self.fingerprint, {k: v for k, v in clients.items() if v}, privacy)
        )
        fault_point(state.round)
