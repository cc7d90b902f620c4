"""ncnn and MNN, Android's own runtimes (issue 37): files exported by pnnx and by MNN's converter, each run by its own
Python module against PyTorch on real images; the defaults that would change the answers (pnnx's fp16 weights, ncnn's
fp16 options) are not taken; the ncnn runner keeps its input buffers alive; int8 weights are read back from the files.

Small models (α 0.25, 32 px, few images): the pretrained V1 1.0/224's figures come from benchmarks/android_runtimes.py.
"""

from __future__ import annotations

import copy
import gc
import json

import numpy as np
import pytest
import torch
from numeric import assert_close_scaled, torch_threads

from mobilenets.cli import main
from mobilenets.deploy import bench, runtime_module
from mobilenets.deploy import export as ex
from mobilenets.deploy.images import calibrate_bn, real_images
from mobilenets.deploy.verify import FP16_RTOL, int8_safety
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.quant.fold import fold_bn, static_padding

pytest.importorskip("ncnn")
pytest.importorskip("MNN")
pytest.importorskip("pnnx")

FORMATS = ("ncnn", "mnn")
RES = 32
FILES = {"ncnn": ["m.bin", "m.param", "m.param.json"], "mnn": ["m.mnn", "m.mnn.json"]}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Torch and both runtimes on one thread (the shared 2-core machine; ncnn's OpenMP threads otherwise spin)."""
    monkeypatch.setenv("MOBILENETS_THREADS", "1")
    with torch_threads(1):
        yield


def spread(name: str = "mobilenet_v1", res: int = RES, **kw) -> torch.nn.Module:
    """A random-init classifier with a real spread in its logits: BN statistics from real photos, and a prototype
    classifier (each class the centred features of one real photo), scaled so that most top-1 decisions are clear
    and reduced precisions can be judged on them. Purely random classifier rows make logits of cancelling terms,
    which fp16 rounding moves several times more than a trained model's."""
    torch.manual_seed(0)
    model = create_model(name, resolution=res, num_classes=10, **kw)
    model = calibrate_bn(model, real_images(32, model.in_chans, res, split="train", seed=7))
    head = model.classifier
    with torch.no_grad():
        if isinstance(head, torch.nn.Linear):
            photos = real_images(10, model.in_chans, res, split="train", seed=8)
            features = model.forward_head(model.forward_features(photos), pre_logits=True)
            features = features - features.mean(0)
            head.weight.copy_(features / features.norm(dim=1, keepdim=True))
        logits = model(real_images(16, model.in_chans, res, split="train", seed=9))
        head.weight *= 12 / float(logits.std(1).mean())
        head.bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def v1():
    return spread(width_mult=0.25)


@pytest.fixture(scope="module")
def images():
    return real_images(32, 3, RES, split="test")


def export(model, tmp_path, format, precision="fp32", images=None, **kw):
    path = tmp_path / f"m{ex.SUFFIXES[format]}"
    if precision == "int8":
        kw.setdefault("calib_images", real_images(32, model.in_chans, model.resolution, split="train"))
    return ex.export(model, path, format, precision, verify_images=images, **kw)


# ----------------------------------------------------------------------------------------------------
# fp32: agrees with PyTorch to fp32 precision; fp32 weights; the card's options and ncnn's defaults both reported


@pytest.mark.parametrize("format", FORMATS)
def test_fp32_round_trip(tmp_path, v1, images, format):
    result = export(v1, tmp_path, format, images=images)
    v = result.verification
    assert v.passed and v.num_images == 32 and v.top1_agreement == 1.0 and v.max_abs_ref > 5
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES[format]  # no temp files, companions in place
    # Independently: other crops, the runtime's own module, the unfolded PyTorch model.
    fresh = real_images(6, 3, RES, split="test", seed=123)
    with torch.no_grad():
        ref = v1(fresh)
    assert_close_scaled(ex.run_model_file(result.path, format, fresh), ref, 1e-4)
    # fp32 weights: 4 bytes per parameter (pnnx's default, fp16=1, would store 2).
    params = sum(p.numel() for p in v1.parameters() if p.ndim > 1)
    assert 4 * params <= result.size_bytes < 4 * params * 1.2 + 20_000
    # The card: what it was built for, the options it runs with, and the figures under those and under the defaults.
    card = runtime_module(format).metadata(result.path)
    assert card.items() >= result.built_for.items()
    assert card["runtime_options"] == runtime_module(format).OPTIONS["fp32"]
    figures = card["verification"]
    assert figures["with_card_options"]["max_abs_diff"] == v.max_abs_diff
    assert set(figures["with_runtime_defaults"]) == {"max_abs_diff", "top1_agreement"}
    assert any("default options" in line for line in result.checks)


def test_ncnn_fp32_options_turn_off_every_reduced_precision():
    ncnn_module = runtime_module("ncnn")
    assert not any(ncnn_module.OPTIONS["fp32"].values())
    # ncnn's own defaults are fp16 storage and arithmetic: the reason the card's options exist.
    assert ncnn_module.default_options()["use_fp16_storage"]


@pytest.mark.parametrize(
    "format,name,kw",
    [
        # V3: hard-swish, the squeeze-excite gate and multiply, residual adds; 1 channel (Fashion-MNIST images).
        ("ncnn", "mobilenet_v3_small", dict(width_mult=0.5, in_chans=1)),
        ("mnn", "mobilenet_v3_small", dict(width_mult=0.5, in_chans=1)),
        # V2: ReLU6 and linear bottlenecks; SqueezeNet's fire concat, ceil-mode pools and bypass adds (48 px at least).
        ("ncnn", "mobilenet_v2", dict(width_mult=0.35)),
        ("mnn", "squeezenet1_0_complex_bypass", dict(res=48)),
    ],
)
def test_other_families_round_trip(tmp_path, format, name, kw):
    model = spread(name, **kw)
    imgs = real_images(16, model.in_chans, model.resolution, split="test")
    result = export(model, tmp_path, format, images=imgs)
    assert result.verification.passed and result.verification.top1_agreement == 1.0


# ----------------------------------------------------------------------------------------------------
# fp16: half the bytes, and what it costs on the same images


@pytest.mark.parametrize("format", FORMATS)
def test_fp16_is_half_the_file_within_the_fp16_tolerance(tmp_path, v1, images, format):
    result = export(v1, tmp_path, format, "fp16", images=images)
    v = result.verification
    assert v.passed and v.clear_agreement == 1.0
    params = sum(p.numel() for p in v1.parameters() if p.ndim > 1)
    assert 2 * params <= result.size_bytes < 2 * params * 1.2 + 20_000  # 2 bytes per weight
    # Really fp16 (the fp32 files agree to ~1e-6 of the largest logit), within the tolerance stated for fp16.
    assert 1e-4 * v.max_abs_ref < v.max_abs_diff <= FP16_RTOL * v.max_abs_ref
    assert runtime_module(format).metadata(result.path)["precision"] == "fp16"


# ----------------------------------------------------------------------------------------------------
# int8: clear-decision agreement, and weights read back out of the file


# MNN with KL here: on this random-weight network EMA's ranges keep 74% of the clear decisions (KL 94%), on trained
# ones the reverse (mnn.CALIBRATIONS), so EMA is the default and KL what this model is verified with.
@pytest.mark.parametrize("format,calibration", [("ncnn", None), ("mnn", "kl")])
def test_int8_file_and_its_weights(tmp_path, v1, images, format, calibration):
    model = copy.deepcopy(v1)
    with torch.no_grad():  # a mostly-zero pointwise conv: MNN stores such weights in its sparse encoding
        weight = model.blocks[1].pointwise.conv.weight
        keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) < 0.1
        keep[:, 0] = True  # no channel all zero (MNN gives such a channel the scale 0/0)
        weight.mul_(keep.float())
    result = export(model, tmp_path, format, "int8", images=images, min_agreement=0.9, calibration=calibration)
    v = result.verification
    assert v.passed and v.clear_images >= 20, v.summary()
    module = runtime_module(format)
    weights = module.int8_weights(result.path)
    assert len(weights) == 28  # stem + 13 depthwise + 13 pointwise + classifier
    ranges = module.int8_ranges(result.path)
    assert int8_safety(ranges).everywhere and {r["activation"] for r in ranges} == {"int8"}
    assert all(-127 <= r["min"] and r["max"] <= 127 and r.get("zero_point", 0) == 0 for r in ranges)
    # The integers read back are the float model's folded weights rounded per output channel (max |w| ↦ 127).
    folded = static_padding(fold_bn(model), RES)
    convs = [m for m in folded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for conv, read in zip(convs, weights):
        w = conv.weight.detach().double().flatten(1).numpy()
        step = np.abs(w).max(1) / 127
        # ncnn stores 127/max|w| (a multiplier), MNN max|w|/127 (a step), which its dump prints to 6 decimals.
        scales = 1 / read["scales"] if format == "ncnn" else read["scales"]
        assert np.allclose(scales, step, rtol=1e-3, atol=1e-6)
        assert np.abs(read["values"] - np.rint(w / step[:, None])).max() <= 1
    card = module.metadata(result.path)
    assert card["int8"]["activations"] == "int8" and card["runs_on"].startswith("every CPU")
    assert card.get("float_layers") or card.get("float_ops")  # which ops keep float arithmetic
    # A quarter of the fp32 bytes, give or take the scales.
    params = sum(p.numel() for p in v1.parameters() if p.ndim > 1)
    assert result.size_bytes < 1.6 * params + 60_000


# ----------------------------------------------------------------------------------------------------
# The ncnn binding's buffer trap: the runner keeps every input alive through extract


def test_ncnn_runner_keeps_input_buffers_alive(tmp_path, v1):
    path = export(v1, tmp_path, "ncnn", verify=False).path
    run = ex.load_runner(path, "ncnn", "fp32", threads=1)
    base = real_images(3, 3, RES, split="test", seed=5).numpy()
    with torch.no_grad():
        ref = v1(torch.from_numpy(base)).numpy()

    def fresh():  # a temporary nobody else holds: freed as soon as the runner lets go of it
        return base.copy()

    first = run(fresh())  # the first inference after load, where the freed buffer showed
    gc.collect()
    clobber = [np.full_like(base, 1e3) for _ in range(8)]  # reuse freed memory, if any was freed too early
    later = [run(fresh()) for _ in range(3)]
    del clobber
    assert all(np.array_equal(first, out) for out in later)
    assert_close_scaled(first, ref, 1e-4)


# ----------------------------------------------------------------------------------------------------
# Refusals: one line, nothing written


def test_refusals_write_nothing(tmp_path, v1, images, monkeypatch):
    with pytest.raises(MobileNetsError, match="ncnn does not offer bf16"):
        export(v1, tmp_path, "ncnn", "bf16")
    with pytest.raises(MobileNetsError, match="onnx does not offer fp16"):
        ex.export(v1, tmp_path / "m.onnx", "onnx", "fp16")
    with pytest.raises(MobileNetsError, match="mnn int8 uses signed activations"):
        export(v1, tmp_path, "mnn", "int8", weight_bits=8)
    with pytest.raises(MobileNetsError, match=r"mnn int8 calibrates by ema, kl; got --calibration 'minmax'"):
        export(v1, tmp_path, "mnn", "int8", calibration="minmax")
    with pytest.raises(MobileNetsError, match=r"ncnn files end in \.param"):
        ex.export(v1, tmp_path / "m.bin", "ncnn")
    assert list(tmp_path.iterdir()) == []
    # A file that fails verification is not written, and an earlier export stays whole.
    for name in FILES["ncnn"]:
        (tmp_path / name).write_text("previous")
    monkeypatch.setattr(ex, "run_model_file", lambda p, f, imgs, *a, **k: np.random.randn(len(imgs), 10))
    with pytest.raises(MobileNetsError, match="ncnn fp32 export failed verification, nothing written") as e:
        export(v1, tmp_path, "ncnn", images=images[:8])
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES["ncnn"]
    assert {(tmp_path / n).read_text() for n in FILES["ncnn"]} == {"previous"}


def test_converter_failure_is_one_line(tmp_path, v1, monkeypatch):
    import pnnx

    monkeypatch.setattr(pnnx, "EXEC_PATH", "/bin/false")
    with pytest.raises(MobileNetsError, match="pnnx failed to convert the model") as e:
        export(v1, tmp_path, "ncnn", verify=False)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# The CLI, and bench


def test_cli_export_mnn_keeps_stdout_clean(tmp_path, capfd):
    out = tmp_path / "m.mnn"
    argv = ["export", "mobilenet_v1_0.25_128", "--resolution", "32", "--format", "mnn", "--verify-images", "8"]
    assert main([*argv, "-o", str(out), "--json"]) == 0
    stdout = capfd.readouterr().out
    result = json.loads(stdout)  # nothing but the JSON: MNN's own lines do not reach stdout
    assert result["format"] == "mnn" and any("MNN's default options" in line for line in result["checks"])


def test_bench_runs_ncnn_and_mnn(v1):
    results = bench.bench_model(v1, "tiny", ("ncnn", "mnn"), ("fp16",), (1,), threads=1, runs=3, warmup=1)
    assert {(r.runtime, r.precision) for r in results} == {("ncnn", "fp16"), ("mnn", "fp16")}
    assert all(r.latency.median_ms > 0 for r in results)
