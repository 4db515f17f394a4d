"""Files and folders: written whole or not at all, checked for writability before work starts,
a run folder held by one process at a time, files' contents hashed (cache keys), and UTF-8
text files read with an error that names the offending byte.

Files and folders are written beside their target under a name that carries the writer's
pid, then renamed into place. A writer killed outright (SIGKILL, power loss) leaves that
partial copy behind: the next writer of the same target removes the partial copies of
processes that no longer run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from kd.errors import KDError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there: never clean up on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(folder: Path, prefix: str) -> None:
    """Remove `folder/<prefix><pid>` files and folders whose writing process has ended."""
    if not folder.is_dir():
        return
    for path in folder.glob(f"{prefix}*"):
        pid = path.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; when the block succeeds it takes the
    place of `folder` (replacing an older one), when it fails it is removed."""
    for kind in ("partial", "old"):
        remove_stale_partials(folder.parent, f".{folder.name}.{kind}-")
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old)
        else:
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(temporary path), then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, f"{path.name}.tmp")
    partial = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def check_writable(folder: str | Path, key: str) -> None:
    """Write (and remove) a file in `folder`, or where it will be created, so that a folder that is
    a file, read-only or on a full disk is a one-line error before any work starts, and nothing is
    left behind; `key` names the setting."""
    folder = Path(folder).absolute()
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        raise KDError(f"{key}={folder}: {existing} is a file; it must be a folder")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise KDError(f"{key}={folder} is not writable: {err.strerror or err}") from None


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder` for this process: a second process that asks for it while it is held gets a
    one-line error. The lock goes with the process, however it ends."""
    path = folder / ".lock"
    handle = open(path, "a+b")
    try:
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            raise KDError(f"{folder} is in use by another kd process; wait for it to finish, "
                          "or give this run another run_name") from None
        yield
    finally:
        handle.close()


def file_digest(paths: list[str | Path | None]) -> str:
    """sha256 over the contents of the given files (None entries are skipped)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def read_text(path: str | Path, what: str = "data file") -> str:
    """A UTF-8 file's text (a leading byte-order mark removed); `what` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise KDError(f"{what} not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start
        line = raw.count(b"\n", 0, start) + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise KDError(f"{what} is not UTF-8: {path} (byte 0x{raw[start]:02x} at byte offset {start}, "
                      f"line {line}, byte {column} of the line: {err.reason}); save it as UTF-8") from None
