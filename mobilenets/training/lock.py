"""One training run per output folder: an advisory lock (``fcntl.flock``) that the kernel drops when its process
ends, however it ends (a SIGKILLed run leaves no stale lock behind)."""

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

    The lock file stays (an unlinked lock file could let two later runs lock two different files); it holds the
    holder's pid, host and start time. A folder this call created is removed again when the block fails and
    left nothing but the lock behind.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    failed = True
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
                raise MobileNetsError(
                    f"{out_dir} is in use by a running `mobilenets train` ({holder}): wait for it to finish, "
                    "stop it, or give this run another --out-dir"
                ) from None
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        yield path
        failed = False
    finally:
        os.close(fd)  # releases the lock
        if failed and created and [p.name for p in out_dir.iterdir()] == [LOCK_NAME]:
            path.unlink(missing_ok=True)
            out_dir.rmdir()
