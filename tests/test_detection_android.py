"""Detectors on ncnn and MNN, Android's own runtimes (issue 37): each file run by its runtime's Python module against
the PyTorch detector on real images (composite test images and scikit-image photos). ncnn decodes the boxes in the
file and leaves each class's top-k and NMS to the runner (no TopK or NMS layer); MNN runs the ONNX graph's
NonMaxSuppression itself. fp32 gives the same detections, fp16 the same within its stated rule, ncnn int8 keeps the
confident ones; MNN int8 is refused with its reason, nothing written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numeric import torch_threads

from mobilenets.cli import main
from mobilenets.data.composite import write_composite
from mobilenets.data.detection import load_detection_dataset
from mobilenets.deploy import detection as det
from mobilenets.deploy import runtime_module
from mobilenets.deploy.images import calibrate_bn
from mobilenets.deploy.verify import int8_safety
from mobilenets.detection import create_detector
from mobilenets.errors import MobileNetsError

pytest.importorskip("ncnn")
pytest.importorskip("MNN")
pytest.importorskip("pnnx")

MODEL, WIDTH, SIZE = "ssdlite320_mobilenet_v3_small", 0.5, 160
FILES = {"ncnn": ["det.bin", "det.param", "det.param.json"], "mnn": ["det.mnn", "det.mnn.json"]}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Torch and both runtimes on one thread (the shared 2-core machine; ncnn's OpenMP threads otherwise spin)."""
    monkeypatch.setenv("MOBILENETS_THREADS", "1")
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    """16 training and 8 test images of the composite set at 160 px."""
    root = tmp_path_factory.mktemp("composite")
    write_composite(root, num_train=16, num_test=8, size=SIZE, seed=0, progress=False)
    return f"composite:{root}"


@pytest.fixture(scope="module")
def data(composite):
    train, test = load_detection_dataset(composite, "train"), load_detection_dataset(composite, "test")
    return train, test, det.photo_images()


@pytest.fixture(scope="module")
def detector(data):
    """tests/test_detection_export.py's seeded detector: BatchNorm statistics from real images and class-logit convs
    wide enough that softmax scores spread past 0.5 (749 detections ≥ 0.3, 72 ≥ 0.5 on these 14 images)."""
    train, _, photos = data
    with torch_threads(1):
        torch.manual_seed(0)
        model = create_detector(MODEL, num_classes=train.num_classes, width_mult=WIDTH, size=SIZE).eval()
        images = torch.cat([det.resize_for(model.resolution, x) for x in det.dataset_images(train) + photos])
        calibrate_bn(model.backbone, (images - 0.5) / 0.5)
        with torch.no_grad():
            for conv in model.head.classification_head.modules():
                if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1):
                    conv.weight.normal_(0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def calib(detector, data):
    return torch.cat([det.resize_for(detector.resolution, x) for x in det.dataset_images(data[0])])


def export(detector, data, path, format, precision="fp32", **kw):
    train, test, photos = data
    return det.export_detector(
        detector, path, format, precision, classes=train.classes, verify_images=photos, verify_dataset=test, **kw
    )


def path_for(tmp_path, format):
    return tmp_path / f"det{runtime_module(format).SUFFIX}"


# ----------------------------------------------------------------------------------------------------
# fp32: the PyTorch detector's detections


def test_ncnn_fp32_decodes_in_the_file_and_leaves_topk_and_nms_to_the_runner(detector, data, tmp_path):
    result = export(detector, data, path_for(tmp_path, "ncnn"), "ncnn")
    v = result.verification
    assert v.passed and v.reference > 100 and v.matched == v.reference and v.extra == 0, v.summary()
    assert v.min_iou >= 0.999 and v.max_score_diff <= 1e-4, v.summary()
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES["ncnn"]  # companions in place, nothing else
    info = det.file_info(result.path, "ncnn")
    assert info["nms"]["where"] == "runner" and info["nms"]["topk"] == "runner"
    assert info["runtime_options"] == runtime_module("ncnn").OPTIONS["fp32"]  # every reduced-precision switch off
    # ncnn's own layers only: no TopK, no gather, no NMS
    assert not runtime_module("ncnn").unconverted_ops(result.path)
    # The file's raw outputs are the detector's decoded, clipped boxes and softmax scores for every anchor.
    photo = det.resize_for(detector.resolution, data[2][1])
    with torch.no_grad():
        boxes, scores = det.DecodedDetector(detector).eval()(photo)
    out = det.RUNNERS["ncnn"](result.path, 1)(photo.numpy())
    assert np.abs(out[0] - boxes.numpy()).max() <= 1e-5 * SIZE
    assert np.abs(out[1] - scores.numpy()).max() <= 1e-5


def test_ncnn_fp32_card_reports_the_figures_under_ncnn_defaults_too(detector, data, tmp_path):
    """The file is verified under the card's options (every reduced-precision switch off) and run again under a
    fresh ncnn.Net's options, what a user who skips the card gets: the card and the export's output state both."""
    import ncnn as ncnn_runtime

    ncnn = runtime_module("ncnn")
    result = export(detector, data, path_for(tmp_path, "ncnn"), "ncnn")
    v = result.verification
    card = ncnn.metadata(result.path)
    figures = card["verification"]
    with_card, with_defaults = figures["with_card_options"], figures["with_runtime_defaults"]
    assert figures["images"] == v.num_images == len(data[1]) + len(data[2])
    assert figures["runtime_defaults"] == ncnn.default_options() and card["runtime_options"] == ncnn.OPTIONS["fp32"]
    assert (with_card["matched"], with_card["reference"], with_card["summary"]) == (v.matched, v.reference, v.summary())
    # The same detections of the model, judged by the same rule: only the file's side changed.
    assert with_defaults["reference"] == v.reference and 0 <= with_defaults["matched"] <= v.reference
    assert with_defaults["summary"].startswith("ncnn (its default options: use_fp16_storage=")
    assert [line for line in result.checks if "default options" in line] == [result.checks[0]]
    assert ("passes" if with_defaults["passed"] else "FAILS") in result.checks[0]
    # Independently, ncnn's own defaults (a fresh Net, nothing set but the file) on a photo's raw outputs.
    photo = det.resize_for(detector.resolution, data[2][1])
    network = ncnn_runtime.Net()
    network.opt.num_threads = 1
    assert network.load_param(str(result.path)) == 0 and network.load_model(str(ncnn.bin_path(result.path))) == 0
    image = np.ascontiguousarray(photo[0].numpy())
    mat = ncnn_runtime.Mat(image)
    with network.create_extractor() as extractor:
        extractor.input(ncnn.INPUT, mat)
        scores = np.array(extractor.extract(ncnn.DETECTOR_OUTPUTS[1])[1]).copy()
    with_options = det.RUNNERS["ncnn"](result.path, 1)(photo.numpy())[1]
    # Where the defaults change ncnn's arithmetic (fp16 storage: every AVX2 x86 CPU has F16C, Arm), the card's second
    # figure shows it; where they do not, the two figures agree.
    if not np.array_equal(scores, with_options):
        assert with_defaults["max_score_diff"] > with_card["max_score_diff"]
    else:
        assert with_defaults["max_score_diff"] == with_card["max_score_diff"]
    if ncnn_runtime.cpu_support_x86_avx2():
        assert not np.array_equal(scores, with_options)


def test_mnn_fp32_runs_nms_in_the_file(detector, data, tmp_path):
    result = export(detector, data, path_for(tmp_path, "mnn"), "mnn")
    v = result.verification
    assert v.passed and v.reference > 100 and v.matched == v.reference and v.extra == 0, v.summary()
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES["mnn"]
    info = det.file_info(result.path, "mnn")
    assert info["nms"]["where"] == "file" and info["nms"]["op"].startswith("MNN NonMaxSuppressionV2")
    # Every one of torchvision's 300 detections on a photo, down to the 0.001 score threshold, in that photo's pixels.
    photo = data[2][1]
    ref = det.detect_with_model(detector, [photo])[0]
    out = det.detect_with_file(result.path, "mnn", [photo])[0]
    assert len(out["scores"]) == len(ref["scores"]) == 300 and torch.equal(out["labels"], ref["labels"])
    torch.testing.assert_close(out["scores"], ref["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["boxes"], ref["boxes"], atol=1e-3 * max(photo.shape), rtol=0)


def test_mnn_nms_keeps_torchvisions_rules(tmp_path):
    """MNN's NonMaxSuppressionV2 (from the ONNX op) keeps score > threshold and suppresses IoU > threshold, as
    torchvision's SSD: ties at both thresholds, two classes, against torchvision.ops.nms."""
    from torchvision.ops import nms

    mnn = runtime_module("mnn")

    class Wrap(torch.nn.Module):
        def forward(self, boxes, scores):
            return det._NonMaxSuppression.apply(boxes, scores, 10, 0.5, 0.3)

    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 10], [50, 50, 60, 60], [1, 0, 11, 10.0]]])
    boxes = torch.cat([boxes, boxes.flip(1)])
    scores = torch.tensor([[[0.9, 0.8, 0.7, 0.3, 0.31]], [[0.31, 0.3, 0.7, 0.8, 0.9]]])
    with torch.no_grad():
        torch.onnx.export(
            Wrap(), (boxes, scores), str(tmp_path / "nms.onnx"), opset_version=17, input_names=["boxes", "scores"],
            output_names=["chosen"], dynamo=False,
        )  # fmt: skip
    mnn._tool("mnnconvert", "-f", "ONNX", "--modelFile", str(tmp_path / "nms.onnx"), "--MNNModel", str(tmp_path / "n"))
    mnn_nn, expr = mnn._mnn()
    module = mnn_nn.load_module_from_file(str(tmp_path / "n"), ["boxes", "scores"], ["chosen"])
    b, s = boxes.numpy(), scores.numpy()
    got = np.array(
        module.forward([expr.const(b, list(b.shape), expr.NCHW), expr.const(s, list(s.shape), expr.NCHW)])[0].read()
    )
    expected = []
    for c in range(2):
        keep = torch.nonzero(scores[c, 0] > 0.3).flatten()
        expected += [[c, 0, int(i)] for i in keep[nms(boxes[c, keep], scores[c, 0, keep], 0.5)]]
    assert got.tolist() == expected and [0, 0, 1] in expected  # IoU exactly 0.5 is kept


# ----------------------------------------------------------------------------------------------------
# fp16: half the weights' bytes, the same detections within the fp16 rule


def test_fp16_rule():
    """Same label, IoU ≥ 0.98, |Δscore| ≤ 0.05, for ≥ 97% of the detections ≥ the floor: a box off by a little
    more than fp32 allows passes fp16 and not fp32; one off by more than fp16 allows fails both."""
    ref = {"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.8])}

    def shifted(dx, score):
        return {"boxes": ref["boxes"] + torch.tensor([dx, 0, dx, 0]), "labels": ref["labels"], "scores": score}

    near = shifted(0.3, torch.tensor([0.83]))  # IoU 0.985, Δscore 0.03
    far = shifted(0.7, torch.tensor([0.8]))  # IoU 0.966
    assert det.match_detections([ref], [near], "ncnn", "fp16").passed
    assert not det.match_detections([ref], [near], "ncnn", "fp32").passed
    assert not det.match_detections([ref], [far], "ncnn", "fp16").passed
    assert not det.match_detections([ref], [shifted(0, torch.tensor([0.86]))], "ncnn", "fp16").passed
    # The share: 97 of 100 detections equal pass, 96 do not.
    many = [ref] * 100
    for kept, passed in ((97, True), (96, False)):
        outs = [ref] * kept + [shifted(0, torch.tensor([0.7]))] * (100 - kept)
        m = det.match_detections(many, outs, "ncnn", "fp16")
        assert m.passed == passed and "need ≥ 97%: same label, IoU ≥ 0.98, score ± 0.05" in m.summary()


@pytest.mark.parametrize("format", ["ncnn", "mnn"])
def test_fp16_within_the_fp16_rule(detector, data, tmp_path, format):
    fp32 = det.WRITERS[format](detector, tmp_path / f"fp32{runtime_module(format).SUFFIX}")
    assert fp32 == {}
    result = export(detector, data, path_for(tmp_path, format), format, "fp16")
    v = result.verification
    assert v.passed and v.match_rate >= det.FP16_MIN_MATCH, v.summary()
    # Really fp16 (fp32 files agree to ~3e-6), within the stated tolerances.
    assert 1e-4 < v.max_score_diff <= det.FP16_SCORE_TOL and v.min_iou >= det.FP16_IOU, v.summary()
    size_fp32 = sum(p.stat().st_size for p in tmp_path.glob("fp32.*"))
    assert result.size_bytes < 0.6 * size_fp32  # the weights in 2 bytes
    card = runtime_module(format).metadata(result.path)
    assert card["precision"] == "fp16" and card["runtime_options"] == runtime_module(format).OPTIONS["fp16"]
    assert card["fp16"].startswith("conv weights fp16")


# ----------------------------------------------------------------------------------------------------
# int8: ncnn's int8 layers in the backbone and the head's depthwise convs; MNN refused


def test_ncnn_int8_keeps_confident_detections(detector, data, calib, tmp_path):
    result = export(detector, data, path_for(tmp_path, "ncnn"), "ncnn", "int8", calib_images=calib)
    v = result.verification
    assert v.passed and v.reference >= 50 and v.interval[1] >= det.INT8_MIN_KEPT, v.summary()
    ncnn = runtime_module("ncnn")
    ranges = ncnn.int8_ranges(result.path)
    convs = [m for m in detector.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ranges) == len(convs) - 12  # every conv but the head's 12 prediction convs (SE's convs included)
    assert int8_safety(ranges).everywhere and {r["activation"] for r in ranges} == {"int8"}
    int8 = result.built_for["int8"]
    assert int8["activations"] == "int8" and len(int8["float_convs"]) == 12
    assert all(name.startswith("head.") and name.endswith(".1") for name in int8["float_convs"])
    card = ncnn.metadata(result.path)
    # Which layers compute in float: the prediction convs, the decoding (BinaryOp, UnaryOp exp, MemoryData), softmax.
    assert {"Convolution", "BinaryOp", "UnaryOp", "MemoryData", "Softmax", "HardSwish"} <= set(card["float_layers"])
    assert card["runtime_options"]["use_int8_inference"] and card["runs_on"].startswith("every CPU")


def test_mnn_int8_is_refused_with_its_reason_and_nothing_written(detector, data, calib, tmp_path):
    with pytest.raises(MobileNetsError, match="not offered in int8: mnnquant puts int8 ranges and int8 lookup") as e:
        export(detector, data, path_for(tmp_path, "mnn"), "mnn", "int8", calib_images=calib)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []
    with pytest.raises(MobileNetsError, match="offers fp32, fp16, int8, not bf16"):
        export(detector, data, path_for(tmp_path, "ncnn"), "ncnn", "bf16")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# The CLI, and bench


@pytest.fixture
def checkpoint(detector, data, composite, tmp_path):
    """A detection run's model.pt holding the test detector."""
    train = data[0]
    meta = dict(
        task="detection",
        model=MODEL,
        model_kwargs=dict(num_classes=train.num_classes, width_mult=WIDTH, size=SIZE),
        classes=train.classes,
        dataset=composite,
    )
    path = tmp_path / "model.pt"
    torch.save({"meta": meta, "model": detector.state_dict()}, path)
    return path


def test_cli_export_ncnn_fp16_round_trip(checkpoint, data, tmp_path, capsys):
    out = tmp_path / "det.param"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "ncnn", "--precision", "fp16", "-o", str(out)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verification"]["passed"] and result["built_for"]["nms"]["where"] == "runner"
    found = det.detect_with_file(out, "ncnn", data[2][:1])[0]
    assert found["boxes"].shape[1] == 4 and np.isfinite(found["boxes"].numpy()).all()


def test_cli_bench_times_a_detector_checkpoint_on_ncnn_and_mnn(checkpoint, capsys):
    argv = ["bench", "--checkpoint", str(checkpoint), "--runtime", "ncnn", "mnn", "--precision", "fp16"]
    assert main([*argv, "--threads", "1", "--runs", "2", "--warmup", "1", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {(r["runtime"], r["precision"]) for r in results} == {("ncnn", "fp16"), ("mnn", "fp16")}
    assert all(r["latency"]["median_ms"] > 0 for r in results)
