"""Fine-tuning and distillation: --freeze, --freeze-epochs, --backbone-lr-scale, the finetune preset,
distillation_loss against a hand computation, a --teacher run, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numeric import torch_threads

from mobilenets import cli
from mobilenets import weights as W
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.training import TrainConfig, atomic_save, build_optimizer, load_checkpoint, load_model, lr_factor, train
from mobilenets.training.losses import distillation_loss
from mobilenets.training.teacher import teacher_input

# 320 digits at 16 px, α = 0.25: 5 steps of 64 per epoch, about a second each run.
TINY = dict(
    dataset="digits",
    width_mult=0.25,
    batch_size=64,
    max_train_samples=320,
    max_test_samples=100,
    progress=False,
    tensorboard=False,
    plots=False,
)
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def run(**kw):
    with torch_threads(1):
        return train(TrainConfig(**{**TINY, **kw}))


def initial_state(meta: dict, seed: int = 0) -> dict:
    """The weights a run starts from, rebuilt independently: the model seeded the way a run seeds it."""
    torch.manual_seed(seed)
    return create_model(meta["model"], **meta["model_kwargs"]).state_dict()


def split(state: dict) -> tuple[dict, dict]:
    head = {k: v for k, v in state.items() if k.startswith("classifier.")}
    return head, {k: v for k, v in state.items() if k not in head}


def test_freeze_keeps_the_backbone_and_its_bn_statistics_bitwise(tmp_path):
    result = run(epochs=2, freeze=True, out_dir=str(tmp_path / "probe"))
    ckpt = load_checkpoint(tmp_path / "probe" / "model.pt")
    head, backbone = split(ckpt["model"])
    head0, backbone0 = split(initial_state(ckpt["meta"]))
    assert result.steps == 10
    assert any(k.endswith(BN_STATS) for k in backbone)
    for k in backbone:
        assert torch.equal(backbone[k], backbone0[k]), f"frozen {k} changed"
    assert head and all(not torch.equal(head[k], head0[k]) for k in head), "the classifier did not train"


def test_freeze_epochs_probes_then_unfreezes_and_resumes_across_the_switch(tmp_path):
    # 3 epochs, the first a linear probe. Stop after epoch 1: the backbone is still the initial one.
    first = run(epochs=3, freeze_epochs=1, max_steps=5, out_dir=str(tmp_path / "ft"))
    assert first.steps == 5
    ckpt = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    _, backbone = split(ckpt["model"])
    _, backbone0 = split(initial_state(ckpt["meta"]))
    assert all(torch.equal(backbone[k], backbone0[k]) for k in backbone)
    # Resume: epochs 2-3 fine-tune everything (BN statistics too), bit for bit as an uninterrupted run.
    resumed = run(epochs=3, freeze_epochs=1, resume=True, out_dir=str(tmp_path / "ft"))
    whole = run(epochs=3, freeze_epochs=1, out_dir=str(tmp_path / "whole"))
    _, backbone = split(load_checkpoint(tmp_path / "ft" / "model.pt")["model"])
    changed = [k for k in backbone if not torch.equal(backbone[k], backbone0[k])]
    assert "stem.bn.running_mean" in changed and "stem.conv.weight" in changed
    assert resumed.step_losses == whole.step_losses and resumed.steps == 15
    a, b = load_checkpoint(tmp_path / "ft" / "model.pt")["model"], load_checkpoint(tmp_path / "whole" / "model.pt")
    assert all(torch.equal(a[k], b["model"][k]) for k in a)
    assert all(p.requires_grad for p in whole.model.parameters())


def test_backbone_lr_scale_in_the_param_groups_and_the_finetune_preset():
    preset = TrainConfig(preset="finetune", batch_size=256).resolved()
    assert (preset.backbone_lr_scale, preset.lr, preset.schedule, preset.depthwise_weight_decay) == (
        1.0,
        0.1,
        "cosine",
        0.0,
    )
    assert preset.warmup_epochs < TrainConfig(preset="sgd").resolved().warmup_epochs
    cfg = TrainConfig(preset="finetune", batch_size=256, backbone_lr_scale=0.1).resolved()
    model = create_model("mobilenet_v1", width_mult=0.25, num_classes=10)
    opt = build_optimizer(model, cfg)
    head = {id(p) for p in model.classifier.parameters()}
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # every weight, once
    for g in opt.param_groups:
        is_head = {id(p) in head for p in g["params"]}
        assert is_head == {g["name"].startswith("head/")}
        assert g["lr"] == pytest.approx(cfg.lr * (1 if g["name"].startswith("head/") else 0.1))
        assert g["weight_decay"] == (cfg.weight_decay if g["name"].endswith("/decay") else 0.0)
    assert opt.param_groups[0]["name"] == "head/decay"  # the lr the logs report is the classifier's
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 100, 10, cfg))
    for _ in range(7):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone/decay"] == pytest.approx(0.1 * lrs["head/decay"]) and lrs["head/decay"] > 0
    # The other presets keep one group per kind of decay, as before.
    plain = build_optimizer(model, TrainConfig(preset="sgd").resolved())
    assert len(plain.param_groups) == 3 and "name" not in plain.param_groups[0]


def _hand_ce(s: np.ndarray, y: np.ndarray, smoothing: float) -> float:
    logp = s - s.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    q = np.full_like(s, smoothing / s.shape[1])
    q[np.arange(len(y)), y] += 1 - smoothing
    return float(-(q * logp).sum(1).mean())


def _hand_kl(t: np.ndarray, s: np.ndarray, temperature: float) -> float:
    def softmax(z):
        e = np.exp(z / temperature - (z / temperature).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    pt, ps = softmax(t), softmax(s)
    return float((pt * (np.log(pt) - np.log(ps))).sum(1).mean())


def test_distillation_loss_matches_a_hand_computation():
    s = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 0.0, 0.0]])
    t = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0], [-1.0, 4.0, 0.5]])
    y = np.array([1, 2, 0])
    S, Tt, Y = torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), torch.tensor(y)
    for w, temp, ls in [(0.3, 2.0, 0.1), (0.5, 4.0, 0.0), (1.0, 1.0, 0.0)]:
        want = (1 - w) * _hand_ce(s, y, ls) + w * temp**2 * _hand_kl(t, s, temp)
        assert float(distillation_loss(S, Tt, Y, w, temp, ls)) == pytest.approx(want, rel=1e-5)
    # w = 1: pure soft targets, scaled by T² — the KL alone shrinks as T grows, the loss keeps its size.
    for temp in (1.0, 2.0, 8.0):
        got = float(distillation_loss(S, Tt, Y, 1.0, temp))
        assert got == pytest.approx(temp**2 * _hand_kl(t, s, temp), rel=1e-5)
    assert float(distillation_loss(S, Tt, Y, 0.0, 4.0, 0.1)) == pytest.approx(_hand_ce(s, y, 0.1), rel=1e-6)
    assert float(distillation_loss(S, S, Y, 1.0, 3.0)) == pytest.approx(0.0, abs=1e-6)  # same logits: no KL


def test_teacher_input_is_the_same_pixels_at_the_teachers_size_and_normalization():
    pixels = torch.rand(4, 1, 16, 16)
    student = (pixels - 0.3) / 0.4
    got = teacher_input(student, (0.3,), (0.4,), 32, 3, (0.5, 0.4, 0.3), (0.5, 0.25, 0.2))
    resized = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    want = (resized - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 0.2]).view(1, 3, 1, 1)
    assert got.shape == (4, 3, 32, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_run_with_a_teacher_from_an_earlier_run(tmp_path):
    # The teacher: α = 0.5 at 16 px. The student: α = 0.25 at 24 px, so the batch is resized for the teacher.
    run(epochs=1, width_mult=0.5, out_dir=str(tmp_path / "teacher"))
    kw = dict(epochs=1, resolution=24, teacher=str(tmp_path / "teacher"), distill_weight=0.5, distill_temperature=2.0)
    student = run(out_dir=str(tmp_path / "student"), **kw)
    _, meta = load_model(tmp_path / "student" / "model.pt")
    assert meta["teacher"]["source"] == str((tmp_path / "teacher" / "model.pt").resolve())
    assert meta["teacher"]["resolution"] == 16 and meta["teacher"]["model_kwargs"]["width_mult"] == 0.5
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["teacher"] == str(tmp_path / "teacher") and config["distill_weight"] == 0.5
    alone = run(epochs=1, resolution=24, out_dir=str(tmp_path / "alone"))
    assert all(np.isfinite(student.step_losses)) and student.step_losses != alone.step_losses
    # Resume mid-epoch with the teacher: the same numbers as the uninterrupted run.
    run(out_dir=str(tmp_path / "resumed"), max_steps=2, **kw)
    resumed = run(out_dir=str(tmp_path / "resumed"), resume=True, **kw)
    assert resumed.step_losses == student.step_losses


def one_line_error(**kw) -> str:
    with pytest.raises(MobileNetsError) as e:
        run(**kw)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_errors_are_one_line_and_write_nothing(tmp_path):
    out = str(tmp_path / "out")
    assert "not both" in one_line_error(freeze=True, freeze_epochs=1, out_dir=out)
    assert "--freeze-epochs below --epochs" in one_line_error(epochs=2, freeze_epochs=2, out_dir=out)
    assert "needs a --teacher" in one_line_error(distill_weight=0.5, out_dir=out)
    assert "--distill-weight above 0" in one_line_error(teacher="pretrained", distill_weight=0.0, out_dir=out)
    assert "no such file" in one_line_error(teacher=str(tmp_path / "nope"), distill_weight=0.5, out_dir=out)
    # A teacher for other classes: a 5-class model.pt in the format train writes.
    model = create_model("mobilenet_v1", width_mult=0.25, num_classes=5, in_chans=1, resolution=16, stem_stride=1)
    kwargs = dict(num_classes=5, in_chans=1, resolution=16, width_mult=0.25, stem_stride=1)
    meta = dict(model="mobilenet_v1", model_kwargs=kwargs, classes=list("abcde"), mean=[0.5], std=[0.5])
    meta.update(resolution=16, in_chans=1, dataset="x")
    atomic_save(dict(meta=meta, config={}, model=model.state_dict(), ema=None), tmp_path / "five.pt")
    message = one_line_error(teacher=str(tmp_path / "five.pt"), distill_weight=0.5, out_dir=out)
    assert "predicts 5 classes but the dataset has 10" in message
    assert not Path(out).exists()


def test_pretrained_teacher_must_match_the_dataset_classes(tmp_path):
    try:
        W.pretrained_weights_path()
    except MobileNetsError:
        pytest.skip("pretrained MobileNetV1 weights not installed")
    message = one_line_error(teacher="pretrained", distill_weight=0.5, out_dir=str(tmp_path / "out"))
    assert "predicts 1001 classes but the dataset has 10" in message


def test_cli_freeze_flags_and_help(capsys, tmp_path):
    args = ["train", "--dataset", "digits", "--freeze", "--freeze-epochs", "1", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mobilenets: error:") and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--freeze", "--freeze-epochs", "--backbone-lr-scale", "--teacher", "--distill-weight", "finetune"):
        assert flag in out


def test_a_v3_teacher_for_a_v2_student(tmp_path):
    # Distillation across families: a MobileNetV3-Small run teaches a MobileNetV2 at another resolution.
    run(model="mobilenet_v3_small", epochs=1, out_dir=str(tmp_path / "teacher"))
    teacher, _ = load_model(tmp_path / "teacher" / "model.pt")
    kw = dict(model="mobilenet_v2", epochs=1, resolution=24, distill_weight=0.5)
    student = run(out_dir=str(tmp_path / "student"), teacher=str(tmp_path / "teacher"), **kw)
    _, meta = load_model(tmp_path / "student" / "model.pt")
    info = meta["teacher"]
    assert (info["model"], info["resolution"], info["model_kwargs"]["stem_stride"]) == ("mobilenet_v3_small", 16, 1)
    assert meta["model"] == "mobilenet_v2" and meta["model_kwargs"]["stem_stride"] == 1
    alone = run(out_dir=str(tmp_path / "alone"), **{**kw, "distill_weight": 0.0})
    assert all(np.isfinite(student.step_losses)) and student.step_losses != alone.step_losses
    # Same start, same batch: the first loss is 0.5·CE (alone's, halved) + 0.5·T²·KL(teacher ‖ student), KL > 0.
    assert student.step_losses[0] > 0.5 * alone.step_losses[0]
    assert teacher.cfg.size == "small"
