"""`train --qat` for a detector (issue 28): fake int8 exactly where the int8 files quantize (backbone, extra layers,
the head's depthwise convs; not the prediction convs), a run from a trained detector that writes a model.pt any
detector loader reads with the weights it trained, observers frozen in evaluation, and one-line refusals."""

from __future__ import annotations

import re

import pytest
import torch
from numeric import torch_threads

from mobilenets.cli import main
from mobilenets.data.composite import write_composite
from mobilenets.deploy import detection as det
from mobilenets.detection import create_detector
from mobilenets.quant.qat_detection import prepare_detector
from mobilenets.training import TrainConfig, load_model, train

MODEL, WIDTH, SIZE = "ssdlite320_mobilenet_v3_small", 0.5, 160


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    root = tmp_path_factory.mktemp("composite")
    write_composite(root, num_train=16, num_test=8, size=SIZE, seed=0, progress=False)
    return f"composite:{root}"


@pytest.fixture(scope="module")
def trained(composite, tmp_path_factory):
    """A detector trained for two steps (the float run --qat starts from)."""
    out = tmp_path_factory.mktemp("float")
    cfg = TrainConfig(
        model=MODEL, width_mult=WIDTH, resolution=SIZE, dataset=composite, epochs=1, batch_size=8, eval_every=1,
        out_dir=str(out), progress=False, tensorboard=False, plots=False,
    )  # fmt: skip
    return train(cfg)


def _quantized_convs(graph: torch.fx.GraphModule) -> dict[str, bool]:
    """Each conv of a prepared graph (by module path) → whether its weight goes through a fake quantizer."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    out = {}
    for node in graph.graph.nodes:
        if node.op == "call_function" and "conv2d" in str(node.target):
            weight = node.args[1]
            fq = weight.op == "call_module" and isinstance(graph.get_submodule(weight.target), FakeQuantizeBase)
            path = list(node.meta["nn_module_stack"].values())[-1][0].removeprefix("L['self'].")
            out[path] = fq
    return out


def test_fake_int8_exactly_where_the_int8_files_quantize():
    torch.manual_seed(0)
    model = create_detector(MODEL, num_classes=11, width_mult=WIDTH, size=SIZE)
    qat = prepare_detector(model, "executorch")
    backbone = _quantized_convs(qat.detector.backbone)
    head = _quantized_convs(qat.detector.head)
    assert len(backbone) > 40 and all(backbone.values())
    depthwise = {p: q for p, q in head.items() if re.search(r"module_list\.\d+\.0\.", p)}
    prediction = {p: q for p, q in head.items() if re.search(r"module_list\.\d+\.1$", p)}
    assert len(head) == len(depthwise) + len(prediction)
    assert len(depthwise) == 12 and all(depthwise.values())  # 6 maps × (class, box) heads
    assert len(prediction) == 12 and not any(prediction.values())
    # The optimizer sees the folded detector's parameters by their own names: depthwise filters among them.
    names = dict(qat.named_parameters())
    assert "head.classification_head.module_list.0.1.weight" in names
    assert sum(p.numel() for p in names.values()) == sum(p.numel() for p in qat.detector.backbone.parameters()) + sum(
        p.numel() for p in qat.detector.head.parameters()
    )


def test_qat_run_writes_a_detector_with_the_weights_it_trained(trained, composite, tmp_path):
    cfg = TrainConfig(
        model=MODEL, width_mult=WIDTH, resolution=SIZE, dataset=composite, epochs=1, batch_size=8, eval_every=1,
        init=trained.model_path, qat="executorch", out_dir=str(tmp_path / "qat"), progress=False, tensorboard=False,
        plots=False,
    )  # fmt: skip
    result = train(cfg)
    qat = result.model
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.step_losses)))
    # model.pt is a plain detector holding the trained (BN-folded) weights: its detections are the float graph's.
    model, meta = load_model(result.model_path)
    assert meta["qat"]["target"] == "executorch" and model.qat_meta == meta["qat"]
    photos = det.photo_images()
    folded = qat.float_model.eval()
    for ours, theirs in zip(det.detect_with_model(model, photos), det.detect_with_model(folded, photos)):
        assert torch.equal(ours["labels"], theirs["labels"])
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=1e-5, rtol=0)
    # The weights moved from the float run's (they trained), and evaluation left the observers where they were.
    start, _ = load_model(trained.model_path)
    moved = model.state_dict()["head.classification_head.module_list.0.1.weight"]
    assert not torch.equal(moved, start.state_dict()["head.classification_head.module_list.0.1.weight"])
    observers = [m for m in qat.detector.backbone.modules() if hasattr(m, "scale")]
    scales = [m.scale.clone() for m in observers]
    qat.eval()
    with torch.no_grad():
        qat([torch.rand(3, 100, 120)])
    assert observers and all(torch.equal(a, m.scale) for a, m in zip(scales, observers))
    # Fake int8 is on in evaluation: the QAT detector's scores are near, not equal to, the float graph's.
    with torch.no_grad():
        fake = qat([photos[0]])[0]["scores"]
        real = folded([photos[0]])[0]["scores"]
    assert not torch.equal(fake, real)
    # Its int8 file's card says the weights trained through fake int8 and how activations were ranged.
    path = tmp_path / "qat_int8.onnx"
    calib = det.calibration_images(model.resolution, 8, composite)
    det.export_detector(model, path, "onnx", "int8", calib_images=calib, verify=False)
    assert "trained through executorch's fake int8" in det.file_info(path, "onnx")["int8"]["qat"]


def test_qat_refusals_are_one_line(composite, tmp_path, capsys):
    code = main(["train", "--model", MODEL, "--dataset", composite, "--qat", "--out-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--init" in err
