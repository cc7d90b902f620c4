import math

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilenets import MobileNetsError, create_model, profile
from mobilenets.models import DepthwiseSeparable
from mobilenets.models.layers import scale_channels
from mobilenets.models.mobilenet_v1 import BLOCKS, STEM
from mobilenets.paper import (
    OTHER_ROWS,
    ROWS,
    TABLE2,
    TABLE3,
    V2_V3_ROWS,
    matches_printed,
    resource_comparisons,
    squeezenet_table6_comparisons,
    table3_comparisons,
)
from mobilenets.profile import (
    depthwise_conv_mult_adds,
    depthwise_separable_mult_adds,
    depthwise_separable_params,
    pointwise_conv_mult_adds,
    separable_cost_ratio,
    standard_conv_mult_adds,
    standard_conv_params,
)

WIDTHS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)


def analytic_mobilenet(width_mult: float, resolution: int, num_classes: int = 1000) -> tuple[int, int]:
    """Mult-Adds and conv/FC weights of MobileNetV1 from Table 1 and the paper's formulas, with no model built."""
    size = math.ceil(resolution / STEM[1])
    channels = scale_channels(STEM[0], width_mult)
    madds = standard_conv_mult_adds(3, 3, channels, size)
    weights = standard_conv_params(3, 3, channels)
    for out_channels, stride in BLOCKS:
        out_channels = scale_channels(out_channels, width_mult)
        size = math.ceil(size / stride)
        madds += depthwise_separable_mult_adds(3, channels, out_channels, size)
        weights += depthwise_separable_params(3, channels, out_channels)
        channels = out_channels
    return madds + channels * num_classes, weights + channels * num_classes


@pytest.mark.parametrize("alpha", WIDTHS)
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_sixteen_variants_equal_paper_formulas(alpha, resolution):
    prof = profile(create_model(f"mobilenet_v1_{alpha}_{resolution}"))
    assert (prof.mult_adds, prof.paper_params) == analytic_mobilenet(alpha, resolution)


# Every MobileNet figure the paper prints for the grid (Tables 6, 7 and 9), in millions.
PUBLISHED = {
    (1.0, 224): ("569", "4.2"), (0.75, 224): ("325", "2.6"), (0.5, 224): ("149", "1.3"),
    (0.25, 224): ("41", "0.5"), (1.0, 192): ("418", "4.2"), (1.0, 160): ("290", "4.2"),
    (1.0, 128): ("186", "4.2"), (0.5, 160): ("76", "1.32"),
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_published_grid_figures(variant):
    alpha, resolution = variant
    prof = profile(create_model(f"mobilenet_v1_{alpha}_{resolution}"))
    madds, params = PUBLISHED[variant]
    assert matches_printed(prof.mult_adds / 1e6, madds)
    assert matches_printed(prof.paper_params / 1e6, params)
    assert not matches_printed(prof.mult_adds / 1e6 * 1.03, madds)  # the check has teeth


def test_conv_and_shallow_against_tables_4_and_5():
    conv = profile(create_model("mobilenet_v1_conv_1.0_224"))
    fc = 1024 * 1000
    assert round((conv.mult_adds - fc) / 1e6) == 4866  # the paper's figure leaves out the FC layer
    assert round(conv.paper_params / 1e6, 1) == 29.3
    shallow = profile(create_model("mobilenet_v1_shallow_1.0_224"))
    assert round(shallow.mult_adds / 1e6) == 307 and round(shallow.paper_params / 1e6, 1) == 2.9
    base = profile(create_model("mobilenet_v1_1.0_224"))
    assert 8 < conv.mult_adds / base.mult_adds < 9  # "8 to 9 times less computation"


def test_every_mobilenet_row_of_tables_4_to_9():
    for row in ROWS:
        if row.build.startswith("mobilenet_v1") and "_conv_" not in row.build:
            prof = profile(create_model(row.build))
            assert matches_printed(prof.mult_adds / 1e6, row.mult_adds), row
            assert matches_printed(prof.paper_params / 1e6, row.params), row


def test_v2_v3_rows_match_their_papers_or_say_why():
    comparisons = resource_comparisons(rows=V2_V3_ROWS)
    assert len(comparisons) == 2 * len(V2_V3_ROWS)
    for c in comparisons:
        assert c.matches or c.note, c
    matched = {(c.label, c.quantity) for c in comparisons if c.matches}
    # The paper-layout α = 0.75 models are the V3 paper's Table 3 figures (155M / 4.0M; Small 2.0M).
    assert {("MobileNetV3-Large 0.75", "Mult-Adds (M)"), ("MobileNetV3-Large 0.75", "params (M)")} <= matched
    assert ("MobileNetV3-Small 0.75", "params (M)") in matched
    assert ("MobileNetV2 1.0", "Mult-Adds (M)") in matched and ("MobileNetV3-Small 1.0", "Mult-Adds (M)") in matched
    assert len(matched) == 11  # the other five figures are explained in their notes (paper-tables prints them)


@pytest.mark.parametrize(
    "theirs,ours,madds,params",
    [
        (torchvision.models.mobilenet_v3_large, "mobilenet_v3_large", "140.0", "3.38"),
        (torchvision.models.mobilenet_v3_small, "mobilenet_v3_small", "39.1", "1.65"),
    ],
)
def test_torchvision_layout_counts_as_torchvision_at_0_75(theirs, ours, madds, params):
    """torchvision's width_mult=0.75 models count 140.0M/3.38M and 39.1M/1.65M: our layout="torchvision" is them,
    the default paper layout is what the V3 paper's Table 3 lists (155M/4.0M, 44M/2.0M)."""
    reference = profile(theirs(width_mult=0.75), 224)
    tv = profile(create_model(ours, width_mult=0.75, layout="torchvision"))
    assert (tv.mult_adds, tv.params) == (reference.mult_adds, reference.params)
    assert matches_printed(tv.mult_adds / 1e6, madds) and round(tv.params / 1e6, 2) == float(params)
    paper = profile(create_model(ours, width_mult=0.75))
    assert paper.mult_adds > 1.1 * tv.mult_adds and paper.params > 1.15 * tv.params


def test_squeezenet_table6_sizes_and_the_other_seed_networks():
    sizes = {c.label: c for c in squeezenet_table6_comparisons()}
    assert sizes["SqueezeNet 1.0"].matches and sizes["SqueezeNet simple bypass"].matches  # 4.76 MiB: "4.8 MB"
    complex_ = sizes["SqueezeNet complex bypass"]
    assert not complex_.matches and "341,248 parameters" in complex_.note  # four 1×1 convs with biases
    others = {(c.label, c.quantity): c for c in resource_comparisons(rows=OTHER_ROWS)}
    assert others[("Xception (299)", "params (M)")].matches  # exactly 22,855,952
    inception = others[("Inception V3 (299)", "Mult-Adds (M)")]
    assert 5700 < inception.ours < 5730 and "5713.22M at 299×299" in inception.note
    assert "23.83M" in others[("Inception V3 (299)", "params (M)")].note


def test_table2_breakdown():
    shares = profile(create_model("mobilenet_v1_1.0_224")).by_type()
    assert list(shares) == list(TABLE2)
    for layer_type, (madds, params) in TABLE2.items():
        assert matches_printed(100 * shares[layer_type][1], params)
        if layer_type != "Conv 3×3":  # the paper prints 1.19 for 1.91: its column would sum to 99.29%
            assert matches_printed(100 * shares[layer_type][0], madds)
    assert round(100 * shares["Conv 3×3"][0], 2) == 1.91
    assert math.isclose(sum(m for m, _ in shares.values()), 1.0)


def test_table3_rows():
    rows = {(c.label, c.quantity): c for c in table3_comparisons()}
    assert set(TABLE3) == {label for label, _ in rows}
    assert all(c.matches for c in rows.values())


@pytest.mark.parametrize("m,n,size,stride", [(32, 64, 56, 1), (512, 512, 14, 1), (64, 128, 28, 2), (3, 16, 33, 2)])
def test_formulas_match_profiler_on_real_layers(m, n, size, stride):
    out_size = math.ceil(size / stride)
    conv = profile(nn.Conv2d(m, n, 3, stride, 1, bias=False), size, in_chans=m)
    assert conv.mult_adds == standard_conv_mult_adds(3, m, n, out_size)
    assert conv.paper_params == standard_conv_params(3, m, n)
    sep = profile(DepthwiseSeparable(m, n, stride), size, in_chans=m)
    dw, pw = sep.layers
    assert dw.type == "Conv DW 3×3" and pw.type == "Conv 1×1"
    assert dw.mult_adds == depthwise_conv_mult_adds(3, m, out_size)
    assert pw.mult_adds == pointwise_conv_mult_adds(m, n, out_size)
    assert sep.paper_params == depthwise_separable_params(3, m, n)
    assert math.isclose(sep.mult_adds / conv.mult_adds, separable_cost_ratio(n, 3))


@pytest.mark.parametrize(
    "name",
    [
        "mobilenet_v1_0.5_160",
        "mobilenet_v1_conv_0.25_128",
        "mobilenet_v2_0.5_128",
        "mobilenet_v3_small_0.75_128",
        "squeezenet1_1",
        "densenet121",
    ],
)
def test_profiler_agrees_with_torch_flop_counter(name):
    """torch's FlopCounterMode counts 2 FLOPs per multiply-add of every conv and matmul."""
    model = create_model(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, model.resolution, model.resolution))
    assert profile(model).mult_adds * 2 == counter.get_total_flops()


def test_params_count_everything_once():
    model = create_model("densenet121")
    prof = profile(model, 64)
    assert prof.params == sum(p.numel() for p in model.parameters()) == 7_978_856  # torchvision's figure
    assert prof.paper_params < prof.params  # BatchNorm and biases are not weights


def test_profile_rejects_too_small_input():
    with pytest.raises(MobileNetsError, match="too small"):
        profile(create_model("mobilenet_v1"), 16)
