"""Precise BN (issue 34): BatchNorm statistics recomputed for the evaluated weights, checked against statistics
computed by hand, and in the engine: the issue's 30-step run leaves chance, EMA weights get their own statistics,
a frozen backbone keeps its own. (Bit-for-bit resume, DDP and "training is untouched": tests/test_train.py.)"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from numeric import torch_threads
from torch import nn

from mobilenets import cli
from mobilenets import data as D
from mobilenets.errors import MobileNetsError
from mobilenets.training import TrainConfig, evaluate_file, load_checkpoint, load_model, train
from mobilenets.training.precise_bn import bn_layers, recompute_bn_stats

HAVE_FASHION_MNIST = D.fashion_mnist_dir() is not None
# As tests/test_train.py's: digits at 16 px, α = 0.25, 42 steps of 32 images per epoch.
TINY = dict(dataset="digits", width_mult=0.25, batch_size=32, epochs=1, progress=False, tensorboard=False, plots=False)


def run_tiny(**kw):
    with torch_threads(1):
        return train(TrainConfig(**{**TINY, **kw}))


def test_statistics_are_the_average_of_each_batchs_by_hand():
    # conv → BN → ReLU → dropout → conv → BN → (kept) BN. By hand: each BN layer's input in training mode (the first
    # BN normalizes with its batch's own statistics), its per-channel mean and unbiased variance, averaged over the
    # batches with equal weight; dropout stays off, so the second layer sees every activation.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5)
    )
    kept = nn.BatchNorm2d(5)
    model.append(kept)
    with torch.no_grad():
        for bn in (model[1], model[5], kept):
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
            bn.running_mean.uniform_(-1, 1)
    kept_before = (kept.running_mean.clone(), kept.running_var.clone())
    batches = [torch.randn(n, 3, 6, 6) * 3 + 1 for n in (8, 5, 8)]  # a short last batch counts as one, like the rest
    model.train()
    model[0].eval()  # every flag comes back as it was
    rng = torch.get_rng_state()

    assert recompute_bn_stats(model, batches, keep=[kept]) == 3

    means1, vars1, means2, vars2 = [], [], [], []
    with torch.no_grad():
        for x in batches:
            h1 = model[0](x)
            m1, v1 = h1.mean((0, 2, 3)), h1.var((0, 2, 3), unbiased=True)
            a = F.relu(F.batch_norm(h1, None, None, model[1].weight, model[1].bias, training=True, eps=model[1].eps))
            h2 = model[4](a)
            means1.append(m1), vars1.append(v1)
            means2.append(h2.mean((0, 2, 3))), vars2.append(h2.var((0, 2, 3), unbiased=True))
    for bn, means, variances in ((model[1], means1, vars1), (model[5], means2, vars2)):
        want_mean, want_var = torch.stack(means).mean(0), torch.stack(variances).mean(0)
        torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-5 * want_mean.abs().max())
        torch.testing.assert_close(bn.running_var, want_var, rtol=1e-5, atol=0)
        assert bn.num_batches_tracked == 3 and bn.momentum == 0.1
    assert torch.equal(kept.running_mean, kept_before[0]) and torch.equal(kept.running_var, kept_before[1])
    assert [m.training for m in model] == [False] + [True] * 6
    assert torch.equal(torch.get_rng_state(), rng)  # no dropout mask was drawn
    # No batch at all leaves the statistics as they were.
    before = model[1].running_mean.clone()
    assert recompute_bn_stats(model, []) == 0 and torch.equal(model[1].running_mean, before)
    assert bn_layers(model, keep=model) == []


@pytest.mark.skipif(not HAVE_FASHION_MNIST, reason="dataset-fashion-mnist not installed (make data)")
def test_the_issues_30_step_run_leaves_chance(tmp_path, capsys):
    # Issue 34's first command: 30 steps of V1 α 0.25 on 2,000 Fashion-MNIST images scored 10% (chance), every
    # evaluation normalizing with moving averages that trail the weights.
    out = tmp_path / "run"
    args = "train --width-mult 0.25 --dataset fashion-mnist --max-train-samples 2000 --max-test-samples 500 --epochs 2"
    with torch_threads(1):
        argv = [*args.split(), "--out-dir", str(out), "--threads", "1", "--no-progress", "--no-tensorboard"]
        assert cli.main([*argv, "--no-plots", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 30 and result["test_acc"] >= 0.40
    # The same weights with the statistics training kept (checkpoint.pt holds the run's own model): near chance.
    stale = evaluate_file(out / "checkpoint.pt", max_samples=500)
    assert stale.top1 < 0.25 < result["test_acc"] - 0.15
    # model.pt holds what was evaluated.
    assert evaluate_file(out / "model.pt", max_samples=500).top1 == pytest.approx(result["test_acc"])


def test_ema_weights_get_statistics_of_their_own(tmp_path):
    # adamw's EMA (decay 0.999): model.pt holds the EMA's weights with statistics recomputed for them, the checkpoint
    # the EMA as training kept it.
    out = tmp_path / "ema"
    result = run_tiny(preset="adamw", max_steps=20, out_dir=str(out))
    saved, ckpt = load_checkpoint(out / "model.pt")["model"], load_checkpoint(out / "checkpoint.pt")
    assert result.precise_bn_s > 0
    for key, value in ckpt["ema"].items():
        if "running" in key:
            assert not torch.equal(saved[key], value), key
        elif "num_batches" not in key:
            assert torch.equal(saved[key], value), key
    # The recomputed statistics are the EMA weights' own: one pass over the same training images by hand.
    model, meta = load_model(out / "checkpoint.pt")  # the EMA's weights, its statistics as training kept them
    train_set = D.load_dataset("digits", "train")
    order = D.epoch_order(len(train_set), 0, -1)
    batches = [
        D.prepare_batch(train_set.images[order[k * 32 : (k + 1) * 32]], meta["mean"], meta["std"], 16, 1)
        for k in range(32)
    ]
    recompute_bn_stats(model, batches)
    for key, value in model.state_dict().items():
        if "running" in key:
            torch.testing.assert_close(saved[key], value, rtol=1e-4, atol=1e-5 * float(value.abs().max()))


def test_a_frozen_backbone_keeps_its_statistics(tmp_path):
    # --freeze: the backbone's BN layers stay in eval mode and keep the statistics its classifier trains on (here a
    # random start's: mean 0, variance 1); only the classifier, which has no BN, learns. Nothing to recompute.
    out = tmp_path / "probe"
    run_tiny(freeze=True, max_steps=4, out_dir=str(out))
    saved = load_checkpoint(out / "model.pt")["model"]
    means = [v for k, v in saved.items() if k.endswith("running_mean")]
    assert means and all(torch.equal(m, torch.zeros_like(m)) for m in means)
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in saved.items() if k.endswith("running_var"))


def test_config_and_cli(tmp_path, capsys):
    assert TrainConfig().resolved().precise_bn == 32
    with pytest.raises(MobileNetsError, match="precise_bn must be >= 0"):
        TrainConfig(precise_bn=-1).resolved()
    parse = cli.build_parser().parse_args
    assert parse(["train", "--no-precise-bn"]).precise_bn == 0
    assert parse(["train", "--precise-bn", "8"]).precise_bn == 8
    assert parse(["train"]).precise_bn == 32
    # A run that resumes with another --precise-bn trains on: it changes what is evaluated, never the training.
    out = tmp_path / "run"
    run_tiny(max_steps=3, out_dir=str(out), precise_bn=0)
    assert run_tiny(max_steps=5, out_dir=str(out), precise_bn=4, resume=True).steps == 5
    assert json.loads((out / "config.json").read_text())["precise_bn"] == 4
