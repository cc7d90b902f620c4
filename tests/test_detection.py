"""Detection models (issue 27): torchvision parity, every detector's train/eval API, a falling loss on real
pixels, the papers' costs, and the bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from numeric import torch_threads
from skimage import data
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.detection import ssdlite320_mobilenet_v3_large as tv_ssdlite320_mobilenet_v3_large

from mobilenets.detection import (
    create_detector,
    list_detectors,
    load_torchvision_state_dict,
    ssdlite320_mobilenet_v3_large,
)
from mobilenets.detection.costs import (
    PAPER_COSTS,
    cost_comparisons,
    cost_table,
    detector_costs,
    format_cost_comparisons,
    paper_map,
    paper_row_costs,
)
from mobilenets.detection.ssdlite import build_ssdlite
from mobilenets.errors import MobileNetsError

TORCHVISION_SSDLITE_PARAMS = 3_440_060  # torchvision's SSDLite320_MobileNet_V3_Large_Weights.meta["num_params"]


def photo(name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A scikit-image sample photo as a 3×H×W float tensor in [0, 1], optionally resized to (H, W)."""
    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
    if size is not None:
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return image


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights with a real spread: He-scaled conv weights, biases, and BatchNorm statistics and affine terms
    away from (0, 1), so that detections differ in scores, labels and boxes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
        # Tame the class logits so that the kept detections' scores spread over (0, 1) instead of all nearing 1.
        for m in model.head.classification_head.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.weight.mul_(0.25)


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    """One intra-op thread for the whole module (see numeric.torch_threads)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def torchvision_ssdlite():
    model = tv_ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, score_thresh=0.01)
    randomize(model)
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# torchvision parity


def test_torchvision_parity(torchvision_ssdlite):
    ours = load_torchvision_state_dict(
        ssdlite320_mobilenet_v3_large(score_thresh=0.01), torchvision_ssdlite.state_dict()
    )
    images = [photo("chelsea"), photo("coffee")]
    with torch.no_grad():
        expected = torchvision_ssdlite(images)
        got = ours.eval()(images)
    for want, have, image in zip(expected, got, images):
        # The fixture must measure the model: many detections, several classes, a spread of scores.
        assert len(want["boxes"]) >= 50 and want["labels"].unique().numel() >= 5 and want["scores"].std() > 0.01
        assert len(have["boxes"]) == len(want["boxes"])
        assert torch.equal(have["labels"], want["labels"])
        box_scale = max(image.shape[1:])
        assert (have["boxes"] - want["boxes"]).abs().max() / box_scale <= 1e-4
        assert (have["scores"] - want["scores"]).abs().max() <= 1e-5


def test_import_weights_cli_writes_a_detector_with_torchvisions_detections(torchvision_ssdlite, tmp_path, capsys):
    """`mobilenets import-weights torchvision_ssdlite.pth -o m.pt`: a model.pt that gives torchvision's detections
    (boxes within 1e-4 of the image side, the same labels, scores within 1e-5) and names COCO's classes."""
    from mobilenets.cli import main
    from mobilenets.weights.checkpoint import load_model

    src = tmp_path / "ssdlite320_mobilenet_v3_large_coco.pth"
    torch.save(torchvision_ssdlite.state_dict(), src)
    assert main(["import-weights", str(src), "-o", str(tmp_path / "ssdlite.pt")]) == 0
    assert "ssdlite320_mobilenet_v3_large (reduced tail True), 91 classes" in capsys.readouterr().out
    model, meta = load_model(tmp_path / "ssdlite.pt")
    assert meta["classes"][0] == "person" and len(meta["classes"]) == 90 and meta["task"] == "detection"
    model.score_thresh = 0.01  # the fixture's, so both keep the same candidates
    images = [photo("chelsea"), photo("astronaut")]
    with torch.no_grad():
        expected, got = torchvision_ssdlite(images), model(images)
    for want, have, image in zip(expected, got, images):
        assert len(want["boxes"]) >= 50 and torch.equal(have["labels"], want["labels"])
        assert (have["boxes"] - want["boxes"]).abs().max() / max(image.shape[1:]) <= 1e-4
        assert (have["scores"] - want["scores"]).abs().max() <= 1e-5


def test_torchvision_state_dict_of_another_shape_is_refused(torchvision_ssdlite):
    with pytest.raises(MobileNetsError, match="num_classes") as e:
        load_torchvision_state_dict(ssdlite320_mobilenet_v3_large(num_classes=21), torchvision_ssdlite.state_dict())
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------
# Every detector: training losses, eval detections


def boxes_target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


@pytest.mark.parametrize("name", list_detectors())
def test_detector_trains_and_detects(name):
    torch.manual_seed(0)
    model = create_detector(name, width_mult=0.25, size=96, num_classes=5, score_thresh=0.0)
    images = [photo("chelsea", (80, 120)), photo("coffee", (100, 90))]
    targets = [boxes_target([[10, 12, 60, 70]], [1]), boxes_target([[5, 5, 40, 50], [50, 40, 88, 95]], [2, 4])]
    losses = model.train()(images, targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()

    with torch.no_grad():
        detections = model.eval()(images)
    assert isinstance(detections, list) and len(detections) == 2
    for det, image in zip(detections, images):
        assert set(det) == {"boxes", "labels", "scores"} and len(det["boxes"]) > 0
        height, width = image.shape[1:]
        boxes = det["boxes"]
        assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert ((det["labels"] >= 1) & (det["labels"] < 5)).all()


@pytest.mark.parametrize(
    "name, size, anchors",
    [
        # TF's ssd_mobilenet_v1 at 300 px: maps 19, 10, 5, 3, 2, 1 with 3, 6, 6, 6, 6, 6 boxes, the 1917 boxes of
        # the TFLite detection model's (1, 1917, 4) output.
        ("ssd300_mobilenet_v1", 300, 1917),
        # torchvision's SSDLite at 320 px: maps 20, 10, 5, 3, 2, 1 with 6 boxes each.
        ("ssdlite320_mobilenet_v3_large", 320, 3234),
    ],
)
def test_anchor_count_is_the_reference_models(name, size, anchors):
    model = create_detector(name, width_mult=0.25, size=size).eval()
    with torch.no_grad():
        out = model.head(list(model.backbone(torch.zeros(1, 3, size, size)).values()))
    assert out["bbox_regression"].shape == (1, anchors, 4)
    assert out["cls_logits"].shape == (1, anchors, 91)


def test_non_square_size_is_height_by_width():
    model = create_detector("ssdlite320_mobilenet_v3_small", width_mult=0.25, size=(64, 96)).eval()
    image_list, _ = model.transform([photo("chelsea")])
    assert image_list.tensors.shape[-2:] == (64, 96) and model.resolution == (64, 96)


def test_loss_falls_on_real_pixels():
    """Two photos with a known object pasted in (a crop of another photo), 30 SGD steps: the loss must fall."""
    torch.manual_seed(0)
    size = 96
    images, targets = [], []
    astronaut = photo("astronaut", (36, 36))  # the object: the astronaut's portrait, class 1
    rocket = photo("rocket", (30, 42))  # class 2
    for name, places in (
        ("chelsea", [(10, 20, astronaut, 1)]),
        ("coffee", [(48, 8, rocket, 2), (8, 48, astronaut, 1)]),
    ):
        image = photo(name, (size, size))
        boxes, labels = [], []
        for top, left, obj, label in places:
            h, w = obj.shape[1:]
            image[:, top : top + h, left : left + w] = obj
            boxes.append([left, top, left + w, top + h])
            labels.append(label)
        images.append(image)
        targets.append(boxes_target(boxes, labels))

    model = create_detector("ssdlite320_mobilenet_v3_small", width_mult=0.25, size=size, num_classes=3).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = []
    for _ in range(30):
        loss = sum(model(images, targets).values())
        history.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = sum(model(images, targets).values()).item()
    assert after < 0.7 * history[0], history + [after]


# ---------------------------------------------------------------------------------------------------
# Costs against the papers


def test_ssdlite_v3_large_has_torchvision_parameter_count():
    with torch.device("meta"):
        ours = ssdlite320_mobilenet_v3_large()
        theirs = tv_ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert sum(p.numel() for p in theirs.parameters()) == TORCHVISION_SSDLITE_PARAMS
    assert sum(p.numel() for p in ours.parameters()) == TORCHVISION_SSDLITE_PARAMS
    assert detector_costs(ours).params == TORCHVISION_SSDLITE_PARAMS


@pytest.mark.parametrize("size, torchvision_builder", [("large", mobilenet_v3_large), ("small", mobilenet_v3_small)])
def test_reduced_tail_is_torchvisions_at_any_width(size, torchvision_builder):
    """V3 §6.3's reduced tail, at α 0.5 in torchvision's width layout: the backbone holds torchvision's
    ``reduced_tail=True`` features' parameters, shape for shape."""
    with torch.device("meta"):
        theirs = torchvision_builder(width_mult=0.5, reduced_tail=True).features
        ours = build_ssdlite(
            f"mobilenet_v3_{size}", width_mult=0.5, reduced_tail=True, backbone_kwargs={"layout": "torchvision"}
        ).backbone
    shapes = [tuple(p.shape) for name, p in ours.named_parameters() if not name.startswith("extra.")]
    assert shapes == [tuple(p.shape) for p in theirs.parameters()]


@pytest.mark.parametrize("row", PAPER_COSTS, ids=lambda r: f"{r.source}: {r.row}")
def test_costs_match_the_papers_within_the_explained_ratio(row):
    mult_adds_b, params_m = paper_row_costs(row)
    assert abs(mult_adds_b / row.mult_adds_b - 1) <= row.tolerance
    assert abs(params_m / row.params_m - 1) <= row.tolerance


def test_torchvision_anchor_layout_explains_its_extra_cost():
    """torchvision's 6 anchors on C4 where TF has 3: 3·(classes + 4) more outputs of the 1×1 predictors on the
    672-channel 20×20 map, exactly."""
    row = next(r for r in PAPER_COSTS if r.row == "V3-Large SSDLite, reduced tail")
    tf_madds, tf_params = paper_row_costs(row, tf_anchors=True)
    tv_madds, tv_params = paper_row_costs(row, tf_anchors=False)
    outputs = 3 * (91 + 4)
    assert round((tv_params - tf_params) * 1e6) == (672 + 1) * outputs
    assert round((tv_madds - tf_madds) * 1e9) == 672 * outputs * 20 * 20
    assert round(tv_params * 1e6) == TORCHVISION_SSDLITE_PARAMS


def test_cost_table_renders():
    v3 = [r for r in PAPER_COSTS if r.source == "V3 Table 6"]
    table = cost_table(PAPER_COSTS[:1] + v3[-2:] + PAPER_COSTS[-1:])
    lines = table.splitlines()
    assert lines[0].startswith("| source | model | layout | COCO mAP")
    # header, SSD300 (TF layout only), two SSDLite rows in both layouts, torchvision's row in its own
    assert len(lines) == 2 + 1 + 2 * 2 + 1
    assert "| V1 Table 13 | SSD300 MobileNet | TF | 19.3 | 1.2 | 1.237 | 1.03 | 6.8 | 6.820 | 1.00 |" in table
    assert (
        "| torchvision | ssdlite320_mobilenet_v3_large | torchvision | 21.3 | 0.583 | 0.583 | 1.00 | 3.44006 | 3.440 "
        "| 1.00 |" in table
    )


# The figures as printed: MobileNets Table 13, V2 paper Tables 5-6, V3 paper Table 6 and torchvision's model card
# for ssdlite320_mobilenet_v3_large: (COCO mAP, billions of Mult-Adds, millions of parameters).
PRINTED = {
    ("V1 Table 13", "SSD300 MobileNet"): (19.3, 1.2, 6.8),
    ("V2 Table 5", "SSD head (on MobileNetV2)"): (None, 1.25, 14.8),
    ("V2 Table 5", "SSDLite head (on MobileNetV2)"): (None, 0.35, 2.1),
    ("V2 Table 6", "MobileNetV2 + SSDLite"): (22.1, 0.8, 4.3),
    ("V2 Table 6", "MobileNetV1 + SSDLite"): (22.2, 1.3, 5.1),
    ("V3 Table 6", "V3-Large SSDLite"): (22.0, 0.62, 4.97),
    ("V3 Table 6", "V3-Large SSDLite, reduced tail"): (22.0, 0.51, 3.22),
    ("V3 Table 6", "V3-Small SSDLite"): (16.0, 0.21, 2.49),
    ("V3 Table 6", "V3-Small SSDLite, reduced tail"): (16.1, 0.16, 1.77),
    ("torchvision", "ssdlite320_mobilenet_v3_large"): (21.3, 0.583, TORCHVISION_SSDLITE_PARAMS / 1e6),
}


def test_paper_rows_hold_the_printed_figures():
    assert {(r.source, r.row): (r.coco_map, r.mult_adds_b, r.params_m) for r in PAPER_COSTS} == PRINTED


def test_paper_tables_detection_rows():
    """`paper-tables`' detection part: every printed figure beside our count, the ratio, and a reason."""
    comparisons = cost_comparisons()
    assert {(c.paper.source, c.paper.row) for c in comparisons} == set(PRINTED)
    assert all(c.note for c in comparisons)
    tv = next(c for c in comparisons if c.paper.source == "torchvision")
    assert tv.layout == "torchvision" and round(tv.params_m * 1e6) == TORCHVISION_SSDLITE_PARAMS
    assert tv.to_dict()["coco_map"] == 21.3 and abs(tv.to_dict()["mult_adds_b"]["ratio"] - 1) < 0.001
    text = format_cost_comparisons(comparisons).splitlines()
    assert len(text) == 1 + len(comparisons)
    assert text[1].split()[:9] == ["V1", "Table", "13", "SSD300", "MobileNet", "TF", "19.3", "1.2", "1.237"]


def test_paper_map_of_each_registered_detector():
    """The figure `select` ranks a registered detector by: the row of exactly this model first (torchvision's for
    V3-Large, whose anchors ours share), else its paper's, which ran TF's anchors."""
    assert {name: paper_map(name) for name in list_detectors()} == {
        "ssd300_mobilenet_v1": (19.3, "V1 Table 13"),
        "ssdlite320_mobilenet_v1": (22.2, "V2 Table 6, TF's anchor layout"),
        "ssdlite320_mobilenet_v2": (22.1, "V2 Table 6, TF's anchor layout"),
        "ssdlite320_mobilenet_v3_large": (21.3, "torchvision"),
        "ssdlite320_mobilenet_v3_small": (16.1, "V3 Table 6, TF's anchor layout"),
    }


# ---------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (
            "ssdlite320_mobilenet_v3_larg",
            {},
            "unknown detector 'ssdlite320_mobilenet_v3_larg'; did you mean ssdlite320_mobilenet_v3_large",
        ),
        ("ssd300_mobilenet_v1", {"size": 16}, "too small .* use size >= 32"),
        ("ssdlite320_mobilenet_v2", {"num_classes": 1}, "at least 2 classes"),
        ("ssdlite320_mobilenet_v2", {"reduced_tail": True}, "reduced_tail is MobileNetV3's option"),
        ("ssdlite320_mobilenet_v3_small", {"colour": "red"}, "does not take the option 'colour'"),
    ],
)
def test_bad_input_is_one_line_error(name, kwargs, message):
    with pytest.raises(MobileNetsError, match=message) as e:
        create_detector(name, **kwargs)
    assert "\n" not in str(e.value)


def test_cli_lists_and_profiles_detectors(capsys):
    from mobilenets.cli import main

    assert main(["list", "ssd*"]) == 0
    assert capsys.readouterr().out.split() == [
        "ssd300_mobilenet_v1",
        "ssdlite320_mobilenet_v1",
        "ssdlite320_mobilenet_v2",
        "ssdlite320_mobilenet_v3_large",
        "ssdlite320_mobilenet_v3_small",
    ]
    assert main(["profile", "ssdlite320_mobilenet_v3_large", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_params"] == 3_440_060 and out["input_size"] == [320, 320]  # torchvision's model
    assert round(out["mult_adds"] / 1e9, 3) == 0.583  # torchvision's published 0.583 GFLOPS
    assert sum(p["num_params"] for p in out["parts"].values()) == out["num_params"]
    assert main(["profile", "ssd300_mobilenet_v1"]) == 0
    text = capsys.readouterr().out
    assert "total" in text and "1237.1" in text and "6.820" in text  # paper Table 13: 1.2B, 6.8M
    assert main(["profile", "ssd300_mobilenet_v1", "--grid"]) != 0
    assert "for a detector, profile takes" in capsys.readouterr().err
    assert main(["profile", "ssdlite320_mobilenet_v3_lage"]) != 0
    assert "did you mean ssdlite320_mobilenet_v3_large" in capsys.readouterr().err
