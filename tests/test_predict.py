"""`mobilenets predict`: decoding real image files in every mode, TF-slim preprocessing, top-k, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets import weights as W
from mobilenets.cli import main
from mobilenets.errors import MobileNetsError
from mobilenets.predict import (
    bundled_images,
    expand_paths,
    load_image,
    predict_images,
    preprocess,
    tf_central_crop,
    tf_resize_bilinear,
)

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    graph = W.find_pretrained_graph()
    if graph is None:
        pytest.fail(f"the pretrained graph is not installed: {W.GET_PRETRAINED}")
    path = tmp_path_factory.mktemp("weights") / "mnv1.safetensors"
    W.import_weights(graph, path)
    return path


@pytest.fixture(scope="module")
def pretrained(weights_file):
    return W.load_weights(weights_file)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()


# --- preprocessing ----------------------------------------------------------------------------------


def test_tf_resize_bilinear_is_tf1_legacy():
    # TF1 resize_bilinear(align_corners=False): source = dest · in/out, no half-pixel shift, clamped.
    img = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)[..., None]
    up = tf_resize_bilinear(img, 4, 4)[..., 0]
    expected = np.array([[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]], np.float32)
    np.testing.assert_array_equal(up, expected)
    big = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_array_equal(tf_resize_bilinear(big, 2, 2)[..., 0], [[0, 2], [8, 10]])  # no antialias


def test_tf_central_crop_matches_tf_rounding():
    img = np.zeros((300, 451, 3))
    # tf.image.central_crop: start = int((n - n·f) / 2), size = n - 2·start
    assert tf_central_crop(img, 0.875).shape == (300 - 2 * 18, 451 - 2 * 28, 3)


def test_preprocess_scales_to_minus_one_one(pretrained):
    _, card = pretrained
    white = np.full((100, 80, 3), 255, np.uint8)
    black = np.zeros((90, 120, 3), np.uint8)
    for img, value in ((white, 1.0), (black, -1.0)):
        x = preprocess(img, card.preprocessing)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        torch.testing.assert_close(x, torch.full_like(x, value))
    timm_pre = W.Preprocessing(crop="resize_shorter", interpolation="bicubic")
    assert preprocess(black, timm_pre).shape == (3, 224, 224)


# --- decoding ---------------------------------------------------------------------------------------


def test_decodes_every_image_mode(tmp_path, chelsea):
    rgb = Image.fromarray(chelsea)
    gray = rgb.convert("L")
    gray.save(tmp_path / "gray.png")
    out = load_image(tmp_path / "gray.png")
    assert out.shape == (*chelsea.shape[:2], 3) and (out == np.asarray(gray)[..., None]).all()

    rgba = rgb.convert("RGBA")
    alpha = np.full(chelsea.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0  # transparent strip; its hidden RGB is the cat
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "alpha.png")
    out = load_image(tmp_path / "alpha.png")
    assert (out[:, :100] == 255).all() and (out[:, 100:] == chelsea[:, 100:]).all()

    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(load_image(tmp_path / "cmyk.jpg").astype(int) - chelsea).mean() < 4

    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit grayscale
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert (load_image(tmp_path / "deep.png")[..., 0] == np.asarray(gray)).all()

    rgb.convert("P").save(tmp_path / "palette.gif")
    assert load_image(tmp_path / "palette.gif").shape == (*chelsea.shape[:2], 3)


def test_predictions_survive_format_changes(tmp_path, chelsea, pretrained):
    model, card = pretrained
    rgb = Image.fromarray(chelsea)
    rgb.save(tmp_path / "a.png")
    rgb.convert("RGBA").save(tmp_path / "b.png")  # opaque alpha must change nothing
    rgb.convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    rgb.convert("L").save(tmp_path / "d.png")
    results = predict_images(model, card, [tmp_path], topk=3)
    assert [r.path.rsplit("/", 1)[1] for r in results] == ["a.png", "b.png", "c.jpg", "d.png"]
    assert all(r.error is None and r.top[0][1] in CATS for r in results), [(r.path, r.top[0]) for r in results]
    assert results[0].top == results[1].top
    assert all(len(r.top) == 3 and r.top[0][2] >= r.top[1][2] >= r.top[2][2] for r in results)


def test_bad_files_get_one_line_errors(tmp_path, chelsea):
    Image.fromarray(chelsea).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "fake.png").write_text("this is not a picture\n")
    expected = {
        "truncated.jpg": "cannot decode image",
        "empty.png": "empty file",
        "fake.png": "not an image",
        "missing.jpg": "no such file",
    }
    for name, message in expected.items():
        with pytest.raises(MobileNetsError, match=message) as e:
            load_image(tmp_path / name)
        assert "\n" not in str(e.value)


# --- CLI --------------------------------------------------------------------------------------------


def test_predict_bundled_photos(weights_file, capsys):
    assert [p.name for p in bundled_images()] == ["chelsea.jpg", "coffee.jpg"]
    assert main(["predict", "--weights", str(weights_file), "--topk", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("chelsea.jpg") and out[1].split(".", 1)[1].split("  ")[0].strip() in CATS
    assert out[2].endswith("coffee.jpg") and "espresso" in out[3]


def test_predict_reports_each_bad_file_and_still_predicts_the_rest(tmp_path, weights_file, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(bundled_images()[1], folder / "coffee.jpg")
    data = (folder / "coffee.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 4])
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    (tmp_path / "fake.jpg").write_text("not an image")
    args = ["predict", str(folder), str(tmp_path / "fake.jpg"), "--weights", str(weights_file), "--topk", "2"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "espresso" in captured.out and "cut.jpg" not in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3
    for name, err in zip(("cut.jpg", "zero.png", "fake.jpg"), errors):
        assert err.startswith("mobilenets: error: ") and name in err

    assert main([*args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "mobilenet_v1_1.0_224"
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in report["results"]}
    assert list(by_name) == ["coffee.jpg", "cut.jpg", "zero.png", "fake.jpg"]
    assert by_name["coffee.jpg"]["top"][0]["name"] == "espresso" and "error" in by_name["zero.png"]


def test_predict_checks_model_against_weights(weights_file, capsys):
    assert main(["predict", "--weights", str(weights_file), "--model", "mobilenet_v1_0.5_224"]) == 2
    err = capsys.readouterr().err
    assert "α=1.0 weights but mobilenet_v1_0.5_224 has α=0.5" in err and err.count("\n") == 1


def test_predict_without_weights_uses_the_cached_pretrained_model(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    assert main(["predict", str(bundled_images()[1]), "--topk", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["top"][0]["name"] == "espresso"
    assert (tmp_path / W.PRETRAINED_CACHE_NAME).is_file()


def test_empty_folder_and_bad_topk(tmp_path, pretrained):
    model, card = pretrained
    with pytest.raises(MobileNetsError, match="no image files"):
        predict_images(model, card, [tmp_path])
    with pytest.raises(MobileNetsError, match="topk must be >= 1"):
        predict_images(model, card, bundled_images(), topk=0)
    assert expand_paths([tmp_path / "nope.jpg"]) == [tmp_path / "nope.jpg"]
