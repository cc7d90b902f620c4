"""MobileNetV4 (issue 29): the paper's tables against timm's definition, UIB and Mobile MQA, attention costs, and
timm's weights."""

import pytest
import torch
from numeric import torch_threads

from mobilenets import MobileNetsError, create_model
from mobilenets.models.mobilenet_v4 import SIZES, MobileNetV4

timm = pytest.importorskip("timm")

# Our size and α → timm's model of the same tensors (timm/models/mobilenetv3.py, _gen_mobilenet_v4).
TIMM_NAMES = {
    ("conv_small", 1.0): "mobilenetv4_conv_small",
    ("conv_small", 0.5): "mobilenetv4_conv_small_050",
    ("conv_medium", 1.0): "mobilenetv4_conv_medium",
    ("conv_large", 1.0): "mobilenetv4_conv_large",
    ("hybrid_medium", 1.0): "mobilenetv4_hybrid_medium",
    ("hybrid_medium", 0.75): "mobilenetv4_hybrid_medium_075",
    ("hybrid_large", 1.0): "mobilenetv4_hybrid_large",
}


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size,width_mult", list(TIMM_NAMES))
def test_parameters_equal_timms(size, width_mult):
    ours = MobileNetV4(size=size, width_mult=width_mult)
    theirs = timm.create_model(TIMM_NAMES[size, width_mult], pretrained=False)
    assert num_params(ours) == num_params(theirs)
    # The same tensors in the same order, so that timm's state dicts map onto ours one to one.
    shapes = [tuple(v.shape) for k, v in ours.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert shapes == [tuple(v.shape) for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")]


def test_registered_at_the_papers_resolutions():
    for name, res in [
        ("mobilenet_v4_conv_small_1.0_224", 224),
        ("mobilenet_v4_conv_medium_1.0_256", 256),
        ("mobilenet_v4_conv_large_1.0_384", 384),
        ("mobilenet_v4_hybrid_medium_1.0_256", 256),
        ("mobilenet_v4_hybrid_large_1.0_384", 384),
    ]:
        assert create_model(name).resolution == res


def test_any_width_and_resolution_and_features_only():
    model = create_model("mobilenet_v4_hybrid_medium", width_mult=0.5, resolution=96, num_classes=3).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    backbone = create_model("mobilenet_v4_conv_small", features_only=True, width_mult=0.5)
    maps = backbone(x[:1])
    assert [m.shape[1:] for m in maps] == [(32, 12, 12), (48, 6, 6), (480, 3, 3)]


def test_every_size_has_five_stride_two_stages():
    for size in SIZES.values():
        assert sum(block.stride == 2 for block in size.blocks) == 4  # after the stride-2 stem: /32


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"size": "conv_tiny"}, "unknown MobileNetV4 size 'conv_tiny'; choose one of conv_small, conv_medium"),
        ({"size": "hybrid_medium", "resolution": 16}, "resolution 16 is too small for MobileNetV4"),
        ({"width_mult": 0.02}, "width_mult=0.02 scales MobileNetV4's 24-channel layers"),
    ],
)
def test_bad_options_say_what_to_do(kwargs, message):
    with pytest.raises(MobileNetsError, match=message):
        MobileNetV4(**kwargs)
