"""The plan: which cells (one model at one input size) each of the paper's tables needs.

Tables share cells (1.0 MobileNet at the top resolution appears in Tables 4, 6, 7, 8 and the grid) and each
cell is trained once.
"""

from __future__ import annotations

from dataclasses import dataclass

from mobilenets import paper
from mobilenets.errors import MobileNetsError
from mobilenets.models import FAMILIES as MODEL_FAMILIES
from mobilenets.models.family import ReproduceModel
from mobilenets.reproduce.presets import ALL_TABLES, Preset


def _cell_families() -> dict[str, ReproduceModel]:
    """A cell's family (its key: "mobilenet", "conv", "squeezenet", ...) → what it trains, from the model families'
    declarations (``Family.reproduce``)."""
    out: dict[str, ReproduceModel] = {}
    for family in MODEL_FAMILIES.values():
        for trained in family.reproduce:
            if trained.key in out:  # two would share their cached runs
                raise RuntimeError(f"reproduce key {trained.key!r} is declared twice (again by {family.name})")
            out[trained.key] = trained
    return out


FAMILIES = _cell_families()


def cell_family(model: str) -> str:
    """The cell family that trains a registered base name: ``squeezenet1_0_simple_bypass`` → ``squeezenet_simple``."""
    return next(key for key, m in FAMILIES.items() if m.model == model)


# The SqueezeNet paper's Table 6: the cell families of its rows' models, in its order.
BYPASS_FAMILIES = tuple(cell_family(row.build) for row in paper.squeezenet_table6_rows())


def _width_text(alpha: float) -> str:
    """α as the paper prints it: "1.0", "0.75", "0.5"."""
    return "1.0" if alpha == 1 else f"{alpha:g}"


# Alternative recipes for a baseline that the shared recipe cannot train. SqueezeNet has no BatchNorm: with
# the shared SGD recipe (lr 0.05 at batch 32) its ReLU outputs die in the first steps and it stays at chance,
# so it is also trained with AdamW (no weight EMA, which lags in short runs) — reported as a separate row.
ALT_RECIPES = {
    "adamw": {"label": "AdamW", "recipe": "adamw", "train_overrides": {"ema_decay": 0.0}},
}


@dataclass(frozen=True)
class Cell:
    """One model at one input size, trained with the preset's recipe or a named alternative (ALT_RECIPES)."""

    family: str
    resolution: int
    width_mult: float | None = None  # MobileNets only
    stem_stride: int | None = None  # MobileNets only
    recipe: str | None = None  # None: the preset's recipe, shared by every cell

    @property
    def model(self) -> str:
        return FAMILIES[self.family].model

    @property
    def is_mobilenet(self) -> bool:
        return self.width_mult is not None

    @property
    def key(self) -> str:
        key = (
            f"{self.family}-a{self.width_mult}-r{self.resolution}"
            if self.is_mobilenet
            else (f"{self.family}-r{self.resolution}")
        )
        return f"{key}-{self.recipe}" if self.recipe else key

    @property
    def label(self) -> str:
        """The paper's way of naming it, e.g. "0.75 MobileNet-48" (α first, input side last)."""
        name = FAMILIES[self.family].label
        label = f"{_width_text(self.width_mult)} {name}" if self.is_mobilenet else name
        label = f"{label}-{self.resolution}"
        return f"{label} ({ALT_RECIPES[self.recipe]['label']})" if self.recipe else label

    def model_kwargs(self) -> dict:
        kw: dict = {"resolution": self.resolution}
        if self.is_mobilenet:
            kw.update(width_mult=self.width_mult, stem_stride=self.stem_stride)
        return kw


@dataclass
class Row:
    cell: Cell
    paper: paper.PaperRow | None  # the paper's row this cell stands for (None: the paper has none)


@dataclass
class Table:
    id: str  # "4", "5", "6", "7", "grid", "8-9"
    title: str
    rows: list[Row]


def _paper_row(table: str, label: str) -> paper.PaperRow | None:
    for row in paper.ROWS + paper.OTHER_ROWS:
        if row.table == table and row.label == label:
            return row
    return None


def plan(preset: Preset) -> list[Table]:
    """The tables a preset fills, each row a cell beside the paper's row it stands for.

    The paper's α and resolutions map onto the preset's by position: its 224/192/160/128 are our
    ``resolutions`` in order, so "1.0 MobileNet-160" is our α=1 at ``resolutions[2]``.
    """
    widths, sizes, stem = preset.widths, preset.resolutions, preset.stem_stride
    top, alpha = sizes[0], widths[0]
    paper_sizes = (224, 192, 160, 128)

    def mobilenet(a: float, r: int, family: str = "mobilenet") -> Cell:
        return Cell(family, r, a, stem)

    def paper_size(r: int) -> int | None:
        i = sizes.index(r)
        return paper_sizes[i] if i < len(paper_sizes) else None

    tables: list[Table] = []
    for tid in preset.tables:
        if tid == "4":
            rows = [
                Row(mobilenet(alpha, top, "conv"), _paper_row("4", "Conv MobileNet")),
                Row(mobilenet(alpha, top), _paper_row("4", "MobileNet")),
            ]
            tables.append(Table("4", "Table 4 — depthwise separable vs full convolution", rows))
        elif tid == "5":
            thin = next((a for a in widths if a == 0.75), widths[min(1, len(widths) - 1)])
            rows = [
                Row(mobilenet(thin, top), _paper_row("5", "0.75 MobileNet")),
                Row(mobilenet(alpha, top, "shallow"), _paper_row("5", "Shallow MobileNet")),
            ]
            tables.append(Table("5", "Table 5 — narrow vs shallow MobileNet", rows))
        elif tid == "6":
            rows = [Row(mobilenet(a, top), _paper_row("6", f"{_width_text(a)} MobileNet-224")) for a in widths]
            tables.append(Table("6", "Table 6 — MobileNet width multiplier α", rows))
        elif tid == "7":
            rows = [Row(mobilenet(alpha, r), _paper_row("7", f"1.0 MobileNet-{paper_size(r)}")) for r in sizes]
            tables.append(Table("7", "Table 7 — MobileNet resolution ρ", rows))
        elif tid == "grid":
            rows = [Row(mobilenet(a, r), None) for a in widths for r in sizes]
            tables.append(Table("grid", "Figures 4–5 — the α×ρ grid", rows))
        elif tid == "8-9":
            half = next((a for a in widths if a == 0.5), widths[-1])
            mid = sizes[min(2, len(sizes) - 1)]
            rows = [
                Row(mobilenet(alpha, top), _paper_row("8", "1.0 MobileNet-224")),
                Row(mobilenet(half, mid), _paper_row("9", f"0.50 MobileNet-{paper_size(mid)}")),
                Row(Cell("squeezenet", top), _paper_row("9", "SqueezeNet")),
                Row(Cell("squeezenet", top, recipe="adamw"), _paper_row("9", "SqueezeNet")),
                Row(Cell("densenet", top), None),
                Row(Cell("xception", top), _paper_row("X 3", "Xception (299)")),
            ]
            tables.append(Table("8-9", "Tables 8–9 — MobileNet vs other networks at the same input size", rows))
        elif tid == "bypass":
            # SqueezeNet has no BatchNorm and stays at chance under the shared SGD recipe: all three use the
            # AdamW alternative (same recipe, budget and seeds for each).
            rows = [
                Row(Cell(family, top, recipe="adamw"), paper_row)
                for family, paper_row in zip(BYPASS_FAMILIES, paper.squeezenet_table6_rows())
            ]
            tables.append(Table("bypass", "SqueezeNet paper Table 6 — bypass connections", rows))
        else:
            raise MobileNetsError(f"unknown table {tid!r}; choose from {', '.join(ALL_TABLES)}")
    return tables


def plan_cells(tables: list[Table]) -> list[Cell]:
    """Every distinct cell of the tables, in order of first use."""
    cells: dict[Cell, None] = {}
    for table in tables:
        for row in table.rows:
            cells.setdefault(row.cell)
    return list(cells)
