import re

import pytest
import torch
import torchvision
from numeric import assert_close_scaled, randomize_bn
from torch import nn

from mobilenets import MobileNetsError, create_model, list_models
from mobilenets.models import MobileNetV3, model_defaults
from mobilenets.models.layers import PadSame, SqueezeExcite, make_divisible, scale_channels
from mobilenets.models.mobilenet_v1 import BLOCKS
from mobilenets.models.squeezenet import Fire
from mobilenets.models.xception import PAPER_PARAMS as XCEPTION_PARAMS

ALL_MODELS = list_models()
# One name per distinct architecture: the α×ρ aliases share code with their family's base name.
ARCHITECTURES = [n for n in ALL_MODELS if not re.search(r"_\d\.\d+_\d+$", n)] + ["mobilenet_v1_0.25_128"]


def thin(name: str) -> dict:
    """α 0.25 for the families with a width multiplier: the same layers and graph at a fraction of the work (V4
    Conv-L is 32M parameters at α 1). The full widths run forward in test_forward_shape_and_name_defaults."""
    return {"width_mult": 0.25} if "width_mult" in model_defaults(name) else {}


def small_input(model, batch=2):
    return torch.randn(batch, model.in_chans, model.min_resolution * 2, model.min_resolution * 2)


def test_registry_has_every_paper_variant():
    for family in ("mobilenet_v1", "mobilenet_v1_conv", "mobilenet_v1_shallow"):
        for alpha in ("1.0", "0.75", "0.5", "0.25"):
            for res in (224, 192, 160, 128):
                name = f"{family}_{alpha}_{res}"
                assert name in ALL_MODELS
                assert model_defaults(name) == {"width_mult": float(alpha), "resolution": res}
    for name in ("squeezenet1_0", "squeezenet1_1", "densenet121", "densenet169", "densenet201", "xception"):
        assert name in ALL_MODELS
    for name in ("squeezenet1_0", "squeezenet1_1"):
        assert {f"{name}_simple_bypass", f"{name}_complex_bypass"} <= set(ALL_MODELS)
    for alpha in ("1.4", "1.3", "1.0", "0.75", "0.5", "0.35"):
        for res in (224, 192, 160, 128, 96):
            assert model_defaults(f"mobilenet_v2_{alpha}_{res}") == {"width_mult": float(alpha), "resolution": res}
    for family in ("large", "small", "large_minimal", "small_minimal"):
        assert {f"mobilenet_v3_{family}_1.0_224", f"mobilenet_v3_{family}_0.75_224"} <= set(ALL_MODELS)
    assert list_models("mobilenet_v1_0.5_*") == [f"mobilenet_v1_0.5_{r}" for r in (128, 160, 192, 224)]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape_and_name_defaults(name):
    model = create_model(name, num_classes=7).eval()
    assert model.resolution == model_defaults(name)["resolution"]
    with torch.no_grad():
        out = model(small_input(model))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_backward_features_and_reset_classifier(name):
    model = create_model(name, num_classes=5, in_chans=1, **thin(name))
    x = small_input(model)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    # pre-logits: the pooled features, or V3's wider head conv after them (timm's head_hidden_size)
    hidden = getattr(model, "head_hidden_size", model.num_features)
    assert model.forward_head(feats, pre_logits=True).shape == (2, hidden)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_torch_export_matches_eager(name):
    model = create_model(name, num_classes=10, **thin(name)).eval()
    x = small_input(model, batch=1)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_close_scaled(exported.module()(x), model(x), 1e-5, min_scale=0)


def test_mobilenet_v1_is_paper_table1():
    model = create_model("mobilenet_v1_1.0_224")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 27 and len([m for m in model.modules() if isinstance(m, nn.Linear)]) == 1  # 28 layers
    depthwise = [c for c in convs if c.groups > 1]
    assert [c.out_channels for c in depthwise] == [32, 64, 128, 128, 256, 256, *[512] * 6, 1024]
    assert [c.stride[0] for c in depthwise] == [s for _, s in BLOCKS]
    assert depthwise[-1].stride == (1, 1)  # Table 1's "s2" on the last dw layer is a typo
    assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


def test_conv_and_shallow_variants():
    conv = create_model("mobilenet_v1_conv_1.0_224")
    assert not any(m.groups > 1 for m in conv.modules() if isinstance(m, nn.Conv2d))
    assert len([m for m in conv.modules() if isinstance(m, nn.Conv2d)]) == 14
    shallow = create_model("mobilenet_v1_shallow_1.0_224")
    assert len(shallow.blocks) == len(BLOCKS) - 5
    assert shallow.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


@pytest.mark.parametrize(
    "value,expected",
    [(32 * 0.75, 24), (1024 * 0.25, 256), (32 * 0.25, 8), (32 * 0.1, 8), (100, 104), (37, 40), (20, 24)],
)
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected
    assert expected % 8 == 0 and expected >= 0.9 * value


def test_width_mult_scales_every_layer():
    model = create_model("mobilenet_v1", width_mult=0.6, resolution=96)
    pointwise = [m.pointwise.conv.out_channels for m in model.blocks]
    assert pointwise == [scale_channels(c, 0.6) for c, _ in BLOCKS]
    assert model.stem.conv.out_channels == scale_channels(32, 0.6) == 24  # 16 would be > 10% below 19.2
    tiny = create_model("mobilenet_v1", width_mult=0.01)
    assert min(m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)) == 8  # never below 8


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("squeezenet1_0", torchvision.models.squeezenet1_0),
        ("squeezenet1_1", torchvision.models.squeezenet1_1),
        ("densenet121", torchvision.models.densenet121),
        ("mobilenet_v2", torchvision.models.mobilenet_v2),
        ("mobilenet_v3_large", torchvision.models.mobilenet_v3_large),
        ("mobilenet_v3_small", torchvision.models.mobilenet_v3_small),
    ],
)
def test_matches_torchvision_with_its_weights(ours, theirs):
    """Same layers in the same order: torchvision's (random) weights give torchvision's outputs."""
    torch.manual_seed(0)
    reference = theirs(weights=None).eval()
    model = create_model(ours).eval()
    ours_sd, ref_sd = model.state_dict(), reference.state_dict()
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in ref_sd.values()]
    randomize_bn(reference)  # ref_sd holds the same tensors
    model.load_state_dict(dict(zip(ours_sd, ref_sd.values())))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert_close_scaled(model(x), reference(x), 1e-5)


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_squeezenet_bypass_variants_follow_figure_2(version):
    vanilla, simple, complex_ = (
        create_model(f"squeezenet{version}{s}") for s in ("", "_simple_bypass", "_complex_bypass")
    )
    fires = [[m for m in model.features if isinstance(m, Fire)] for model in (vanilla, simple, complex_)]
    assert [f.residual for f in fires[0]] == [False] * 8
    assert [f.residual for f in fires[1]] == [False, True] * 4  # fire3, fire5, fire7, fire9: equal widths
    assert all(f.shortcut is None for f in fires[1])
    assert [f.residual for f in fires[2]] == [True] * 8
    assert [f.shortcut is not None for f in fires[2]] == [True, False] * 4  # 1×1 convs around fire2/4/6/8
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(simple) == count(vanilla)  # "the simple bypass adds no parameters"
    assert count(complex_) - count(vanilla) == sum(
        c_out * (c + 1) for c, c_out in [(96 if version == "1_0" else 64, 128), (128, 256), (256, 384), (384, 512)]
    )
    # The shortcut is really added: zeroing fire3's expand convs leaves its input, through the bypass.
    fire3 = fires[1][1]
    x = torch.relu(torch.randn(1, 128, 9, 9))
    with torch.no_grad():
        for conv in (fire3.expand1x1, fire3.expand3x3):
            conv.weight.zero_()
            conv.bias.zero_()
        torch.testing.assert_close(fire3(x), x)


def test_xception_is_its_paper_and_timms_legacy_xception():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("legacy_xception", pretrained=False).eval()
    model = create_model("xception").eval()
    assert sum(p.numel() for p in model.parameters()) == XCEPTION_PARAMS == 22_855_952  # Xception paper Table 3
    ours_sd, ref_sd = model.state_dict(), reference.state_dict()
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in ref_sd.values()]
    randomize_bn(reference)  # ref_sd holds the same tensors
    model.load_state_dict(dict(zip(ours_sd, ref_sd.values())))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert_close_scaled(model(x), reference(x), 1e-5)
    assert model.forward_features(torch.zeros(1, 3, 299, 299)).shape == (1, 2048, 10, 10)
    assert [d["reduction"] for d in model.feature_info] == [2, 4, 8, 16, 32]


def test_relu6_and_tf_same_options():
    model = create_model("mobilenet_v1_0.25_128", act="relu6", padding="tf_same", bn_eps=1e-3)
    assert isinstance(model.stem.act, nn.ReLU6) and model.stem.bn.eps == 1e-3
    assert isinstance(model.stem.pad, PadSame)
    assert model(torch.randn(1, 3, 128, 128)).shape == (1, 1000)


@pytest.mark.parametrize("size,stride,expected", [(224, 2, (0, 1)), (225, 2, (1, 1)), (7, 1, (1, 1)), (14, 2, (0, 1))])
def test_pad_same_follows_tensorflow(size, stride, expected):
    # TF: out = ceil(n / s); total pad = max((out - 1)·s + k - n, 0), the extra pixel at the end.
    pad = PadSame(3, stride)
    assert pad._pad(size) == expected
    conv_in = pad(torch.zeros(1, 1, size, size))
    assert (conv_in.shape[-1] - 3) // stride + 1 == -(-size // stride)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width_mult": 0}, "width_mult must be a finite number > 0"),
        ({"width_mult": -0.5}, "width_mult must be a finite number > 0"),
        ({"width_mult": float("nan")}, "width_mult must be a finite number > 0"),
        ({"resolution": 31}, "at least 32x32"),
        ({"resolution": 12, "stem_stride": 1}, "at least 16x16"),
        ({"act": "swish"}, "unknown activation"),
        ({"padding": "valid"}, "unknown padding"),
        ({"variant": "wide"}, "unknown variant"),
    ],
)
def test_invalid_options_raise_clear_errors(kwargs, message):
    with pytest.raises(MobileNetsError, match=message):
        create_model("mobilenet_v1", **kwargs)


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("mobilenet_v3_large", {"size": "medium"}, "mobilenet_v3_large does not take the option 'size'"),
        (
            "mobilenet_v3_small",
            {"layout": "keras"},
            "unknown MobileNetV3 layout 'keras'; choose one of tf, torchvision",
        ),
        ("mobilenet_v3_small", {"width_mult": 0.05}, r"width_mult=0.05 scales MobileNetV3's 16-channel layers to 0.8"),
        ("mobilenet_v2", {"width_mult": 0.01}, r"rounds to nothing: use width_mult >= 0.0625"),
        ("mobilenet_v2", {"resolution": 16}, "at least 32x32"),
        ("mobilenet_v3_large", {"stem_stride": 3}, "stem_stride must be 1 or 2"),
        ("mobilenet_v2", {"act": "swish"}, "unknown activation"),
        ("mobilenet_v3_small", {"act": "relu"}, "mobilenet_v3_small does not take the option 'act'"),
    ],
)
def test_v2_v3_invalid_options(name, kwargs, message):
    with pytest.raises(MobileNetsError, match=message):
        create_model(name, **kwargs)


def test_v3_unknown_size():
    with pytest.raises(MobileNetsError, match="unknown MobileNetV3 size 'medium'; choose one of large, small"):
        MobileNetV3(size="medium")


def test_v2_is_paper_table2():
    model = create_model("mobilenet_v2_1.0_224")
    blocks = list(model.blocks)
    assert len(blocks) == 17  # n summed over Table 2's bottleneck rows
    assert [b.project.conv.out_channels for b in blocks] == [
        16,
        24,
        24,
        32,
        32,
        32,
        *[64] * 4,
        *[96] * 3,
        *[160] * 3,
        320,
    ]
    assert [b.depthwise.conv.stride[0] for b in blocks] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert isinstance(blocks[0].expand, nn.Identity) and blocks[1].expand.conv.out_channels == 16 * 6
    assert [b.use_residual for b in blocks].count(True) == 10  # stride-1 repeats of equal width
    assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    # The last conv stays 1280 wide for α ≤ 1 and grows for α > 1 (V2 paper §6.1).
    assert create_model("mobilenet_v2_0.35_224").num_features == 1280
    assert create_model("mobilenet_v2_1.4_224").num_features == 1792


def test_v3_is_paper_tables_1_and_2():
    large = create_model("mobilenet_v3_large_1.0_224")
    kernels = [b.depthwise.conv.kernel_size[0] for b in large.blocks]
    assert kernels == [3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5]
    assert [b.depthwise.conv.out_channels for b in large.blocks] == [
        16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960
    ]  # fmt: skip
    assert [isinstance(b.se, nn.Identity) for b in large.blocks].count(False) == 8
    assert isinstance(large.stem.act, nn.Hardswish) and isinstance(large.blocks[6].depthwise.act, nn.Hardswish)
    assert isinstance(large.blocks[5].depthwise.act, nn.ReLU)
    assert (large.num_features, large.head_hidden_size) == (960, 1280)
    small = create_model("mobilenet_v3_small_1.0_224")
    assert [b.project.conv.out_channels for b in small.blocks] == [16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96]
    assert small.blocks[0].se.reduce.out_channels == 8 and small.blocks[0].depthwise.conv.stride == (2, 2)
    assert (small.num_features, small.head_hidden_size) == (576, 1024)
    assert small.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 576, 7, 7)
    minimal = create_model("mobilenet_v3_large_minimal_1.0_224")
    assert not any(isinstance(m, (nn.Hardswish, SqueezeExcite)) for m in minimal.modules())
    assert {m.kernel_size for m in minimal.modules() if isinstance(m, nn.Conv2d) and m.groups > 1} == {(3, 3)}


@pytest.mark.parametrize(
    "theirs,ours",
    [
        (torchvision.models.mobilenet_v3_large, "mobilenet_v3_large"),
        (torchvision.models.mobilenet_v3_small, "mobilenet_v3_small"),
    ],
)
def test_v3_layouts_at_width_0_75(theirs, ours):
    """At α = 0.75 torchvision's layout (α on the table's expansion widths and the head) is reachable and equal to
    torchvision's model; the default TF layout (ratio × rounded input, head kept) is the wider one of the paper."""
    reference = theirs(width_mult=0.75)
    tv = create_model(ours, width_mult=0.75, layout="torchvision")
    assert [v.shape for v in tv.state_dict().values()] == [v.shape for v in reference.state_dict().values()]
    tf = create_model(ours, width_mult=0.75)
    assert sum(p.numel() for p in tf.parameters()) > sum(p.numel() for p in tv.parameters())
    assert tf.head_hidden_size == (1280 if "large" in ours else 1024)
    # Large's third block: 24 channels·0.75 rounds to 24, so TF expands 24·(72/24) = 72; torchvision 72·0.75 → 56.
    if "large" in ours:
        assert tf.blocks[2].depthwise.conv.out_channels == 72 and tv.blocks[2].depthwise.conv.out_channels == 56


def test_unknown_name_lists_valid_names():
    with pytest.raises(MobileNetsError, match=r"unknown model 'mobilenet_v1_1.0_225'; did you mean .*mobilenet_v1"):
        create_model("mobilenet_v1_1.0_225")
    with pytest.raises(MobileNetsError, match="squeezenet1_0 does not take the option 'width_mult'"):
        create_model("squeezenet1_0", width_mult=0.5)


@pytest.mark.parametrize(
    "name",
    ["mobilenet_v1_0.25_128", "mobilenet_v2_0.35_96", "mobilenet_v3_small_0.75_128", "squeezenet1_1", "densenet121"],
)
def test_wrong_input_channels(name):
    model = create_model(name)
    with pytest.raises(MobileNetsError, match=r"expects input of shape \(batch, 3, H, W\), got \(1, 1, 64, 64\)"):
        model(torch.zeros(1, 1, 64, 64))
