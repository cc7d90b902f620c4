"""`export --format web`: a page that classifies offline, checked in a real headless Chromium.

One model is trained (`mobilenets train`, a few steps on digits), exported once and opened in one browser for the
whole module; the references are PyTorch and `mobilenets predict`, never the page itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from numeric import assert_close_scaled, torch_threads
from PIL import Image

from mobilenets import cli
from mobilenets.deploy import export as ex
from mobilenets.deploy import web
from mobilenets.deploy.images import calibrate_bn, real_images
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model

# fp32 in the page against PyTorch, as a fraction of the largest logit: WebAssembly's kernels sum in their own order
# (measured 1e-6 of logits ~111 on an AMX Xeon, where an absolute 1e-4 failed).
WASM_RTOL = 2e-5

pytestmark = pytest.mark.slow


def _main(capsys, *argv: str):
    capsys.readouterr()
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MobileNetV1 α=0.25 trained for 40 steps on digits (16 px, gray) by `mobilenets train`."""
    out = tmp_path_factory.mktemp("web_run")
    with torch_threads(1):
        args = "train --dataset digits --width-mult 0.25 --max-steps 40 --batch-size 32 --threads 1"
        rc = cli.main([*args.split(), "--no-progress", "--no-tensorboard", "--no-plots", "--out-dir", str(out)])
    assert rc == 0
    from mobilenets.data import load_dataset

    test = load_dataset("digits", "test")
    images = []
    for i in range(4):
        images.append(out / f"digit{i}.png")
        Image.fromarray(test.images[i, 0].numpy()).save(images[-1])
    return out / "model.pt", images


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained model as a web folder, written and verified by `mobilenets export --format web --json`."""
    checkpoint, _ = trained
    folder = tmp_path_factory.mktemp("web_export") / "digits_web"
    rc = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "web", "-o", str(folder), "--json"])
    assert rc == 0
    return folder


def _one_error(err: str) -> bool:
    """One `mobilenets: error:` line, no traceback (progress lines may precede it)."""
    return [line.startswith("mobilenets: error: ") for line in err.strip().splitlines()][-1:] == [True] and (
        err.count("mobilenets: error:") == 1 and "Traceback" not in err
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_server(exported):
    """`python -m http.server` in the exported folder: a plain static server, no special headers."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=exported,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "model.json", timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def test_export_writes_an_offline_folder_verified_in_chromium(exported, trained):
    checkpoint, _ = trained
    names = {p.name for p in exported.iterdir()}
    assert names == {"model.onnx", "model.json", "classify.js", "index.html", "serve.py", *web.ORT_FILES}
    config = json.loads((exported / "model.json").read_text())
    meta = torch.load(checkpoint, weights_only=True)["meta"]
    assert config["classes"] == list(meta["classes"]) and config["in_chans"] == 1
    pre = config["preprocessing"]
    assert (pre["resolution"], pre["crop"], pre["mean"], pre["std"]) == (
        meta["resolution"],
        "resize_shorter",
        list(meta["mean"]),
        list(meta["std"]),
    )
    assert config["onnxruntime_web"] == json.loads(Path("package.json").read_text())["dependencies"]["onnxruntime-web"]
    assert config["built_for"]["format"] == "web" and config["built_for"]["precision"] == "fp32"
    # Nothing is fetched from elsewhere: every URL the page or its module names is relative.
    for name in ("index.html", "classify.js"):
        text = (exported / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_fp32_page_matches_pytorch_on_real_images(exported, trained):
    """fp32 logits within 1e-4 of PyTorch on Fashion-MNIST tensors, and on image files through classify.js."""
    from mobilenets.predict import checkpoint_model

    model, _ = checkpoint_model(trained[0])
    x = real_images(16, 1, model.resolution, "test")
    runner = web.load(exported)
    try:
        logits = runner(x.numpy())
        check = web.check_page(exported, model, page=runner.page)
    finally:
        runner.close()
    with torch.no_grad():
        reference = model(x).numpy()
    assert_close_scaled(logits, reference, WASM_RTOL, min_scale=0.1)
    assert (logits.argmax(1) == reference.argmax(1)).all()
    # The page's own decoding and preprocessing give the tensor `mobilenets predict` gives (a float32 port).
    assert check.num_images == 8 and check.max_input_diff <= 1e-6 and check.pipeline_top1 == 1.0 and check.passed
    assert check.verification.max_abs_diff <= WASM_RTOL * check.verification.max_abs_ref
    assert check.verification.top1_agreement == 1.0


def test_trained_model_in_chromium_gives_predicts_top1(exported, trained, http_server, capsys, tmp_path):
    """The done-when: served by `python -m http.server`, a person's pick in the page = `mobilenets predict`."""
    checkpoint, images = trained
    rc, out, _ = _main(capsys, "predict", *map(str, images), "--checkpoint", str(checkpoint), "--json")
    assert rc == 0
    expected = [r["top"] for r in json.loads(out)["results"]]
    with web.Page(exported, url=http_server) as page:
        assert page.threads == 1  # a plain server: not cross-origin isolated, one thread
        for image, top in zip(images, expected):
            shown = page.pick(image)
            assert shown["file"] == image.name
            assert [t["name"] for t in shown["top"]] == [t["name"] for t in top]
            assert [t["prob"] for t in shown["top"]] == pytest.approx([t["prob"] for t in top], abs=1e-4)
        # The screenshot after the last pick shows its top-1: the name in the first row, and its bar, drawn in
        # the bar colour, as wide as the probability.
        shot = page.screenshot(os.environ.get("MOBILENETS_WEB_SCREENSHOT") or tmp_path / "page.png")
        first = page.page.locator("#top li").first
        assert first.locator(".name").inner_text() == expected[-1][0]["name"]
        assert page.page.locator("#status").inner_text().startswith(f"{images[-1].name}: {expected[-1][0]['name']} (")
        track = first.locator(".track").bounding_box()
        bar = first.locator(".bar").bounding_box()
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    y = int(bar["y"] + bar["height"] / 2)
    row = pixels[y, int(track["x"]) : int(track["x"] + track["width"])]
    green = (np.abs(row - [0x22, 0xAA, 0x77]).sum(1) < 30).sum()
    assert green / track["width"] == pytest.approx(expected[-1][0]["prob"], abs=0.03)


def test_two_threads_on_the_isolated_server(exported):
    """serve.py's COOP/COEP headers make the page cross-origin isolated: two WebAssembly threads, same answers."""
    x = real_images(4, 1, 16, "test").numpy()
    with web.Page(exported, threads=1) as one, web.Page(exported, threads=2) as two:
        assert (one.threads, two.threads) == (1, 2)
        assert_close_scaled(two.logits(x), one.logits(x), WASM_RTOL)
        assert all(t > 0 for t in two.time_runs(1, 3, 1))
    # The folder's own serve.py sends the same two headers, for a person who wants threads.
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "serve.py", str(port)], cwd=exported, stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()  # "serving ..." once it listens
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/classify.js", timeout=5) as r:
            headers = r.headers
    finally:
        proc.terminate()
        proc.wait(10)
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Content-Type"].startswith("text/javascript")


def test_a_process_exits_with_a_page_still_open(exported):
    """A runner still referenced at exit (a script's global, `bench`'s last runtime) is closed by an atexit hook:
    closing its server in the interpreter's teardown waited forever for a frozen thread."""
    # A first runner dropped (closed when the next page opens), then one still held when the script ends.
    script = (
        "import numpy as np\nfrom mobilenets.deploy import web\nx = np.zeros((1, 1, 16, 16), np.float32)\n"
        f"def first():\n    r = web.load({str(exported)!r})\n    r(x)\nfirst()\n"
        f"r = web.load({str(exported)!r})\nprint(r(x).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and done.stdout.strip() == "(1, 10)", done.stderr[-500:]


@pytest.mark.parametrize(
    "crop,interpolation",
    [("resize_shorter", "bilinear"), ("resize_shorter", "bicubic"), ("central_fraction", "tf_bilinear")],
)
def test_rgb_preprocessing_is_pythons_on_photos(tmp_path, crop, interpolation):
    """classify.js's ports of Pillow's resize and TF's crop/resize give predict.preprocess's tensor on photos."""
    from mobilenets.weights import ModelCard, Preprocessing

    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width_mult=0.25, resolution=40, num_classes=3)
    model = calibrate_bn(model, real_images(16, 3, 40, split="train"))
    folder = tmp_path / "rgb"
    web.write(model, folder, 40)
    pre = Preprocessing(40, crop, 0.875, interpolation, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    web.set_card(folder, ModelCard("mobilenet_v1", {"num_classes": 3}, pre, ["a", "b", "c"]))
    check = web.check_page(folder, model)
    assert check.num_images >= 4 and "chelsea.jpg" in check.files  # a real JPEG, decoded by Chromium
    assert check.max_input_diff <= 1e-6 and check.passed
    assert check.verification.max_abs_diff <= WASM_RTOL * check.verification.max_abs_ref
    assert check.verification.top1_agreement == 1.0
    if crop == "resize_shorter" and interpolation == "bilinear":
        # A page whose preprocessing forgets the mean fails the check, and `export` then writes nothing.
        js = folder / "classify.js"
        js.write_text(js.read_text().replace("const m = mean[c % mean.length];", "const m = 0;"))
        with pytest.raises(MobileNetsError, match="web fp32 export failed verification, nothing written") as e:
            web.verify_page(folder, model, "fp32", None)
        assert float(str(e.value).split("input max |Δ| ")[1].split(",")[0]) > 1


def test_int8_web_page_computes_what_native_onnx_runtime_does(trained, tmp_path):
    """int8 (QDQ, 7-bit weights): the page's wasm kernels against ONNX Runtime's native ones on the same file."""
    from mobilenets.deploy import onnx
    from mobilenets.predict import checkpoint_model

    model, card = checkpoint_model(trained[0])
    folder = tmp_path / "int8_web"
    result = ex.export(model, folder, "web", "int8", calib_images=real_images(64, 1, 16, "train"), card=card)
    assert result.verification.passed and result.checks[0].startswith("the page on 8 image files")
    x = real_images(32, 1, 16, "test")
    native = onnx.run(folder / web.MODEL_FILE, x, "int8")
    in_page = web.run(folder, x, "int8")
    assert (native.argmax(1) == in_page.argmax(1)).mean() >= 0.95
    assert np.abs(native - in_page).max() <= 0.05 * np.abs(native).max()


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, monkeypatch, capsys, trained):
    checkpoint, _ = trained
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("mine")
    rc, _, err = _main(capsys, "export", "--checkpoint", str(checkpoint), "--format", "web", "-o", str(keep))
    assert rc == 2 and "exists and is not a web export" in err and _one_error(err)
    assert [p.name for p in keep.iterdir()] == ["mine.txt"]

    out = tmp_path / "w"
    monkeypatch.setenv("MOBILENETS_ORT_WEB", str(tmp_path / "nothing"))
    rc, _, err = _main(capsys, "export", "--checkpoint", str(checkpoint), "--format", "web", "-o", str(out))
    assert rc == 2 and "npm ci" in err and _one_error(err)
    monkeypatch.delenv("MOBILENETS_ORT_WEB")
    monkeypatch.setenv("MOBILENETS_CHROMIUM", str(tmp_path / "no-chrome"))
    monkeypatch.setattr(web.browser._Browser, "instance", None)  # a fresh start, which finds no browser
    rc, _, err = _main(capsys, "export", "--checkpoint", str(checkpoint), "--format", "web", "-o", str(out))
    assert rc == 2 and "apt-get install chromium" in err and _one_error(err)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(MobileNetsError, match="web does not offer bf16"):
        ex.check_target("web", "bf16")
