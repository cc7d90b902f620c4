"""`mobilenets fit` end to end on scikit-learn's digits (8×8 images at 16 px, V1 α 0.25/0.5, ONNX Runtime int8, a
time budget of seconds): the file exists and holds against its own runtime run independently of our code, its
latency timed again stays within the budget, an impossible budget is one line naming the fastest candidate, and a
fit killed after one trial resumes from its SQLite store without training that trial again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mobilenets import data as D
from mobilenets.cli import main
from mobilenets.errors import MobileNetsError
from mobilenets.fit import FitConfig, fit
from mobilenets.fit import search as S

pytest.importorskip("optuna")
ort = pytest.importorskip("onnxruntime")

BUDGET_MS = 5.0
# A small search: two V1 widths at 16 px, two epochs of 256 digits per trial, 150 held-out digits.
SMALL = dict(families=["mobilenet_v1"], widths=[0.25, 0.5], resolutions=[16], max_trials=2, subset=640, rungs=2,
             heldout=150, batch_size=32, threads=1, qat_steps=0)  # fmt: skip
CLI_SMALL = (
    "--family mobilenet_v1 --widths 0.25 0.5 --resolutions 16 --max-trials 2 --subset 640 --rungs 2 --heldout 150 "
    "--batch-size 32 --threads 1 --qat-steps 0 --no-progress"
).split()


@pytest.fixture(scope="module")
def cli_fit(tmp_path_factory):
    """One fit through the CLI: (out-dir, exit code, printed summary)."""
    out = tmp_path_factory.mktemp("fit") / "out"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["fit", "digits", "--runtime", "onnx", "--precision", "int8", "--max-latency-ms", str(BUDGET_MS),
                   "--time-budget", "35s", "-o", str(out), *CLI_SMALL])  # fmt: skip
    return out, rc, printed.getvalue()


def digits_test(card) -> tuple[torch.Tensor, torch.Tensor]:
    ds = D.load_dataset("digits", "test")
    pre = card.preprocessing
    return D.prepare_batch(ds.images, pre.mean, pre.std, pre.resolution, 1), ds.labels


def test_cli_fit_writes_a_file_that_holds(cli_fit):
    from mobilenets.weights import load_weights

    out, rc, printed = cli_fit
    assert rc == 0
    assert (out / "model.onnx").is_file() and (out / "fit.md").is_file() and (out / "fit.png").is_file()
    assert "model.onnx" in printed and "verified" in printed
    report = json.loads((out / "fit.json").read_text())
    assert report["winner"] in {c["name"] for c in report["candidates"] if c["verdict"] == "fits"}
    assert report["attempts"][-1]["passed"]
    assert not list(out.glob(".fit-attempt-*")), "a scratch attempt folder was left behind"
    # The file against the float weights, run by ONNX Runtime itself on every digits test image.
    model, card = load_weights(out / "model.safetensors")
    images, labels = digits_test(card)
    with torch.no_grad():
        probs = model(images).softmax(1)
    reference, clear = probs.argmax(1).numpy(), (probs.max(1).values > 0.5).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    same = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0].argmax(1) == reference
    # A model trained for seconds decides few digits clearly; int8 may flip the unclear ones, not the clear ones.
    assert clear.sum() >= 50 and same[clear].mean() >= 0.97, f"{same[clear].mean():.1%} of {clear.sum()} clear"
    assert same.mean() >= 0.8, f"the int8 file agrees with the float model on {same.mean():.1%} of the digits"
    assert (reference == labels.numpy()).mean() > 0.2  # above chance (10%) after seconds of training


def test_cli_fit_file_latency_within_budget(cli_fit):
    """The shipped file timed again as `bench` times a runner (its median of 30 batch-1 calls)."""
    from mobilenets.deploy.bench import time_calls, torch_threads
    from mobilenets.deploy.export import load_runner

    out, _rc, _ = cli_fit
    run = load_runner(out / "model.onnx", "onnx", "int8", threads=1, batch_size=1)
    x = np.zeros((1, 1, 16, 16), np.float32)
    with torch_threads(1):
        latency = time_calls(lambda: run(x), runs=30, warmup=5)
    # Within the budget, with 20% for a shared machine's noise.
    assert latency.median_ms <= 1.2 * BUDGET_MS
    report = json.loads((out / "fit.json").read_text())
    assert report["file_latency_ms"] <= 1.2 * BUDGET_MS


def test_impossible_budget_names_the_fastest(cli_fit, tmp_path, capsys):
    """Measured latencies (the first fit's cache, copied) and a user's table: one line naming the fastest."""
    out, _rc, _ = cli_fit
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(out / "latency.json", again / "latency.json")  # nothing is measured twice
    rc = main(["fit", "digits", "--max-latency-ms", "0.001", "-o", str(again), *CLI_SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("mobilenets: error: no candidate fits --max-latency-ms 0.001: the fastest, ")
    assert "mobilenet_v1_0.25_16" in err[-1] and " ms here" in err[-1]
    assert not (again / "model.onnx").exists() and not (again / "fit.md").exists()

    table = tmp_path / "phone.json"  # `bench --json` rows measured on a device
    rows = [
        {"model": f"mobilenet_v1_{w}_16", "runtime": "onnxruntime", "precision": "int8", "batch_size": 1,
         "latency": {"median_ms": ms}} for w, ms in ((0.25, 7.5), (0.5, 12.0))
    ]  # fmt: skip
    table.write_text(json.dumps(rows))
    with pytest.raises(MobileNetsError, match=r"the fastest, mobilenet_v1_0.25_16, takes 7.50 ms"):
        fit(FitConfig("digits", out_dir=str(tmp_path / "t"), max_latency_ms=5, latency_table=str(table), **SMALL))


def test_killed_fit_resumes_from_its_store(cli_fit, tmp_path):
    """Stopped after its first trial (as Ctrl-C or a kill would), the same fit run again keeps that trial, trains
    the next one and ships a file."""
    out0, _rc, _ = cli_fit
    out = tmp_path / "resume"
    out.mkdir()
    shutil.copy(out0 / "latency.json", out / "latency.json")
    cfg = FitConfig("digits", out_dir=str(out), max_latency_ms=BUDGET_MS, time_budget_s=35, progress=False, **SMALL)

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, on_trial=stop)
    first = S.trial_records(S.open_study(None, out / "search.db")[0])
    assert [r.state for r in first] == ["COMPLETE", "WAITING"]
    done = first[0].candidate
    stamp = (out / "trials" / done / "result.json").stat().st_mtime_ns
    spent = json.loads((out / "state.json").read_text())["spent_s"]
    assert spent > 0

    result = fit(cfg)
    records = S.trial_records(S.open_study(None, out / "search.db")[0])
    assert [r.candidate for r in records] == [r.candidate for r in first]  # the queue went on, nothing re-queued
    assert records[0].state == "COMPLETE" and records[1].state in ("COMPLETE", "PRUNED")
    assert (out / "trials" / done / "result.json").stat().st_mtime_ns == stamp  # not trained again
    assert result.file and (out / "model.onnx").is_file()
    assert result.seconds["total"] >= spent  # the budget counts both runs


def test_running_trial_of_a_killed_fit_is_queued_again(tmp_path):
    """A fit killed inside a trial leaves it RUNNING in the store: the next run fails it and queues its candidate
    again (its training resumes from its own checkpoint)."""
    study, local = S.open_study(None, tmp_path / "search.db")
    S.queue_candidates(study, ["a", "b"], local)
    trial = study.ask()
    assert trial.suggest_categorical(S.PARAM, ["a", "b"]) == "a"  # the killed one
    study, local = S.open_study(None, tmp_path / "search.db")
    S.queue_candidates(study, ["a", "b"], local)
    states = [(r.candidate, r.state) for r in S.trial_records(study)]
    assert states == [("a", "FAIL"), ("b", "WAITING"), ("a", "WAITING")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["digits"], "give a budget: --max-latency-ms"),
        (["digits", "--max-params", "1", "--runtime", "coreml"], "unknown runtime 'coreml'"),
        (["digits", "--max-params", "1", "--runtime", "executorch", "--precision", "bf16"], "executorch does not run"),
        (["digits", "--max-params", "1", "--family", "resnet"], "unknown classifier family 'resnet'"),
        (["digits", "--max-params", "0.001", *CLI_SMALL], "no candidate fits the budget: the smallest"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["fit", *args, "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (out / "fit.md").exists()


def test_time_budget_needs_a_unit(capsys):
    from mobilenets.cli.fit import duration

    assert duration("20m") == 1200 and duration("1h30m") == 5400 and duration("90s") == 90
    with pytest.raises(SystemExit):
        main(["fit", "digits", "--max-params", "1", "--time-budget", "20"])
    assert "a duration with a unit" in capsys.readouterr().err
