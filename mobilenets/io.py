"""Atomic writes: a file appears under its name complete or not at all, never half-written.

Every writer goes through a temporary file (or folder) in the destination's folder (same filesystem, so the final
``os.replace`` is atomic), which is deleted if writing fails:

    atomic_write_json(out / "results.json", results)
    with atomic_path(out / "plot.png") as tmp:   # for writers that want a path (savefig, PIL, torch.save)
        fig.savefig(tmp)
    with atomic_staging(out / "m.xml", companions) as staged:   # several files, or a folder (exports)
        write_and_verify(staged)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mobilenets.errors import MobileNetsError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``, on error it is deleted.

    The temporary name keeps ``path``'s suffix (``.tmp.png``), so writers that pick a format by extension
    (matplotlib, PIL) write the right one. The file gets the permissions ``open()`` would give it.
    """
    path = Path(path)
    folder = _writable_folder(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_staging(path: str | os.PathLike, companions: Callable[[Path], list[Path]] | None = None) -> Iterator[Path]:
    """For a writer that writes several files or a folder: ``path``'s name inside a private temporary folder beside
    it, where the writer may also leave scratch files of its own.

    On success what it wrote moves into place: first the companions that exist (``companions(staged)`` →
    ``companions(path)``, e.g. OpenVINO's .bin), so that ``path`` is never seen without them, then ``path`` (a
    folder replaces an earlier one, which is moved aside and deleted). The temporary folder is deleted either way.
    """
    path = Path(path)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=_writable_folder(path)))
    try:
        staged = scratch / path.name
        yield staged
        for extra, target in zip(companions(staged), companions(path)) if companions else ():
            if extra.exists():
                os.replace(extra, target)
        if staged.is_dir() and path.is_dir():
            os.replace(path, scratch / ".replaced")
        os.replace(staged, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _writable_folder(path: Path) -> Path:
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise MobileNetsError(f"cannot write {path}: the folder {folder} does not exist or is not writable")
    return folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON (UTF-8, non-ASCII kept, a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
