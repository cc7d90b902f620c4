"""mobilenets.io: a file appears complete or not at all; a failed write leaves the old file and no temporary."""

from __future__ import annotations

import json
import os

import pytest

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


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
