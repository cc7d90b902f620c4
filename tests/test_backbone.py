"""The backbone API: create_model(features_only=True), feature_info, forward_intermediates, a detector on top.

References are independent of the code under test: forward hooks on the full model, timm's feature_info and
feature maps, the paper's layer table (Table 1) through the width rounding rule, and a torchvision detector.
"""

import json
import math
import re
from collections import OrderedDict

import pytest
import torch
from numeric import assert_close_scaled
from torch import nn

from mobilenets import MobileNetsError, create_model, list_models
from mobilenets.cli import main
from mobilenets.models import Backbone, model_defaults
from mobilenets.models.layers import scale_channels
from mobilenets.profile import profile

# One name per distinct architecture (the α×ρ aliases share their family's code), plus a narrow MobileNet;
# one DenseNet stands for the three (same code, more layers; each takes seconds on 2 cores).
ARCHITECTURES = [
    n for n in list_models() if not re.search(r"_\d\.\d+_\d+$", n) and n not in ("densenet169", "densenet201")
] + ["mobilenet_v1_0.25_128"]
MOBILENETS = ["mobilenet_v1", "mobilenet_v1_conv", "mobilenet_v1_shallow"]


def _random_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that eval-mode maps are not a plain function of the conv weights."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(
    "name, resolution", [(n, r) for n in MOBILENETS for r in (64, 100)] + [("mobilenet_v1_0.5_224", 224)]
)
def test_mobilenet_maps_are_stride_8_16_32_of_table_1(name, resolution):
    backbone = create_model(name, features_only=True, resolution=resolution).eval()
    assert backbone.feature_info.reduction() == [8, 16, 32]
    # Paper Table 1: the last layer at each stride, scaled by α.
    assert backbone.feature_info.channels() == [scale_channels(c, backbone_alpha(name)) for c in (256, 512, 1024)]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, resolution, resolution))
    # Every stride-2 layer pads 1 on each side (or TF SAME): an n-pixel side becomes ceil(n / 2).
    assert [tuple(m.shape) for m in maps] == [
        (1, c, math.ceil(resolution / r), math.ceil(resolution / r))
        for c, r in zip(backbone.feature_info.channels(), [8, 16, 32])
    ]


def backbone_alpha(name: str) -> float:
    return float(name.split("_")[2]) if name.count("_") == 3 else 1.0


@pytest.mark.parametrize("width_mult", [0.25, 0.6, 0.75, 1.3])
def test_channels_follow_width_mult(width_mult):
    backbone = create_model("mobilenet_v1", features_only=True, width_mult=width_mult, out_indices=(0, 1, 2, 3, 4))
    expected = [scale_channels(c, width_mult) for c in (64, 128, 256, 512, 1024)]
    assert backbone.feature_info.channels() == expected
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(2, 3, 96, 80))
    assert [m.shape[1] for m in maps] == expected
    assert [m.shape[2:] for m in maps] == [(math.ceil(96 / r), math.ceil(80 / r)) for r in (2, 4, 8, 16, 32)]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_level_matches_the_full_models_activations(name):
    # α 0.25 where there is one: the same levels and hooks at a fraction of the work (V4 Hybrid-L is 38M at α 1).
    thin = {"width_mult": 0.25} if "width_mult" in model_defaults(name) else {}
    model = _random_bn(create_model(name, num_classes=10, **thin))
    size = model.min_resolution + 3  # odd on purpose
    x = torch.randn(1, model.in_chans, size, size)
    seen = {}
    hooks = [
        model.get_submodule(d["module"]).register_forward_hook(
            lambda mod, inp, out, key=d["module"]: seen.setdefault(key, out.clone())
        )
        for d in model.feature_info
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    info = model.feature_info.get_dicts()
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        backbone = Backbone(model, out_indices=range(len(info))).eval()  # prunes `model` in place
        bmaps = backbone(x)
    assert len(maps) == len(bmaps) == len(info) >= 4
    for d, m, b in zip(info, maps, bmaps):
        ref = seen[d["module"]]
        # Reductions are nominal: SqueezeNet's unpadded stem and ceil-mode pools, DenseNet's floor-mode
        # pools take a pixel or two off input / reduction.
        side = size / d["reduction"]
        assert m.shape[1] == d["num_chs"] and side - 3 < m.shape[-1] <= math.ceil(side), d
        torch.testing.assert_close(m, ref, rtol=0, atol=0)
        torch.testing.assert_close(b, ref, rtol=0, atol=0)
    assert ref.abs().max() > 1e-3  # not a comparison of zeros


def test_feature_info_agrees_with_timm():
    timm = pytest.importorskip("timm")
    for theirs, width_mult in (("mobilenetv1_100", 1.0), ("mobilenetv1_125", 1.25)):
        ref = timm.create_model(theirs, pretrained=False, features_only=True)
        ours = create_model("mobilenet_v1", width_mult=width_mult, features_only=True, out_indices=range(5))
        assert ours.feature_info.channels() == ref.feature_info.channels()
        assert ours.feature_info.reduction() == ref.feature_info.reduction() == [2, 4, 8, 16, 32]
    ref = timm.create_model("densenet121", pretrained=False, features_only=True)
    ours = create_model("densenet121", features_only=True, out_indices=range(5))
    assert ours.feature_info.channels() == ref.feature_info.channels()
    assert ours.feature_info.reduction() == ref.feature_info.reduction()


# MobileNetV2/V3 against timm's models of the same layout (V3 α = 0.75: timm scales as torchvision does).
V2_V3_TIMM = [
    ("mobilenet_v2", dict(width_mult=0.5), "mobilenetv2_050"),
    ("mobilenet_v3_large", {}, "mobilenetv3_large_100"),
    ("mobilenet_v3_small", {}, "mobilenetv3_small_100"),
    ("mobilenet_v3_small", dict(width_mult=0.75, layout="torchvision"), "mobilenetv3_small_075"),
]


@pytest.mark.parametrize("name, kw, theirs", V2_V3_TIMM)
def test_v2_v3_levels_are_timms_strides_2_to_32(name, kw, theirs):
    timm = pytest.importorskip("timm")
    ref = timm.create_model(theirs, pretrained=False, features_only=True).eval()
    backbone = create_model(name, features_only=True, out_indices=range(5), **kw).eval()
    # timm's convention: V2's stride-32 map is its last bottleneck (320 channels at α 1; the 1280-wide conv
    # is the head), V3's the 1×1 conv after the last bneck (576 / 960).
    assert backbone.feature_info.reduction() == ref.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert backbone.feature_info.channels() == ref.feature_info.channels()
    assert create_model(name, features_only=True, **kw).feature_info.reduction() == [8, 16, 32]
    x = torch.randn(1, 3, 72, 72)
    with torch.no_grad():
        ours, theirs_maps = backbone(x), ref(x)
    assert [m.shape for m in ours] == [m.shape for m in theirs_maps]


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_v2_v3_small_image_stem_halves_every_stride(name):
    # The 28-px training setting (stem stride 1): the same levels, each at half the reduction.
    full = create_model(name, features_only=True, out_indices=range(5), width_mult=0.5)
    small = create_model(name, features_only=True, width_mult=0.5, stem_stride=1, resolution=28, in_chans=1)
    assert small.feature_info.reduction() == [4, 8, 16]
    assert small.feature_info.channels() == full.feature_info.channels()[2:]
    with torch.no_grad():
        maps = small.eval()(torch.randn(2, 1, 28, 28))
    assert [tuple(m.shape) for m in maps] == [
        (2, c, math.ceil(28 / r), math.ceil(28 / r)) for c, r in zip(small.feature_info.channels(), [4, 8, 16])
    ]


def test_feature_maps_equal_timms_given_its_weights():
    timm = pytest.importorskip("timm")
    from mobilenets.weights import timm_to_ours

    torch.manual_seed(0)
    ref = _random_bn(timm.create_model("mobilenetv1_100", pretrained=False))
    tensors, card = timm_to_ours(ref.state_dict(), "timm")
    model = create_model("mobilenet_v1", **card.model_kwargs)
    model.load_state_dict(tensors)
    backbone = Backbone(model.eval())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        # timm's levels are ours: 0..4 = its five stages, strides 2..32.
        theirs = ref.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)
        ours = backbone(x)
    for a, b in zip(ours, theirs):
        assert_close_scaled(a, b, 1e-5)


def test_forward_intermediates_options():
    model = create_model("mobilenet_v1_0.25_128").eval()
    x = torch.randn(1, 3, 128, 128)
    ran = []
    model.blocks[12].register_forward_hook(lambda *a: ran.append(12))
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=2, intermediates_only=True)  # the last two levels
        assert [m.shape[-1] for m in maps] == [8, 4] and ran == [12]
        shallow = model.forward_intermediates(x, indices=[0, -3], intermediates_only=True, output_fmt="NHWC")
        assert [tuple(m.shape) for m in shallow] == [(1, 64, 64, 16), (1, 16, 16, 64)]
        assert ran == [12]  # stopped after level 2: the stride-32 block never ran
        _, maps = model.forward_intermediates(x, indices=[2], stop_early=True)
        assert ran == [12]
    for bad, msg in (([5], "level 5 does not exist"), ([3, 1], "ordered shallow to deep"), (6, "last 6 of 5")):
        with pytest.raises(MobileNetsError, match=msg):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(MobileNetsError, match="features_only=True"):
        create_model("mobilenet_v1", out_indices=(1, 2))
    with pytest.raises(MobileNetsError, match="0..4"):
        create_model("mobilenet_v1", features_only=True, out_indices=(2, 7))
    with pytest.raises(MobileNetsError, match="expects input of shape"):
        create_model("mobilenet_v1", features_only=True)(torch.randn(1, 1, 64, 64))


def test_backbone_drops_the_head_and_later_layers_and_loads_the_full_state_dict():
    full = create_model("mobilenet_v1", num_classes=10)
    backbone = create_model("mobilenet_v1", features_only=True, out_indices=(1, 2))  # strides 4, 8: blocks.0-4
    result = backbone.load_state_dict(full.state_dict(), strict=False)
    assert result.missing_keys == []
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in result.unexpected_keys} == {
        *(f"blocks.{i}" for i in range(5, 13)),
        "classifier.weight",
        "classifier.bias",
    }
    # The head: parameters under the model's classifier attribute, as fine-tuning splits them.
    head = [n for n, _ in full.named_parameters() if n.startswith(full.classifier_name)]
    assert head == ["classifier.weight", "classifier.bias"]


def test_profiler_counts_the_backbone(capsys):
    full = profile(create_model("mobilenet_v1", resolution=128))
    backbone = profile(create_model("mobilenet_v1", resolution=128, features_only=True))
    # The backbone is everything but the 1024→1000 FC layer (paper Table 1's last row).
    assert full.mult_adds - backbone.mult_adds == 1024 * 1000
    assert full.params - backbone.params == 1024 * 1000 + 1000
    assert [layer.type for layer in backbone.layers].count("Fully Connected") == 0
    # Up to stride 8 (stem, blocks.0-4): the full model's first eleven convolutions, at any input size.
    to_8 = profile(create_model("mobilenet_v1_0.5_160", features_only=True, out_indices=(2,)), 150)
    full_150 = profile(create_model("mobilenet_v1_0.5_160"), 150)
    assert [layer.name for layer in to_8.layers] == [layer.name for layer in full_150.layers[:11]]
    assert to_8.mult_adds == sum(layer.mult_adds for layer in full_150.layers[:11])
    assert main(["profile", "mobilenet_v1", "--resolution", "128", "--features-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mult_adds"] == backbone.mult_adds


class _AsDict(nn.Module):
    """torchvision's detectors take a backbone returning an OrderedDict of maps and an ``out_channels``."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.body = backbone
        self.out_channels = backbone.feature_info.channels()

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return OrderedDict((str(i), m) for i, m in enumerate(self.body(x)))


@pytest.fixture(scope="module")
def astronaut():
    """A real photo (scikit-image's astronaut, 512×512) as a float tensor, and a box around her face."""
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float() / 255
    return image, torch.tensor([[150.0, 20.0, 290.0, 200.0]])


def test_ssdlite_on_mobilenet_trains_a_step(astronaut):
    from functools import partial

    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    torch.manual_seed(0)
    backbone = _AsDict(create_model("mobilenet_v1_0.25_128", features_only=True))
    anchors = DefaultBoxGenerator([[2, 3]] * 3, min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), 2, partial(nn.BatchNorm2d, eps=1e-3))
    detector = SSD(backbone, anchors, (128, 128), num_classes=2, head=head)
    image, box = astronaut
    losses = detector([image], [{"boxes": box, "labels": torch.tensor([1])}])
    assert set(losses) == {"bbox_regression", "classification"}
    sum(losses.values()).backward()
    stem_grad = backbone.body.stem.conv.weight.grad
    assert stem_grad is not None and torch.isfinite(stem_grad).all() and stem_grad.abs().sum() > 0
    detector.eval()
    with torch.no_grad():
        (out,) = detector([image])
    assert out["boxes"].shape[1] == 4 and out["boxes"].shape[0] == out["scores"].shape[0]
    if len(out["boxes"]):  # boxes come back in the photo's own 512×512 coordinates
        assert out["boxes"].min() >= 0 and out["boxes"].max() <= 512


def test_faster_rcnn_fpn_on_mobilenet_trains_a_step(astronaut):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    class WithFPN(nn.Module):
        def __init__(self, body: _AsDict):
            super().__init__()
            self.body, self.out_channels = body, 64
            self.fpn = FeaturePyramidNetwork(body.out_channels, 64, extra_blocks=LastLevelMaxPool())

        def forward(self, x):
            return self.fpn(self.body(x))

    torch.manual_seed(0)
    backbone = WithFPN(_AsDict(create_model("mobilenet_v1_0.25_128", features_only=True)))
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)  # 3 maps + the max pool
    detector = FasterRCNN(
        backbone, num_classes=2, min_size=160, max_size=160, rpn_anchor_generator=anchors, box_batch_size_per_image=32
    )
    image, box = astronaut
    losses = detector([image], [{"boxes": box, "labels": torch.tensor([1])}])
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert backbone.body.body.blocks[12].pointwise.conv.weight.grad.abs().sum() > 0
