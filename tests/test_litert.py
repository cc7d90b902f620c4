"""LiteRT (.tflite): files written by litert-torch and run by ai-edge-litert's interpreter match PyTorch on real
images; int8 files are full-integer, keep the decisions of a trained model and cannot saturate on any CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch", reason="LiteRT tests need pip install 'mobilenets[litert]'")
pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT tests need pip install 'mobilenets[litert]'")

from mobilenets.deploy import export as ex  # noqa: E402
from mobilenets.deploy import litert  # noqa: E402
from mobilenets.deploy.images import calibrate_bn  # noqa: E402
from mobilenets.deploy.verify import int8_safety  # noqa: E402
from mobilenets.errors import MobileNetsError  # noqa: E402
from mobilenets.models import create_model  # noqa: E402


def calibrated(name: str, **kw) -> nn.Module:
    """A random-init model whose BN statistics are measured on real photos, so its logits are not ~0."""
    torch.manual_seed(0)
    model = create_model(name, **kw)
    return calibrate_bn(model, ex.real_images(48, model.in_chans, model.resolution, split="train", seed=7))


def deployable(model: nn.Module) -> nn.Module:
    return ex.static_padding(ex.fold_bn(model), model.resolution)


# V1 on photos; V2 (ReLU6, residual adds) and V3 (hard-swish, squeeze-excite with a hard-sigmoid gate and an x·gate
# multiply) as Fashion-MNIST models: 1 channel, 10 classes, stem stride 1.
SMALL = dict(in_chans=1, num_classes=10, stem_stride=1, resolution=32)
FP32_MODELS = [
    ("mobilenet_v1_0.25_128", dict(resolution=64)),
    ("mobilenet_v2", dict(width_mult=0.35, **SMALL)),
    ("mobilenet_v3_small", dict(width_mult=0.75, **SMALL)),
    # SqueezeNet's fire modules and bypass shortcuts (Xception's file: reports/int8-accuracy/.../seed-networks).
    ("squeezenet1_0_complex_bypass", dict(in_chans=1, num_classes=10, resolution=48)),
]


@pytest.mark.parametrize("name,kw", FP32_MODELS, ids=[n for n, _ in FP32_MODELS])
def test_fp32_round_trip_matches_pytorch(tmp_path, name, kw):
    model = calibrated(name, **kw)
    res, chans = model.resolution, model.in_chans
    path = tmp_path / "m.tflite"
    start = time.perf_counter()
    litert.write(deployable(model), path, res)
    print(f"fp32 conversion {time.perf_counter() - start:.1f}s")
    images = ex.real_images(16, chans, res, split="test", seed=3)
    with torch.no_grad():
        ref = model(images).numpy()  # the unfolded model: folding, padding and conversion are all checked
    out = litert.run(path, images)
    assert out.shape == ref.shape == (16, model.num_classes)
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).all()
    # The file takes NHWC float input of batch 1, like TF-slim's published MobileNet files.
    interp = litert._interpreter(path)
    inp = interp.get_input_details()[0]
    assert list(inp["shape"]) == [1, res, res, chans] and inp["dtype"] == np.float32
    assert litert.metadata(path) is None
    # Metadata goes into the file (atomically) and changes nothing of what it computes.
    litert.set_metadata(path, {"format": "tflite", "precision": "fp32"})
    assert litert.metadata(path) == {
        "format": "tflite",
        "precision": "fp32",
        "input_layout": "NHWC",
        "input_shape": [1, res, res, chans],
    }
    assert np.array_equal(litert.run(path, images), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


@pytest.fixture(scope="module", params=["fashion_model_v3"])
def fashion_int8(request, tmp_path_factory):
    """The session's trained V3-Small (V1's ops plus hard-swish, squeeze-excite, residual adds) as an int8 file:
    (model, test images, labels, path). V1's LiteRT int8 is checked on the pretrained model below."""
    model, images, labels, calib = request.getfixturevalue(request.param)
    path = tmp_path_factory.mktemp("litert") / "q.tflite"
    start = time.perf_counter()
    litert.quantize(deployable(model), path, calib, 28)
    print(f"int8 conversion (256 calibration images) {time.perf_counter() - start:.1f}s")
    return model, images, labels, path


@pytest.mark.slow
def test_int8_keeps_fashion_mnist_accuracy(fashion_int8):
    model, images, labels, path = fashion_int8
    with torch.no_grad():
        ref = model(images)
    fp32_acc = float((ref.argmax(1) == labels).float().mean())
    assert fp32_acc >= 0.70, "the fixture's training did not learn"
    out = litert.run(path, images, "int8")
    int8_acc = float((torch.from_numpy(out).argmax(1) == labels).float().mean())
    v = ex.compare_outputs(ref, out, "LiteRT", "int8")
    print(f"LiteRT {type(model).__name__}: fp32 {100 * fp32_acc:.1f}%  int8 {100 * int8_acc:.1f}%; {v.summary()}")
    assert int8_acc >= fp32_acc - 0.015  # goal ≤ 1 point; 1.5 allows 2000-image noise
    assert v.top1_agreement >= 0.9 and v.clear_images >= 1000 and v.clear_agreement >= 0.95
    # Full-integer: int8 in, int8 out; a quarter of the fp32 weight bytes, give or take the graph.
    interp = litert._interpreter(path)
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8
    n_params = sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < 0.6 * 4 * n_params + 100_000


@pytest.mark.slow
def test_int8_cannot_saturate(fashion_int8):
    """Read from the file: symmetric per-channel int8 weights within [-127, 127] and int8 activations, which
    XNNPACK accumulates in 32 bits on every CPU. Then check it on this CPU: XNNPACK gives what LiteRT's portable
    reference kernels (plain int32 arithmetic) give, up to requantization rounding."""
    model, images, _, path = fashion_int8
    ranges = litert.int8_ranges(path)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(ranges) == len(convs)  # every conv (squeeze-excite's too) and linear layer holds int8 weights
    assert all(-127 <= r["min"] and r["max"] <= 127 and r["zero_point"] == 0 for r in ranges)
    assert max(max(-r["min"], r["max"]) for r in ranges) == 127  # per-channel scales use the full range
    assert {r["activation"] for r in ranges} == {"int8"}
    # The depthwise convs, and the 1-channel stem, which LiteRT also writes as a depthwise conv.
    depthwise = sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in convs)
    assert sum(r["depthwise"] for r in ranges) == depthwise + 1
    assert litert.int8_weight_ranges(path)[0] == tuple(ranges[0][k] for k in ("name", "min", "max", "activation"))
    # The residual adds are int8 ops (traced non-strict, litert-torch's quantizer missed them: float ADDs).
    residuals = sum(getattr(m, "use_residual", False) for m in model.modules())
    assert _op_types(path).get(("ADD", "INT8"), 0) >= residuals
    x = images[:200]
    fast, exact = litert.run(path, x), litert.run_reference(path, x)
    # Requantization rounding between layers swaps near-tied classes on a few images (97.5-99%); saturation
    # would move whole logit vectors, which the bound on |Δ| below catches.
    assert (fast.argmax(1) == exact.argmax(1)).mean() >= 0.95
    assert np.abs(fast - exact).max() <= 0.1 * np.abs(exact).max()


def _op_types(path) -> dict[tuple[str, str], int]:
    """(operator, output tensor type) → count, read from a .tflite with LiteRT's flatbuffer schema."""
    schema, model = litert._model(path)
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = [
        max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
        for i in range(model.OperatorCodesLength())
    ]
    graph, counts = model.Subgraphs(0), {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        key = (ops[codes[op.OpcodeIndex()]], types[graph.Tensors(op.Outputs(0)).Type()])
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(scope="module")
def pretrained():
    try:
        model, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
    except MobileNetsError as e:  # `make test` installs them; a bare `pytest` elsewhere may not have them
        pytest.skip(str(e))
    calib = ex.real_images(100, 3, 224, "train", stats=stats)
    verify = ex.real_images(64, 3, 224, "test", stats=stats)
    return model, calib, verify


@pytest.mark.slow
def test_pretrained_int8_keeps_clear_imagenet_decisions(tmp_path, pretrained):
    """The int8 file of Google's ImageNet MobileNet keeps the float model's clear top-1 decisions on 64 real photo
    crops. Measured with bias correction: 94.6% (35 of 37) with these 100 calibration images, and 89% of all 64
    crops (72% without it); the issue's goal of 95% is one crop away, so this guards 90% like the other
    runtimes' tests (tests/test_export.py)."""
    model, calib, verify = pretrained
    path = tmp_path / "q.tflite"
    start = time.perf_counter()
    litert.quantize(deployable(model), path, calib, 224)
    print(f"pretrained int8 conversion (100 calibration images) {time.perf_counter() - start:.1f}s")
    with torch.no_grad():
        ref = model(verify)
    v = ex.compare_outputs(ref, litert.run(path, verify, "int8"), "LiteRT", "int8")
    print(v.summary())
    assert v.clear_images >= 20 and v.clear_agreement >= 0.9 and v.top1_agreement >= 0.8
    ranges = litert.int8_ranges(path)  # 27 convs + the classifier; not the int8 scalars that clamp at 6
    assert len(ranges) == 28 and sum(r["depthwise"] for r in ranges) == 13
    assert all(-127 <= r["min"] and r["max"] <= 127 and r["zero_point"] == 0 for r in ranges)
    assert {r["activation"] for r in ranges} == {"int8"}
    assert int8_safety(ranges).everywhere  # (tests/test_deploy.py reads the other int8 formats' files so)


# ----------------------------------------------------------------------------------------------------
# Bad input: one clear line


def test_bad_files_and_inputs_fail_in_one_line(tmp_path):
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"\x00" * 64)
    for call in (litert.metadata, litert.int8_ranges, litert.load):
        with pytest.raises(MobileNetsError, match="not a LiteRT"):
            call(not_tflite)
    with pytest.raises(MobileNetsError, match="cannot read"):
        litert.load(tmp_path / "missing.tflite")
    model = calibrated("mobilenet_v1_0.25_128", resolution=32)
    path = tmp_path / "m.tflite"
    litert.write(deployable(model), path, 32)
    with pytest.raises(MobileNetsError, match=r"takes images of shape \[1, 32, 32, 3\]"):
        litert.run(path, torch.zeros(2, 3, 64, 64))
    assert litert.int8_ranges(path) == []  # an fp32 file has no int8 weights


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch now raises ImportError
    with pytest.raises(MobileNetsError, match=r"'litert-torch'.*pip install 'mobilenets\[litert\]'") as e:
        litert.write(nn.Conv2d(3, 3, 1), None, 32)
    assert "\n" not in str(e.value)


def test_export_prints_no_native_info_lines(tmp_path):
    # Issue 34: `export --format tflite` printed the converter's "I0000 ... port.cc:153] oneDNN custom operations are
    # on" (absl, while the library loads), its op count, and "INFO: Created TensorFlow Lite XNNPACK delegate".
    # A fresh process: the notice appears only when the converter loads.
    root = Path(__file__).resolve().parents[1]
    args = "mobilenet_v1 --width-mult 0.25 --resolution 32 --num-classes 10 --format tflite --verify-images 8"
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenets", "export", *args.split(), "-o", str(tmp_path / "m.tflite")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "m.tflite").stat().st_size > 1000 and "LiteRT vs PyTorch" in proc.stdout
    lines = (proc.stdout + proc.stderr).splitlines()
    assert "writing tflite fp32 (LiteRT)" in lines  # our own progress lines still come through
    noise = [line for line in lines if litert_info_line(line)]
    assert not noise, noise


def litert_info_line(line: str) -> bool:
    """An info line of absl/TensorFlow ("I0000 00:00:17.5 9098 port.cc:153] ...") or of TensorFlow Lite ("INFO: ...")
    - written out here, not taken from deploy.deps, so that a wrong pattern there cannot pass."""
    return bool(re.match(r"I\d{4} \S+ +\d+ \S+\] |INFO: |WARNING: All log messages before absl", line))
