"""Weights import: numeric parity with Google's TF graph (independent NumPy interpreter), with timm's and
torchvision's own MobileNetV1/V2/V3 forward passes on real photos, our safetensors + model card, the cache, and
every bad-input path."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from numeric import assert_close_scaled, torch_threads
from tensorboard.compat.proto import graph_pb2
from tensorboard.util import tensor_util

from mobilenets import weights as W
from mobilenets.cli import main
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.predict import bundled_images, load_image, preprocess
from mobilenets.weights import pretrained

# --- an independent reference: interpret the GraphDef's own nodes in float64 NumPy --------------------


def _same_pads(n: int, k: int, s: int) -> tuple[int, int, int]:
    """TF "SAME": output ceil(n/s), total padding split with the extra pixel after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def _conv_taps(x: np.ndarray, kh: int, kw: int, s: int, padding: bytes):
    """Yield (i, j, strided input slice) for each kernel tap of an NHWC conv."""
    n, h, w, _ = x.shape
    if padding == b"SAME":
        oh, top, bottom = _same_pads(h, kh, s)
        ow, left, right = _same_pads(w, kw, s)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    else:
        oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s, :]


def _conv2d(x, w, s, padding):  # w: (kh, kw, in, out)
    out = None
    for i, j, t in _conv_taps(x, w.shape[0], w.shape[1], s, padding):
        y = (t.reshape(-1, t.shape[-1]) @ w[i, j]).reshape(*t.shape[:-1], w.shape[-1])  # 2-D GEMM: fast BLAS
        out = y if out is None else out + y
    return out


def _depthwise(x, w, s, padding):  # w: (kh, kw, C, 1)
    return sum(t * w[i, j, :, 0] for i, j, t in _conv_taps(x, w.shape[0], w.shape[1], s, padding))


def run_graph(graph: graph_pb2.GraphDef, x_nhwc: np.ndarray, fetch: str) -> np.ndarray:
    """Evaluate ``fetch`` by walking the graph from its inputs; every op is NumPy, float64, no model code."""
    nodes = {n.name: n for n in graph.node}
    values: dict[str, np.ndarray] = {"input": x_nhwc.astype(np.float64)}

    def ev(name: str) -> np.ndarray:
        name = name.split(":")[0]
        if name in values:
            return values[name]
        node = nodes[name]
        a = [ev(i) for i in node.input if not i.startswith("^")]
        op, attr = node.op, node.attr
        if op == "Const":
            v = tensor_util.make_ndarray(attr["value"].tensor)
            v = v.astype(np.float64) if v.dtype.kind == "f" else v
        elif op == "Identity":
            v = a[0]
        elif op in ("Add", "AddV2", "BiasAdd"):
            v = a[0] + a[1]
        elif op == "Sub":
            v = a[0] - a[1]
        elif op == "Mul":
            v = a[0] * a[1]
        elif op == "Rsqrt":
            v = 1.0 / np.sqrt(a[0])
        elif op == "Relu6":
            v = np.clip(a[0], 0.0, 6.0)
        elif op == "Conv2D":
            v = _conv2d(a[0], a[1], attr["strides"].list.i[1], attr["padding"].s)
        elif op == "DepthwiseConv2dNative":
            v = _depthwise(a[0], a[1], attr["strides"].list.i[1], attr["padding"].s)
        elif op == "AvgPool":
            k, s = attr["ksize"].list.i[1], attr["strides"].list.i[1]
            assert attr["padding"].s == b"VALID"
            v = sum(t for _, _, t in _conv_taps(a[0], k, k, s, b"VALID")) / (k * k)
        elif op == "Squeeze":
            v = np.squeeze(a[0], axis=tuple(attr["squeeze_dims"].list.i) or None)
        elif op == "Reshape":
            v = a[0].reshape(a[1])
        else:
            raise NotImplementedError(op)
        values[name] = v
        return v

    return ev(fetch)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine more threads make these small forwards several times slower."""
    with torch_threads(1):
        yield


def _graph_path():
    path = W.find_pretrained_graph()
    if path is None:
        pytest.fail(f"the pretrained graph is not installed: {W.GET_PRETRAINED}")
    return path


@pytest.fixture(scope="module")
def graph_path():
    return _graph_path()


@pytest.fixture(scope="module")
def graph_def(graph_path):
    g = graph_pb2.GraphDef()
    g.ParseFromString(graph_path.read_bytes())
    return g


@pytest.fixture(scope="module")
def tf_model(graph_path):
    tensors, card = W.import_tf_graph(graph_path)
    return W.build_model(card, tensors), card


def _photos() -> dict[str, np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {n: getattr(skimage.data, n)() for n in ("chelsea", "coffee", "astronaut", "rocket")}
    sk = load_sample_images()
    for filename, image in zip(sk.filenames, sk.images):  # china.jpg, flower.jpg
        photos[os.path.splitext(os.path.basename(filename))[0]] = image
    return photos


@pytest.fixture(scope="module")
def photo_batch(tf_model):
    _, card = tf_model
    photos = _photos()
    return list(photos), torch.stack([preprocess(im, card.preprocessing) for im in photos.values()])


# --- parity -----------------------------------------------------------------------------------------


def test_tf_graph_parity_on_real_photos(tf_model, graph_def, photo_batch):
    model, card = tf_model
    names, x = photo_batch
    assert len(names) == 6
    assert card.model_kwargs == dict(
        width_mult=1.0, resolution=224, num_classes=1001, act="relu6", padding="tf_same", bn_eps=1e-3
    )
    with torch.no_grad():
        ours = model(x).double().numpy()
    reference = run_graph(graph_def, x.permute(0, 2, 3, 1).numpy(), "MobilenetV1/Predictions/Reshape")
    assert reference.shape == ours.shape == (6, 1001)
    diff = np.abs(ours - reference).max()
    print(f"max |ours - TF graph| over {len(names)} photos × 1001 logits: {diff:.2e}")
    assert_close_scaled(ours, reference, 1e-4, min_scale=0.1)  # probabilities: the top one is near 1
    # Symmetric (PyTorch) padding with the same weights is measurably not TF's network.
    sym = create_model("mobilenet_v1", **{**card.model_kwargs, "padding": "symmetric"}).eval()
    sym.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert np.abs(sym(x).double().numpy() - reference).max() > 1e-2


def test_real_photos_get_their_classes(tf_model, photo_batch):
    model, card = tf_model
    names, x = photo_batch
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    predicted = {n: card.class_names[i] for n, i in zip(names, top1)}
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert predicted["chelsea"] in cats, predicted
    assert predicted["coffee"] == "espresso", predicted
    assert card.class_names[0] == "background" and card.background_class


def test_drop_background_keeps_logits_1_to_1000(graph_path, tf_model, photo_batch):
    model, _ = tf_model
    tensors, card = W.import_tf_graph(graph_path, drop_background=True)
    m1000 = W.build_model(card, tensors)
    assert card.num_classes == 1000 and not card.background_class and card.class_names[285] == "Egyptian cat"
    x = photo_batch[1][:2]
    with torch.no_grad():
        assert_close_scaled(m1000(x), model(x)[:, 1:], 1e-5)


def _slim_graph(model: torch.nn.Module, resolution: int) -> graph_pb2.GraphDef:
    """A minimal frozen graph in TF-slim's names and layouts (HWIO, (3,3,C,1), 1x1 logits conv) from our model."""
    g = graph_pb2.GraphDef()
    placeholder = g.node.add(name="input", op="Placeholder")
    for d in (1, resolution, resolution, 3):
        placeholder.attr["shape"].shape.dim.add(size=d)

    def const(name: str, value: torch.Tensor) -> None:
        node = g.node.add(name=f"MobilenetV1/{name}", op="Const")
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value.detach().numpy()))

    layers = [("Conv2d_0", model.stem)]
    for i, block in enumerate(model.blocks, 1):
        layers += [(f"Conv2d_{i}_depthwise", block.depthwise), (f"Conv2d_{i}_pointwise", block.pointwise)]
    for scope, layer in layers:
        w = layer.conv.weight
        if scope.endswith("depthwise"):
            const(f"{scope}/depthwise_weights", w.permute(2, 3, 0, 1))
        else:
            const(f"{scope}/weights", w.permute(2, 3, 1, 0))
        for tf_name, ours in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            const(f"{scope}/BatchNorm/{tf_name}", getattr(layer.bn, ours))
    const("Logits/Conv2d_1c_1x1/weights", model.classifier.weight.T[None, None])
    const("Logits/Conv2d_1c_1x1/biases", model.classifier.bias)
    return g


@pytest.mark.parametrize("width_mult, resolution", [(0.5, 160), (0.25, 128)])
def test_tf_graph_width_and_resolution_are_detected(tmp_path, width_mult, resolution):
    torch.manual_seed(0)
    src = create_model(f"mobilenet_v1_{width_mult}_{resolution}", num_classes=1001)
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path / "slim.pb"
    path.write_bytes(_slim_graph(src, resolution).SerializeToString())
    model, card = W.load_weights(path)
    assert (card.width_mult, card.model_kwargs["resolution"], card.num_classes) == (width_mult, resolution, 1001)
    for key, value in src.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


# --- timm -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_mobilenetv1_round_trip(tmp_path, suffix):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=10)
    for m in ref.modules():  # random BN statistics, so a mis-mapped BN tensor cannot go unnoticed
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ref.eval()
    path = tmp_path / f"timm{suffix}"
    if suffix == ".pth":
        torch.save(ref.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model, card = W.load_weights(path)
    assert card.model_kwargs["padding"] == "symmetric" and card.model_kwargs["bn_eps"] == 1e-5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert_close_scaled(ours, theirs, 1e-5)  # the reference must reach 1e-3: not two zero vectors


# --- timm and torchvision MobileNetV2/V3 -----------------------------------------------------------

# (source, their builder, its kwargs, our name): every importer path (torchvision V2, V3 α=1 and α≠1 with its
# layout, timm V2, V3, and a TF port with TF padding + BN ε 1e-3 + minimalistic blocks).
PARITY = [
    ("torchvision", "mobilenet_v2", {}, "mobilenet_v2_1.0_224"),
    ("torchvision", "mobilenet_v3_large", {}, "mobilenet_v3_large_1.0_224"),
    ("torchvision", "mobilenet_v3_small", {"width_mult": 0.75}, "mobilenet_v3_small_0.75_224"),
    ("timm", "mobilenetv2_100", {}, "mobilenet_v2_1.0_224"),
    ("timm", "mobilenetv3_large_100", {}, "mobilenet_v3_large_1.0_224"),
    ("timm", "tf_mobilenetv3_small_minimal_100", {}, "mobilenet_v3_small_minimal_1.0_224"),
]


def _randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Seeded random BN scales, shifts and running statistics and O(1) logits, so that a tensor mapped to the
    wrong place cannot go unnoticed. The statistics are measured on noise images first, then scattered: drawn
    from nothing, they would swamp the image and give every photo the same output."""
    g = torch.Generator().manual_seed(0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
        elif isinstance(m, torch.nn.Linear):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 128, 128, generator=g))
    for m in bns:
        std = m.running_var.sqrt()
        m.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=g))
        m.running_var.mul_(torch.rand(std.shape, generator=g) * 1.5 + 0.5)
    return model.eval()


def _reference(source: str, name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    if source == "torchvision":
        import torchvision.models as tvm

        return _randomized(getattr(tvm, name)(weights=None, **kwargs))
    timm = pytest.importorskip("timm")
    return _randomized(timm.create_model(name, pretrained=False, **kwargs))


def _their_preprocessing(source: str, name: str) -> dict:
    """The eval transform the source itself documents for its ImageNet weights."""
    if source == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(name)
        return dict(crop_pct=cfg.crop_pct, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std)
    import torchvision.models as tvm

    enum = {"mobilenet_v2": "MobileNet_V2", "mobilenet_v3_large": "MobileNet_V3_Large"}.get(name, "MobileNet_V3_Small")
    tf = getattr(tvm, f"{enum}_Weights").IMAGENET1K_V1.transforms()
    return dict(
        crop_pct=tf.crop_size[0] / tf.resize_size[0],
        interpolation=tf.interpolation.value,
        mean=tuple(tf.mean),
        std=tuple(tf.std),
    )


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_image(p) for p in bundled_images()]  # chelsea.jpg, coffee.jpg


@pytest.mark.parametrize("source, name, kwargs, ours", PARITY, ids=[f"{s}-{n}" for s, n, _, _ in PARITY])
def test_timm_and_torchvision_parity_on_real_photos(tmp_path, capsys, photos, source, name, kwargs, ours):
    ref = _reference(source, name, kwargs)
    src = tmp_path / f"{name}.pth"  # timm's downloads are named after the model: the importer reads tf_ from it
    torch.save(ref.state_dict(), src)
    out = tmp_path / "ours.safetensors"
    assert main(["import-weights", str(src), "-o", str(out), "--model", ours]) == 0
    assert f": {ours}, " in capsys.readouterr().out
    model, card = W.load_weights(out)
    pre = card.preprocessing
    theirs_pre = _their_preprocessing(source, name)
    assert (pre.crop, pre.resolution) == ("resize_shorter", 224)
    assert dict(crop_pct=pre.crop_pct, interpolation=pre.interpolation, mean=pre.mean, std=pre.std) == theirs_pre
    assert card.num_classes == len(card.class_names) == 1000 and card.class_names[285] == "Egyptian cat"
    assert card.model_kwargs["bn_eps"] == next(m.eps for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.stack([preprocess(image, pre) for image in photos])
    with torch.no_grad():
        theirs, mine = ref(x), model(x)
    diff = (mine - theirs).abs().max().item()
    print(f"{source} {name}: max |ours - theirs| = {diff:.2e}, logits up to {theirs.abs().max().item():.3g}")
    assert_close_scaled(mine, theirs, 1e-5)
    assert (theirs[0] - theirs[1]).abs().max() > 0.1  # two photos, two different outputs of a working network


def test_timm_legacy_xception_imports_with_parity_on_real_photos(tmp_path, capsys, photos):
    """Issue 19: timm's legacy_xception state dict → our Xception (its paper's Figure 5), same outputs."""
    ref = _reference("timm", "legacy_xception", {})
    src = tmp_path / "xception.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "xception.safetensors"
    assert main(["import-weights", str(src), "-o", str(out), "--model", "xception"]) == 0
    model, card = W.load_weights(out)
    assert card.arch == "xception" and card.preprocessing.resolution == 299
    assert dict(crop_pct=card.preprocessing.crop_pct, mean=card.preprocessing.mean) == {
        k: v for k, v in _their_preprocessing("timm", "legacy_xception").items() if k in ("crop_pct", "mean")
    }
    x = torch.stack([preprocess(image, card.preprocessing) for image in photos])
    with torch.no_grad():
        theirs, mine = ref(x), model(x)
    print(f"timm legacy_xception: max |ours - theirs| = {(mine - theirs).abs().max().item():.2e}")
    assert_close_scaled(mine, theirs, 1e-5)
    assert (theirs[0] - theirs[1]).abs().max() > 0.1
    # A V3 file is not Xception weights: one line that says what the file holds.
    v3 = tmp_path / "v3.pth"
    torch.save(_reference("torchvision", "mobilenet_v3_small", {}).state_dict(), v3)
    assert main(["import-weights", str(v3), "-o", str(tmp_path / "bad.safetensors"), "--model", "xception"]) == 2
    assert "holds mobilenet_v3_small" in capsys.readouterr().err and not (tmp_path / "bad.safetensors").exists()


def test_every_supported_timm_model_keeps_its_conventions():
    """Shapes, α, BN ε, padding and preprocessing of each supported timm name, against timm's own model and cfg."""
    timm = pytest.importorskip("timm")
    v23 = [name for name in W.TIMM_MODELS if not name.startswith("mobilenetv4")]  # V4: tests/test_mobilenet_v4.py
    assert set(v23) <= set(timm.list_models("*mobilenetv[23]*"))
    for name in v23:
        with torch.device("meta"):  # shapes only: nothing allocated
            ref = timm.create_model(name, pretrained=False)
        _, card = W.timm_to_ours(ref.state_dict(), name, {"file": f"{name}-0123abcd.pth"})
        bn_eps = next(m.eps for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d))
        tf_padding = type(ref.conv_stem).__name__ == "Conv2dSame"
        assert card.width_mult == int(name[-3:]) / 100, name
        assert card.model_kwargs["bn_eps"] == bn_eps and (card.model_kwargs["padding"] == "tf_same") == tf_padding
        assert card.arch.endswith("_minimal") == ("minimal" in name) and card.source["timm_model"] == name
        pre = card.preprocessing
        assert dict(crop_pct=pre.crop_pct, interpolation=pre.interpolation, mean=pre.mean, std=pre.std) == (
            _their_preprocessing("timm", name)
        ), name


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_torchvision_width_mult_is_read_from_the_shapes(arch):
    import torchvision.models as tvm

    for width_mult in (0.35, 1.0, 1.25):  # 0.35 of 96 rounds as 1/3 does: every layer decides
        with torch.device("meta"):
            ref = getattr(tvm, arch)(width_mult=width_mult)
        tensors, card = W.torchvision_to_ours(ref.state_dict(), arch)
        assert card.arch == arch and card.width_mult == width_mult
        # V3 scales its expansions by α as torchvision does only in our "torchvision" layout; at α = 1 all agree.
        wanted = "torchvision" if arch != "mobilenet_v2" and width_mult != 1.0 else None
        assert card.model_kwargs.get("layout") == wanted
        assert len(tensors) == len([k for k in ref.state_dict() if not k.endswith("num_batches_tracked")])


def test_v2_v3_weights_work_with_predict_and_init(tmp_path, capsys):
    from mobilenets.training.config import TrainConfig
    from mobilenets.training.init import start_model

    ref = _reference("torchvision", "mobilenet_v3_small", {"width_mult": 0.75})
    src = tmp_path / "mobilenet_v3_small_075.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "v3s.safetensors"
    assert main(["import-weights", str(src), "-o", str(out)]) == 0
    cat = str(bundled_images()[0])
    assert main(["predict", cat, "--weights", str(out), "--model", "mobilenet_v3_small_0.75_224", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["model"] == "mobilenet_v3_small_0.75_224"
    for init in (src, out):  # --init: the torchvision file itself, or ours
        model, meta = start_model(TrainConfig(init=str(init), model="mobilenet_v3_small", resolution=64), 5, 3)
        assert meta["model_kwargs"]["layout"] == "torchvision" and meta["mean"] == [0.485, 0.456, 0.406]
        body = [v for k, v in ref.state_dict().items() if not k.startswith("classifier.3") and "num_batches" not in k]
        ours = [v for k, v in model.state_dict().items() if not k.startswith("classifier.") and "num_batches" not in k]
        assert len(body) == len(ours) and all(torch.equal(a, b) for a, b in zip(body, ours))


# --- V2/V3 bad input ---------------------------------------------------------------------------------


def test_v1_checkpoint_given_as_v3_is_one_clear_line_and_writes_nothing(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    v1 = tmp_path / "v1.pth"
    torch.save(timm.create_model("mobilenetv1_100", pretrained=False, num_classes=10).state_dict(), v1)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous weights")
    assert main(["import-weights", str(v1), "-o", str(out), "--model", "mobilenet_v3_large_1.0_224"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (
        f"{v1} holds mobilenet_v1 α=1.0 (10 classes) from a timm state dict, not mobilenet_v3_large weights "
        "(--model mobilenet_v3_large_1.0_224); leave --model out to use it as mobilenet_v1_1.0_224"
    ) in err
    assert out.read_bytes() == b"previous weights" and not (tmp_path / "out.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "v1.pth"]  # no temp files


def test_bad_v2_v3_state_dicts_are_named(tmp_path, capsys):
    import torchvision.models as tvm

    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        small = tvm.mobilenet_v3_small().state_dict()
        timm_small = timm.create_model("mobilenetv3_small_100").state_dict()
        timm_050 = timm.create_model("mobilenetv3_small_050").state_dict()
    cut = dict(small, **{"features.4.block.2.fc1.weight": small["features.4.block.2.fc1.weight"][:16]})
    with pytest.raises(
        MobileNetsError,
        match=r"blocks\.3\.se\.reduce\.weight is \(16, 96, 1, 1\) in the file but \(24, 96, 1, 1\) in the model",
    ):
        W.torchvision_to_ours(cut, "cut.pth")
    extra = dict(small, **{"features.4.block.9.0.weight": small["features.4.block.2.fc1.weight"]})
    with pytest.raises(MobileNetsError, match=r"torchvision tensors features\.4\.block\.9\.0\.weight have no"):
        W.torchvision_to_ours(extra, "extra.pth")
    said = r"the file name says timm's tf_mobilenetv3_large_100, but the tensors are mobilenet_v3_small α=1"
    with pytest.raises(MobileNetsError, match=said):
        W.timm_to_ours(timm_small, "x", {"file": "tf_mobilenetv3_large_100-427764d5.pth"})
    said = r"the given says timm's mobilenetv3_small_050, but the tensors are mobilenet_v3_small α=1"
    with pytest.raises(MobileNetsError, match=said):
        W.timm_to_ours(timm_small, "x", timm_model="mobilenetv3_small_050")
    with pytest.raises(MobileNetsError, match=r"the given says timm's mobilenetv3_small_075, but .* α=0.5"):
        W.timm_to_ours(timm_050, "s050.pth", timm_model="mobilenetv3_small_075")  # 16-wide stem: test_mobilenet_v3
    _, card = W.timm_to_ours(timm_small, "x", timm_model="tf_mobilenetv3_small_100")
    assert card.model_kwargs["padding"] == "tf_same" and card.source["timm_model_from"] == "given"
    hub = "hub/models--timm--tf_mobilenetv3_small_100.in1k/snapshots/0123abcd/model.safetensors"  # the HF cache
    _, card = W.timm_to_ours(timm_small, hub, {"file": "model.safetensors"})
    assert card.model_kwargs["bn_eps"] == 1e-3 and card.source["timm_model_from"] == "file name"
    _, card = W.timm_to_ours(timm_small, "model.pth")
    assert card.source["timm_model"] == "mobilenetv3_small_100" and card.source["timm_model_from"] == "assumed"

    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, resnet)
    out = tmp_path / "out.safetensors"
    assert main(["import-weights", str(resnet), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not a timm or torchvision MobileNet state dict (it starts with conv1.weight, fc.weight)" in err
    tv = tmp_path / "tv.pth"
    torch.save({k: torch.zeros(v.shape) for k, v in small.items()}, tv)
    assert main(["import-weights", str(tv), "-o", str(out), "--timm-model", "mobilenetv3_small_100"]) == 2
    assert "--timm-model is for timm state dicts; " in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- our safetensors + card -------------------------------------------------------------------------


def test_import_weights_cli_writes_safetensors_and_card(tmp_path, graph_path, tf_model, photo_batch, capsys):
    out = tmp_path / "mnv1.safetensors"
    assert main(["import-weights", str(graph_path), "-o", str(out)]) == 0
    assert "mobilenet_v1_1.0_224" in capsys.readouterr().out
    card_json = json.loads((tmp_path / "mnv1.json").read_text())
    assert card_json["model_kwargs"]["num_classes"] == 1001 and len(card_json["class_names"]) == 1001
    assert card_json["source"]["sha256"] == W.sha256_file(graph_path)
    loaded, card = W.load_weights(out, model_name="mobilenet_v1_1.0_224", num_classes=1001)
    assert json.loads(json.dumps(card.to_dict())) == card_json
    x = photo_batch[1][:2]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tf_model[0](x), rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnv1.json", "mnv1.safetensors"]  # no temp files left


@pytest.fixture(scope="module")
def half_width_file(tmp_path_factory):
    """An α=0.5 MobileNetV1 saved with our card."""
    path = tmp_path_factory.mktemp("w") / "a05.safetensors"
    model = create_model("mobilenet_v1_0.5_224", num_classes=10).eval()
    card = W.ModelCard(
        arch="mobilenet_v1",
        model_kwargs=dict(width_mult=0.5, resolution=224, num_classes=10),
        preprocessing=W.Preprocessing(),
        class_names=[f"c{i}" for i in range(10)],
    )
    W.save_weights(model, card, path)
    return path


def test_wrong_width_mult_is_named(half_width_file):
    with pytest.raises(MobileNetsError, match=r"holds α=0.5 weights but mobilenet_v1_1.0_224 has α=1.0"):
        W.load_weights(half_width_file, model_name="mobilenet_v1_1.0_224")
    model, card = W.load_weights(half_width_file, model_name="mobilenet_v1_0.5_160")  # ρ may change, α not
    assert card.model_kwargs["resolution"] == 160 and model.resolution == 160


def test_card_that_lies_about_shapes_is_caught(half_width_file, tmp_path):
    from safetensors.torch import load_file, save

    tensors = load_file(str(half_width_file))
    card = W.read_safetensors(half_width_file)[1]
    card.model_kwargs["width_mult"] = 1.0  # the tensors are still α = 0.5
    bad = tmp_path / "liar.safetensors"
    bad.write_bytes(save(tensors, metadata={W.CARD_METADATA_KEY: json.dumps(card.to_dict())}))
    with pytest.raises(MobileNetsError, match=r"stem.conv.weight is \(16, 3, 3, 3\) in the file but \(32, 3, 3, 3\)"):
        W.load_weights(bad)


def test_wrong_class_count_is_named(half_width_file, tmp_path):
    with pytest.raises(MobileNetsError, match=r"has 10 classes but 1000 were asked for"):
        W.load_weights(half_width_file, num_classes=1000)
    from safetensors.torch import load_file, save

    card = W.read_safetensors(half_width_file)[1].to_dict()
    card["class_names"] = card["class_names"][:9]
    bad = tmp_path / "names.safetensors"
    bad.write_bytes(save(load_file(str(half_width_file)), metadata={W.CARD_METADATA_KEY: json.dumps(card)}))
    with pytest.raises(MobileNetsError, match=r"lists 9 class names for a 10-class model"):
        W.load_weights(bad)


def test_tf_graph_of_mixed_width_is_refused(graph_def, tmp_path):
    g = graph_pb2.GraphDef()
    g.CopyFrom(graph_def)
    for node in g.node:
        if node.name == "MobilenetV1/Conv2d_5_pointwise/weights":
            w = tensor_util.make_ndarray(node.attr["value"].tensor)[..., :192]
            node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(w))
    bad = tmp_path / "mixed.pb"
    bad.write_bytes(g.SerializeToString())
    msg = r"Conv2d_5_pointwise has 192 output channels but MobileNetV1 α=1 has 256"
    with pytest.raises(MobileNetsError, match=msg):
        W.import_tf_graph(bad)


# --- bad files --------------------------------------------------------------------------------------


def test_truncated_pb_is_refused_and_output_untouched(graph_path, tmp_path, capsys):
    data = graph_path.read_bytes()
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous weights")
    for i, cut in enumerate((len(data) // 2, 1000, 0)):
        bad = tmp_path / f"cut{i}.pb"
        bad.write_bytes(data[:cut])
        assert main(["import-weights", str(bad), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "mobilenets: error:" in err
        assert any(w in err for w in ("truncated", "corrupt", "empty", "not a complete")), err
    assert out.read_bytes() == b"previous weights"
    assert not (tmp_path / "out.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "payload": _RunsCode(str(marker))}, evil)
    refused = r"refused to load .*\((builtins\.|io\.)?open\) beyond tensors, which could run code"
    with pytest.raises(MobileNetsError, match=refused):
        W.load_weights(evil)
    assert not marker.exists()


def test_not_a_state_dict_and_unknown_format(tmp_path):
    p = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), p)
    with pytest.raises(MobileNetsError, match="does not hold a state dict"):
        W.load_weights(p)
    p = tmp_path / "noise.pth"
    p.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(MobileNetsError, match="is not a readable PyTorch state dict"):  # corrupt, not "malicious"
        W.load_weights(p)
    p = tmp_path / "weights.h5"
    p.write_bytes(b"x")
    with pytest.raises(MobileNetsError, match="unknown weights format"):
        W.load_weights(p)
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 16)
    with pytest.raises(MobileNetsError, match="not a readable safetensors"):
        W.load_weights(p)


# --- cache ------------------------------------------------------------------------------------------


def test_cache_location_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MOBILENETS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "mobilenets"
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "mine"))
    assert W.cache_dir() == tmp_path / "mine"


def test_pretrained_is_converted_once_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    path = W.pretrained_weights_path()
    assert path.parent == tmp_path / "cache" and path.is_file() and path.with_suffix(".json").is_file()

    def no_reconvert(*a, **k):
        raise AssertionError("converted again although the cache is valid")

    monkeypatch.setattr(pretrained, "import_weights", no_reconvert)
    model, card = W.pretrained_model()
    assert card.num_classes == 1001 and card.source["format"] == "tf_frozen_graph"
    with pytest.raises(MobileNetsError, match=r"for MobileNetV1 α=1.0 only .*not mobilenet_v1_0.5_224"):
        W.pretrained_model("mobilenet_v1_0.5_224")
    model, card = W.pretrained_model("mobilenet_v1_1.0_160")  # the paper's ρ: same weights, smaller input
    assert model.resolution == card.preprocessing.resolution == 160


def test_missing_pretrained_graph_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(pretrained, "find_pretrained_graph", lambda: None)
    with pytest.raises(MobileNetsError, match=r"pip install --no-deps nudity==0\.2\.3"):
        W.pretrained_model()
    assert main(["predict"]) == 2
    assert "pip install --no-deps nudity==0.2.3" in capsys.readouterr().err
