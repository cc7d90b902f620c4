"""MobileNetV4 (issue 29): the paper's tables against timm's definition, UIB and Mobile MQA, attention costs, and
timm's weights."""

import pytest
import torch
import torch.nn.functional as F
from numeric import assert_close_scaled, torch_threads
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilenets import MobileNetsError, create_model
from mobilenets import weights as W
from mobilenets.cli import main
from mobilenets.models.layers import MobileMQA
from mobilenets.models.mobilenet_v4 import SIZES, MobileNetV4
from mobilenets.predict import bundled_images, load_image, preprocess
from mobilenets.profile import MATMUL, profile
from mobilenets.weights.cards import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

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


def test_mqa_attention_counted_by_hand():
    """One Mobile MQA block, 8 channels on a 4×4 map, 2 heads of key width 4, keys and values downsampled 2×."""
    prof = profile(MobileMQA(8, 8, num_heads=2, key_dim=4, kv_stride=2), 4, in_chans=8)
    queries, kv_positions = 4 * 4, 2 * 2
    query = queries * 8 * (2 * 4)  # 1×1 conv 8 → heads·key_dim at every position
    key = kv_positions * 8 * 9 + kv_positions * 8 * 4  # 3×3 stride-2 depthwise, then 1×1 conv 8 → 4
    value = key
    scores = 2 * queries * kv_positions * 4  # Q·Kᵀ: each head's 16 queries against the 4 shared keys
    mixed = 2 * queries * kv_positions * 4  # attention·V
    output = queries * (2 * 4) * 8
    assert prof.mult_adds == query + key + value + scores + mixed + output == 3904
    assert [layer.mult_adds for layer in prof.layers if layer.type == MATMUL] == [scores, mixed]


class UserAttention(nn.Module):
    """A user's attention written with the functions the profiler must see: SDPA, einsum and nn.MultiheadAttention."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 1)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (1, 16, 8)
        heads = tokens.reshape(1, 16, 2, 4).transpose(1, 2)  # (1, 2, 16, 4)
        out = F.scaled_dot_product_attention(heads, heads[:, :, :8], heads[:, :, :8])  # 8 keys
        scores = torch.einsum("bhld,bhsd->bhls", heads, heads)
        return out.sum() + scores.sum() + self.mha(tokens, tokens, tokens)[0].sum()


def test_user_attention_counted_exactly():
    prof = profile(UserAttention(), 4, in_chans=3)
    by_name = {layer.name: layer.mult_adds for layer in prof.layers}
    assert by_name["embed"] == 16 * 3 * 8
    assert by_name["attention Q·Kᵀ"] == by_name["attention·V"] == 2 * 16 * 8 * 4
    assert by_name["einsum"] == 2 * 16 * 16 * 4
    # nn.MultiheadAttention: 4 projections of 16 tokens 8 → 8, Q·Kᵀ and attention·V over 16 × 16 × 8.
    assert by_name["mha"] == 4 * 16 * 8 * 8 + 2 * 16 * 16 * 8


def test_profiler_agrees_with_torch_flop_counter_on_hybrids():
    """torch's FlopCounterMode counts 2 FLOPs per multiply-add of every conv and matmul, attention's included."""
    model = create_model("mobilenet_v4_hybrid_medium", width_mult=0.5, resolution=96).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 96, 96))
    prof = profile(model)
    assert sum(layer.mult_adds for layer in prof.layers if layer.type == MATMUL) > 0
    assert prof.mult_adds * 2 == counter.get_total_flops()


def randomized_timm(name: str, images: torch.Tensor) -> nn.Module:
    """timm's model with seeded random weights, BN statistics measured on ``images`` and noise then scattered, and
    layer scales of ~0.1 instead of timm's 1e-5 (at 1e-5 the attention and UIB branches would add nothing a test
    could see). Statistics from other inputs (noise at another size) let the activations grow to the hundreds by
    the last stage, where attention's softmax turns into an argmax that float rounding flips."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "layer_scale" in key:
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batch
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
        model.train()(torch.cat([images, torch.randn(images.shape, generator=g)]))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                std = m.running_var.sqrt()
                m.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=g))
                m.running_var.mul_(torch.rand(std.shape, generator=g) * 1.5 + 0.5)
    return model.eval()


# timm's eval preprocessing of its V4 ImageNet weights (the most common of its tags' cfgs).
V4_PREPROCESSING = {
    ours: Preprocessing(resolution, "resize_shorter", 0.95, "bicubic", IMAGENET_MEAN, IMAGENET_STD)
    for ours, resolution in [
        ("mobilenet_v4_conv_small", 224),
        ("mobilenet_v4_hybrid_medium", 256),
        ("mobilenet_v4_hybrid_large", 384),
    ]
}


@pytest.mark.parametrize(
    "name,ours",
    [
        ("mobilenetv4_conv_small_050", "mobilenet_v4_conv_small"),
        ("mobilenetv4_hybrid_medium", "mobilenet_v4_hybrid_medium"),
        ("mobilenetv4_hybrid_large_075", "mobilenet_v4_hybrid_large"),
    ],
)
def test_timm_weights_import_with_parity_on_real_photos(tmp_path, capsys, name, ours):
    images = [load_image(p) for p in bundled_images()]  # skimage's chelsea and coffee
    ref = randomized_timm(name, torch.stack([preprocess(image, V4_PREPROCESSING[ours]) for image in images]))
    src = tmp_path / f"{name}.pth"  # named as timm's downloads are: the importer reads the model name from it
    torch.save(ref.state_dict(), src)
    out = tmp_path / "ours.safetensors"
    # Registered names are α = 1 only: at other widths the family is read from the file.
    model_option = ["--model", ours] if not name[-1].isdigit() else []
    assert main(["import-weights", str(src), "-o", str(out), *model_option]) == 0
    model, card = W.load_weights(out)
    assert card.arch == ours and card.source["timm_model"] == name
    assert card.model_kwargs["width_mult"] == (int(name[-3:]) / 100 if name[-1].isdigit() else 1.0)
    assert card.preprocessing == V4_PREPROCESSING[ours]
    x = torch.stack([preprocess(image, card.preprocessing) for image in images])
    with torch.no_grad():
        theirs, mine = ref(x), model(x)
    assert_close_scaled(mine, theirs, 1e-5)
    assert (theirs[0] - theirs[1]).abs().max() > 0.1  # two photos, two outputs: the network does work


def test_a_v3_file_is_not_v4_weights(tmp_path, capsys):
    v3 = tmp_path / "mobilenetv3_small_100.pth"
    torch.save(timm.create_model("mobilenetv3_small_100", pretrained=False).state_dict(), v3)
    bad = tmp_path / "bad.safetensors"
    assert main(["import-weights", str(v3), "-o", str(bad), "--model", "mobilenet_v4_conv_small"]) == 2
    assert "mobilenet_v3_small" in capsys.readouterr().err and not bad.exists()


def test_every_supported_timm_v4_model_is_named_and_sized_from_its_tensors():
    names = [n for n in W.TIMM_MODELS if n.startswith("mobilenetv4")]
    assert set(names) <= set(timm.list_models("mobilenetv4*")) and len(names) == 9
    for name in names:
        with torch.device("meta"):  # shapes only: nothing allocated
            ref = timm.create_model(name, pretrained=False)
        tensors, card = W.timm_to_ours(ref.state_dict(), "weights.pth")  # no name in the path: read from the tensors
        width = int(name[-3:]) / 100 if name[-1].isdigit() else 1.0
        assert card.width_mult == width and card.arch == "mobilenet_v4_" + name.split("_", 1)[1].rsplit("_0", 1)[0]
        assert card.source["timm_model_from"] == "assumed" and card.source["timm_model"] in names
        assert len(tensors) == len([k for k in ref.state_dict() if not k.endswith("num_batches_tracked")])
