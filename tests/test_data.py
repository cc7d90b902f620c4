"""Datasets: IDX reading, Fashion-MNIST, digits, CIFAR pickles, ImageFolder with bad files, batch preparation."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mobilenets import data as D
from mobilenets.errors import MobileNetsError

HAVE_FASHION_MNIST = D.fashion_mnist_dir() is not None


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_read_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b", images, compress=False)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.gz"), images)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "b"), images)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    images = np.zeros((4, 3, 3), dtype=np.uint8)
    write_idx(tmp_path / "full", images, compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "full").read_bytes()[:-5])
    with pytest.raises(MobileNetsError, match="truncated"):
        D.read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(MobileNetsError, match="not an IDX file"):
        D.read_idx(tmp_path / "png")


def test_fashion_mnist_from_a_data_dir(tmp_path):
    # A tiny Fashion-MNIST-shaped set written in the original format, read through --data.
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 30), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = D.load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert ds.images.shape == (20, 1, 28, 28) and ds.labels.tolist() == [i % 10 for i in range(20)]
    assert ds.classes[9] == "Ankle boot"
    with pytest.raises(MobileNetsError, match="Fashion-MNIST not found"):
        D.load_dataset("fashion-mnist", "train", data_dir=tmp_path / "nowhere")


@pytest.mark.skipif(not HAVE_FASHION_MNIST, reason="dataset-fashion-mnist not installed (make data)")
def test_real_fashion_mnist_matches_its_published_layout():
    train = D.load_dataset("fashion-mnist", "train")
    test = D.load_dataset("fashion-mnist", "test")
    # The dataset's README: 60,000 + 10,000 28×28 grayscale images, 10 balanced classes.
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    # Its first training and test images are ankle boots (label 9), as in every published preview.
    assert train.labels[0] == 9 and test.labels[0] == 9
    sub = D.load_dataset("fashion-mnist", "test", max_samples=500, seed=3)
    assert sub.labels.bincount().tolist() == [50] * 10


def test_digits_split_is_the_sklearn_data_disjoint_and_complete():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, test = D.load_dataset("digits", "train"), D.load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 8, 8)
    # Every image of the split is one of sklearn's (scaled 0..16 → 0..255), each used once.
    ref_images = np.round(ref.images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    ours = torch.cat([train.images, test.images]).reshape(1797, -1).numpy()
    ours_labels = torch.cat([train.labels, test.labels]).numpy()
    order_ref = np.lexsort(np.c_[ref_images, ref.target].T)
    order_ours = np.lexsort(np.c_[ours, ours_labels].T)
    np.testing.assert_array_equal(ours[order_ours], ref_images[order_ref])
    np.testing.assert_array_equal(ours_labels[order_ours], ref.target[order_ref])
    assert min(test.labels.bincount().tolist()) >= 40  # stratified


def test_cifar10_python_pickles(tmp_path):
    rng = np.random.default_rng(2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        raw[name] = dict(data=rng.integers(0, 256, (10, 3072), dtype=np.uint8), labels=list(range(10)))
        with open(tmp_path / name, "wb") as f:
            pickle.dump(raw[name], f)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    train = D.load_dataset(str(tmp_path), "train")
    test = D.load_dataset(str(tmp_path), "test")
    assert len(train) == 50 and len(test) == 10 and train.classes == names
    # CIFAR rows are 1024 red, then green, then blue values of a 32×32 image.
    np.testing.assert_array_equal(test.images[3].numpy(), raw["test_batch"]["data"][3].reshape(3, 32, 32))


def make_image_folder(root, per_class: int = 4, size: int = 12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((size, size + 4, 3), 60 + 120 * c, dtype=np.uint8) + rng.integers(0, 20, (size, size + 4, 3))
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"{i}.png")


def add_bad_files(root) -> list[str]:
    good = (root / "cat" / "0.png").read_bytes()
    bad = [root / "cat" / "empty.png", root / "dog" / "truncated.png", root / "dog" / "garbage.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(good[: len(good) // 2])
    bad[2].write_bytes(b"this is not a jpeg at all" * 10)
    return sorted(str(p) for p in bad)


def test_image_folder_skips_and_reports_unreadable_files(tmp_path):
    make_image_folder(tmp_path)
    bad = add_bad_files(tmp_path)
    ds = D.load_dataset(str(tmp_path), "train", image_size=8)
    assert ds.classes == ["cat", "dog"] and len(ds) == 11
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=D.collate_skip_bad)
    seen, skipped = 0, D.BadFiles()
    for x, y, bad_paths in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 8, 8) and len(x) == len(y)
        seen += len(y)
        skipped.add(bad_paths)
    assert seen == 8 and skipped.count == 3 and sorted(skipped.examples) == bad
    assert "skipped 3 unreadable image file(s)" in skipped.message()


def test_image_folder_errors_before_training(tmp_path):
    make_image_folder(tmp_path / "ok")
    (tmp_path / "ok" / "empty_class").mkdir()
    with pytest.raises(MobileNetsError, match="empty_class"):
        D.load_dataset(str(tmp_path / "ok"), "train")
    for i, name in enumerate(["a", "b"]):
        (tmp_path / "bad" / name).mkdir(parents=True)
        (tmp_path / "bad" / name / f"{i}.jpg").write_bytes(b"")
    ds = D.load_dataset(str(tmp_path / "bad"), "train")
    with pytest.raises(MobileNetsError, match="no readable images"):
        ds.check_readable()
    with pytest.raises(MobileNetsError, match="neither a known name"):
        D.load_dataset(str(tmp_path / "missing"), "train")


def test_prepare_batch_eval_resize_and_identity_flip():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 10, 10), dtype=torch.uint8, generator=g)
    mean, std = (0.5,), (0.25,)
    expected = (images.float() / 255 - 0.5) / 0.25
    same = D.prepare_batch(images, mean, std, 10, 1)
    torch.testing.assert_close(same, expected)
    resized = D.prepare_batch(images, mean, std, 20, 3)
    ref = F.interpolate(expected, size=(20, 20), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(resized, ref.expand(-1, 3, -1, -1))
    # Full-size "crop", no shift: the augmentation is exactly the image or its mirror.
    rand = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.2, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5]] * 2)[:3]
    aug = D.prepare_batch(images, mean, std, 10, 1, D.Augment(crop_ratio=(1, 1)), rand)
    torch.testing.assert_close(aug[0], expected[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(aug[1], expected[1], atol=1e-5, rtol=0)


def test_balanced_subset_and_epoch_order_are_fixed_by_the_seed():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    idx = D.balanced_subset(labels, 15, seed=0)
    assert labels[idx].bincount().tolist() == [5, 5, 5]
    assert torch.equal(idx, D.balanced_subset(labels, 15, seed=0))
    assert not torch.equal(idx, D.balanced_subset(labels, 15, seed=1))
    a, b = D.epoch_order(100, 0, 0), D.epoch_order(100, 0, 1)
    assert sorted(a.tolist()) == list(range(100)) and not torch.equal(a, b)
    assert torch.equal(a, D.epoch_order(100, 0, 0))
