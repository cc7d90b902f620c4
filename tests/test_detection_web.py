"""`export --format web` for a detector (issue 28): a page that draws the detector's boxes on a dropped photo,
offline, checked in a real headless Chromium against native ONNX Runtime on the same model.onnx and against PyTorch.

One seeded detector (as tests/test_detection_export.py's), exported once per precision by the CLI and opened in one
browser for the whole module; the references are native ONNX Runtime and PyTorch, never the page itself.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from numeric import torch_threads
from PIL import Image

from mobilenets.cli import main
from mobilenets.data.composite import write_composite
from mobilenets.data.detection import load_detection_dataset
from mobilenets.deploy import detection as det
from mobilenets.deploy import web
from mobilenets.deploy.images import calibrate_bn
from mobilenets.deploy.onnx import session
from mobilenets.deploy.web import detect as web_detect
from mobilenets.detection import create_detector
from mobilenets.errors import MobileNetsError

MODEL, WIDTH, SIZE = "ssdlite320_mobilenet_v3_small", 0.5, 160
# The page's onnxruntime-web session against native ONNX Runtime on the same input tensor: the same detections
# (every one paired, same label), boxes within this share of the input size, scores within these. fp32: WebAssembly's
# kernels sum in their own order (measured on the AMD EPYC: boxes 3e-5 px of 160, scores 3e-6). int8: the integer
# sums are exact on both, the float rescaling before each requantization is not, so a value within a rounding error
# of a u8 step boundary lands on either side. Most images give the same detections (scores within 6e-7); where one
# u8 activation flips, this detector's wide class-logit convs carry it to every score (on the Intel Xeon with AMX,
# native ONNX Runtime's AVX-512 kernels: 1 of 10 images, scores up to 0.19 apart, 148 of its 300 detections). So
# int8 asserts what holds on every CPU: most detections identical, and on every image the confident ones kept.
BOX_TOL = {"fp32": 1e-3, "int8": 1e-2}
SCORE_TOL = {"fp32": 1e-4, "int8": 1e-3}
INT8_IDENTICAL_SHARE = 0.8

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
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
    """tests/test_detection_export.py's seeded detector: BatchNorm statistics measured on real images and wide
    class-logit convs, so that scores spread past 0.5 (hundreds of detections ≥ 0.3 on these 14 images)."""
    train, _, photos = data
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
def checkpoint(detector, data, composite, tmp_path_factory):
    train = data[0]
    meta = dict(
        task="detection",
        model=MODEL,
        model_kwargs=dict(num_classes=train.num_classes, width_mult=WIDTH, size=SIZE),
        classes=train.classes,
        dataset=composite,
    )
    path = tmp_path_factory.mktemp("det_ckpt") / "model.pt"
    torch.save({"meta": meta, "model": detector.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """`mobilenets export --checkpoint DET.pt --format web --precision P -o DIR --json`, once per precision: the
    folder and the JSON result. Verified on the 8 composite test images and the 6 photos (int8 calibrated on the 16
    training images)."""
    results = {}

    def export(precision: str):
        if precision not in results:
            folder = tmp_path_factory.mktemp("det_web") / f"det_{precision}_web"
            argv = ["export", "--checkpoint", str(checkpoint), "--format", "web", "--precision", precision]
            out = _run_cli([*argv, "-o", str(folder), "--json"])
            results[precision] = folder, json.loads(out)
        return results[precision]

    return export


@pytest.fixture(scope="module")
def pages(exported):
    """One page per exported folder, open in Chromium for the whole module (loading one takes seconds)."""
    opened = {}

    def page(precision: str) -> web_detect.DetectorPage:
        if precision not in opened:
            opened[precision] = web_detect.DetectorPage(exported(precision)[0])
        return opened[precision]

    yield page
    for p in opened.values():
        p.close()


def _run_cli(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return buffer.getvalue()


def _images(data) -> list[torch.Tensor]:
    """Real images: the 6 scikit-image photos and 4 composite test images."""
    return [*data[2], *det.dataset_images(data[1], 4)]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cli_writes_an_offline_folder_verified_in_chromium(exported, data, precision):
    folder, result = exported(precision)
    assert {p.name for p in folder.iterdir()} == {
        "model.onnx",
        "model.json",
        "index.html",
        "detect.js",
        "classify.js",
        "serve.py",
        *web.ORT_FILES,
    }
    assert not any("://" in (folder / f).read_text() for f in ("index.html", "detect.js", "classify.js"))  # no CDN
    v = result["verification"]
    assert v["passed"] and v["runtime"] == web.RUNTIME and v["num_images"] == 8 + 6
    if precision == "fp32":
        assert v["reference"] > 100 and v["matched"] == v["reference"] and v["extra"] == 0
        assert v["min_iou"] >= 0.999 and v["max_score_diff"] <= 1e-4
    else:
        assert v["reference"] >= 20 and v["matched"] >= 0.95 * v["reference"]
    # The page's own pipeline (PNG files, detect.js's decoding and resize) was checked too: on the photos and the
    # test images the detector was verified on (up to detection.PAGE_TEST_IMAGES of them).
    assert len(result["checks"]) == 1 and result["checks"][0].startswith("the page on 14 image files")
    config = json.loads((folder / "model.json").read_text())
    assert config["task"] == "detection" and config["input"] == [1, 3, SIZE, SIZE]
    assert config["classes"] == data[0].classes and config["precision"] == precision
    assert config["preprocessing"]["letterbox"] is False and config["preprocessing"]["range"] == [0, 1]
    assert config["thresholds"]["show"] == det.SCORE_FLOOR and config["thresholds"]["iou"] == 0.55
    # The card (model.onnx's metadata, and model.json's built_for) says where NMS runs.
    info = det.file_info(folder, "web")
    assert info == config["built_for"] == result["built_for"]
    assert info["nms"]["where"] == "file" and info["nms"]["op"] == "ONNX NonMaxSuppression"
    assert info["format"] == "web" and info["precision"] == precision
    if precision == "int8":
        assert info["int8"]["weights"].startswith("int7") and len(info["int8"]["float_convs"]) == 12


def _pair(reference: list[np.ndarray], page: list[np.ndarray], box_tol: float, score_tol: float) -> int:
    """Pair each of the reference's detections (best first) with the page's of the same label and the nearest box;
    asserts that every one pairs within the tolerances and none is left over. Returns how many were paired."""
    (rb, rl, rs), (pb, pl, ps) = reference, page
    assert len(rs) == len(ps)
    taken = np.zeros(len(ps), dtype=bool)
    for i in range(len(rs)):
        diff = np.abs(pb - rb[i]).max(1)
        diff[(pl != rl[i]) | taken] = np.inf
        j = int(diff.argmin())
        assert diff[j] <= box_tol and abs(ps[j] - rs[i]) <= score_tol, (i, rb[i], rl[i], rs[i], pb[j], ps[j])
        taken[j] = True
    # The order is the reference's but for near-ties (two scores within the tolerance may swap places).
    np.testing.assert_allclose(ps, rs, atol=score_tol, rtol=0)
    return len(rs)


def _count_paired(reference: list[np.ndarray], page: list[np.ndarray], box_tol: float, score_tol: float) -> int:
    """How many of the reference's detections (best first) have a page detection of the same label within the
    tolerances, each page detection paired at most once."""
    (rb, rl, rs), (pb, pl, ps) = reference, page
    taken, paired = np.zeros(len(ps), dtype=bool), 0
    for i in range(len(rs)):
        ok = (np.abs(pb - rb[i]).max(1) <= box_tol) & (np.abs(ps - rs[i]) <= score_tol) & (pl == rl[i]) & ~taken
        if ok.any():
            taken[int(ok.argmax())], paired = True, paired + 1
    return paired


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_page_gives_native_onnx_runtimes_detections(exported, pages, data, precision):
    """The same model.onnx and the same input tensors (PyTorch's resize of each image): the page's onnxruntime-web
    session in Chromium (what the ``web`` runner calls) against ONNX Runtime in Python, every detection (down to the
    0.001 score threshold). fp32: every one within the tolerances. int8: at least INT8_IDENTICAL_SHARE of them within
    the tolerances (a rounding flip, above, moves one image's scores), and export's int8 rule against native: the
    confident detections kept on every image."""
    folder, _ = exported(precision)
    native, page = session(folder / "model.onnx", 1), pages(precision)
    paired = total = 0
    references, outputs = [], []
    for image in _images(data):
        x = det.resize_for((SIZE, SIZE), image).numpy()
        reference, raw = native.run(None, {det.INPUT: x}), page.raw(x)
        total += len(reference[2])
        if precision == "fp32":
            paired += _pair(reference, raw, BOX_TOL[precision] * SIZE, SCORE_TOL[precision])
        else:
            paired += _count_paired(reference, raw, BOX_TOL[precision] * SIZE, SCORE_TOL[precision])
            references.append(dict(zip(det.FINAL_OUTPUTS, map(torch.from_numpy, reference))))
            outputs.append(dict(zip(det.FINAL_OUTPUTS, map(torch.from_numpy, raw))))
    assert total >= 10 * 100  # each image has hundreds of detections above the 0.001 threshold
    if precision == "int8":
        assert paired >= INT8_IDENTICAL_SHARE * total, f"{paired}/{total} detections identical"
        kept = det.match_detections(references, outputs, web.RUNTIME, "int8")
        assert kept.passed and kept.reference >= 20, kept.summary()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_page_pipeline_on_image_files_against_native_onnx_runtime(exported, pages, data, precision):
    """The whole page: the images as PNG files, decoded by Chromium and resized by detect.js's float32 port of
    PyTorch's bilinear resize, boxes scaled back to each image's pixels; against native ONNX Runtime on Python's
    resize of the same pixels. The ports are not bit for bit (aten's vectorized sums round in their own order), so
    the rule is looser than on shared tensors: inputs within 1e-5; fp32 the same detections ≥ 0.3 (label, IoU ≥ 0.99,
    score ± 1e-3: export's rule for files, measured IoU 1.0000 and scores 5e-6); int8 the confident ones kept (a
    1e-6 input change can flip a uint8 rounding and move a score by 0.1)."""
    folder, _ = exported(precision)
    check = web_detect.check_detector_page(folder, _images(data), precision, page=pages(precision))
    v = check.verification
    assert check.passed, check.summary()
    assert check.num_images == 10 and 0 <= check.max_input_diff <= web_detect.INPUT_TOLERANCE
    if precision == "fp32":
        assert v.reference > 100 and v.matched == v.reference and v.extra == 0, v.summary()
        assert v.min_iou >= 0.999 and v.max_score_diff <= 1e-4, v.summary()
    else:
        assert v.reference >= 20 and v.match_rate >= 0.95, v.summary()


def test_page_with_few_detections_to_compare_is_judged_on_more_images(exported, data):
    """export's page check when its first images hold fewer than 10 detections to judge (a weak detector's few
    confident detections lie in other test images): it goes on to the rest of the test images, and judges the page
    there; with nothing anywhere, it refuses in one line. (An empty first set stands in for images without
    detections; the first images of test_page_pipeline_on_image_files hold 20 or more and are judged alone.)"""
    folder, _ = exported("int8")
    told = []
    summary = web_detect.verify_detector_page(folder, [], "int8", iter(_images(data)), progress=told.append)
    assert told == ["0 detection(s) to compare on those 0 image files (want 10): the rest of the test images too"]
    assert summary.startswith("the page on 10 image files") and "confident detections (≥ 0.5) kept" in summary
    told.clear()  # enough to judge on the first images: the rest is not touched
    web_detect.verify_detector_page(folder, _images(data), "int8", iter([]), progress=told.append)
    assert told == []
    with pytest.raises(
        MobileNetsError,
        match=r"^web int8 export failed verification, nothing written: .*"
        r"finds nothing scoring ≥ 0.5 on them, so there is nothing to compare",
    ) as e:
        web_detect.verify_detector_page(folder, [], "int8")
    assert "\n" not in str(e.value)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def _edge_share(shot: np.ndarray, box, colour: np.ndarray) -> float:
    """The share of pixels on a box's four drawn edges (the inner pixel row/column of each 2 px line) that have
    ``colour``, corners excluded."""
    x1, y1, x2, y2 = box
    edges = [
        shot[y1, x1 + 2 : x2 - 2],
        shot[y2 - 1, x1 + 2 : x2 - 2],
        shot[y1 + 2 : y2 - 2, x1],
        shot[y1 + 2 : y2 - 2, x2 - 1],
    ]
    pixels = np.concatenate(edges)
    return float((np.abs(pixels[:, :3].astype(int) - colour).max(1) <= 2).mean())


def test_screenshot_shows_the_boxes_where_the_detections_are(exported, pages, data, tmp_path):
    """A photo picked through the page's file input, as a person would: the listed detections are native ONNX
    Runtime's on that photo, and in a screenshot each drawn box's outline has its class colour along its edges, at
    the detection's box scaled to the canvas (and not 6 px inside it)."""
    folder, _ = exported("fp32")
    photo = data[2][5]  # 640 × 427: drawn at scale 1, 14 detections ≥ 0.3
    path = tmp_path / "photo.png"
    Image.fromarray(photo.mul(255).round().byte().permute(1, 2, 0).numpy()).save(path)
    reference = det.file_detector(folder / "model.onnx", "onnx")(photo)
    page = pages("fp32")
    shown = page.pick(path)
    shot = np.asarray(Image.open(page.screenshot(tmp_path / "page.png")).convert("RGB"))
    text, origin = page.text(), page.canvas_origin()
    drawn = shown["drawn"]
    keep = reference["scores"] >= shown["minScore"]
    assert shown["scale"] == 1 and len(drawn) == int(keep.sum()) >= 3
    assert f"{len(drawn)} detection(s) scoring ≥ 0.3" in text and data[0].classes[drawn[0]["label"] - 1] in text
    listed = [np.array([d[k] for d in drawn], dtype=np.float64) for k in ("box", "label", "score")]
    _pair([reference[k][keep].double().numpy() for k in det.FINAL_OUTPUTS], listed, 1e-3 * max(photo.shape), 1e-4)
    assert all(d["canvas_box"] == [round(v * shown["scale"]) for v in d["box"]] for d in drawn)
    x0, y0 = origin
    canvas = shot[y0 : y0 + photo.shape[1], x0 : x0 + photo.shape[2]]
    shares = [_edge_share(canvas, d["canvas_box"], _rgb(d["colour"])) for d in drawn]
    # The best detection is drawn last, on top: its whole outline shows; the others may be crossed by later ones.
    assert shares[0] >= 0.98 and min(shares) >= 0.5, shares
    # Control: the same colour 6 px inside the largest box's outline is (mostly) the photo.
    large = max(
        drawn, key=lambda d: min(d["canvas_box"][2] - d["canvas_box"][0], d["canvas_box"][3] - d["canvas_box"][1])
    )
    inside = [x + (6 if i < 2 else -6) for i, x in enumerate(large["canvas_box"])]
    assert _edge_share(canvas, inside, _rgb(large["colour"])) < 0.5


def test_bad_inputs_are_one_line_errors_and_write_nothing(
    detector, data, checkpoint, exported, tmp_path, monkeypatch, capsys
):
    # -o on something that is not an earlier web export: refused before any work.
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(MobileNetsError, match="exists and is not a web export") as e:
        det.export_detector(detector, taken, "web", verify=False)
    assert "\n" not in str(e.value) and [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(MobileNetsError, match="offers fp32, int8, not fp16"):
        det.export_detector(detector, tmp_path / "w", "web", "fp16")
    rc = main(["export", "--checkpoint", str(checkpoint), "--format", "web", "--precision", "bf16", "-o", "x"])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("mobilenets: error:") == 1 and "Traceback" not in err

    # A page whose detect.js forgets to scale the boxes back to the image: its session is right (the runner's check
    # passes), its drawn boxes are not, and export writes nothing. The ONNX file is the one already written (and
    # verified), exported before the page is broken: only the page is under test here.
    written = exported("fp32")[0] / "model.onnx"
    app = tmp_path / "web_app"
    app.mkdir()
    for source in web.APP.iterdir():
        (app / source.name).write_bytes(source.read_bytes())
    js = (app / "detect.js").read_text()
    (app / "detect.js").write_text(js.replace("const rh = f32(height / inHeight);", "const rh = 1;"))
    monkeypatch.setattr(web.app, "APP", app)
    monkeypatch.setattr(det, "write_onnx", lambda _model, path, *_args: shutil.copyfile(written, path) and {})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MobileNetsError, match="web fp32 export failed verification, nothing written: the page on"):
        det.export_detector(detector, out / "det_web", "web", verify_images=data[2][:2])
    assert list(out.iterdir()) == []
