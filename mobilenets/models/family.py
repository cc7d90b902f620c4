"""A model family, declared once at the end of its model file: what the registry registers, what `bench --grid`
and `select` measure, how plots draw it. Adding a family is its model file and its declaration; nothing else
lists families (``mobilenets.models.FAMILIES`` collects them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    """One family of models.

    Attributes:
        name: the family's name, e.g. "mobilenet_v1" (also its registered base model when it has a grid).
        models: registered base name → builder. A family with a grid has one, registered again as
            ``{name}_{α}_{resolution}`` for every pair of ``widths`` × ``resolutions``.
        resolution: the default input side of its models (each name's default; Xception 299).
        widths, resolutions: the registered α × ρ grid (empty: no grid, α 1 only).
        bench_grid: the (widths, resolutions) `bench --grid` measures by default (widths at the first resolution,
            resolutions at width 1.0, plus the variants a paper prints a top-1 for); None: not on the grid.
        bench_models: for a family without a grid, the models `bench --grid` measures (each at its resolution).
        style: (matplotlib colour, marker) in every plot.
        pattern: how an error message names the family's models, e.g. "mobilenet_v2[_{α}_{res}]".
        paper_recipe: the family's paper training recipe (``mobilenets train --preset paper``; TrainConfig field
            values, ``lr_per_256`` per 256 images); None: V1's.
    """

    name: str
    models: dict[str, Callable[..., nn.Module]]
    resolution: int = 224
    widths: tuple[float, ...] = ()
    resolutions: tuple[int, ...] = ()
    bench_grid: tuple[tuple[float, ...], tuple[int, ...]] | None = None
    bench_models: tuple[str, ...] = ()
    style: tuple[str, str] | None = None
    pattern: str = ""
    paper_recipe: dict | None = None

    @property
    def has_grid(self) -> bool:
        return bool(self.widths)

    def registered(self) -> dict[str, tuple[Callable[..., nn.Module], dict]]:
        """Every name this family registers → (builder, the keyword arguments the name stands for)."""
        out = {}
        for base, builder in self.models.items():
            first = {"width_mult": 1.0} if self.has_grid else {}
            out[base] = (builder, {**first, "resolution": self.resolution})
            for alpha in self.widths:
                for res in self.resolutions:
                    out[f"{base}_{alpha}_{res}"] = (builder, {"width_mult": alpha, "resolution": res})
        return out


GRID_SUFFIX = re.compile(r"_[\d.]+_\d+$")


def base_name(name: str) -> str:
    """A registered name without its α/resolution suffix: ``mobilenet_v1_0.5_160`` → ``mobilenet_v1``."""
    return GRID_SUFFIX.sub("", name)
