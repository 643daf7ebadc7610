"""Files: every file fedgc writes is written atomically: into a temporary file beside it, then moved over it with
os.replace, so a reader, an interrupted run or a full disk never leaves half a file under the real name
(the file is the old one, or the new one whole). The temporary file is removed when writing fails.

    with replacing(path) as tmp:   # write tmp however (savefig, np.savez, networkx, open); renamed on success
        fig.savefig(tmp)
    write_text(path, text)         # the same for text and bytes
    write_bytes(path, data)

sync=True also fsyncs the file and its folder (the checkpoint: it must survive a power cut).
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

TEMP_MARK = ".fedgc-tmp"  # in every temporary file's name: `fedgc` never leaves one behind, a crash may


def temporary_beside(path: Path) -> Path:
    """A temporary name in path's folder that keeps path's suffix (matplotlib and numpy go by it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}{TEMP_MARK}{path.suffix}")


def fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike, *, sync: bool = False) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; moved over `path` when the block ends without
    an error (or interrupt), removed otherwise."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_folder(path.parent)


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then raise the KeyboardInterrupt it would have raised.

    For writes that must finish once begun (a checkpoint and its summary): an interrupt inside a library's
    writer (np.savez's zip file) leaves a half-built object whose finaliser prints a traceback. Only the
    main thread receives signals; elsewhere, or when SIGINT is not Python's default handler, the block runs
    as it is."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = False) -> Path:
    path = Path(path)
    with replacing(path, sync=sync) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", sync: bool = False) -> Path:
    return write_bytes(path, text.encode(encoding), sync=sync)


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of the file's bytes, read in 1 MiB blocks (the privacy ledger's key, a model file's
    provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
