"""Batches: each epoch's index order, seeded augmentation (random resized crops, flips, shifts), resizing and
normalization, done on whole uint8 batches on the CPU or the GPU."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mobilenets.errors import MobileNetsError


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order of one epoch: a permutation fixed by (seed, epoch), the same on every rank."""
    if not shuffle:
        return torch.arange(num_samples)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g)


def step_generator(seed: int, epoch: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one step's augmentation, fixed by (seed, epoch, step): resumes replay it exactly."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step + 1)
    return g


AUGMENT_RANDOMS = 7  # uniform numbers per image: area, ratio, center x/y, flip, shift x/y


def augment_rand(n: int, generator: torch.Generator) -> torch.Tensor:
    """The uniform random numbers that :func:`prepare_batch` turns into ``n`` images' crops and flips."""
    return torch.rand(n, AUGMENT_RANDOMS, generator=generator, device=generator.device)


@dataclass
class Augment:
    """Batch augmentation as random crops rescaled to the output size, plus horizontal flips.

    Args:
        crop_scale: range of the crop's area as a fraction of the image. The paper limits small crops
            (less augmentation for small models): (0.35, 1) for "paper", (1, 1) turns crops off.
        crop_ratio: range of the crop's aspect ratio.
        translate: extra random shift as a fraction of the side (e.g. 0.1 ≈ pad-4-and-crop at 32 px).
        flip: random horizontal flips.
    """

    crop_scale: tuple[float, float] = (1.0, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    translate: float = 0.0
    flip: bool = True

    @property
    def is_identity(self) -> bool:
        return self.crop_scale == (1.0, 1.0) and self.translate == 0 and not self.flip


def match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A (N, C, H, W) batch with ``in_chans`` channels: grayscale repeated for RGB, RGB averaged for grayscale."""
    if x.shape[1] == in_chans:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, in_chans, -1, -1)
    if in_chans == 1:
        return x.mean(1, keepdim=True)
    raise MobileNetsError(f"cannot feed {x.shape[1]}-channel images to a model with in_chans={in_chans}")


def prepare_batch(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    resolution: int,
    in_chans: int,
    augment: Augment | None = None,
    rand: torch.Tensor | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, C, H, W) → normalized float (N, in_chans, resolution, resolution), augmented when asked.

    Augmentation is one ``affine_grid`` + ``grid_sample`` for the whole batch (crop, rescale, flip at once);
    evaluation resizes with antialiasing. Grayscale is repeated to 3 channels when the model wants RGB.
    ``rand`` holds the batch's uniform random numbers, (N, AUGMENT_RANDOMS), e.g. from :func:`augment_rand`.
    """
    x = images.float().div_(255)
    # Host-to-GPU copies without waiting for the GPU (a blocking copy would synchronize every step).
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(x.device, non_blocking=True)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(x.device, non_blocking=True)
    x = (x - mean_t) / std_t
    x = match_channels(x, in_chans)
    n = x.shape[0]
    if augment is not None and not augment.is_identity and n:
        if rand is None:
            raise MobileNetsError("prepare_batch: augmentation needs rand=augment_rand(batch_size, generator)")
        rand = rand.to(x.device, non_blocking=True)
        lo, hi = augment.crop_scale
        area = lo + (hi - lo) * rand[:, 0]
        r_lo, r_hi = math.log(augment.crop_ratio[0]), math.log(augment.crop_ratio[1])
        ratio = torch.exp(r_lo + (r_hi - r_lo) * rand[:, 1])
        sx = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        # Crop center anywhere that keeps the crop inside the image, plus the extra translation
        # (grid coordinates span [-1, 1], so a shift of t·side is 2t).
        shift = 2 * augment.translate
        tx = (1 - sx) * (2 * rand[:, 2] - 1) + shift * (2 * rand[:, 5] - 1)
        ty = (1 - sy) * (2 * rand[:, 3] - 1) + shift * (2 * rand[:, 6] - 1)
        flip = torch.where(rand[:, 4] < 0.5, -1.0, 1.0) if augment.flip else torch.ones(n, device=x.device)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = sx * flip
        theta[:, 0, 2] = tx
        theta[:, 1, 1] = sy
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, [n, x.shape[1], resolution, resolution], align_corners=False)
        # Zeros outside the image after normalization = the mean color (padding of the translation).
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    elif x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.contiguous() if not channels_last else x
