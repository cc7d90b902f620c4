"""Exact Mult-Adds and parameters of a detector at its input size, and the papers' figures beside ours.

The count is :func:`mobilenets.profile.profile`'s: one forward pass with hooks on every convolution, so it
covers the backbone, the extra layers and the prediction head, and nothing of torchvision's transform, box
decoding or NMS (no convolutions there). Parameters are all of the model's (BatchNorm's included), as
torchvision reports them.

``python -m mobilenets.detection.costs`` prints the table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from mobilenets.detection import create_detector
from mobilenets.detection.base import ASPECT_RATIOS, Detector, TFAnchorGenerator
from mobilenets.detection.ssd import ssd300_mobilenet_v1
from mobilenets.detection.ssdlite import build_ssdlite
from mobilenets.profile import profile

PARTS = ("backbone", "extra", "head")


@dataclass
class DetectorCosts:
    """Mult-Adds and parameters of one image's forward pass, in total and per part (backbone, extra, head)."""

    input_size: tuple[int, int]
    mult_adds: int
    params: int
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # part: (mult_adds, params)


def _part(name: str) -> str:
    if name.startswith("head."):
        return "head"
    return "extra" if name.startswith("backbone.extra.") else "backbone"


class _Network(nn.Module):
    """The detector's convolutional part, backbone then head, under the detector's own layer names."""

    def __init__(self, model: Detector):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(list(self.backbone(x).values()))


def detector_costs(model: Detector) -> DetectorCosts:
    """Mult-Adds and parameters of ``model`` at its input size (``model.resolution``), split into the
    backbone, the extra feature layers and the prediction head. The transform, box decoding and NMS are not
    counted (they hold no multiply-adds of a layer, and NMS's work depends on the image)."""
    prof = profile(_Network(model), model.resolution, in_chans=model.in_chans)
    parts = {p: [0, 0] for p in PARTS}
    for layer in prof.layers:
        parts[_part(layer.name)][0] += layer.mult_adds
    for name, p in model.named_parameters():
        parts[_part(name)][1] += p.numel()
    return DetectorCosts(
        tuple(model.resolution), prof.mult_adds, prof.params, {k: (m, n) for k, (m, n) in parts.items()}
    )


# ---------------------------------------------------------------------------------------------------
# The papers' figures (billions of Mult-Adds, millions of parameters), all on COCO.


@dataclass(frozen=True)
class PaperCost:
    """One published row, and how to build the model it describes.

    Args:
        source: paper and table.
        row: the paper's name for the model.
        mult_adds_b, params_m: the paper's figures.
        builder: (backbone, lite) for :func:`mobilenets.detection.ssdlite.build_ssdlite`.
        num_classes, size: as the paper ran it (background included).
        part: "all", or "heads": the extra layers and the prediction head only (V2 Table 5).
        tf_anchors: 3 anchors per location on the lowest map as the TF object detection API (``ssd300``'s
            default; the SSDLite builders take torchvision's 6 unless given TF's :class:`TFAnchorGenerator`).
        reduced_tail: V3's option.
        tolerance: the largest |ours / paper - 1| the note below explains, for either figure.
        note: why ours differs.
        coco_map: the COCO mAP (%) printed for the model; None where the row has none (V2 Table 5 counts heads).
    """

    source: str
    row: str
    mult_adds_b: float
    params_m: float
    builder: tuple[str, bool]
    num_classes: int = 91
    size: int = 320
    part: str = "all"
    tf_anchors: bool = True
    reduced_tail: bool = False
    tolerance: float = 0.05
    note: str = ""
    coco_map: float | None = None


# Every V3 row (the parameters without BatchNorm's: 0.07%, 0.15%, 0.14% and 0.27% off the paper's).
V3_NOTE = "matches; the 1% of parameters more is BatchNorm's γ and β (without them: within 0.3%)"

PAPER_COSTS: list[PaperCost] = [
    PaperCost(
        "V1 Table 13",
        "SSD300 MobileNet",
        1.2,
        6.8,
        ("mobilenet_v1", False),
        size=300,
        tolerance=0.04,
        coco_map=19.3,
        note="matches to the paper's one decimal (1.237B, 6.820M) with TF's 1×1 box predictor; 3×3 predictors "
        "would make it 17.9M",
    ),
    # V2 Table 5 counts the head alone (the extra layers and the predictors), "making predictions for 80 classes":
    # 81 outputs with the background. Its parameters match at 81 and not at 91 (SSD: 14.8M against 16.2M).
    PaperCost(
        "V2 Table 5",
        "SSD head (on MobileNetV2)",
        1.25,
        14.8,
        ("mobilenet_v2", False),
        num_classes=81,
        part="heads",
        tolerance=0.02,
        note="matches: full 3×3 convs in the extra layers and the predictors",
    ),
    PaperCost(
        "V2 Table 5",
        "SSDLite head (on MobileNetV2)",
        0.35,
        2.1,
        ("mobilenet_v2", True),
        num_classes=81,
        part="heads",
        tolerance=0.50,
        note="parameters match; the paper's Mult-Adds are twice ours (0.178B), unexplained: counting a multiply "
        "and an add apart would double them, but then the SSD row above would read 2.5B",
    ),
    PaperCost(
        "V2 Table 6",
        "MobileNetV2 + SSDLite",
        0.8,
        4.3,
        ("mobilenet_v2", True),
        num_classes=81,
        tolerance=0.02,
        coco_map=22.1,
        note="matches at 81 classes as Table 5 (at 91: 0.80B, 4.50M)",
    ),
    PaperCost(
        "V2 Table 6",
        "MobileNetV1 + SSDLite",
        1.3,
        5.1,
        ("mobilenet_v1", True),
        num_classes=81,
        tolerance=0.02,
        coco_map=22.2,
        note="matches: TF's ssdlite_mobilenet_v1, SSD300's conv11 and conv13 with SSDLite's extra layers and head",
    ),
    PaperCost(
        "V3 Table 6",
        "V3-Large SSDLite",
        0.62,
        4.97,
        ("mobilenet_v3_large", True),
        tolerance=0.02,
        coco_map=22.0,
        note=V3_NOTE,
    ),
    PaperCost(
        "V3 Table 6",
        "V3-Large SSDLite, reduced tail",
        0.51,
        3.22,
        ("mobilenet_v3_large", True),
        reduced_tail=True,
        tolerance=0.02,
        coco_map=22.0,
        note=V3_NOTE,
    ),
    PaperCost(
        "V3 Table 6",
        "V3-Small SSDLite",
        0.21,
        2.49,
        ("mobilenet_v3_small", True),
        tolerance=0.02,
        coco_map=16.0,
        note=V3_NOTE,
    ),
    PaperCost(
        "V3 Table 6",
        "V3-Small SSDLite, reduced tail",
        0.16,
        1.77,
        ("mobilenet_v3_small", True),
        reduced_tail=True,
        tolerance=0.02,
        coco_map=16.1,
        note=V3_NOTE,
    ),
    # torchvision's model card (SSDLite320_MobileNet_V3_Large_Weights.meta): COCO val2017 box AP, num_params and
    # "GFLOPS", which are multiply-adds (torchvision counts a multiply-add as one op). The torchvision layout: our
    # ssdlite320_mobilenet_v3_large as registered.
    PaperCost(
        "torchvision",
        "ssdlite320_mobilenet_v3_large",
        0.583,
        3.44006,
        ("mobilenet_v3_large", True),
        tf_anchors=False,
        reduced_tail=True,
        tolerance=0.005,
        coco_map=21.3,
        note="matches: the same model (its weights load into ours, import-weights); torchvision's GFLOPS are "
        "multiply-adds",
    ),
]

# torchvision's SSDLite (our SSDLite builders' default) puts 6 anchors on every map where TF's configs, which the
# V2 and V3 papers ran, put 3 on the lowest (C4, 20×20 at 320 px): its 1×1 predictors there cost C4·3·(classes+4)
# more parameters and 400× that in Mult-Adds (V3-Large: 672·3·95 = 0.19M and 77M, the 7% and 14% by which
# torchvision's 3.44M / 0.583B exceed the paper's 3.22M / 0.51B). The table shows both layouts.
TORCHVISION_ANCHORS_NOTE = "torchvision's 6 anchors on the lowest map (TF's configs: 3)"


def build_paper_model(row: PaperCost, tf_anchors: bool | None = None) -> Detector:
    """The detector a paper row describes, with TF's anchors (``tf_anchors``, default the row's) or
    torchvision's."""
    tf_anchors = row.tf_anchors if tf_anchors is None else tf_anchors
    backbone, lite = row.builder
    kwargs = dict(num_classes=row.num_classes, size=row.size, lite=lite)
    if tf_anchors:
        kwargs["anchor_generator"] = TFAnchorGenerator([ASPECT_RATIOS] * 6)
    if row.reduced_tail:
        kwargs["reduced_tail"] = True
    if backbone == "mobilenet_v1" and not lite:
        kwargs.pop("lite")
        return ssd300_mobilenet_v1(**kwargs)
    return build_ssdlite(backbone, **kwargs)


@functools.cache
def paper_row_costs(row: PaperCost, tf_anchors: bool | None = None) -> tuple[float, float]:
    """Our (billions of Mult-Adds, millions of parameters) for a paper row, for the part it counts (cached: each
    count traces a full-size detector, and ``paper-tables`` and ``bench`` ask for the same rows again)."""
    # On the meta device: shapes only, no weights, so the full-size models cost milliseconds to count.
    with torch.device("meta"):
        model = build_paper_model(row, tf_anchors)
    costs = detector_costs(model)
    if row.part == "heads":
        mult_adds = sum(costs.parts[p][0] for p in ("extra", "head"))
        params = sum(costs.parts[p][1] for p in ("extra", "head"))
    else:
        mult_adds, params = costs.mult_adds, costs.params
    return mult_adds / 1e9, params / 1e6


@dataclass(frozen=True)
class CostComparison:
    """A paper row's figures beside our count of its model in one anchor layout.

    ``layout`` is "TF" (3 anchors per location on the lowest map, what the papers ran) or "torchvision" (6, our
    SSDLite builders' default); ``note`` says why ours differs.
    """

    paper: PaperCost
    layout: str
    mult_adds_b: float
    params_m: float
    note: str

    @property
    def mult_adds_ratio(self) -> float:
        return self.mult_adds_b / self.paper.mult_adds_b

    @property
    def params_ratio(self) -> float:
        return self.params_m / self.paper.params_m

    def to_dict(self) -> dict:
        p = self.paper
        return {
            "source": p.source,
            "model": p.row,
            "layout": self.layout,
            "coco_map": p.coco_map,
            "mult_adds_b": {"paper": p.mult_adds_b, "ours": self.mult_adds_b, "ratio": self.mult_adds_ratio},
            "params_m": {"paper": p.params_m, "ours": self.params_m, "ratio": self.params_ratio},
            "note": self.note,
        }


def cost_comparisons(rows: list[PaperCost] | None = None, torchvision_layout: bool = True) -> list[CostComparison]:
    """Each paper row beside our count of its model in the row's own layout and, for an SSDLite row of the
    papers (TF's layout), in torchvision's as well."""
    out = []
    for row in rows or PAPER_COSTS:
        layouts = [row.tf_anchors]
        if torchvision_layout and row.builder[1] and row.tf_anchors:
            layouts.append(False)
        for tf_anchors in layouts:
            madds, params = paper_row_costs(row, tf_anchors)
            note = row.note if tf_anchors == row.tf_anchors else TORCHVISION_ANCHORS_NOTE
            out.append(CostComparison(row, "TF" if tf_anchors else "torchvision", madds, params, note))
    return out


def _map_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def cost_table(rows: list[PaperCost] | None = None, torchvision_layout: bool = True) -> str:
    """Markdown table: each paper row's COCO mAP, Mult-Adds and parameters beside our counts and the ratio
    (ours / paper), with TF's anchor layout (what the papers ran) and, for SSDLite, torchvision's as well."""
    lines = [
        "| source | model | layout | COCO mAP | Mult-Adds (B) paper | ours | × | params (M) paper | ours | × "
        "| why they differ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cost_comparisons(rows, torchvision_layout):
        p = c.paper
        lines.append(
            f"| {p.source} | {p.row} | {c.layout} | {_map_text(p.coco_map)} | {p.mult_adds_b:g} | "
            f"{c.mult_adds_b:.3f} | {c.mult_adds_ratio:.2f} | {p.params_m:g} | {c.params_m:.3f} | "
            f"{c.params_ratio:.2f} | {c.note} |"
        )
    return "\n".join(lines)


def format_cost_comparisons(comparisons: list[CostComparison]) -> str:
    """The comparisons as a plain-text table (`mobilenets paper-tables`)."""
    model_width = max(len(c.paper.row) for c in comparisons) + 2
    lines = [
        f"{'source':<13}{'model':<{model_width}}{'layout':<13}{'COCO mAP':>8}  {'Mult-Adds (B): paper':>20}"
        f"{'ours':>8}{'×':>6}  {'params (M): paper':>17}{'ours':>8}{'×':>6}  why they differ"
    ]
    for c in comparisons:
        p = c.paper
        lines.append(
            f"{p.source:<13}{p.row:<{model_width}}{c.layout:<13}{_map_text(p.coco_map):>8}  {p.mult_adds_b:>20g}"
            f"{c.mult_adds_b:>8.3f}{c.mult_adds_ratio:>6.2f}  {p.params_m:>17g}{c.params_m:>8.3f}"
            f"{c.params_ratio:>6.2f}  {c.note}"
        )
    return "\n".join(lines)


def paper_map(name: str) -> tuple[float, str] | None:
    """The COCO mAP printed for the registered detector ``name`` as the registry builds it (α 1, its own input
    size, V3's reduced tail), and where: (mAP %, source); None where no row prints one.

    A row of exactly this model (the same anchor layout: torchvision's for ``ssdlite320_mobilenet_v3_large``) comes
    first; else the papers' row of the same backbone, head, tail and input size, which ran TF's anchor layout (and
    the V2 paper's 80 classes): the source says so.
    """
    with torch.device("meta"):
        model = create_detector(name)
    tf_anchors = isinstance(model.anchor_generator, TFAnchorGenerator)
    tail = model.config.get("reduced_tail", False)
    key = (model.config["backbone"], name.startswith("ssdlite"), model.resolution[0], tail)
    rows = [
        r
        for r in PAPER_COSTS
        if r.part == "all" and r.coco_map is not None and (*r.builder, r.size, r.reduced_tail) == key
    ]
    if not rows:
        return None
    row = min(rows, key=lambda r: r.tf_anchors != tf_anchors)  # the exact model first, else the paper's
    return row.coco_map, row.source if row.tf_anchors == tf_anchors else f"{row.source}, TF's anchor layout"


if __name__ == "__main__":
    print(cost_table())
