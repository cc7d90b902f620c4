"""MobileNetV4 (issue 29): the paper's tables against timm's definition, UIB and Mobile MQA, attention costs,
timm's weights through import-weights, --weights and --init, the grid, select and the paper preset, and exports."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
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


# --- V4 through the CLI: --init, --weights, bad input -------------------------------------------------


@pytest.fixture(scope="module")
def timm_conv_small_050(tmp_path_factory):
    """timm's mobilenetv4_conv_small_050 with seeded random weights and calibrated BN, saved as timm names it."""
    images = [load_image(p) for p in bundled_images()]
    pre = V4_PREPROCESSING["mobilenet_v4_conv_small"]
    with torch_threads(1):
        ref = randomized_timm("mobilenetv4_conv_small_050", torch.stack([preprocess(im, pre) for im in images]))
    path = tmp_path_factory.mktemp("timm") / "mobilenetv4_conv_small_050.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_timm_v4_file_with_predict_weights_and_train_init(timm_conv_small_050, tmp_path, capsys):
    from mobilenets.training.config import TrainConfig
    from mobilenets.training.init import start_model

    ref, src = timm_conv_small_050
    cat = bundled_images()[0]
    # predict --weights reads timm's file itself (its model, α and preprocessing from the file).
    assert main(["predict", str(cat), "--weights", str(src), "--topk", "1", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"][0]["index"]
    with torch.no_grad():
        assert top == int(ref(preprocess(load_image(cat), V4_PREPROCESSING["mobilenet_v4_conv_small"])[None]).argmax())
    # --init: every backbone tensor lands (the stem's RGB filters summed for gray data), a new 10-class classifier.
    model, meta = start_model(TrainConfig(init=str(src), model="mobilenet_v4_conv_small", resolution=32), 10, 1)
    assert meta["model_kwargs"]["width_mult"] == 0.5 and meta["mean"] == [pytest.approx(sum(IMAGENET_MEAN) / 3)]
    body = [k for k in model.state_dict() if not k.startswith("classifier.") and "num_batches" not in k]
    assert f"loaded {len(body)}/{len(body)} backbone tensors" in meta["notes"][0]
    # The first ExtraDW UIB, tensor for tensor: timm's blocks.2.0 (stage 2, block 0), our blocks.4.
    theirs = [v for k, v in ref.state_dict().items() if k.startswith("blocks.2.0.") and "num_batches" not in k]
    ours = [v for k, v in model.state_dict().items() if k.startswith("blocks.4.") and "num_batches" not in k]
    assert len(ours) == len(theirs) == 20 and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # And through `train`: one short run on 16-px digits from timm's file.
    with torch_threads(1):
        argv = ["train", "--model", "mobilenet_v4_conv_small", "--init", str(src), "--dataset", "digits"]
        argv += ["--epochs", "1", "--max-train-samples", "64", "--max-test-samples", "64", "--batch-size", "32"]
        argv += ["--out-dir", str(tmp_path / "run"), "--threads", "1", "--no-progress", "--no-tensorboard"]
        assert main([*argv, "--no-plots", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["init"] == str(src) and result["steps"] == 2 and Path(result["model_path"]).is_file()


def test_v4_bad_input_is_one_line(timm_conv_small_050, tmp_path, capsys):
    # An unknown V4 size: the registry's suggestion.
    assert main(["profile", "mobilenet_v4_conv_tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'mobilenet_v4_conv_tiny'; did you mean mobilenet_v4_conv_" in err
    # A hybrid's attention given an input too small for its KV stride.
    hybrid = create_model("mobilenet_v4_hybrid_medium", width_mult=0.25, resolution=64).eval()
    message = (
        r"MobileNetV4 hybrid_medium got a 24x24 input, below its minimum of 32x32: its attention at stride 16 would "
        r"downsample keys and values 2x from a 2x2 map; use inputs of at least 32x32 pixels"
    )
    with pytest.raises(MobileNetsError, match=message):
        hybrid(torch.zeros(1, 3, 24, 24))
    with pytest.raises(MobileNetsError, match="MobileNetV4 conv_small got a 8x40 input, below its minimum of 16x16"):
        create_model("mobilenet_v4_conv_small", stem_stride=1, resolution=16)(torch.zeros(1, 3, 8, 40))
    # A V3 file given as V4 weights to train --init: one line, no run folder.
    v3 = tmp_path / "mobilenetv3_small_100.pth"
    torch.save(timm.create_model("mobilenetv3_small_100", pretrained=False).state_dict(), v3)
    argv = ["train", "--model", "mobilenet_v4_conv_small", "--init", str(v3), "--dataset", "digits"]
    assert main([*argv, "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds mobilenet_v3_small weights but the run trains mobilenet_v4_conv_small" in err
    assert not (tmp_path / "run").exists()


# --- bench --grid, select, paper-tables, --preset paper ------------------------------------------------

V4_NAMES = [
    "mobilenet_v4_conv_small_1.0_224",
    "mobilenet_v4_conv_medium_1.0_256",
    "mobilenet_v4_conv_large_1.0_384",
    "mobilenet_v4_hybrid_medium_1.0_256",
    "mobilenet_v4_hybrid_large_1.0_384",
]


def test_v4_joins_the_grid_select_and_paper_lines(capsys):
    from mobilenets.deploy import bench

    assert bench.grid_names(families=["mobilenet_v4"]) == V4_NAMES  # the alias: the five sizes
    assert set(V4_NAMES) <= set(bench.grid_names())  # on the default grid, each at its paper resolution
    known = bench.known_top1()
    assert known["mobilenet_v4_conv_small_1.0_224"] == (73.8, "V4 paper")
    assert known["mobilenet_v4_hybrid_large_1.0_384"] == (83.4, "V4 paper")
    # select across generations: Conv-S (3.77M parameters, 73.8%) ranks before V3-Small 1.0 (2.5M, 67.4%).
    argv = ["select", "--max-params", "4M", "--family", "mobilenet_v4_conv_small", "mobilenet_v3_small", "--json"]
    assert main(argv) == 0
    chosen = json.loads(capsys.readouterr().out)
    assert [c["model"] for c in chosen[:2]] == ["mobilenet_v4_conv_small_1.0_224", "mobilenet_v3_small_1.0_224"]
    assert chosen[0]["num_params"] == 3_774_024
    # profile prints the paper's figures beside ours.
    assert main(["profile", "mobilenet_v4_conv_small_1.0_224"]) == 0
    out = capsys.readouterr().out
    assert "paper (V4 paper, MNv4-Conv-S): 200 M Mult-Adds, 3.8 M parameters, ImageNet top-1 73.8%" in out


def test_paper_preset_is_each_v4_sizes_model_garden_recipe():
    from mobilenets.training import TrainConfig, build_optimizer

    def paper(model: str, batch_size: int) -> TrainConfig:
        return TrainConfig(model=model, preset="paper", batch_size=batch_size).resolved()

    small = paper("mobilenet_v4_conv_small", 4096)  # imagenet_mobilenetv4_conv_small_tpu.yaml, at its batch
    assert (small.optimizer, small.lr, small.momentum, small.weight_decay) == ("adamw", pytest.approx(0.002), 0.6, 0.01)
    assert (small.schedule, small.warmup_epochs, small.ema_decay, small.dropout) == ("cosine", 5.0, 0.9999, 0.3)
    assert (small.label_smoothing, small.crop_scale_min, small.depthwise_weight_decay) == (0.1, 0.08, 0.01)
    hybrid = paper("mobilenet_v4_hybrid_medium_1.0_256", 16384)
    assert (hybrid.lr, hybrid.weight_decay, hybrid.warmup_epochs) == (pytest.approx(0.016), 0.1, 20.0)
    assert (hybrid.momentum, hybrid.ema_decay, hybrid.dropout) == (0.9, 0.0, 0.2)
    assert paper("mobilenet_v4_conv_large", 128).lr == pytest.approx(0.004 / 128)  # linear in the batch size
    assert paper("mobilenet_v4_hybrid_large", 16384).lr == pytest.approx(0.01)
    # What a run builds from it: AdamW with β1 0.6, decay on conv weights and depthwise filters, none on BN.
    model = create_model("mobilenet_v4_conv_small", width_mult=0.25, num_classes=10, resolution=32)
    opt = build_optimizer(model, small)
    assert isinstance(opt, torch.optim.AdamW) and {g["betas"] for g in opt.param_groups} == {(0.6, 0.999)}
    assert sorted({g["weight_decay"] for g in opt.param_groups}) == [0.0, 0.01]


# --- exports: Conv-S and Hybrid-M at small width and input, fp32 and int8 -----------------------------


def exportable_v4(size: str) -> nn.Module:
    """Our V4 at α 0.25 and 64 px, BN statistics measured on real photos and, in the hybrid, layer scales of 0.5
    (at timm's 1e-5 the attention would add nothing the comparison could see)."""
    from mobilenets.deploy import export as ex
    from mobilenets.deploy.images import calibrate_bn

    torch.manual_seed(0)
    model = create_model(f"mobilenet_v4_{size}", width_mult=0.25, resolution=64, num_classes=10)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale.gamma"):
                p.fill_(0.5)
    return calibrate_bn(model, ex.real_images(16, 3, 64, split="train", seed=7))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["conv_small", "hybrid_medium"])
def test_v4_exports_fp32_verified_and_int8_with_attention_in_int8(tmp_path, size):
    """fp32 files verified against PyTorch (ONNX for both sizes, OpenVINO for the hybrid's attention); ONNX int8
    files written, range-checked and run, with the hybrid's attention on int8 kernels. Untrained weights cannot judge
    int8 agreement (the export says so): int8 of trained V4s on both runtimes is measured in reports/v4-export."""
    from mobilenets.deploy import export as ex
    from mobilenets.deploy import runtime_module
    from mobilenets.deploy.kernels import attention_kernels
    from mobilenets.deploy.verify import int8_safety

    pytest.importorskip("onnxruntime")
    model = exportable_v4(size)
    fresh = ex.real_images(16, 3, 64, split="test", seed=123)  # crops the verification did not see
    with torch.no_grad():
        ref = model(fresh)
    attention = 16 if size == "hybrid_medium" else 0  # 8 MQA blocks: Q·Kᵀ and attention·V each, one softmax each
    formats = ["onnx", "openvino"] if size == "hybrid_medium" and importlib.util.find_spec("openvino") else ["onnx"]
    for format in formats:
        result = ex.export(
            model, tmp_path / f"fp32{ex.SUFFIXES[format]}", format, verify_images=ex.real_images(64, 3, 64, "test")
        )
        assert result.verification.passed and result.verification.top1_agreement == 1.0
        assert_close_scaled(ex.run_model_file(result.path, format, fresh), ref, 1e-3)
        # Float attention: ONNX Runtime's (Fused)MatMul and Softmax; OpenVINO's CPU plugin fuses each MQA's
        # MatMul-Softmax-MatMul into one subgraph.
        want = {"matmul float": attention, "softmax float": attention // 2}
        if format == "openvino":
            want = {"attention subgraph float": attention // 2}
        assert attention_kernels(result.path, format) == Counter({k: v for k, v in want.items() if v})
    calib = ex.real_images(8, 3, 64, split="train", seed=3)  # the graph and its ranges, not a judged file
    result = ex.export(model, tmp_path / "int8.onnx", "onnx", "int8", calib_images=calib, verify=False)
    assert int8_safety(runtime_module("onnx").int8_ranges(result.path)).everywhere
    out = ex.run_model_file(result.path, "onnx", fresh, "int8")
    assert out.shape == (16, 10) and np.isfinite(out).all()
    # ONNX Runtime runs both attention matmuls and the softmax on int8 kernels (QLinearMatMul, QLinearSoftmax).
    want = {"matmul int8": attention, "softmax int8": attention // 2}
    assert attention_kernels(result.path, "onnx") == Counter({k: v for k, v in want.items() if v})


@pytest.mark.slow
def test_v4_hybrid_in_the_web_page_matches_pytorch(tmp_path):
    """The attention model in onnxruntime-web (WebAssembly, headless Chromium): `export --format web` verifies the
    page against PyTorch (tensors, and image files through the page's own decoding), and on crops the export did not
    see the page is as close to the exact (float64) logits as PyTorch's float32 is. (This model's float32 rounding is
    ~3e-5 of its largest logit, above tests/test_web.py's 2e-5 for a V1: the bound scales with the model.) int8 pages
    of the trained V4s: reports/v4-export/epyc-avx2/README.md."""
    import copy

    from mobilenets.deploy import export as ex
    from mobilenets.deploy import web

    model = exportable_v4("hybrid_medium")
    folder = tmp_path / "hybrid_web"
    result = ex.export(model, folder, "web", verify_images=ex.real_images(64, 3, 64, "test"))
    assert result.verification.passed and result.verification.top1_agreement == 1.0
    assert result.checks[0].startswith("the page on ") and "input max |Δ| 0," in result.checks[0], result.checks
    fresh = ex.real_images(16, 3, 64, split="test", seed=123)
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(fresh.double()).numpy()
        float32_error = np.abs(model(fresh).numpy() - exact).max()
    page = web.run(folder, fresh)
    assert np.abs(page - exact).max() <= 2 * float32_error, (np.abs(page - exact).max(), float32_error)


@pytest.mark.slow
@pytest.mark.parametrize("format", ["tflite", "executorch"])
def test_v4_hybrid_on_mobile_runtimes_keeps_attention_float(tmp_path, format):
    """LiteRT and ExecuTorch-XNNPACK run the hybrid's attention: the fp32 file is verified against PyTorch, and the
    kernels read from the file are float matmuls and softmaxes (litert-torch writes Q·Kᵀ and attention·V as
    FULLY_CONNECTED on two activations, ExecuTorch as XNNPACK batch matmuls). Their int8 files of the trained V4s
    keep these in float too (read the same way: reports/v4-export/epyc-avx2/README.md)."""
    from mobilenets.deploy import export as ex
    from mobilenets.deploy.kernels import attention_kernels

    pytest.importorskip({"tflite": "ai_edge_litert", "executorch": "executorch"}[format])
    model = exportable_v4("hybrid_medium")
    result = ex.export(
        model, tmp_path / f"fp32{ex.SUFFIXES[format]}", format, verify_images=ex.real_images(32, 3, 64, "test")
    )
    assert result.verification.passed and result.verification.top1_agreement == 1.0
    fresh = ex.real_images(8, 3, 64, split="test", seed=123)
    with torch.no_grad():
        ref = model(fresh)
    assert_close_scaled(ex.run_model_file(result.path, format, fresh), ref, 1e-3)
    assert attention_kernels(result.path, format) == Counter({"matmul float": 16, "softmax float": 8})
