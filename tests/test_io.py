"""mobilenets.io: a file appears complete or not at all; a failed write leaves the old file and no temporary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path, atomic_staging, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_bytes_text_and_json(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.md", "α × ρ\n")
    atomic_write_json(tmp_path / "a.json", {"α": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "α × ρ\n"
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert text == json.dumps({"α": [1, 2]}, indent=2, ensure_ascii=False) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.json", "a.md"]


def test_permissions_are_those_open_gives(tmp_path):
    atomic_write_bytes(tmp_path / "atomic", b"x")
    (tmp_path / "plain").write_bytes(b"x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_temporary_keeps_the_suffix_and_replaces_the_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.png") and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"run": 1})
    before = target.read_bytes()

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(target, {"run": Unserializable()})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]


def test_staging_moves_the_companions_first_and_drops_the_scratch_files(tmp_path, monkeypatch):
    target = tmp_path / "m.xml"
    target.write_text("old xml")
    (tmp_path / "m.bin").write_text("old bin")
    moves = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moves.append(Path(dst).name), replace(src, dst)))
    with atomic_staging(target, lambda p: [p.with_suffix(".bin")]) as staged:
        assert staged.name == "m.xml" and staged.parent.parent == tmp_path
        staged.write_text("new xml")
        staged.with_suffix(".bin").write_text("new bin")
        (staged.parent / "fp32_m.xml").write_text("a writer's intermediate file")
        assert target.read_text() == "old xml"
    assert moves == ["m.bin", "m.xml"]  # the file is never seen beside an older .bin
    assert (target.read_text(), (tmp_path / "m.bin").read_text()) == ("new xml", "new bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_staging_a_folder_replaces_the_old_one_and_a_failure_keeps_it(tmp_path):
    page = tmp_path / "page"
    page.mkdir()
    (page / "old.html").write_text("old")
    with atomic_staging(page) as staged:
        staged.mkdir()
        (staged / "index.html").write_text("new")
    assert [p.name for p in page.iterdir()] == ["index.html"] and list(tmp_path.iterdir()) == [page]
    with pytest.raises(RuntimeError, match="verification failed"):
        with atomic_staging(page) as staged:
            staged.mkdir()
            (staged / "index.html").write_text("half")
            raise RuntimeError("verification failed")
    assert (page / "index.html").read_text() == "new" and list(tmp_path.iterdir()) == [page]


def test_a_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "out.json"
    with pytest.raises(MobileNetsError, match=r"cannot write .*out\.json: the folder .*nope does not exist"):
        atomic_write_json(missing, {})
    assert not missing.parent.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(MobileNetsError, match="not writable"):
            atomic_write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o700)
