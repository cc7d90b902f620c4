"""A model family, declared once at the end of its model file: what the registry registers, what `bench --grid`
and `select` measure, how plots draw it, the papers' rows `paper-tables` sets beside it, what `reproduce` trains
and whose weights it imports. Adding a family is its model file and its declaration; nothing else lists families
(``mobilenets.models.FAMILIES`` collects them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class PaperRow:
    """One model of a paper's table: its figures as printed and the model we count beside them (`paper-tables`).

    The figures are strings, as printed, so that a comparison knows the paper's precision; "" where the paper gives
    none.

    Attributes:
        table: "4" (the V1 paper's Table 4), "V2 4", "V3 3", "X 3" (Xception paper's), "SQ 6" (SqueezeNet paper's).
        mult_adds, params: millions.
        build: a registered model name, or "torchvision:NAME" for a paper's baselines that are no family of ours.
        note: why our Mult-Adds differ from the paper's, where they do (``{ours}`` stands for our count).
        params_note: why our parameters, or the size they make, differ (``{extra}``: the parameters this row's
            model has beyond its table's first row's).
        size_mb: the model size in MB (SqueezeNet paper Table 6: 32-bit weights).
        mult_adds_without_fc: the printed Mult-Adds leave out the FC layer: ours are shown without it too.
    """

    table: str
    label: str
    top1: str
    mult_adds: str
    params: str
    build: str
    note: str = ""
    params_note: str = ""
    size_mb: str = ""
    mult_adds_without_fc: bool = False


@dataclass(frozen=True)
class ReproduceModel:
    """A model `mobilenets reproduce` trains, by the key its cells and their cached runs are named after.

    Attributes:
        key: names its cells and their cached runs ("conv" → "conv-a0.25-r32-s0-…"): changing it retrains them.
        model: the registered base name a cell builds (at the cell's resolution; a MobileNet also at its α).
        label: the paper's name for it: a cell reads "0.75 Conv MobileNet-48" (α first for a MobileNet).
        style: (matplotlib colour, marker) in the report's cost-vs-accuracy plots; None: the MobileNets' α series.
    """

    key: str
    model: str
    label: str
    style: tuple[str, str] | None = None


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
        paper_rows: the papers' rows of its models, in the order they are printed (``mobilenets.paper`` groups
            each table's rows, tables in the order they first appear). A model file declaring several families
            may give all its rows to the first: MobileNetV1's ablations ride with it, in the paper's order.
        reproduce: the models `mobilenets reproduce` may train from this family (``mobilenets.reproduce.plan``
            lays out which tables use which).
        importers: weights source → that source's model names whose state dicts import into this family (every
            tensor has a place): "timm", the names whose conventions (TF port or not, width) ``weights/timm.py``
            reads from a file's name or --timm-model, checked against the tensors; "torchvision", the builder
            ``weights/torchvision.py`` names as the origin. Importers that recognise a model by its tensors alone
            (TF-slim's V1 graphs, timm's mobilenetv1 and legacy_xception) need no names.
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
    paper_rows: tuple[PaperRow, ...] = ()
    reproduce: tuple[ReproduceModel, ...] = ()
    importers: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
