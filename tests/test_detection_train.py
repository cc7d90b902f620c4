"""Training detectors through the engine (issue 27): a CLI train → eval → predict round on a tiny composite set,
the loss falling, a bit-for-bit resume, --init from a classifier's weights, and the options a detector refuses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from numeric import torch_threads

from mobilenets.cli import main
from mobilenets.data.composite import write_composite
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.training import TrainConfig, train
from mobilenets.training.checkpoint import load_checkpoint, note_resume_numerics
from mobilenets.weights.cards import ModelCard, Preprocessing, save_weights

MODEL = "ssdlite320_mobilenet_v2"
SMALL = dict(model=MODEL, width_mult=0.25, resolution=128, batch_size=4, progress=False, tensorboard=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    """One intra-op thread for the whole module (see numeric.torch_threads)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    """24 training and 8 test images of the composite set at 128 px: Fashion-MNIST objects on real photos."""
    root = tmp_path_factory.mktemp("composite")
    write_composite(root, num_train=24, num_test=8, size=128, seed=0, progress=False)
    return f"composite:{root}"


def test_cli_train_eval_predict_round(composite, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", MODEL, "--width-mult", "0.25", "--resolution", "128", "--dataset", composite]
    args += ["--epochs", "8", "--lr", "0.02", "--eval-every", "4", "--batch-size", "4", "--out-dir", str(out)]
    args += ["--no-progress", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "detection" and result["steps"] == 48 and result["epochs"] == 8
    assert 0 <= result["test_map"] <= 1 and [h["epoch"] for h in result["history"]] == [4, 8]
    assert len(result["classes"]) == 10  # Fashion-MNIST's classes (digits' where Debian's package is missing)
    losses = result["step_losses"]
    # The loss falls on real pixels, through SSD's augmentation (measured: the last 12 steps 0.76 of the first 12).
    assert sum(losses[-12:]) < 0.85 * sum(losses[:12]), losses
    for name in ("model.pt", "checkpoint.pt", "config.json", "metrics.csv", "steps.csv", "curves.png", "result.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["preset"] == "ssdlite"

    assert main(["eval", str(out / "model.pt"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["model"] == MODEL and ev["num_images"] == 8
    assert ev["map"] == pytest.approx(result["test_map"], abs=1e-9)  # the same weights, the same split

    images = sorted((Path(composite.split(":", 1)[1]) / "images" / "test").glob("*"))
    assert (
        main(["predict", str(images[0]), "--checkpoint", str(out / "model.pt"), "--score-thresh", "0", "--json"]) == 0
    )
    pred = json.loads(capsys.readouterr().out)["results"][0]
    assert pred["width"] == 128 and pred["detections"], pred
    d = pred["detections"][0]
    assert d["name"] in result["classes"] and 0 <= d["score"] <= 1 and len(d["box"]) == 4
    png = out / "predictions" / f"{images[0].stem}.png"
    assert pred["drawn"] == str(png) and png.stat().st_size > 1000


def test_resume_is_bit_for_bit(composite, tmp_path, capsys):
    whole = train(TrainConfig(**SMALL, dataset=composite, epochs=2, out_dir=str(tmp_path / "a"), plots=False))
    train(TrainConfig(**SMALL, dataset=composite, epochs=2, max_steps=4, out_dir=str(tmp_path / "b"), plots=False))
    resumed = train(
        TrainConfig(**SMALL, dataset=composite, epochs=2, out_dir=str(tmp_path / "b"), resume=True, plots=False)
    )
    assert resumed.steps == whole.steps == 12
    assert resumed.step_losses == whole.step_losses
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The checkpoint records what orders the sums; resuming under other values says so (and still runs).
    saved = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["numerics"]
    assert saved == dict(device="cpu", threads=torch.get_num_threads(), torch=torch.__version__)
    path, cpu = tmp_path / "b" / "checkpoint.pt", torch.device("cpu")
    assert note_resume_numerics(saved, cpu, path) is None and note_resume_numerics(None, cpu, path) is None
    capsys.readouterr()
    note = note_resume_numerics({**saved, "threads": saved["threads"] + 1}, cpu, path)
    assert f"with threads {saved['threads'] + 1} → {saved['threads']}: the run continues, but not bit for bit" in note
    assert capsys.readouterr().err.strip() == note


def test_init_from_a_classifier_loads_the_backbone(composite, tmp_path):
    torch.manual_seed(1)
    classifier = create_model("mobilenet_v2", width_mult=0.25, num_classes=10)
    card = ModelCard(
        arch="mobilenet_v2",
        model_kwargs=dict(width_mult=0.25, num_classes=10),
        preprocessing=Preprocessing(resolution=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        class_names=[str(i) for i in range(10)],
    )
    weights = save_weights(classifier, card, tmp_path / "mnv2.safetensors")
    cfg = TrainConfig(**SMALL, dataset=composite, epochs=1, max_steps=1, lr=1e-9, out_dir=str(tmp_path / "run"))
    result = train(dataclasses.replace(cfg, init=str(weights)))
    detector, ours = result.model.state_dict(), classifier.state_dict()
    stem = "stem.conv.weight"
    assert torch.allclose(detector["backbone." + stem], ours[stem], atol=1e-6)
    assert result.model.transform.image_mean == [0.485, 0.456, 0.406]  # the weights' normalization, kept in model.pt
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert saved["meta"]["model_kwargs"]["image_std"] == [0.229, 0.224, 0.225]


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(freeze=True), "--freeze is a classifier option"),
        (dict(preset="paper"), "no paper preset"),
        (dict(batch_size=1), "--batch-size >= 2"),
    ],
)
def test_classifier_options_are_refused_in_one_line(composite, tmp_path, flags, message):
    cfg = TrainConfig(**{**SMALL, **flags}, dataset=composite, out_dir=str(tmp_path))
    with pytest.raises(MobileNetsError, match=message) as e:
        train(cfg)
    assert "\n" not in str(e.value)
