"""One training run per --out-dir: a second run is refused at once, and a killed run blocks nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mobilenets.cli import main
from mobilenets.errors import MobileNetsError
from mobilenets.training import TrainConfig, train
from mobilenets.training.lock import out_dir_lock

# A process that holds the lock of sys.argv[1] (as a running `mobilenets train` does) until it is killed.
_HOLD = """
import sys, time
from mobilenets.training.lock import out_dir_lock
with out_dir_lock(sys.argv[1]):
    (__import__("pathlib").Path(sys.argv[1]) / "checkpoint.pt").write_bytes(b"the first run's")
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(out_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_out_dir_is_refused_and_a_killed_one_blocks_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    first = _holder(out)
    try:
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        cfg = TrainConfig(dataset="digits", width_mult=0.25, epochs=1, out_dir=str(out), progress=False)
        with pytest.raises(MobileNetsError, match=f"in use by a running `mobilenets train` \\(pid {first.pid} on "):
            train(cfg)
        argv = ["train", "--dataset", "digits", "--width-mult", "0.25", "--epochs", "1", "--out-dir", str(out)]
        assert main(argv) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {first.pid}" in err[0] and "another --out-dir" in err[0]
        # The running run's folder is untouched.
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    # SIGKILL releases the lock with the process: its file is left, unlocked, and the next run takes it over.
    assert (out / ".lock").exists()
    with out_dir_lock(out) as path:
        assert path.read_text().startswith(f"pid {os.getpid()} on ")
    assert not path.exists()  # a run that ends removes it


def test_a_refused_or_failed_run_leaves_no_folder_it_created(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError), out_dir_lock(out):
        raise RuntimeError("the run failed before writing anything")
    assert not out.exists()
    start = time.perf_counter()
    with out_dir_lock(out), out_dir_lock(tmp_path / "other"):  # two folders, two locks
        pass
    assert time.perf_counter() - start < 5 and out.exists()
