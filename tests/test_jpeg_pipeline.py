"""The JPEG ImageFolder pipeline on real-size JPEGs of real photos: against the PIL path and torchvision."""

from __future__ import annotations

import re

import pytest
import torch
from numeric import torch_threads
from PIL import Image

from mobilenets import data as D
from mobilenets.data import jpeg as J
from mobilenets.errors import MobileNetsError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 re-encoded 500×375 photo crops in 3 classes, plus the odd files a real folder holds."""
    root = tmp_path_factory.mktemp("photos")
    paths = D.write_photo_folder(root, 12, num_classes=3)
    photo = Image.open(paths[0])
    photo.transpose(Image.ROTATE_90).save(root / "class_1" / "portrait.jpg", quality=90)  # 375×500
    photo.convert("L").save(root / "class_1" / "gray.jpg", quality=90)  # grayscale JPEG
    photo.save(root / "class_2" / "lossless.png")  # not a JPEG: decoded by PIL
    data = open(paths[1], "rb").read()
    (root / "class_0" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "class_2" / "empty.jpg").write_bytes(b"")
    return root


def pil_reference(ds: D.ImageFolderDataset):
    """What the PIL path yields per file: (images of the readable files, their labels, unreadable paths)."""
    items = [ds[i] for i in range(len(ds))]
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


def one_batch(ds, **kw) -> J.JpegBatch:
    batches = list(J.JpegLoader(ds, [list(range(len(ds)))], **kw))
    assert len(batches) == 1
    return batches[0]


def test_eval_path_matches_the_pil_path(folder):
    ds = D.ImageFolderDataset(folder, "test", 160)
    ref, ref_labels, ref_bad = pil_reference(ds)
    assert len(ref_bad) == 2 and len(ref) == len(ds) - 2  # the truncated and the empty file
    batch = one_batch(ds, resolution=160, output="uint8", threads=2)
    assert batch.images.shape == (len(ds) - 2, 3, 160, 160) and batch.images.dtype == torch.uint8
    assert batch.labels.tolist() == ref_labels.tolist()
    assert sorted(batch.bad) == sorted(ref_bad)
    # Same resize (antialiased bilinear, PIL's filter; the same rounded sizes and crop offsets): rounding only.
    diff = (batch.images.float() - ref.float()).abs()
    assert diff.max() <= 2 and diff.mean() < 0.25, (diff.max(), diff.mean())


def test_normalized_output_dtype_layout_and_range(folder):
    ds = D.ImageFolderDataset(folder, "test", 96)
    x = one_batch(ds, resolution=96).images
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and x.shape == (len(ds) - 2, 3, 96, 96)
    assert (x >= -mean / std - 1e-5).all() and (x <= (1 - mean) / std + 1e-5).all()
    # The same numbers as the training engine's normalization of the uint8 output.
    u8 = one_batch(ds, resolution=96, output="uint8").images
    expected = D.prepare_batch(u8, ds.mean, ds.std, 96, 3)
    assert (x - expected).abs().max() < 0.5 / 255 / min(ds.std) + 1e-5  # uint8 rounding only
    bf = one_batch(ds, resolution=96, dtype=torch.bfloat16, channels_last=True).images
    assert bf.dtype == torch.bfloat16 and bf.is_contiguous(memory_format=torch.channels_last)
    assert (bf.float() - x).abs().max() < 0.05


def test_train_crops_are_reproducible_and_flip(folder):
    ds = D.ImageFolderDataset(folder, "train", 64)
    kw = dict(resolution=64, train=True, output="uint8", seed=3)
    a, b = one_batch(ds, **kw), one_batch(ds, **kw)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, one_batch(ds, epoch=1, **kw).images)
    # A crop of the whole 4:3 frame (area 1, ratio 4/3) is the full photo squeezed to a square, mirrored or not.
    sub = D.ImageFolderDataset(folder, "train", 64)
    sub.samples = [(p, y) for p, y in ds.samples if re.search(r"/\d{6}\.jpg$", p)]  # the 500×375 photos
    assert len(sub.samples) == 12
    full = one_batch(sub, resolution=64, train=True, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), output="uint8").images
    images = [J.decode_one(J.read_bytes(p), 3, torch.device("cpu")) for p, _ in sub.samples]
    plain = [J.crop_one(im, 64, box=(0, 0, 500, 375)) for im in images]
    same = [torch.equal(f, p) for f, p in zip(full, plain)]
    mirrored = [torch.equal(f, p.flip(-1)) for f, p in zip(full, plain)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)


def test_batched_path_matches_the_threaded_path(folder):
    """The GPU's code path (one decode call, roi_align crops, batch flips), run on the CPU."""
    ds = D.ImageFolderDataset(folder, "train", 96)
    batches = J.epoch_batches(len(ds), 6, seed=0, epoch=0, shuffle=True, drop_last=False)
    for train in (False, True):
        kw = dict(resolution=96, train=train, output="uint8", threads=2)
        threaded = list(J.JpegLoader(ds, batches, batched=False, **kw))
        batched = list(J.JpegLoader(ds, batches, batched=True, builders=3, **kw))  # 3 batches at once, in order
        for a, b in zip(threaded, batched, strict=True):
            assert a.bad == b.bad and torch.equal(a.labels, b.labels) and a.images.shape == b.images.shape
            diff = (a.images.float() - b.images.float()).abs()
            # Same boxes and flips; eval: the same filter (rounding only); train: roi_align's box-shaped
            # kernel against the triangle one, a small difference (a misplaced box or flip gives tens).
            assert diff.mean() < (0.3 if not train else 2.0), (train, diff.mean())


def test_random_boxes_follow_torchvision_random_resized_crop():
    from torchvision.transforms import RandomResizedCrop

    sizes = torch.tensor([[375, 500]] * 4000)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    u, _ = J.crop_randoms(len(sizes), torch.Generator().manual_seed(0))
    boxes = J.random_resized_boxes(sizes, scale, ratio, u)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 500).all() and (boxes[:, 3] <= 375).all()
    assert torch.equal(boxes, boxes.round())
    area = w * h / (375 * 500)
    assert (area >= scale[0] - 0.01).all() and (area <= 1).all()
    assert ((w / h >= ratio[0] - 0.02) & (w / h <= ratio[1] + 0.02)).all()
    torch.manual_seed(0)
    img = torch.zeros(3, 375, 500)
    ref = torch.tensor([RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(4000)]).float()
    ref_area = ref[:, 2] * ref[:, 3] / (375 * 500)
    assert abs(area.mean() - ref_area.mean()) < 0.02 and abs(area.std() - ref_area.std()) < 0.02
    ref_x = ref[:, 1] + ref[:, 3] / 2  # (i, j, h, w): center x of torchvision's boxes
    assert abs((boxes[:, 0] + w / 2).mean() - ref_x.mean()) < 5
    # No box fits (a square of the whole area in a 4:3 image): both fall back to the same center crop.
    fallback = J.random_resized_boxes(torch.tensor([[375, 500]]), (1.0, 1.0), (1.0, 1.0), torch.rand(1, 10, 4))
    i, j, h, w = RandomResizedCrop.get_params(img, [1.0, 1.0], [1.0, 1.0])
    assert fallback[0].tolist() == [j, i, j + w, i + h]


def test_bad_files_are_skipped_and_counted(folder):
    ds = D.ImageFolderDataset(folder, "train", 64)
    bad_idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith(("truncated.jpg", "empty.jpg"))]
    good_idx = [i for i in range(len(ds)) if i not in bad_idx]
    batches = [bad_idx, good_idx[:4] + bad_idx[:1], good_idx[4:]]
    counted = D.BadFiles()
    out = list(J.JpegLoader(ds, batches, resolution=64, train=True, threads=3, prefetch=1))
    for batch, idx in zip(out, batches):
        counted.add(batch.bad)
        assert len(batch.images) == len(batch.labels) == len([i for i in idx if i in good_idx])
    assert out[0].images.shape == (0, 3, 64, 64) and out[0].labels.numel() == 0
    assert counted.count == 3 and "truncated.jpg" in counted.message()
    assert out[1].labels.tolist() == [ds.samples[i][1] for i in good_idx[:4]]


def test_grayscale_models_and_user_errors(folder):
    ds = D.ImageFolderDataset(folder, "test", 64, in_chans=1)
    x = one_batch(ds, resolution=64, output="uint8").images
    ref, _, _ = pil_reference(ds)
    diff = (x.float() - ref.float()).abs()  # libjpeg's and PIL's RGB → gray conversions differ a little
    assert x.shape[1] == 1 and diff.mean() < 0.25 and diff.max() <= 10
    with pytest.raises(MobileNetsError, match="in-memory"):
        J.JpegLoader(D.load_dataset("digits", "test"), [[0]], resolution=32)
    with pytest.raises(MobileNetsError, match="output"):
        J.JpegLoader(ds, [[0]], resolution=32, output="float")
    if not HAS_CUDA:
        with pytest.raises(MobileNetsError, match="CUDA is not available"):
            J.JpegLoader(ds, [[0]], resolution=32, device="cuda")


def test_epoch_batches_cut_the_engine_order():
    batches = J.epoch_batches(10, 4, seed=1, epoch=2, shuffle=True, drop_last=True)
    order = D.epoch_order(10, 1, 2).tolist()
    assert batches == [order[:4], order[4:8]]
    assert J.epoch_batches(10, 4, 0, 0, shuffle=False, drop_last=False)[-1] == [8, 9]


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (nvJPEG)")
def test_cuda_matches_cpu(folder):
    ds = D.ImageFolderDataset(folder, "test", 128)
    cpu = one_batch(ds, resolution=128, output="uint8")
    gpu = one_batch(ds, resolution=128, output="uint8", device="cuda")
    assert gpu.images.is_cuda and gpu.images.shape == cpu.images.shape
    assert sorted(gpu.bad) == sorted(cpu.bad) and gpu.labels.cpu().tolist() == cpu.labels.tolist()
    # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a level or two.
    assert (gpu.images.cpu().float() - cpu.images.float()).abs().mean() < 1.5
    batches = J.epoch_batches(len(ds), 8, 0, 0, shuffle=True, drop_last=False)
    loader = J.JpegLoader(ds, batches, resolution=128, device="cuda", train=True, dtype=torch.bfloat16)
    out = list(loader)
    assert sum(len(b.labels) for b in out) == len(ds) - 2 and sum(len(b.bad) for b in out) == 2
    assert all(b.images.dtype == torch.bfloat16 and b.images.shape[1:] == (3, 128, 128) for b in out)


def test_training_with_the_jpeg_pipeline_tracks_the_pil_pipeline(folder, tmp_path, monkeypatch):
    import shutil

    from mobilenets.training import TrainConfig, train

    # The 12 photos and the 2 unreadable files: batches of 7 meet every file once per epoch.
    root = tmp_path / "photos"
    for path in sorted(folder.rglob("*.jpg")):
        if re.fullmatch(r"\d{6}|truncated|empty", path.stem):
            (root / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / path.parent.name / path.name)
    assembled = []
    real_assemble = J.JpegLoader.assemble
    monkeypatch.setattr(J.JpegLoader, "assemble", lambda self, *a: assembled.append(a[0]) or real_assemble(self, *a))

    def run(pipeline: str):
        cfg = TrainConfig(
            model="mobilenet_v1",
            width_mult=0.25,
            dataset=str(root),
            resolution=32,
            batch_size=7,
            epochs=2,
            device="cpu",
            data_pipeline=pipeline,
            progress=False,
            tensorboard=False,
            plots=False,
            precise_bn=0,  # the pipelines are compared, not BN statistics re-estimated from each one's 14 images
            out_dir=str(tmp_path / pipeline),
        )
        with torch_threads(1):
            return train(cfg)

    pil = run("pil")
    assert not assembled
    jpeg = run("jpeg")
    assert len(assembled) == 2 * 2 + 2 * 1  # two epochs of 2 training batches and one evaluation batch each
    assert jpeg.skipped_files == pil.skipped_files == 4  # 2 unreadable files, counted in each epoch
    # The same pixels within a level and the same augmentation: the first step's loss agrees to rounding;
    # later steps also inherit weights that moved apart by that much.
    assert len(jpeg.step_losses) == len(pil.step_losses) == 4
    assert jpeg.step_losses[0] == pytest.approx(pil.step_losses[0], abs=1e-3)
    assert jpeg.step_losses == pytest.approx(pil.step_losses, abs=3e-2)
    assert jpeg.test_loss == pytest.approx(pil.test_loss, abs=3e-2)
    with pytest.raises(MobileNetsError, match="data_pipeline must be pil or jpeg"):
        TrainConfig(data_pipeline="nvjpeg").resolved()


def test_decode_batch_sends_doubtful_files_to_the_careful_decoders(folder):
    photo = J.read_bytes(str(folder / "class_0" / "000000.jpg"))
    trailer = torch.cat([photo, torch.frombuffer(bytearray(b"camera maker data" * 8), dtype=torch.uint8)])
    truncated = J.read_bytes(str(folder / "class_0" / "truncated.jpg"))
    png = J.read_bytes(str(folder / "class_2" / "lossless.png"))
    assert J.ends_like_jpeg(photo) and not J.ends_like_jpeg(trailer) and not J.ends_like_jpeg(truncated)
    empty = torch.empty(0, dtype=torch.uint8)
    out = J.decode_batch([photo, trailer, truncated, None, png, empty], 3, torch.device("cpu"))
    assert [x is None for x in out] == [False, False, True, True, False, True]
    assert torch.equal(out[0], out[1])  # bytes after the end-of-image marker change nothing
    assert out[4].shape == (3, 375, 500)
