"""One training run per output folder: an advisory lock (``fcntl.flock``) that the kernel drops when its process
ends, however it ends (a SIGKILLed run leaves no lock that blocks the next one)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mobilenets.errors import MobileNetsError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not guarded there
    fcntl = None

LOCK_NAME = ".lock"


@contextmanager
def out_dir_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out_dir``'s run lock for the block, or raise MobileNetsError naming the process that holds it.

    The lock file (``.lock``: the holder's pid, host and start time) is removed when the block ends; a killed run
    leaves it behind unlocked, and the next run takes it over. A folder this call created is removed again when the
    block fails and left nothing else behind.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    fd = _acquire(path, out_dir)
    failed = True
    try:
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        yield path
        failed = False
    finally:
        path.unlink(missing_ok=True)  # while still locked: a run waiting on this file sees it gone and retries
        os.close(fd)  # releases the lock
        if failed and created and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _acquire(path: Path, out_dir: Path) -> int:
    """An open, locked descriptor of ``path``: the file that stands at ``path`` now (a holder that removed it as
    it finished leaves a stale inode behind, so the lock is taken again on the new file)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise MobileNetsError(
                f"{out_dir} is in use by a running `mobilenets train` ({holder}): wait for it to finish, "
                "stop it, or give this run another --out-dir"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
