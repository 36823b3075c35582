"""One run per run directory: an exclusive lock on ``<out_dir>/.vlkit.lock``.

Two processes training into one ``out_dir`` would interleave their checkpoints and cut each
other's metrics, so the first one takes the lock and a second one is refused in one line that
names the holder's PID. The lock is an OS advisory lock (``fcntl.flock``) on a file that holds
the holder's PID: the kernel drops it when the holder dies, even by ``kill -9``, so a dead run
never blocks the directory; the next run takes it over and says so in one warning line (the PID
left in the file shows a run ended without releasing it). Where ``fcntl`` is missing (Windows)
the PID alone decides: a lock whose PID is no longer running is stale.

The lock is re-entrant within a process (``vlkit pretrain`` takes it before building anything,
and ``engine.fit`` takes it again), and released when the outermost holder leaves. Only rank 0
of a distributed run locks (the other ranks write nothing).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".vlkit.lock"
_held: dict[Path, list] = {}  # resolved out_dir -> [fd, depth]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (signal 0 probes without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _refuse(out_dir: Path, pid: int | None) -> UserError:
    holder = f"PID {pid}" if pid else "another process"
    return UserError(f"{out_dir} is in use by another vlkit run ({holder}); wait for it to end, "
                     "stop it, or choose another out_dir")


def _warn(message: str) -> None:
    warnings.warn(f"vlkit: {message}", stacklevel=3)  # the CLI prints it as one line


def _try_lock(path: Path, out_dir: Path) -> int:
    """Open and lock ``path``; return the fd, or raise the one-line refusal."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _read_pid(fd)
                os.close(fd)
                raise _refuse(out_dir, pid) from None
            # the holder may have unlinked the file between our open and our flock: then we
            # locked an orphan inode, and must lock the file that is there now
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        else:  # no flock: a live PID in the file is the lock
            pid = _read_pid(fd)
            if pid and pid != os.getpid() and pid_alive(pid):
                os.close(fd)
                raise _refuse(out_dir, pid)
        return fd


def acquire(out_dir: str | Path) -> None:
    """Lock ``out_dir`` for this process (creating it); re-entrant. See the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = out_dir.resolve()
    if key in _held:
        _held[key][1] += 1
        return
    path = out_dir / LOCK_FILE
    fd = _try_lock(path, out_dir)
    stale = _read_pid(fd)
    if stale is not None and stale != os.getpid():
        _warn(f"took over the lock of {out_dir} from PID {stale}, which ended without releasing it "
              "(killed?); if it was cut short, continue it (pretrain: --resume; adapt: the same "
              "command reuses its finished cells)")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    _held[key] = [fd, 1]


def release(out_dir: str | Path) -> None:
    """Leave the lock taken by :func:`acquire`; the outermost release removes the file."""
    key = Path(out_dir).resolve()
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    fd = entry[0]
    try:
        (Path(out_dir) / LOCK_FILE).unlink(missing_ok=True)  # while still locked: no one sees it half-gone
    finally:
        os.close(fd)


@contextmanager
def run_dir_lock(out_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """``with run_dir_lock(out_dir):`` hold the directory's lock for the block (no-op if not enabled)."""
    if not enabled:
        yield
        return
    acquire(out_dir)
    try:
        yield
    finally:
        release(out_dir)
