"""Output folders: a result is never lost nor mixed with another run's files.

`OutputFolder.open(path, overwrite=..., resume=...)`, before anything is read or run:
- a folder that does not exist, or is empty, is used as it is (created, and checked writable at once by
  writing a probe file, so a read-only place fails before round 1, not after it);
- a folder that holds anything is refused unless `overwrite` or `resume`: with `overwrite` the run writes
  into a staging folder beside it (NAME.fedgc-staging, marked with STAGING_MARKER naming the folder it
  replaces) and `commit()` swaps it in only when the run succeeded, so a failed run leaves the folder as it
  was; `resume` continues the run whose checkpoint the folder holds (a staging folder's run, resumed,
  replaces its folder when it succeeds). `overwrite` replaces only a folder fedgc wrote (it holds a
  result.json, a checkpoint, or the caller's marker file): never a folder of the user's own files;
- a path that names a file is refused.

`abandon()` after a failure removes what holds nothing worth keeping (a staging folder, or a folder this
run created, without a checkpoint to resume from); a checkpoint is always kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedgc.errors import FedGCError
from fedgc.files import write_text

STAGING_SUFFIX = ".fedgc-staging"
STAGING_MARKER = ".fedgc-staging"  # in a staging folder: the absolute path of the folder it replaces
CHECKPOINT_NAME = "checkpoint.npz"  # fedgc.app.checkpoint.CHECKPOINT_FILE (not imported: it loads numpy)
RESULT_NAME = "result.json"
FEDGC_FILES = (RESULT_NAME, CHECKPOINT_NAME, "checkpoint.json")  # a folder holding one is a fedgc run's
_SHOWN = 3  # names of a folder's entries quoted in the refusal


@dataclass
class OutputFolder:
    """target: where the run's files end up; work: where the run writes them (target itself, or its staging
    folder); fresh: work was created or empty when opened (everything in it is this run's)."""

    target: Path
    work: Path
    fresh: bool
    created: tuple[Path, ...] = ()

    @property
    def staged(self) -> bool:
        return self.work != self.target

    @classmethod
    def open(cls, path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False, flag: str = "--out",
             resumable: bool = True, marker: str | None = None) -> OutputFolder:  # fmt: skip
        """The folder `path` (given with `flag`) ready to be written, or a one-line FedGCError saying why not.
        resumable: a refusal mentions --resume; marker: a file that makes a folder fedgc's to overwrite
        (besides a run's result.json and checkpoint)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FedGCError(f"{flag} {path}: that is a file, not a folder; give a folder for the run's files")
        if resume:
            if not path.is_dir():
                raise FedGCError(f"--resume {path}: no such folder (nothing to resume)")
            target = _staged_for(path) or path
            return cls(target, _writable(path, path), fresh=False)
        entries = _entries(path)
        shown = ", ".join(entries[:_SHOWN]) + (f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else "")
        if entries and not overwrite:
            if resumable and CHECKPOINT_NAME in entries and RESULT_NAME not in entries:
                raise FedGCError(
                    f"output folder {path} holds an interrupted run ({shown}): continue it with --resume {path}, or "
                    "give --overwrite to start afresh (its files go once the new run succeeds)"
                )
            raise FedGCError(f"output folder {path} is not empty ({shown}); give --overwrite to replace what it holds "
                             "(once the new run has succeeded), or another folder")  # fmt: skip
        if not entries:
            created = _make(path)
            return cls(path, _writable(path, path), fresh=True, created=created)
        ours = set(FEDGC_FILES) | {STAGING_MARKER} | ({marker} if marker else set())
        if not ours.intersection(entries):
            raise FedGCError(f"output folder {path} holds files that are not fedgc's output ({shown}); --overwrite "
                             "replaces only a folder fedgc wrote: choose a new folder")  # fmt: skip
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise FedGCError(f"--overwrite cannot replace {path}: it holds the current folder; choose another one")
        path = path.resolve()
        staging = path.with_name(path.name + STAGING_SUFFIX)
        if staging.exists():
            if _staged_for(staging) is None:
                raise FedGCError(f"{staging} is in the way of --overwrite's staging folder and is not fedgc's; move it")
            shutil.rmtree(staging)  # an earlier --overwrite run that failed: its partial run is replaced
        _make(staging)
        _writable(staging, path)
        write_text(staging / STAGING_MARKER, str(path))
        return cls(path, staging, fresh=True)

    def final(self, path: Path) -> Path:
        """Where a file written into `work` ends up after commit()."""
        return self.target / Path(path).relative_to(self.work) if self.staged else Path(path)

    def commit(self) -> None:
        """The run succeeded: a staging folder replaces its target (the old content is removed)."""
        if not self.staged:
            return
        (self.work / STAGING_MARKER).unlink(missing_ok=True)
        old = self.target.with_name(f".{self.target.name}.fedgc-old-{os.getpid()}")
        had_target = self.target.exists()
        if had_target:
            os.rename(self.target, old)
        try:
            os.rename(self.work, self.target)
        except OSError:
            if had_target:
                os.rename(old, self.target)
            raise
        if had_target:
            shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        """The run failed or was interrupted: keep a checkpoint to resume from; remove the rest of what
        this run wrote when nothing else was there (a staging folder, a fresh folder)."""
        if not self.fresh or (self.work / CHECKPOINT_NAME).is_file():
            return
        if self.staged:
            shutil.rmtree(self.work, ignore_errors=True)
            return
        for entry in _entries(self.work):
            item = self.work / entry
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
        for folder in reversed(self.created):  # the deepest first; only while empty
            try:
                folder.rmdir()
            except OSError:
                break


def _entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise FedGCError(f"output folder {path} cannot be read: {exc.strerror or exc}") from None


def _make(path: Path) -> tuple[Path, ...]:
    """mkdir -p `path`; the folders it created, outermost first."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FedGCError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    return tuple(reversed(missing))


def _writable(folder: Path, shown: Path) -> Path:
    """`folder`, after writing and removing a probe file in it (os.access does not see read-only mounts,
    and says yes to root)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".fedgc-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FedGCError(f"output folder {shown} is not writable: {exc.strerror or exc}") from None
    return folder


def _staged_for(folder: Path) -> Path | None:
    """The folder a staging folder replaces (None: not a staging folder)."""
    try:
        return Path((folder / STAGING_MARKER).read_text().strip())
    except OSError:
        return None
