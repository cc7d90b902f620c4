"""A JPEG ImageFolder input pipeline that decodes and crops whole batches on the GPU (threads on a CPU).

The PIL path (:class:`mobilenets.data.ImageFolderDataset` behind a DataLoader) decodes, resizes and crops
one image at a time in worker processes; on a fast GPU it cannot keep up (issue 12: 1,684 img/s with 15
workers against a GPU that trains on 12k). Here, on a GPU, the per-image work is reduced to reading the file:

1. threads read the files' bytes ahead of time (``prefetch`` batches in flight);
2. on CUDA, ``torchvision.io.decode_jpeg(..., device="cuda")`` decodes the batch in one nvJPEG call;
   one ``roi_align`` per distinct image size cuts and resizes every image's random crop box to the
   output square (with ``sampling_ratio=-1`` each output pixel averages ceil(box/output)² bilinear
   samples, so downscaling is antialiased); evaluation's center crop is one ``interpolate`` per size;
3. on the CPU, each thread decodes its file (libjpeg-turbo) and crops it with PyTorch's uint8
   antialiased resize (no per-image Python objects cross a process boundary, unlike DataLoader workers);
4. flips and normalization are batch operations on the device.

Evaluation resizes the shorter side and takes the center crop exactly as the PIL path does
(:meth:`ImageFolderDataset.load`), with PyTorch's antialiased bilinear filter (PIL's); training draws
torchvision's RandomResizedCrop boxes (area fraction in ``scale``, aspect ratio in ``ratio``, 10 tries,
then the center crop) from a generator seeded by (seed, epoch, batch): a run's crops are reproducible and
the same on the CPU and the GPU.

Bad files keep the PIL path's semantics: a file that cannot be read or decoded is left out of its batch
and its path returned with the batch, to be counted (:class:`mobilenets.data.BadFiles`). Files the fast
decoder refuses (PNG in a JPEG folder, CMYK JPEGs on nvJPEG) are decoded by PIL before being called bad.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from mobilenets.data.classification import ImageFolderDataset
from mobilenets.data.transforms import epoch_order, step_generator
from mobilenets.errors import MobileNetsError

# torchvision >= 0.29 warns on every decode call (its decoders move to TorchCodec); the functions still work,
# and torch 2.11's torchvision has no such warning.
warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision", category=UserWarning)
warnings.filterwarnings(
    "ignore", message=".*decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

_JPEG_SOI = b"\xff\xd8"  # start-of-image marker
_JPEG_EOI = b"\xff\xd9"  # end-of-image marker


# ----------------------------------------------------------------------------------------------------
# Decoding


def read_bytes(path: str) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (what ``decode_jpeg`` takes)."""
    with open(path, "rb") as f:
        buf = f.read()
    return torch.frombuffer(bytearray(buf), dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)


def looks_like_jpeg(data: torch.Tensor) -> bool:
    """Starts with the JPEG start-of-image marker (the rest is the decoder's to judge)."""
    return data.numel() > 4 and bytes(data[:2].tolist()) == _JPEG_SOI


def _read_mode(in_chans: int):
    from torchvision.io import ImageReadMode

    return ImageReadMode.GRAY if in_chans == 1 else ImageReadMode.RGB


def decode_pil(data: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Decode any format PIL reads (the PIL path's decoder) to uint8 (C, H, W); raises when it cannot."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
        arr = np.asarray(im.convert("L" if in_chans == 1 else "RGB"), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode_one(data: torch.Tensor, in_chans: int, device: torch.device) -> torch.Tensor | None:
    """One file's bytes → uint8 (C, H, W) on ``device``, or None when neither decoder can read it."""
    from torchvision.io import decode_jpeg

    if looks_like_jpeg(data):
        try:
            return decode_jpeg(data, mode=_read_mode(in_chans), device=device)
        except RuntimeError:
            pass  # e.g. truncated (an error, as in PIL), or a flavour this decoder lacks: PIL has the last word
    try:
        return decode_pil(data, in_chans).to(device)
    except Exception:  # noqa: BLE001 - any decoding failure means "unreadable file", as in the PIL path
        return None


def ends_like_jpeg(data: torch.Tensor) -> bool:
    """The end-of-image marker is among the last bytes (a truncated file's are image data)."""
    return _JPEG_EOI in bytes(data[-32:].tolist())


def decode_batch(datas: Sequence[torch.Tensor | None], in_chans: int, device: torch.device) -> list:
    """Decode a batch of files' bytes in one ``decode_jpeg`` call on ``device``; the doubtful ones one by one.

    Files that do not start and end like a JPEG (PNGs, truncated files, JPEGs with trailing data) and, when
    the batch call fails, every file are decoded on the CPU (libjpeg-turbo, then PIL), whose errors mark a
    file unreadable exactly as in the PIL path; nvJPEG may decode a truncated file without complaint.
    ``None`` in ``datas`` (a file that could not be read) and files no decoder reads give ``None``.
    """
    from torchvision.io import decode_jpeg

    out: list = [None] * len(datas)
    fast = [i for i, d in enumerate(datas) if d is not None and looks_like_jpeg(d) and ends_like_jpeg(d)]
    careful = sorted({i for i, d in enumerate(datas) if d is not None} - set(fast))
    if fast:
        try:
            decoded = decode_jpeg([datas[i] for i in fast], mode=_read_mode(in_chans), device=device)
            for i, x in zip(fast, decoded):
                out[i] = x
        except RuntimeError:
            careful = sorted(careful + fast)  # one bad file fails the whole call (no partial results)
    cpu = torch.device("cpu")
    for i in careful:
        x = decode_one(datas[i], in_chans, cpu)
        out[i] = x.to(device) if x is not None else None
    return out


# ----------------------------------------------------------------------------------------------------
# Crop boxes (x1, y1, x2, y2) in pixel-edge coordinates: pixel j covers [j, j + 1)


CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before falling back to the center


def crop_randoms(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's random numbers: uniforms for :func:`random_resized_boxes` (n, 10, 4) and flips (n,)."""
    u = torch.rand(n, CROP_ATTEMPTS, 4, generator=generator, dtype=torch.float64)
    return u, torch.rand(n, generator=generator) < 0.5


def random_resized_boxes(
    sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], u: torch.Tensor
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop.get_params`` for a whole batch: integer boxes (N, 4).

    Per image: up to ``u.shape[1]`` draws of an area fraction in ``scale`` and a log-uniform aspect ratio
    in ``ratio``; the first box that fits is placed uniformly at random; when none fits, the largest center
    crop whose aspect ratio lies in ``ratio``. ``u`` holds the uniforms, (N, attempts, 4) (:func:`crop_randoms`).
    """
    n = len(sizes)
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    u = u.double()
    area = (h * w)[:, None] * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    cw = torch.round(torch.sqrt(area * aspect))
    ch = torch.round(torch.sqrt(area / aspect))
    fits = (cw > 0) & (ch > 0) & (cw <= w[:, None]) & (ch <= h[:, None])
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    bw, bh = cw[rows, pick], ch[rows, pick]
    # Uniform integer offset in [0, W - w] (torchvision: torch.randint(0, W - w + 1)).
    x1 = torch.floor(u[rows, pick, 2] * (w - bw + 1)).clamp(max=w - bw)
    y1 = torch.floor(u[rows, pick, 3] * (h - bh + 1)).clamp(max=h - bh)
    # Fallback: the whole image, narrowed to the nearest allowed aspect ratio, centered.
    in_ratio = w / h
    fw = torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w)
    fh = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    fw, fh = torch.minimum(fw, w), torch.minimum(fh, h)
    none = first < 0
    bw, bh = torch.where(none, fw, bw), torch.where(none, fh, bh)
    x1 = torch.where(none, torch.floor((w - fw) / 2), x1)
    y1 = torch.where(none, torch.floor((h - fh) / 2), y1)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1).float()


# ----------------------------------------------------------------------------------------------------
# Resized crops, flips, normalization


def _same_size_groups(images: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    return list(groups.values())


def center_crops(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """The PIL path's evaluation crop for a batch: float (N, C, S, S) in [0, 255].

    As :meth:`mobilenets.data.ImageFolderDataset.load`: the shorter side resized to S (antialiased
    bilinear, the long side to round(long · S / short)), then the central S × S at the same integer offset.
    Images of the same size share one ``interpolate`` call.
    """
    import torch.nn.functional as F

    if not images:
        raise MobileNetsError("center_crops: empty batch")
    out = torch.empty(len(images), images[0].shape[0], size, size, device=images[0].device)
    for idx in _same_size_groups(images):
        h, w = images[idx[0]].shape[-2:]
        scale = size / min(h, w)
        h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (h2 - size) // 2, (w2 - size) // 2
        stack = torch.stack([images[i] for i in idx]).float()
        resized = F.interpolate(stack, size=(h2, w2), mode="bilinear", antialias=True, align_corners=False)
        out[torch.tensor(idx, device=out.device)] = resized[:, :, top : top + size, left : left + size]
    return out


def crop_one(image: torch.Tensor, size: int, box: Sequence[int] | None = None, flip: bool = False) -> torch.Tensor:
    """One uint8 (C, H, W) image → uint8 (C, S, S): the PIL path's center crop, or ``box`` resized; mirrored.

    The CPU path: PyTorch's uint8 antialiased bilinear resize (the fast path torchvision's tensor
    transforms use), in the reading threads, one image at a time.
    """
    import torch.nn.functional as F

    x = image[None]
    if box is None:
        h, w = image.shape[-2:]
        scale = size / min(h, w)
        h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (h2 - size) // 2, (w2 - size) // 2
        x = F.interpolate(x, size=(h2, w2), mode="bilinear", antialias=True, align_corners=False)
        x = x[:, :, top : top + size, left : left + size]
    else:
        x1, y1, x2, y2 = (int(v) for v in box)
        x = F.interpolate(x[:, :, y1:y2, x1:x2], size=(size, size), mode="bilinear", antialias=True)
    x = x[0]
    return x.flip(-1) if flip else x


def resized_crops(images: Sequence[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut ``boxes`` out of uint8 (C, H, W) ``images`` and resize each to size × size: float (N, C, S, S).

    Values stay in [0, 255]. Images of the same size share one ``roi_align`` call; its
    ``sampling_ratio=-1`` averages ceil(box / S)² bilinear samples per output pixel, so downscaling is
    antialiased (with a box-shaped kernel where PIL's bilinear filter is a triangle).
    """
    from torchvision.ops import roi_align

    if not images:
        raise MobileNetsError("resized_crops: empty batch")
    device = images[0].device
    out = torch.empty(len(images), images[0].shape[0], size, size, device=device)
    boxes = boxes.float()
    for idx in _same_size_groups(images):
        stack = torch.stack([images[i] for i in idx]).float()
        rois = torch.cat([torch.arange(len(idx), dtype=torch.float32)[:, None], boxes[idx]], 1).to(device)
        # aligned=True: box coordinates are pixel edges (pixel j spans [j, j + 1)), no half-pixel shift.
        crops = roi_align(stack, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out[torch.tensor(idx, device=device)] = crops
    return out


def flip_some(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images of a batch where ``flip`` (N,) is True."""
    flip = flip.to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[0, 255] floats → (x / 255 - mean) / std per channel, as one multiply-add."""
    a = torch.tensor([1 / (255 * s) for s in std], device=x.device).view(1, -1, 1, 1)
    b = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(1, -1, 1, 1)
    return torch.addcmul(b, x, a)


# ----------------------------------------------------------------------------------------------------
# The loader


@dataclass
class JpegBatch:
    """One batch: images (N, C, S, S) of the readable files, their labels, and the unreadable paths."""

    images: torch.Tensor
    labels: torch.Tensor
    bad: list[str]

    def __iter__(self):  # unpacks like the PIL path's (images, labels, bad_paths) batches
        return iter((self.images, self.labels, self.bad))


class JpegLoader:
    """Batches of an :class:`~mobilenets.data.ImageFolderDataset`, decoded and cropped on ``device``.

    Args:
        dataset: the ImageFolder (its ``samples``, ``in_chans``, ``mean``/``std`` are used).
        batches: the dataset indices of each batch, in order (e.g. an epoch's shuffled order cut in batches).
        resolution: output side S.
        device: where decoding and cropping run: "cuda" uses nvJPEG; "cpu" libjpeg-turbo in the threads.
        train: random resized crops and flips; otherwise the center crop (evaluation).
        scale, ratio: RandomResizedCrop's ranges (area fraction, aspect ratio); ``flip``: random mirroring.
        seed, epoch: with the batch number, they fix the crops and flips.
        output: "normalized" (float, normalized with the dataset's mean/std) or "uint8" (rounded pixels, for
            the training loop's own augmentation, :func:`mobilenets.data.prepare_batch`).
        dtype: float dtype of normalized output (e.g. torch.bfloat16 to halve what the model reads).
        channels_last: output memory format.
        threads: file reading (and on the CPU, decoding) threads.
        prefetch: batches read ahead; one more is assembled in the background while the caller uses the last.
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        batches: Sequence[Sequence[int]],
        *,
        resolution: int,
        device: str | torch.device = "cpu",
        train: bool = False,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        seed: int = 0,
        epoch: int = 0,
        output: str = "normalized",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        threads: int = 4,
        prefetch: int = 2,
        batched: bool | None = None,
        builders: int = 1,
    ):
        if not isinstance(dataset, ImageFolderDataset):
            raise MobileNetsError(
                f"the jpeg pipeline reads ImageFolder trees; {getattr(dataset, 'name', dataset)!r} is an in-memory "
                "dataset (use the default pipeline)"
            )
        if output not in ("normalized", "uint8"):
            raise MobileNetsError(f"output must be 'normalized' or 'uint8', got {output!r}")
        if threads < 1 or builders < 1 or prefetch < 0 or resolution < 1:
            raise MobileNetsError("JpegLoader: threads, builders and resolution must be >= 1 and prefetch >= 0")
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise MobileNetsError(f"bad crop ranges scale={scale} ratio={ratio}: need 0 < lo <= hi (scale hi <= 1)")
        self.dataset = dataset
        self.batches = [list(map(int, b)) for b in batches]
        self.resolution = resolution
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise MobileNetsError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
        self.train, self.scale, self.ratio, self.flip = train, scale, ratio, flip
        self.seed, self.epoch = seed, epoch
        self.output, self.dtype, self.channels_last = output, dtype, channels_last
        self.threads, self.prefetch = threads, prefetch
        self.batched = self.device.type == "cuda" if batched is None else batched
        self.builders = builders

    def __len__(self) -> int:
        return len(self.batches)

    # --- per file, in the reading threads ------------------------------------------------------------

    def _fetch(self, index: int, u: torch.Tensor | None, flip: bool):
        """The file's bytes when ``batched``, else its finished uint8 (C, S, S) crop. None: unreadable."""
        path, _ = self.dataset.samples[index]
        try:
            data = read_bytes(path)
        except OSError:
            return None
        if self.batched:
            return data
        image = decode_one(data, self.dataset.in_chans, self.device)
        if image is None:
            return None
        box = None
        if u is not None:
            box = random_resized_boxes(torch.tensor([image.shape[-2:]]), self.scale, self.ratio, u[None])[0].tolist()
        return crop_one(image, self.resolution, box, flip)

    def _randoms(self, k: int, n: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Batch ``k``'s crop uniforms and flips, fixed by (seed, epoch, k)."""
        if not self.train:
            return None, torch.zeros(n, dtype=torch.bool)
        u, flips = crop_randoms(n, step_generator(self.seed, self.epoch, k))
        return u, flips & self.flip

    # --- per batch -----------------------------------------------------------------------------------

    def assemble(self, k: int, indices: Sequence[int], fetched: Sequence) -> JpegBatch:
        """Batch ``k`` from its files' fetched crops, or their bytes (``batched``: decoded and cropped here)."""
        ds = self.dataset
        if self.batched:
            fetched = decode_batch(fetched, ds.in_chans, self.device)
        good = [i for i, im in enumerate(fetched) if im is not None]
        bad = [ds.samples[indices[i]][0] for i in range(len(indices)) if fetched[i] is None]
        labels = torch.tensor([ds.samples[indices[i]][1] for i in good], dtype=torch.long)
        if not good:
            c, s = ds.in_chans, self.resolution
            dtype = torch.uint8 if self.output == "uint8" else self.dtype
            return JpegBatch(torch.empty(0, c, s, s, dtype=dtype, device=self.device), labels, bad)
        images = [fetched[i] for i in good]
        if not self.batched:
            x = torch.stack(images)  # already cropped, resized and flipped in the threads
        else:
            u, flips = self._randoms(k, len(indices))
            if u is None:
                x = center_crops(images, self.resolution)
            else:
                sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.long)
                x = resized_crops(images, random_resized_boxes(sizes, self.scale, self.ratio, u[good]), self.resolution)
                x = flip_some(x, flips[good])
            if self.output == "uint8":
                x = x.round_().clamp_(0, 255).to(torch.uint8)
        if self.output == "normalized":
            x = normalize(x.float() if x.dtype == torch.uint8 else x, ds.mean, ds.std).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        return JpegBatch(x, labels.to(self.device, non_blocking=True), bad)

    def __iter__(self) -> Iterator[JpegBatch]:
        """Read ahead in threads; assemble the next batches in background threads (side CUDA streams on GPUs)."""
        on_gpu = self.device.type == "cuda"
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jpeg-read")
        builders = ThreadPoolExecutor(self.builders, thread_name_prefix="jpeg-assemble")
        streams = threading.local()  # one side stream per assembling thread
        reads: deque = deque()
        built: deque = deque()
        upcoming = iter(enumerate(self.batches))
        stop = threading.Event()

        def read_next() -> None:
            for k, idx in upcoming:
                u, flips = (None, [False] * len(idx)) if self.batched else self._randoms(k, len(idx))
                rows = [u[j] if u is not None else None for j in range(len(idx))]
                reads.append((k, idx, [pool.submit(self._fetch, i, r, bool(f)) for i, r, f in zip(idx, rows, flips)]))
                return

        def build(k: int, idx: list[int], futures: list):
            fetched = [f.result() for f in futures]
            if stop.is_set():
                return None
            if not on_gpu:
                return self.assemble(k, idx, fetched), None
            with torch.cuda.device(self.device):
                if not hasattr(streams, "side"):
                    streams.side = torch.cuda.Stream(self.device)
                with torch.cuda.stream(streams.side):
                    batch = self.assemble(k, idx, fetched)
                    done = torch.cuda.Event()
                    done.record(streams.side)
            return batch, done

        def build_next() -> None:
            if reads:
                built.append(builders.submit(build, *reads.popleft()))
                read_next()

        try:
            for _ in range(self.prefetch + self.builders):
                read_next()
            for _ in range(self.builders):
                build_next()
            while built:
                result = built.popleft().result()
                build_next()
                batch, done = result
                if done is not None:
                    # The batch was made on a side stream: the caller's stream waits for it, and the
                    # allocator must not hand its memory back to the side stream while the caller uses it.
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(done)
                    batch.images.record_stream(current)
                    batch.labels.record_stream(current)
                yield batch
        finally:
            stop.set()
            builders.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int, shuffle: bool, drop_last: bool):
    """An epoch's dataset indices cut into batches, in :func:`mobilenets.data.epoch_order`'s order."""
    order = epoch_order(num_samples, seed, epoch, shuffle).tolist()
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
