"""Starting a run from weights (``--init``): Google's pretrained graph, our safetensors, timm, a run's model.pt.

References are independent of the code under test: the pretrained model as ``mobilenets.weights`` builds it
(itself checked against Google's graph in test_weights.py), timm's own forward pass, and RGB inputs that a
1-channel stem must reproduce.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numeric import assert_close_scaled, torch_threads

from mobilenets import training as T
from mobilenets import weights as W
from mobilenets.data import IMAGENET_STATS
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.training.init import InitSource, adapt_state, read_init, start_model


def cfg(**kw) -> T.TrainConfig:
    return T.TrainConfig(**kw)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """Convert the installed graph into a test-owned cache, never the user's; one thread (a shared machine)."""
    if W.find_pretrained_graph() is None:
        pytest.fail(f"the pretrained graph is not installed: {W.GET_PRETRAINED}")
    with torch_threads(1), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILENETS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def reference():
    """Google's MobileNetV1 1.0 as the weights module builds it: 1001 classes, TF conventions."""
    return W.pretrained_model()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """skimage's chelsea (a real photo), 96×96, pixel values in [0, 1], (1, 3, 96, 96)."""
    import skimage.data
    from PIL import Image

    img = Image.fromarray(skimage.data.chelsea()).resize((96, 96), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None]


def features(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().forward_head(model.forward_features(x), pre_logits=True)


# --- pretrained ---------------------------------------------------------------------------------------


def test_pretrained_keeps_every_backbone_tensor_and_tf_conventions(reference, photo):
    ref, card = reference
    model, meta = start_model(cfg(init="pretrained", resolution=96, stem_stride=2), num_classes=3, in_chans=3)
    kw = meta["model_kwargs"]
    assert (kw["act"], kw["padding"], kw["bn_eps"], kw["width_mult"]) == ("relu6", "tf_same", 1e-3, 1.0)
    assert (kw["num_classes"], kw["in_chans"], kw["resolution"]) == (3, 3, 96)
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.5] * 3  # TF-slim's [-1, 1] inputs
    assert meta["source"]["init"] == "pretrained" and meta["source"]["sha256"] == card.source["sha256"]
    assert "1001-class classifier" in meta["notes"][0] and "135/135" in meta["notes"][0]
    assert model.classifier.weight.shape == (3, 1024)
    # The same image through both networks: identical features (the reference runs at 224 names, any size works).
    x = (photo - 0.5) / 0.5
    torch.testing.assert_close(features(model, x), features(ref, x), rtol=0, atol=0)
    # The saved kwargs rebuild the same network.
    rebuilt = create_model("mobilenet_v1", **kw)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_one_channel_data_sums_the_rgb_filters(reference, photo):
    ref, _ = reference
    model, meta = start_model(cfg(init="pretrained", resolution=96, stem_stride=2), num_classes=10, in_chans=1)
    assert model.stem.conv.weight.shape == (32, 1, 3, 3)
    assert meta["mean"] == [0.5] and meta["std"] == [0.5]
    assert any("RGB filters are summed" in n for n in meta["notes"])
    gray = photo.mean(1, keepdim=True)
    # A gray image in RGB through Google's network = the gray image through the 1-channel stem.
    ours, theirs = features(model, (gray - 0.5) / 0.5), features(ref, (gray.expand(-1, 3, -1, -1) - 0.5) / 0.5)
    assert_close_scaled(ours, theirs, 1e-5, min_scale=0.1)


def test_the_first_use_of_the_weights_does_not_shift_the_seed(tmp_path, monkeypatch):
    # The first "pretrained" converts Google's graph (building a model); the run's seeded head must not change.
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path))
    heads = []
    for _ in ("cold cache", "warm cache"):
        torch.manual_seed(0)
        model, _ = start_model(cfg(init="pretrained", resolution=64, stem_stride=2), 3, 3)
        heads.append(model.classifier.weight)
    assert torch.equal(heads[0], heads[1])


@pytest.mark.parametrize("resolution", [64, 72])
def test_any_resolution(resolution):
    model, meta = start_model(cfg(init="pretrained", resolution=resolution, stem_stride=2), 5, 3)
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, resolution, resolution)).shape == (2, 5)
    assert meta["model_kwargs"]["resolution"] == resolution


@pytest.mark.parametrize(
    "kw, asked",
    [(dict(model="mobilenet_v1_0.5_160"), "α=0.5"), (dict(width_mult=0.25), "α=0.25")],
)
def test_a_different_width_is_one_clear_line(kw, asked):
    with pytest.raises(MobileNetsError) as e:
        start_model(cfg(init="pretrained", **kw), 3, 3)
    msg = str(e.value)
    assert "α=1.0" in msg and asked in msg and "\n" not in msg


def test_another_family_is_refused():
    with pytest.raises(MobileNetsError, match="holds mobilenet_v1 weights but the run trains squeezenet1_1"):
        start_model(cfg(init="pretrained", model="squeezenet1_1"), 3, 3)


def test_tf_graph_file_is_the_same_as_pretrained():
    graph = read_init(W.find_pretrained_graph())
    cached = read_init("pretrained")
    assert graph.model_kwargs == cached.model_kwargs and (graph.mean, graph.std) == (cached.mean, cached.std)
    real = {k for k in cached.tensors if not k.endswith("num_batches_tracked")}
    assert graph.tensors.keys() == real
    for k, v in graph.tensors.items():
        assert torch.equal(v, cached.tensors[k]), k


# --- timm, our safetensors, a run's model.pt ------------------------------------------------------------


def test_timm_state_dict_carries_timm_conventions(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=7)
    for m in ref.modules():  # random BN statistics: a mis-mapped tensor cannot hide
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    model, meta = start_model(cfg(init=str(path), resolution=64, stem_stride=2), 4, 3)
    kw = meta["model_kwargs"]
    assert (kw["padding"], kw["bn_eps"], kw["act"]) == ("symmetric", 1e-5, "relu6")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs = ref.eval().forward_head(ref.forward_features(x), pre_logits=True)
    assert_close_scaled(features(model, x), theirs, 1e-5)


def test_our_safetensors_with_card(tmp_path):
    src = create_model("mobilenet_v1_0.25_128", num_classes=10).eval()
    card = W.ModelCard(
        arch="mobilenet_v1",
        model_kwargs=dict(width_mult=0.25, resolution=128, num_classes=10, act="relu6", bn_eps=1e-3),
        preprocessing=W.Preprocessing(resolution=128, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2)),
        class_names=[f"c{i}" for i in range(10)],
        source={"format": "test"},
    )
    path = W.save_weights(src, card, tmp_path / "a025.safetensors")
    model, meta = start_model(cfg(init=str(path), width_mult=0.25, resolution=64, stem_stride=2), 2, 3)
    assert meta["mean"] == pytest.approx([0.4] * 3) and meta["model_kwargs"]["bn_eps"] == 1e-3
    for k, v in model.state_dict().items():
        if not k.startswith("classifier") and not k.endswith("num_batches_tracked"):
            assert torch.equal(v, src.state_dict()[k]), k
    with pytest.raises(MobileNetsError, match="α=0.25 weights but the run asks for α=1.0"):
        start_model(cfg(init=str(path), width_mult=1.0), 2, 3)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A real (tiny) `mobilenets train` run on scikit-learn's digits: its model.pt."""
    out = tmp_path_factory.mktemp("run")
    kw = dict(dataset="digits", width_mult=0.25, batch_size=64, epochs=1, max_steps=3, out_dir=str(out))
    T.train(T.TrainConfig(**kw, progress=False, tensorboard=False, plots=False))
    return out / "model.pt"


def test_a_run_on_the_same_classes_keeps_its_classifier(digits_run):
    saved, meta_run = T.load_model(digits_run)
    classes = meta_run["classes"]
    model, meta = start_model(cfg(init=str(digits_run), dataset="digits", resolution=16, stem_stride=1), 10, 1, classes)
    assert meta["mean"] == pytest.approx(meta_run["mean"]) and meta["source"]["format"] == "mobilenets_run"
    assert "its classifier" in meta["notes"][0]
    for k, v in saved.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # Other classes: a new head, same backbone.
    model, meta = start_model(cfg(init=str(digits_run), resolution=16, stem_stride=1), 3, 1, ["a", "b", "c"])
    assert model.classifier.weight.shape[0] == 3 and "replaced by a new 3-class one" in meta["notes"][0]
    # RGB data from a gray run: the filters are copied to R, G, B (÷3) and the gray stats replicated.
    model, meta = start_model(cfg(init=str(digits_run), resolution=16, stem_stride=1), 3, 3)
    torch.testing.assert_close(model.stem.conv.weight.sum(1, keepdim=True), saved.stem.conv.weight)
    assert meta["mean"] == pytest.approx(meta_run["mean"] * 3)


def test_rgb_stats_to_gray_fold_the_mean_into_batchnorm():
    # A source trained on ImageNet-normalized RGB (unequal channel means): after the 1-channel stem and its BN,
    # a gray image gives the RGB response exactly, except at the zero-padded border.
    torch.manual_seed(0)
    src_model = create_model("mobilenet_v1", width_mult=0.25, resolution=32, num_classes=4).eval()
    for m in src_model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    mean, std = IMAGENET_STATS
    src = InitSource(dict(src_model.state_dict()), "mobilenet_v1", {}, mean, std, None, {"init": "x"})
    gray_model = create_model("mobilenet_v1", width_mult=0.25, resolution=32, num_classes=4, in_chans=1).eval()
    tensors, (m1, s1), notes = adapt_state(gray_model, src)
    gray_model.load_state_dict({**gray_model.state_dict(), **tensors})
    g = torch.rand(1, 1, 32, 32)
    rgb = (g.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = gray_model.stem((g - m1[0]) / s1[0]), src_model.stem(rgb)
    assert_close_scaled(ours[..., 1:, 1:], theirs[..., 1:, 1:], 1e-5)
    assert (ours - theirs).abs().max() > 1e-3  # the border does differ: the test sees the stem's output


# --- bad input ------------------------------------------------------------------------------------------


def test_bad_init_sources_say_what_is_wrong(tmp_path):
    with pytest.raises(MobileNetsError, match="no such file"):
        read_init(tmp_path / "nope.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(MobileNetsError, match="unknown weights format '.npz'"):
        read_init(tmp_path / "w.npz")
    torch.save(create_model("mobilenet_v1_0.25_128").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(MobileNetsError, match="plain state dict without a model description"):
        read_init(tmp_path / "plain.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(MobileNetsError, match="empty"):
        read_init(tmp_path / "empty.pt")


def test_predict_checkpoint_of_a_gray_run_feeds_luma_like_training(digits_run, tmp_path):
    from PIL import Image

    from mobilenets.data import load_dataset, prepare_batch
    from mobilenets.predict import checkpoint_model, predict_images

    model, card = checkpoint_model(digits_run)
    _, meta = T.load_model(digits_run)
    assert card.class_names == meta["classes"] and card.preprocessing.mean == tuple(meta["mean"])
    # Real digits at the run's 16 px, saved as RGB files: predict converts them back to gray (luma).
    test = load_dataset("digits", "test")
    images = test.images[:6].repeat_interleave(2, -1).repeat_interleave(2, -2)  # 8 → 16 px, exact
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"d{i}.png")
        Image.fromarray(img[0].numpy()).convert("RGB").save(paths[-1])
    got = predict_images(model, card, paths, topk=1)
    with torch.no_grad():
        probs = torch.softmax(model(prepare_batch(images, meta["mean"], meta["std"], 16, 1)), 1)
    for r, p in zip(got, probs):
        assert r.top[0][0] == int(p.argmax()) and r.top[0][2] == pytest.approx(float(p.max()), abs=1e-5)
        assert r.top[0][1] == meta["classes"][int(p.argmax())]


def test_resume_needs_the_checkpoint_not_the_source(digits_run, tmp_path):
    src = tmp_path / "source.pt"
    src.write_bytes(digits_run.read_bytes())
    kw = dict(dataset="digits", init=str(src), batch_size=64, epochs=1, progress=False, tensorboard=False, plots=False)
    full = T.train(T.TrainConfig(**kw, out_dir=str(tmp_path / "full")))
    T.train(T.TrainConfig(**kw, out_dir=str(tmp_path / "split"), max_steps=3))
    src.unlink()  # e.g. a downloaded file cleaned up between the two halves
    resumed = T.train(T.TrainConfig(**kw, out_dir=str(tmp_path / "split"), resume=True))
    assert resumed.steps == full.steps and resumed.step_losses == full.step_losses
    meta = T.load_model(tmp_path / "split" / "model.pt")[1]
    assert meta["init"]["source"]["init"] == str(src) and meta["init"]["source"]["format"] == "mobilenets_run"


def test_tensors_that_do_not_fit_are_named_and_none_fitting_is_an_error():
    src_model = create_model("mobilenet_v1", width_mult=0.25, resolution=32, num_classes=4)
    tensors = {k: v for k, v in src_model.state_dict().items() if not k.startswith("blocks.12.")}
    src = InitSource(tensors, "mobilenet_v1", {}, (0.5,) * 3, (0.5,) * 3, None, {"init": "partial.pt"})
    target = create_model("mobilenet_v1", width_mult=0.25, resolution=32, num_classes=2)
    loaded, _, notes = adapt_state(target, src)
    assert "blocks.12.pointwise.conv.weight" not in loaded and torch.equal(
        loaded["blocks.11.pointwise.conv.weight"], tensors["blocks.11.pointwise.conv.weight"]
    )
    assert notes[-1].startswith("warning: 10 tensor(s) keep their random initialization")
    other = InitSource(dict(create_model("squeezenet1_1").state_dict()), "squeezenet1_1", {}, (0.5,) * 3, (0.5,) * 3)
    other.source = {"init": "squeeze.pt"}
    with pytest.raises(MobileNetsError, match="squeeze.pt: none of its tensors fit the model"):
        adapt_state(target, other)


# --- MobileNetV3 and V2 runs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v3_run(tmp_path_factory):
    """A tiny `mobilenets train` run of MobileNetV3-Small α 0.5 on digits: its model.pt."""
    out = tmp_path_factory.mktemp("v3run")
    kw = dict(model="mobilenet_v3_small", width_mult=0.5, dataset="digits", batch_size=64, epochs=1, max_steps=3)
    T.train(T.TrainConfig(**kw, out_dir=str(out), progress=False, tensorboard=False, plots=False))
    return out / "model.pt"


def test_init_from_a_v3_run_keeps_every_tensor_and_adapts_the_stem(v3_run):
    saved, meta_run = T.load_model(v3_run)
    run = dict(init=str(v3_run), model="mobilenet_v3_small", dataset="digits", resolution=16, stem_stride=1)
    model, meta = start_model(cfg(**run), 10, 1, meta_run["classes"])
    assert "its classifier" in meta["notes"][0] and meta["model_kwargs"]["width_mult"] == 0.5
    for k, v in saved.state_dict().items():  # squeeze-and-excite, hard-swish head and classifier included
        assert torch.equal(model.state_dict()[k], v), k
    # RGB data from the gray run: the stem's filters copied to R, G, B (÷3); a new head for 3 classes.
    model, _ = start_model(cfg(**run), 3, 3, ["a", "b", "c"])
    torch.testing.assert_close(model.stem.conv.weight.sum(1, keepdim=True), saved.stem.conv.weight)
    assert torch.equal(model.blocks[0].se.reduce.weight, saved.blocks[0].se.reduce.weight)
    assert model.classifier.weight.shape == (3, saved.head_hidden_size)


def test_init_from_a_v3_run_refuses_another_width_or_family(v3_run):
    with pytest.raises(MobileNetsError, match=r"α=0\.5 weights but the run asks for α=0\.75"):
        start_model(cfg(init=str(v3_run), model="mobilenet_v3_small", width_mult=0.75), 10, 1)
    with pytest.raises(MobileNetsError, match="holds mobilenet_v3_small weights but the run trains mobilenet_v2"):
        start_model(cfg(init=str(v3_run), model="mobilenet_v2"), 10, 1)


def test_train_cli_with_init_from_a_v3_run(v3_run, tmp_path, capsys):
    from mobilenets import cli

    out = tmp_path / "again"
    args = f"train --model mobilenet_v3_small --init {v3_run} --dataset digits --max-steps 2 --batch-size 64"
    with torch_threads(1):
        rc = cli.main([*args.split(), "--out-dir", str(out), "--no-progress", "--no-tensorboard", "--no-plots"])
    assert rc == 0
    _, meta = T.load_model(out / "model.pt")
    assert meta["init"]["source"]["format"] == "mobilenets_run" and meta["model_kwargs"]["width_mult"] == 0.5
    assert "init: mobilenet_v3_small α=0.5" in capsys.readouterr().err
