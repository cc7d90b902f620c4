"""Quantization-aware training: a short --qat fine-tune trains through the int8 an ExecuTorch file computes,
resumes bit for bit, and exports; bad combinations fail with one clear line."""

from __future__ import annotations

import pytest
import torch
from numeric import torch_threads

from mobilenets.deploy import export as ex
from mobilenets.deploy.images import real_images
from mobilenets.deploy.verify import compare_outputs, int8_safety
from mobilenets.errors import MobileNetsError
from mobilenets.quant.fold import fold_bn
from mobilenets.quant.qat import from_trained
from mobilenets.training import TrainConfig, load_model, train

SMALL = dict(
    model="mobilenet_v1",
    width_mult=0.25,
    resolution=28,
    stem_stride=1,
    dataset="fashion-mnist",
    max_train_samples=2000,
    max_test_samples=200,
    batch_size=64,
    preset="sgd",
    label_smoothing=0.0,
    translate=0.0,
    progress=False,
    tensorboard=False,
    plots=False,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A float run (2 epochs of 2,000 images, ~6 s), then a 12-step --qat fine-tune of it."""
    with torch_threads(1):
        root = tmp_path_factory.mktemp("qat")
        try:
            train(TrainConfig(**SMALL, epochs=2, out_dir=str(root / "float")))
        except MobileNetsError as e:  # no Fashion-MNIST here
            pytest.skip(str(e))
        qat = dict(SMALL, epochs=1, init=str(root / "float" / "model.pt"), qat="executorch")
        result = train(TrainConfig(**qat, max_steps=12, out_dir=str(root / "qat")))
        return root, qat, result


def _folded_weights(model: torch.nn.Module) -> dict:
    return {k: v for k, v in fold_bn(model).state_dict().items() if k.endswith("weight")}


@pytest.mark.slow
def test_qat_trains_the_int8_the_executorch_file_computes(runs, tmp_path):
    root, _, result = runs
    start, _ = load_model(root / "float" / "model.pt")
    model, meta = load_model(result.model_path)
    assert meta["qat"] == {"target": "executorch"} and model.qat_state["target"] == "executorch"
    # The fine-tune moved the weights (in the folded form every exporter quantizes) ...
    before, after = _folded_weights(start), _folded_weights(model)
    assert before.keys() == after.keys()
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 1e-4
    # ... and learned activation ranges: every fake-quantize scale observed (its initial value is 1.0).
    scales = [v for k, v in model.qat_state["state"].items() if k.endswith(".scale")]
    assert len(scales) >= 10 and all(torch.isfinite(s).all() and (s != 1.0).all() and (s > 0).all() for s in scales)

    # Weights are fake-quantized symmetrically, as every int8 file stores them: per-channel zero points all 0
    # (XNNPACK's fused QAT kernel gave a one-signed channel an affine grid, zero point ±64).
    zero_points = [v for k, v in model.qat_state["state"].items() if k.endswith(".zero_point") and v.numel() > 1]
    assert len(zero_points) >= 10 and all(not zp.any() for zp in zero_points)
    _assert_file_is_the_trained_graph(model, meta, tmp_path / "qat.pte", "executorch")


def _assert_file_is_the_trained_graph(model, meta, out, fmt) -> None:
    exported = ex.export(model, out, fmt, "int8", verify=False)
    assert f"converted from the {model.qat_state['target']} QAT graph" in exported.built_for["int8"]["qat"]
    assert int8_safety(ex.runtime_module(fmt).int8_ranges(out)).everywhere
    images = real_images(48, 1, 28, "test", stats=(tuple(meta["mean"]), tuple(meta["std"])))
    file_logits = torch.from_numpy(ex.run_model_file(out, fmt, images, "int8"))
    with torch.no_grad():
        float_logits = model(images)
        fake_quant_logits = from_trained(model, model.qat_state)(images)
    # The int8 file is the graph training saw: the runtime's integer kernels land near the fake-quantized
    # forward pass, several times nearer than to the same weights in float (a QAT run that trained in float,
    # or converted something else, fails here). Measured: 0.07× (ONNX Runtime, OpenVINO), 0.07× (XNNPACK).
    to_fake_quant = float((file_logits - fake_quant_logits).abs().max())
    to_float = float((file_logits - float_logits).abs().max())
    assert to_fake_quant < 0.4 * to_float, (to_fake_quant, to_float)
    # Decisions judged where the fake-quantized model is clear (export's rule): a 12-step fine-tune leaves many
    # near-ties, which integer kernels swap differently per CPU (on an AVX2-only EPYC XNNPACK's swapped 6 of 48).
    agreement = compare_outputs(fake_quant_logits, file_logits, fmt, "int8")
    assert agreement.clear_images >= 16 and agreement.clear_agreement >= 0.9, agreement


@pytest.fixture(scope="module")
def onnx_run(runs):
    """A 12-step --qat onnx fine-tune of the same float run: u8 activations, 7-bit weights."""
    root, qat, _ = runs
    with torch_threads(1):
        return train(TrainConfig(**{**qat, "qat": "onnx"}, max_steps=12, out_dir=str(root / "qat_onnx")))


@pytest.mark.slow
@pytest.mark.parametrize("fmt, target", [("onnx", "onnx"), ("openvino", "onnx"), ("tflite", "executorch")])
def test_qat_converts_to_every_runtime(runs, onnx_run, fmt, target, tmp_path):
    # ONNX Runtime and OpenVINO take the same QDQ graph (u8 activations, |w| <= 64); LiteRT the XNNPACK scheme.
    result = onnx_run if target == "onnx" else runs[2]
    model, meta = load_model(result.model_path)
    assert model.qat_state["target"] == target
    _assert_file_is_the_trained_graph(model, meta, tmp_path / f"qat{ex.SUFFIXES[fmt]}", fmt)


@pytest.mark.slow
def test_qat_model_for_another_scheme_is_requantized(runs, onnx_run, tmp_path):
    model, _ = load_model(runs[2].model_path)  # trained for XNNPACK's 8-bit grid: ONNX Runtime quantizes it again
    exported = ex.export(model, tmp_path / "x.onnx", "onnx", "int8", verify=False)
    assert exported.built_for["int8"]["qat"].startswith("QAT weights (trained for executorch)")
    model, _ = load_model(onnx_run.model_path)
    with pytest.raises(MobileNetsError, match="trained on the 7-bit weight grid"):
        ex.export(model, tmp_path / "y.onnx", "onnx", "int8", verify=False, weight_bits=8)


@pytest.mark.slow
def test_qat_resumes_bit_for_bit(runs):
    root, qat, straight = runs
    out = root / "resumed"
    with torch_threads(1):  # as the straight run: bit-for-bit needs the same reduction order
        train(TrainConfig(**qat, max_steps=6, out_dir=str(out)))
        train(TrainConfig(**qat, max_steps=12, out_dir=str(out), resume=True))
    a = torch.load(straight.model_path, weights_only=True)
    b = torch.load(out / "model.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys() and a["qat"]["state"].keys() == b["qat"]["state"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["qat"]["state"]:
        assert torch.equal(a["qat"]["state"][key], b["qat"]["state"][key]), key


def test_qat_relu6_outputs_train_on_the_clamps_grid():
    """A ReLU6 network with TF "SAME" pads (TF-slim's V1, as the pretrained model): each relu output is
    fake-quantized by its clamp's module (a range within [0, 6], not the conv's whole range), and the graph the
    exporters convert, its inserted clamps dropped, computes the same."""
    from mobilenets.deploy.images import calibrate_bn
    from mobilenets.models import create_model
    from mobilenets.quant.passes import RELU6_CLAMP
    from mobilenets.quant.qat import fake_quant_graph, prepare

    torch.manual_seed(0)
    model = create_model(
        "mobilenet_v1", width_mult=0.25, resolution=32, in_chans=1, num_classes=10, act="relu6", padding="tf_same"
    )
    images = real_images(32, 1, 32, "train")
    calibrate_bn(model, images)
    relu6 = sum(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    qat = prepare(model, "onnx", 32)
    calls = [n for n in qat.graph.graph.nodes if n.op == "call_module"]
    assert relu6 == 27 and len(calls) - len({n.target for n in calls}) == relu6
    with torch.no_grad():
        qat.train()(images)  # observe
        trained = qat.eval()(images)
    shared = {n.target for n in calls if n.args[0].meta.get(RELU6_CLAMP)}
    assert len(shared) == relu6
    for name in shared:
        fq = qat.graph.get_submodule(name)
        assert float(fq.scale) * (fq.quant_max - int(fq.zero_point)) <= 6.0 + 1e-4
    model.load_state_dict(qat.float_state())
    graph = fake_quant_graph(model, qat.qat_state(), 32)
    assert not any(n.meta.get(RELU6_CLAMP) for n in graph.graph.nodes)
    with torch.no_grad():
        assert torch.equal(graph(images), trained)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(qat="executorch"), "--qat fine-tunes a trained model"),
        (dict(qat="coreml", init="x.pt"), "unknown --qat target 'coreml'"),
        (dict(qat="onnx", init="x.pt", compile=True, ema_decay=0.999), "drop --compile, --ema-decay with it"),
    ],
)
def test_qat_bad_options_are_one_line_errors(changes, message):
    with pytest.raises(MobileNetsError, match=message):
        TrainConfig(**{**SMALL, **changes}).resolved()


@pytest.mark.slow
def test_cli_train_qat(runs, tmp_path, capsys):
    from mobilenets.cli import main

    root, _, _ = runs
    flags = ["--model", "mobilenet_v1", "--width-mult", "0.25", "--stem-stride", "1", "--max-train-samples", "2000"]
    flags += ["--max-test-samples", "200", "--batch-size", "64", "--no-progress", "--no-tensorboard", "--no-plots"]
    out = tmp_path / "cli"
    init = str(root / "float" / "model.pt")
    argv = ["train", "--qat", "--init", init, "--max-steps", "3", "--out-dir", str(out), *flags]
    assert main(argv) == 0
    model, meta = load_model(out / "model.pt")
    assert meta["qat"] == {"target": "executorch"} and model.qat_state["state"]
    assert main(["train", "--qat", "--out-dir", str(tmp_path / "x"), *flags]) == 2
    assert "mobilenets: error: --qat fine-tunes a trained model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
