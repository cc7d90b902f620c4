"""MobileNetV3's 16-channel stem for α < 0.75 (issue 29): the layout of timm's ``mobilenetv3_small_050`` (and of
Keras's MobileNetV3 at every α), in our model and through the timm importer."""

import pytest
import torch
from numeric import assert_close_scaled, torch_threads
from test_mobilenet_v4 import randomized_timm

from mobilenets import create_model
from mobilenets import weights as W
from mobilenets.cli import main
from mobilenets.predict import bundled_images, load_image, preprocess
from mobilenets.training.config import TrainConfig
from mobilenets.training.init import start_model

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    """Every tensor's shape in order; a 1×1 conv's (timm's head) as the Linear's it is ours."""
    out = [tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    return [s[:2] if s[2:] == (1, 1) else s for s in out]


def test_fixed_stem_is_timms_small_050_layout():
    with torch.device("meta"):  # shapes only
        theirs = timm.create_model("mobilenetv3_small_050", pretrained=False)
        fixed = create_model("mobilenet_v3_small", width_mult=0.5, fixed_stem=True)
        scaled = create_model("mobilenet_v3_small", width_mult=0.5)
    assert shapes(fixed) == shapes(theirs)
    # Only the stem and the first bneck (its depthwise, SE and projection read the stem) differ from the scaled one.
    assert fixed.stem.conv.out_channels == 16 and scaled.stem.conv.out_channels == 8
    differ = [k for k, a, b in zip(fixed.state_dict(), shapes(fixed), shapes(scaled)) if a != b]
    assert differ and all(k.startswith(("stem.", "blocks.0.")) for k in differ)
    # At α ≥ 0.75 a scaled 16 rounds to 16: the option changes nothing there.
    with torch.device("meta"):
        pairs = [create_model("mobilenet_v3_large_0.75_224", fixed_stem=f) for f in (True, False)]
    assert shapes(pairs[0]) == shapes(pairs[1])


def test_timm_small_050_imports_with_parity_on_real_photos(tmp_path, capsys):
    images = [load_image(p) for p in bundled_images()]  # skimage's chelsea and coffee
    pre = W.timm_preprocessing("mobilenetv3_small_050")
    ref = randomized_timm("mobilenetv3_small_050", torch.stack([preprocess(image, pre) for image in images]))
    src = tmp_path / "mobilenetv3_small_050.pth"  # named as timm's downloads are
    torch.save(ref.state_dict(), src)
    out = tmp_path / "ours.safetensors"
    assert main(["import-weights", str(src), "-o", str(out)]) == 0
    model, card = W.load_weights(out)
    assert card.arch == "mobilenet_v3_small" and card.source["timm_model"] == "mobilenetv3_small_050"
    assert card.model_kwargs["width_mult"] == 0.5 and card.model_kwargs["fixed_stem"] is True
    x = torch.stack([preprocess(image, card.preprocessing) for image in images])
    with torch.no_grad():
        theirs, mine = ref(x), model(x)
    assert_close_scaled(mine, theirs, 1e-5)
    assert (theirs[0] - theirs[1]).abs().max() > 0.1  # two photos, two outputs: the network does work
    # --init from timm's file itself: every backbone tensor lands, the 16-wide stem summed for 1-channel data.
    init, meta = start_model(TrainConfig(init=str(src), model="mobilenet_v3_small", resolution=32), 10, 1)
    assert meta["model_kwargs"]["fixed_stem"] is True and init.stem.conv.weight.shape == (16, 1, 3, 3)
    body = [k for k in init.state_dict() if not k.startswith("classifier.") and "num_batches" not in k]
    assert f"loaded {len(body)}/{len(body)} backbone tensors" in meta["notes"][0]
    # A file without the model's name: the α-0.5 model of its family is assumed, and the card says so.
    _, card = W.timm_to_ours(ref.state_dict(), "weights.pth")
    assert card.source["timm_model"] == "mobilenetv3_small_050" and card.source["timm_model_from"] == "assumed"


def test_a_scaled_stem_keeps_the_default_layout():
    with torch.device("meta"):
        sd = timm.create_model("mobilenetv3_small_075", pretrained=False).state_dict()
    _, card = W.timm_to_ours(sd, "mobilenetv3_small_075.pth")
    assert card.width_mult == 0.75 and "fixed_stem" not in card.model_kwargs
