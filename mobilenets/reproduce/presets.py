"""How big a reproduction is: the presets (tiny for CI, quick for a CPU, full for a GPU)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mobilenets.errors import MobileNetsError


@dataclass
class Preset:
    """How big a reproduction is: which cells, how much data and training, how many seeds.

    Args:
        widths: α values, largest first (the paper's 1, 0.75, 0.5, 0.25).
        resolutions: input sides, largest first: the analog of the paper's 224/192/160/128.
        stem_stride: MobileNets' stem stride. 1 (the small-image stem) at half the input side gives the
            same feature-map sizes as 2 at the full side, for the same body cost.
        tables: the comparisons to run: "4", "5", "6", "7", "grid" (Figures 4–5), "8-9" (SqueezeNet 1.1,
            DenseNet-121 and Xception at the top resolution), "bypass" (SqueezeNet 1.0 without, with simple
            and with complex bypass: the SqueezeNet paper's Table 6).
        recipe: the training engine's preset (mobilenets.training.PRESETS); ``train_overrides`` sets any other
            TrainConfig field, the same for every cell.
    """

    name: str
    description: str
    dataset: str
    widths: tuple[float, ...]
    resolutions: tuple[int, ...]
    stem_stride: int
    tables: tuple[str, ...]
    epochs: int
    batch_size: int
    max_train_samples: int | None
    max_test_samples: int | None
    seeds: int
    recipe: str = "sgd"
    train_overrides: dict = field(default_factory=dict)


ALL_TABLES = ("4", "5", "6", "7", "grid", "8-9", "bypass")

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="CI smoke test: digits, one epoch, two cells (Table 4 at α=0.25, 32 px)",
        dataset="digits",
        widths=(0.25,),
        resolutions=(32,),
        stem_stride=1,
        tables=("4",),
        epochs=1,
        batch_size=32,
        max_train_samples=None,
        max_test_samples=None,
        seeds=1,
        train_overrides=dict(warmup_epochs=0.0),
    ),
    "quick": Preset(
        name="quick",
        description=(
            "CPU, about 15 minutes on a busy 2-core machine: two epochs over a class-balanced subset of 4,000 "
            "training images, 2,000 test images, 32–56 px inputs with the small-image stem, one seed"
        ),
        dataset="fashion-mnist",
        widths=(1.0, 0.75, 0.5, 0.25),
        resolutions=(56, 48, 40, 32),  # the paper's 224/192/160/128 divided by 4: the same ρ values
        stem_stride=1,
        tables=ALL_TABLES,
        epochs=2,
        batch_size=32,
        max_train_samples=4000,
        max_test_samples=2000,
        seeds=1,
    ),
    "full": Preset(
        name="full",
        description="GPU: the whole dataset, 112/96/80/64 px with the paper's stride-2 stem, two seeds",
        dataset="fashion-mnist",
        widths=(1.0, 0.75, 0.5, 0.25),
        resolutions=(112, 96, 80, 64),  # 28-px images upsampled 4×…2.3×: the paper's ρ = 1 … 0.571
        stem_stride=2,
        tables=ALL_TABLES,
        epochs=15,
        batch_size=256,
        max_train_samples=None,
        max_test_samples=None,
        seeds=2,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise MobileNetsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
