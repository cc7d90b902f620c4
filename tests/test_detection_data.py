"""Detection data: COCO / VOC / YOLO readers and their bad cases, the composite set, the seeded training
transforms, and our COCO mAP against answers worked out by hand (issue 27)."""

from __future__ import annotations

import functools
import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import composite as C
from mobilenets.data.detection import (
    DetectionDataset,
    TransformedDetection,
    _yaml_names,
    detection_collate,
    eval_transform,
    is_detection_spec,
    load_coco,
    load_detection_dataset,
    load_voc,
    load_yolo,
    make_record,
    train_transform,
)
from mobilenets.data.samples import source_photos
from mobilenets.detection.coco_eval import coco_map, evaluate_detector
from mobilenets.errors import MobileNetsError


@functools.lru_cache(maxsize=1)
def _photos() -> list[np.ndarray]:
    return source_photos()


def write_photo(path, width: int, height: int, k: int = 0, mode: str = "RGB") -> np.ndarray:
    """A crop of real photo ``k`` saved at ``path`` (PNG, lossless); returns its RGB pixels."""
    pixels = _photos()[k][50 : 50 + height, 80 : 80 + width, :3]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return pixels


# ----------------------------------------------------------------------------------------------------
# COCO


def coco_file(tmp_path, images, annotations, categories=((3, "cat"), (7, "cup"))):
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": [{"id": k + 1, "iscrowd": 0, **a} for k, a in enumerate(annotations)],
                "categories": [{"id": i, "name": n} for i, n in categories],
            }
        )
    )
    return path


def test_coco_reads_boxes_labels_crowd_and_counts_what_it_skips(tmp_path):
    pixels = write_photo(tmp_path / "img" / "a.png", 64, 48, k=0)
    write_photo(tmp_path / "img" / "b.png", 40, 30, k=1)
    images = [
        {"id": 11, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 12, "file_name": "b.png", "width": 40, "height": 30},  # no objects: a negative
        {"id": 13, "file_name": "gone.png", "width": 64, "height": 48},  # missing file
    ]
    anns = [
        {"image_id": 11, "category_id": 7, "bbox": [10, 5, 20, 10], "area": 150.0},
        {"image_id": 11, "category_id": 3, "bbox": [50, 40, 30, 20]},  # partly outside: clipped to (50,40,64,48)
        {"image_id": 11, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1},  # evaluation only
        {"image_id": 11, "category_id": 3, "bbox": [70, 10, 5, 5]},  # wholly outside
        {"image_id": 11, "category_id": 3, "bbox": [5, 5, 0, 8]},  # zero width
        {"image_id": 13, "category_id": 3, "bbox": [1, 1, 5, 5]},
    ]
    ds = load_coco(coco_file(tmp_path, images, anns), tmp_path / "img")
    assert ds.classes == ["cat", "cup"] and ds.category_ids == [3, 7] and ds.num_classes == 3 and ds.in_chans == 3
    assert ds.image_ids == [11, 12] and len(ds) == 2
    assert ds.skipped == {"missing image": 1, "box outside the image": 1, "zero-area box": 1}
    assert ds.report() == "skipped 1 box outside the image, 1 zero-area box, 1 missing image"

    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), pixels)
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 5, 30, 15], [50, 40, 64, 48]]), rtol=0, atol=0)
    assert target["boxes"].canvas_size == (48, 64) and target["labels"].tolist() == [2, 1]
    assert target["labels"].dtype == torch.int64 and target["image_id"] == 11
    _, negative = ds[1]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)

    gt = ds.coco_gt()
    anns = sorted(gt.loadAnns(gt.getAnnIds(imgIds=[11])), key=lambda a: a["iscrowd"])
    assert [(a["category_id"], a["iscrowd"]) for a in anns] == [(7, 0), (3, 0), (3, 1)]
    assert [a["area"] for a in anns] == [150.0, 14 * 8, 64 * 48]  # COCO's area when given, else the box's
    assert anns[1]["bbox"] == [50.0, 40.0, 14.0, 8.0]
    assert gt.getImgIds() == [11, 12]


def test_coco_unknown_category_is_an_error_naming_file_and_id(tmp_path):
    write_photo(tmp_path / "a.png", 32, 32)
    path = coco_file(
        tmp_path, [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}], [{"image_id": 1, "category_id": 5}]
    )
    with pytest.raises(MobileNetsError, match=r"ann\.json: annotation 1 has category_id 5.*3, 7.*add the category"):
        load_coco(path, tmp_path)


def test_coco_malformed_json_and_bbox_are_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n{"id": 1,,}]}')
    with pytest.raises(MobileNetsError, match=r"bad\.json: not valid JSON \(line 2"):
        load_coco(bad, tmp_path)
    write_photo(tmp_path / "a.png", 32, 32)
    path = coco_file(
        tmp_path,
        [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        [{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3]}],
    )
    with pytest.raises(MobileNetsError, match=r"annotation 1 has bbox \[1, 2, 3\]; expected \[x, y, width, height\]"):
        load_coco(path, tmp_path)


def test_grayscale_and_rgba_files_become_rgb_and_corrupt_files_fail_at_load_time(tmp_path):
    gray = write_photo(tmp_path / "g.png", 32, 24, mode="L")
    write_photo(tmp_path / "rgba.png", 32, 24, k=1, mode="RGBA")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    images = [
        {"id": i, "file_name": f, "width": 32, "height": 24} for i, f in enumerate(["g.png", "rgba.png", "bad.jpg"])
    ]
    ds = load_coco(coco_file(tmp_path, images, []), tmp_path)
    for i in (0, 1):
        image, _ = ds[i]
        assert image.shape == (3, 24, 32) and image.dtype == torch.uint8
    assert (ds[0][0][0] == ds[0][0][2]).all()  # gray: R = B
    assert np.asarray(Image.fromarray(gray).convert("L")).shape == (24, 32)
    with pytest.raises(MobileNetsError, match=r"bad\.jpg: cannot decode the image.*replace the file"):
        ds[2]


# ----------------------------------------------------------------------------------------------------
# Pascal VOC


def voc_xml(filename: str, objects, size=(64, 48)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


def write_voc(root, with_sets: bool = True):
    (root / "Annotations").mkdir(parents=True)
    files = {
        "000001": [("dog", (11, 6, 30, 20), False), ("cat", (1, 1, 64, 48), True)],  # cat: difficult
        "000002": [("person", (5, 5, 20, 40), False)],
        "000003": [("bird", (3, 4, 10, 12), False)],  # only in the val split: its class is still known to train
    }
    for k, (stem, objects) in enumerate(files.items()):
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects))
        write_photo(root / "JPEGImages" / f"{stem}.jpg", 64, 48, k=k)
    if with_sets:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n000004\n")  # 000004: no xml
        (root / "ImageSets" / "Main" / "val.txt").write_text("000003\n")


def test_voc_splits_classes_one_based_boxes_and_difficult(tmp_path):
    write_voc(tmp_path)
    train, test = load_voc(tmp_path, "train"), load_voc(tmp_path, "test")
    assert train.classes == test.classes == ["bird", "cat", "dog", "person"]
    assert train.category_ids == [1, 2, 3, 4]
    assert len(train) == 2 and len(test) == 1 and train.skipped == {"missing annotation": 1}
    _, target = train[0]
    # VOC's 1-based inclusive pixels (11..30) are the box 10..30; the difficult cat is evaluation-only.
    assert target["boxes"].tolist() == [[10.0, 5.0, 30.0, 20.0]] and target["labels"].tolist() == [3]
    gt = train.coco_gt()
    crowd = [a for a in gt.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 2 and crowd[0]["bbox"] == [0.0, 0.0, 64.0, 48.0]
    assert test[0][1]["labels"].tolist() == [1]


def test_voc_without_image_sets_and_malformed_xml(tmp_path):
    write_voc(tmp_path, with_sets=False)
    assert len(load_voc(tmp_path, "train")) == 3
    with pytest.raises(MobileNetsError, match=r"no ImageSets/Main folder to name a test split.*test\.txt"):
        load_voc(tmp_path, "test")
    (tmp_path / "JPEGImages" / "000002.jpg").unlink()
    ds = load_voc(tmp_path, "train")
    assert len(ds) == 2 and ds.report() == "skipped 1 missing image"
    (tmp_path / "Annotations" / "000009.xml").write_text("<annotation><object>")
    with pytest.raises(MobileNetsError, match=r"000009\.xml: malformed XML \(line 1"):
        load_voc(tmp_path, "train")


# ----------------------------------------------------------------------------------------------------
# YOLO


def write_yolo(root, names_yaml: str | None = "names:\n  0: cat\n  1: cup\n"):
    for split in ("train", "val"):
        (root / "labels" / split).mkdir(parents=True)
    write_photo(root / "images" / "train" / "a.png", 64, 48, k=0)
    write_photo(root / "images" / "train" / "b.png", 40, 30, k=1)  # no label file: a negative
    write_photo(root / "images" / "val" / "c.png", 64, 48, k=2)
    (root / "labels" / "train" / "a.txt").write_text("1 0.25 0.5 0.25 0.5\n\n0 0.9 0.9 0.4 0.4\n0 1.5 0.5 0.2 0.2\n")
    (root / "labels" / "val" / "c.txt").write_text("0 0.5 0.5 1 1\n")
    if names_yaml is not None:
        (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\n{names_yaml}")


def test_yolo_normalized_boxes_negatives_and_val_as_test(tmp_path):
    write_yolo(tmp_path)
    ds = load_yolo(tmp_path, "train")
    assert ds.classes == ["cat", "cup"] and len(ds) == 2 and ds.report() == "skipped 1 box outside the image"
    # The second box spans 0.7..1.1 of each side: clipped to the image. The third (1.4..1.6) is wholly outside.
    _, target = ds[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[8.0, 12, 24, 36], [44.8, 33.6, 64, 48]]))
    assert target["labels"].tolist() == [2, 1]
    assert ds[1][1]["boxes"].shape == (0, 4)
    assert load_yolo(tmp_path, "test")[0][1]["boxes"].tolist() == [[0.0, 0.0, 64.0, 48.0]]


def test_yolo_names_from_classes_txt_and_the_yaml_fallback_parser(tmp_path):
    write_yolo(tmp_path, names_yaml=None)
    (tmp_path / "classes.txt").write_text("cat\ncup\n")
    assert load_yolo(tmp_path, "train").classes == ["cat", "cup"]
    assert _yaml_names("nc: 2\nnames: ['a b', \"c\"]  # two\n") == ["a b", "c"]
    assert _yaml_names("names:\n  - person\n  - bicycle\nnc: 2\n") == ["person", "bicycle"]
    assert _yaml_names("names:\n  0: person\n  1: 'traffic light'\ndownload: x\n") == {0: "person", 1: "traffic light"}


def test_yolo_malformed_line_and_class_out_of_range_are_errors(tmp_path):
    write_yolo(tmp_path)
    label = tmp_path / "labels" / "train" / "a.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n")
    with pytest.raises(MobileNetsError, match=r"a\.txt, line 2: 4 fields in '1 0\.5 0\.5 0\.2'.*'class cx cy w h'"):
        load_yolo(tmp_path, "train")
    label.write_text("0 0.5 0.5 0.2 0.2\ncup 0.5 0.5 0.2 0.2\n")
    with pytest.raises(MobileNetsError, match=r"a\.txt, line 2: 'cup 0\.5 0\.5 0\.2 0\.2' is not 'class cx cy w h'"):
        load_yolo(tmp_path, "train")
    label.write_text("\n2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(MobileNetsError, match=r"a\.txt, line 2: class index 2 but the dataset names 2 classes"):
        load_yolo(tmp_path, "train")


# ----------------------------------------------------------------------------------------------------
# Specs


def test_load_detection_dataset_specs_subsets_and_errors(tmp_path):
    write_yolo(tmp_path / "y")
    write_voc(tmp_path / "v")
    for k in range(4):
        write_photo(tmp_path / "c" / "images" / f"{k}.png", 32, 32, k=k)
    images = [{"id": k + 1, "file_name": f"{k}.png", "width": 32, "height": 32} for k in range(4)]
    coco_file(tmp_path / "c", images, []).rename(tmp_path / "c" / "train.json")
    coco_file(tmp_path / "c", images[:1], []).rename(tmp_path / "c" / "val.json")

    (tmp_path / "d" / "images").mkdir(parents=True)  # file names relative to DIR, not DIR/images
    for k in range(2):
        write_photo(tmp_path / "d" / "images" / f"{k}.png", 32, 32, k=k)
    images_d = [{"id": k + 1, "file_name": f"images/{k}.png", "width": 32, "height": 32} for k in range(2)]
    coco_file(tmp_path / "d", images_d, []).rename(tmp_path / "d" / "test.json")

    assert len(load_detection_dataset(f"coco:{tmp_path / 'd'}", "test")) == 2
    with pytest.raises(MobileNetsError, match=r"none of its 4 image files exist \(e\.g\. .*0\.png\).*pass the folder"):
        load_detection_dataset(f"coco:{tmp_path / 'c' / 'train.json'}:{tmp_path / 'd'}", "train")
    assert len(load_detection_dataset(f"yolo:{tmp_path / 'y'}", "train")) == 2
    assert load_detection_dataset(f"voc:{tmp_path / 'v'}", "test").classes[0] == "bird"
    assert len(load_detection_dataset(f"coco:{tmp_path / 'c'}", "test")) == 1  # val.json stands in for test
    one_file = load_detection_dataset(f"coco:{tmp_path / 'c' / 'train.json'}:{tmp_path / 'c' / 'images'}", "test")
    assert len(one_file) == 4
    a = load_detection_dataset(f"coco:{tmp_path / 'c'}", "train", max_samples=2, seed=3)
    b = load_detection_dataset(f"coco:{tmp_path / 'c'}", "train", max_samples=2, seed=3)
    assert len(a) == 2 and a.image_ids == b.image_ids
    assert all(is_detection_spec(s) for s in ("composite", "composite:/x", "coco:a", "voc:b", "YOLO:c"))
    assert not any(is_detection_spec(s) for s in ("fashion-mnist", "digits", "/data/voc", "cocoa:x"))
    with pytest.raises(MobileNetsError, match=r"unknown detection dataset 'pascal:x'; the accepted forms: coco:"):
        load_detection_dataset("pascal:x", "train")
    with pytest.raises(MobileNetsError, match=r"nowhere does not exist; the accepted forms"):
        load_detection_dataset(f"voc:{tmp_path / 'nowhere'}", "train")
    with pytest.raises(MobileNetsError, match=r"name the images folder too: coco:.*train\.json:IMAGES_DIR"):
        load_detection_dataset(f"coco:{tmp_path / 'c' / 'train.json'}", "train")


# ----------------------------------------------------------------------------------------------------
# The composite set


def test_composite_is_reproducible_from_its_seed_and_loads(tmp_path):
    kw = dict(num_train=6, num_test=3, size=96, progress=False)
    a, b = C.write_composite(tmp_path / "a", seed=5, **kw), C.write_composite(tmp_path / "b", seed=5, **kw)
    other = C.write_composite(tmp_path / "c", seed=6, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) == 2 + 6 + 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train.json").read_bytes() != (other / "train.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary folders left
    readme = (a / "README.md").read_text()
    assert "composite" in readme and "Seed 5" in readme and f"python -m mobilenets.data.composite {a}" in readme

    ds = load_detection_dataset(f"composite:{a}", "train")
    assert ds.name == "composite" and len(ds) == 6 and ds.num_classes == 11 and ds.report() == ""
    for i in range(len(ds)):
        image, target = ds[i]
        boxes = target["boxes"]
        assert image.shape == (3, 96, 96)
        assert ((boxes >= 0) & (boxes <= 96)).all() and (boxes[:, 2:] > boxes[:, :2]).all()

    with pytest.raises(MobileNetsError, match=r"already exists and is not an empty folder; delete it"):
        C.write_composite(a, **kw)
    with pytest.raises(MobileNetsError, match=r"holds no composite set"):
        load_detection_dataset(f"composite:{tmp_path / 'a' / 'images'}", "train")


def test_composite_boxes_are_exact():
    """Every pasted pixel lies inside its box, and every box edge holds pasted pixels (on a white canvas a
    pasted pixel always differs: the tint is at most 0.9)."""
    images, labels, _, _ = C.object_source("test")
    rng = np.random.default_rng(0)
    canvas = np.full((160, 160, 3), 255, np.uint8)
    for trial in range(5):
        masks = [C.scale_object(images[k], side) for k, side in zip(range(trial, trial + 3), (24, 50, 80))]
        assert [max(m.shape) for m in masks] == [24, 50, 80]
        out, boxes, kept = C.paste_objects(canvas, masks, [1, 2, 3], rng)
        assert boxes and len(kept) == len(boxes)
        changed = (out != canvas).any(-1)
        inside = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes:
            inside[y1:y2, x1:x2] = True
            box = changed[y1:y2, x1:x2]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        assert not (changed & ~inside).any()


@pytest.mark.parametrize("objects", ["fashion-mnist", "digits"])
def test_composite_objects_are_fashion_mnist_when_installed_else_digits(tmp_path, monkeypatch, objects):
    """Fashion-MNIST: a stand-in (IDX files of digit shapes) found through MOBILENETS_FASHION_MNIST; digits: as if
    Fashion-MNIST were not installed. The README says which."""
    import mobilenets.data.classification as classification

    if objects == "fashion-mnist":
        monkeypatch.setattr(classification, "fashion_mnist_dir", lambda data_dir=None: None)
        digits, labels, _, _ = C.object_source("train")
        monkeypatch.undo()
        garments = np.asarray([np.asarray(Image.fromarray(d).resize((28, 28))) for d in digits[:20]])
        for prefix in ("train", "t10k"):
            for stem, array in (("images-idx3-ubyte", garments), ("labels-idx1-ubyte", labels[:20])):
                header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                with gzip.open(tmp_path / f"{prefix}-{stem}.gz", "wb") as f:
                    f.write(header + array.astype(np.uint8).tobytes())
        monkeypatch.setenv("MOBILENETS_FASHION_MNIST", str(tmp_path))
    else:
        monkeypatch.setattr(classification, "fashion_mnist_dir", lambda data_dir=None: None)
    out = C.write_composite(tmp_path / "set", num_train=2, num_test=1, size=64, progress=False)
    names = [c["name"] for c in json.loads((out / "test.json").read_text())["categories"]]
    readme = (out / "README.md").read_text()
    if objects == "fashion-mnist":
        assert names[:2] == ["T-shirt/top", "Trouser"] and "Fashion-MNIST's 28×28 garments" in readme
    else:
        assert names == [str(d) for d in range(10)] and "digits, upscaled: Fashion-MNIST was not installed" in readme


def test_composite_takes_both_splits_objects_from_one_set(tmp_path, monkeypatch):
    """Fashion-MNIST installed while the set is written (``make data`` beside a first training) must not give
    digits to train and garments to test: the writer looks once. A folder an older version mixed is refused."""
    import mobilenets.data.classification as classification

    looks = []

    def installed_after_first_look(data_dir=None):
        looks.append(data_dir)
        return None if len(looks) == 1 else tmp_path / "fashion-mnist-not-here"

    monkeypatch.setattr(classification, "fashion_mnist_dir", installed_after_first_look)
    out = C.write_composite(tmp_path / "set", num_train=2, num_test=1, size=64, progress=False)
    sets = {split: json.loads((out / f"{split}.json").read_text()) for split in ("train", "test")}
    assert [c["name"] for c in sets["train"]["categories"]] == [c["name"] for c in sets["test"]["categories"]]
    assert sets["train"]["info"]["objects"] == sets["test"]["info"]["objects"] == "digits"

    sets["test"]["info"]["objects"] = "fashion-mnist"
    (out / "test.json").write_text(json.dumps(sets["test"]))
    with pytest.raises(MobileNetsError, match=r"mixes objects \(digits in train, fashion-mnist in test\); delete it"):
        load_detection_dataset(f"composite:{out}", "train")


# ----------------------------------------------------------------------------------------------------
# Training transforms


@pytest.fixture(scope="module")
def composite_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("composite") / "set"
    C.write_composite(folder, num_train=8, num_test=4, size=96, seed=1, progress=False)
    return load_detection_dataset(f"composite:{folder}", "train")


def test_transformed_detection_is_seeded_by_seed_epoch_and_index(composite_set):
    data = TransformedDetection(composite_set, train_transform(64), seed=7)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = [data[i] for i in range(len(data))]
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is untouched
    again = [data[i] for i in range(len(data))]
    for (x, t), (y, u) in zip(first, again):
        assert torch.equal(x, y) and torch.equal(t["boxes"], u["boxes"]) and torch.equal(t["labels"], u["labels"])
    data.set_epoch(1)
    later = [data[i] for i in range(len(data))]
    assert any(not torch.equal(x, y) for (x, _), (y, _) in zip(first, later))

    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=2, collate_fn=detection_collate)
    in_workers = [pair for images, targets in loader for pair in zip(images, targets)]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(later, in_workers))

    for epoch in range(4):
        data.set_epoch(epoch)
        for i in range(len(data)):
            image, target = data[i]
            boxes, labels = target["boxes"], target["labels"]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32
            assert 0 <= image.min() and image.max() <= 1
            assert type(boxes) is torch.Tensor and boxes.dtype == torch.float32 and labels.dtype == torch.int64
            assert len(boxes) == len(labels) and ((boxes >= 0) & (boxes <= 64)).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_eval_transform_scales_boxes_with_the_image(composite_set):
    image, target = composite_set[0]
    x, t = eval_transform((48, 32))(image, target)
    assert x.shape == (3, 48, 32) and x.dtype == torch.float32
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), target["boxes"] * torch.tensor([1 / 3, 0.5] * 2))


# ----------------------------------------------------------------------------------------------------
# COCO mAP against answers worked out by hand


def boxes_dataset(gt: list[list[tuple]], classes=("a", "b")) -> DetectionDataset:
    """A dataset of 100×100 images (never decoded: coco_map reads only the annotations); ``gt[i]`` lists image
    i's (x1, y1, x2, y2, label[, crowd])."""
    records = []
    for i, objects in enumerate(gt):
        boxes = [o[:4] for o in objects]
        crowd = [len(o) > 5 and o[5] for o in objects]
        records.append(make_record(f"{i}.png", i + 1, 100, 100, boxes, [o[4] for o in objects], crowd, None, {}))
    return DetectionDataset("boxes", "test", ".", list(classes), [10, 20][: len(classes)], records)


def dets(*objects) -> dict:
    """(x1, y1, x2, y2, label, score) tuples as a detector's output."""
    t = torch.tensor(objects, dtype=torch.float32).reshape(-1, 6)
    return {"boxes": t[:, :4], "labels": t[:, 4].long(), "scores": t[:, 5]}


def test_map_of_exact_detections_is_one_and_of_none_is_zero():
    ds = boxes_dataset([[(10, 10, 60, 50, 1), (20, 30, 90, 95, 2)], [(0, 0, 30, 30, 2)], []])
    result = coco_map(
        ds, [dets((10, 10, 60, 50, 1, 0.9), (20, 30, 90, 95, 2, 0.8)), dets((0, 0, 30, 30, 2, 0.7)), dets()]
    )
    assert (result.map, result.map50, result.map75) == pytest.approx((1, 1, 1), rel=1e-12)
    assert result.per_class_ap == pytest.approx({"a": 1.0, "b": 1.0}, rel=1e-12)
    assert result.num_images == 3 and result.num_detections == 3 and len(result.stats) == 12
    none = coco_map(ds, [dets(), dets(), dets()])
    assert none.map == none.map50 == 0.0 and none.num_detections == 0


def test_map_when_one_of_two_objects_is_found():
    # Recall stops at 1/2 with precision 1: COCO's 101-point AP counts the recall points 0, .01, ..., .50.
    ds = boxes_dataset([[(10, 10, 40, 40, 1)], [(50, 50, 90, 90, 1)]], classes=("a",))
    result = coco_map(ds, [dets((10, 10, 40, 40, 1, 0.9)), dets()])
    assert (result.map, result.map50) == pytest.approx((51 / 101, 51 / 101), rel=1e-12)
    assert result.stats[8] == pytest.approx(0.5)  # AR@100


def test_map_of_a_box_with_iou_062_counts_at_05_not_at_075():
    # IoU (0,0,100,62) vs (0,0,100,100) = 6200/10000 = 0.62: a match at IoU .50, .55, .60 of the ten thresholds.
    ds = boxes_dataset([[(0, 0, 100, 100, 1)]], classes=("a",))
    result = coco_map(ds, [dets((0, 0, 100, 62, 1, 0.5))])
    assert (result.map50, result.map75, result.map) == pytest.approx((1, 0, 3 / 10), rel=1e-12)


def test_map_ignores_detections_on_crowd_regions_and_omits_classes_without_ground_truth():
    ds = boxes_dataset([[(0, 0, 40, 40, 1), (50, 50, 100, 100, 1, True)]])
    result = coco_map(ds, [dets((60, 60, 90, 90, 1, 0.99), (0, 0, 40, 40, 1, 0.5))])
    assert result.map == pytest.approx(1, rel=1e-12)  # the detection inside the crowd region counts as nothing
    assert result.per_class_ap == pytest.approx({"a": 1.0}, rel=1e-12)  # "b" has no ground truth
    assert "b" not in result.format() and result.to_dict()["map_small"] is None  # no small objects: NaN → None
    with pytest.raises(MobileNetsError, match=r"label 3 is outside 1\.\.2"):
        coco_map(ds, [dets((0, 0, 40, 40, 3, 0.5))])
    with pytest.raises(MobileNetsError, match=r"2 detection lists for the 1 images"):
        coco_map(ds, [dets(), dets()])


def test_evaluate_detector_feeds_original_images_and_scores_them(composite_set):
    class Oracle(torch.nn.Module):
        """Returns the ground truth of the images it is given, in order."""

        def __init__(self):
            super().__init__()
            self.seen = 0

        def forward(self, images):
            out = []
            for image in images:
                stored, target = composite_set[self.seen]
                assert image.dtype == torch.float32 and torch.equal(image, stored.float() / 255)
                out.append(
                    {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(len(target["labels"]))}
                )
                self.seen += 1
            return out

    model = Oracle().train()
    result = evaluate_detector(model, composite_set, batch_size=3, progress=False)
    assert not model.training and model.seen == len(composite_set)
    assert result.map == pytest.approx(1, rel=1e-12) and result.num_images == len(composite_set)
