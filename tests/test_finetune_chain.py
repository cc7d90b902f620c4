"""The README's "Fine-tune on your photos" chain, run through the CLI on an ImageFolder of real photo crops:
train --init pretrained → eval → export --checkpoint --precision int8 → predict --checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from numeric import torch_threads

from mobilenets import training as T
from mobilenets import weights as W
from mobilenets.cli import main
from mobilenets.data import SAMPLE_PHOTO_CLASSES, sample_photo_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    if W.find_pretrained_graph() is None:
        pytest.fail(f"the pretrained graph is not installed: {W.GET_PRETRAINED}")
    tmp = tmp_path_factory.mktemp("chain")
    with torch_threads(1), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILENETS_CACHE", str(tmp / "cache"))
        photos = sample_photo_folder(tmp / "photos", train_per_class=8, test_per_class=4, size=80)
        run = tmp / "runs" / "photos"
        # The README's command, at 64 px and fewer steps so that the test takes seconds.
        argv = ["train", "--dataset", str(photos), "--init", "pretrained", "--preset", "finetune"]
        argv += ["--resolution", "64", "--epochs", "3"]
        argv += ["--batch-size", "8", "--out-dir", str(run), "--no-progress", "--no-tensorboard", "--no-plots"]
        assert main(argv) == 0
        yield photos, run, argv


def test_the_run_keeps_the_weights_conventions_and_says_where_they_came_from(chain):
    _, run, _ = chain
    model, meta = T.load_model(run / "model.pt")
    kw = meta["model_kwargs"]
    assert (kw["act"], kw["padding"], kw["bn_eps"], kw["num_classes"]) == ("relu6", "tf_same", 1e-3, 3)
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.5] * 3
    assert meta["classes"] == sorted(SAMPLE_PHOTO_CLASSES)
    assert meta["init"]["source"]["init"] == "pretrained" and meta["init"]["source"]["format"] == "tf_frozen_graph"
    assert json.loads((run / "config.json").read_text())["init"] == "pretrained"


def test_eval_and_predict_agree_and_name_the_classes(chain, capsys):
    photos, run, _ = chain
    capsys.readouterr()
    assert main(["eval", str(run / "model.pt"), "--json"]) == 0
    top1 = json.loads(capsys.readouterr().out)["top1"]
    assert top1 >= 0.75  # 3 classes, chance 33%: the pretrained features separate cat, coffee and flower
    hits = total = 0
    for name in SAMPLE_PHOTO_CLASSES:
        capsys.readouterr()
        assert main(["predict", str(photos / "test" / name), "--checkpoint", str(run / "model.pt"), "--json"]) == 0
        results = json.loads(capsys.readouterr().out)["results"]
        assert {t["name"] for r in results for t in r["top"]} == set(SAMPLE_PHOTO_CLASSES)
        hits += sum(r["top"][0]["name"] == name for r in results)
        total += len(results)
    # predict decodes and normalizes like training and eval do: the same decisions, image for image.
    assert hits / total == pytest.approx(top1, abs=1e-9)


def test_int8_export_of_the_checkpoint(chain, capsys):
    _, run, _ = chain
    out = run / "photos_int8.onnx"
    argv = ["export", "--checkpoint", str(run / "model.pt"), "--format", "onnx", "--precision", "int8"]
    assert main([*argv, "--calib", "64", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 100_000 and "wrote" in printed and Path(out).suffix == ".onnx"


def test_a_run_started_from_weights_resumes_bit_for_bit(chain, tmp_path):
    _, run, argv = chain
    out = ["--out-dir", str(tmp_path / "resumed")]
    assert main([*argv, *out, "--max-steps", "4"]) == 0  # stops inside epoch 2 of 3
    assert main([*argv, *out, "--resume"]) == 0
    a, b = T.load_checkpoint(run / "model.pt")["model"], T.load_checkpoint(tmp_path / "resumed" / "model.pt")["model"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
