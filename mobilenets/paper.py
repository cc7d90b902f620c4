"""The papers' published figures (../shared/PAPER.md for MobileNetV1), and tables that set our profiled numbers
beside them. Each family's rows are in its declaration (``Family.paper_rows``); the baselines that are no family of
ours are below.

Every "ours" figure is counted by :func:`mobilenets.profile.profile` on a real module; nothing here is a
hand-kept copy of our own results. The published values are kept as printed (strings) so a comparison
knows the paper's precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from torch import nn

from mobilenets.models import FAMILIES, create_model
from mobilenets.models.family import PaperRow
from mobilenets.models.layers import DepthwiseSeparable
from mobilenets.profile import Profile, profile

# Table 2 — resource per layer type, 1.0 MobileNet-224: (Mult-Adds %, parameters %).
TABLE2 = {
    "Conv 1×1": ("94.86", "74.59"),
    "Conv DW 3×3": ("3.06", "1.06"),
    "Conv 3×3": ("1.19", "0.02"),
    "Fully Connected": ("0.18", "24.33"),
}
TABLE2_NOTES = {
    "Conv 3×3": "paper's digits transposed: its Mult-Adds column sums to 99.29%; 1.91% makes it 100.01%",
}

# Table 3 — one 14×14×512 layer (Dk=3, M=N=512), each row cumulative: (Mult-Adds M, params M).
TABLE3 = {
    "convolution": ("462", "2.36"),
    "depthwise separable": ("52.3", "0.27"),
    "α = 0.75": ("29.6", "0.15"),
    "ρ = 0.714": ("15.1", "0.15"),
}


# The papers' baselines that are no family of ours: torchvision's models, counted at the papers' inputs. Every
# other row is in its family's declaration (``Family.paper_rows``, at the end of its model file).
BASELINE_ROWS = (
    PaperRow(
        "8",
        "GoogleNet",
        "69.8",
        "1550",
        "6.8",
        "torchvision:googlenet",
        "torchvision's GoogLeNet (BatchNorm, no auxiliary heads) differs from the 2014 original",
    ),
    PaperRow(
        "8",
        "VGG 16",
        "71.5",
        "15300",
        "138",
        "torchvision:vgg16",
        "torchvision's VGG16 counts 15.47G; 15.3G is the commonly cited rounding",
    ),
    PaperRow(
        "9",
        "AlexNet",
        "57.2",
        "720",
        "60",
        "torchvision:alexnet",
        "torchvision's AlexNet is the one-tower variant (Krizhevsky 2014), 61.1M parameters",
    ),
    # The MobileNets paper's Stanford Dogs comparison (its Table 10; ImageNet top-1 from Table 8 of Szegedy et al.
    # 2016 would differ: the row's top-1 is the dogs figure).
    PaperRow(
        "10",
        "Inception V3 (299)",
        "84",
        "5000",
        "23.2",
        "torchvision:inception_v3",
        "the MobileNets paper rounds the Inception V3 paper's 'about 5 billion multiply-adds'; torchvision's model "
        "(TF-slim's layout with BatchNorm, no auxiliary head) counts {ours}M at 299×299",
        params_note="torchvision's Inception V3 has 23.83M parameters without its auxiliary head (27.16M with it); "
        "the paper's 23.2M matches no released model we can count",
    ),
)


def _by_table(rows: list[PaperRow]) -> list[PaperRow]:
    """Each table's rows together, in their order; the tables in the order they first appear."""
    tables = list(dict.fromkeys(row.table for row in rows))
    return sorted(rows, key=lambda row: tables.index(row.table))


# Every row: the families' (in registry order: the V1 paper's Tables 4–9, the V2 and V3 papers', SqueezeNet's
# Table 6, Xception's), the baselines beside them.
PAPER_ROWS = _by_table([row for family in FAMILIES.values() for row in family.paper_rows] + list(BASELINE_ROWS))
# By paper: the V1 paper's Tables 4–9; the V2 and V3 papers'; the other networks of the seed papers (Xception's
# Table 3, the V1 paper's Inception V3 of Table 10).
ROWS = [row for row in PAPER_ROWS if row.table in ("4", "5", "6", "7", "8", "9")]
V2_V3_ROWS = [row for row in PAPER_ROWS if row.table.startswith(("V2 ", "V3 "))]
V4_ROWS = [row for row in PAPER_ROWS if row.table == "V4"]  # the V4 paper's ImageNet results
OTHER_ROWS = [row for row in PAPER_ROWS if row.table in ("X 3", "10")]


def squeezenet_table6_rows() -> list[PaperRow]:
    """SqueezeNet paper Table 6 as rows beside which `reproduce` sets its bypass runs (top-1 only: the paper
    gives sizes, not Mult-Adds; our counts of both are in paper-tables)."""
    return [row for row in PAPER_ROWS if row.table == "SQ 6"]


def squeezenet_table6_comparisons() -> list[Comparison]:
    """SqueezeNet paper Table 6's model sizes recounted: every parameter as a 32-bit float, in MiB (the paper's
    4.8 MB for SqueezeNet 1.0's 1,248,424 parameters is 4.76 MiB)."""
    rows = squeezenet_table6_rows()
    vanilla = profile_spec(rows[0].build).params  # the table's first row: SqueezeNet without bypass
    out = []
    for row in rows:
        params = profile_spec(row.build).params
        note = row.params_note.format(extra=params - vanilla)
        out.append(Comparison(row.table, row.label, "size (MiB)", row.size_mb, params * 4 / 2**20, note))
    return out


def printed_digits(value: str) -> int:
    return len(value.split(".")[1]) if "." in value else 0


def matches_printed(ours: float, printed: str) -> bool:
    """True when ``printed`` is ``ours`` rounded or truncated to the printed precision.

    The paper is not consistent: it prints 568.74 as 569 (rounding) but 290.68 as 290 (truncation).
    """
    digits = printed_digits(printed)
    scale = 10**digits
    paper = round(float(printed) * scale)
    return paper in (round(ours * scale), math.floor(ours * scale + 1e-9))


def table_source(table: str) -> str:
    """Where a row's table is printed: "7" → "V1 paper Table 7", "V3 3" → "V3 paper Table 3", "V4" → "V4 paper"."""
    generation, _, number = table.rpartition(" ")
    if not generation and number.startswith("V"):
        return f"{number} paper"
    return f"{generation or 'V1'} paper Table {number}"


def _build(spec: str) -> nn.Module:
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        # The inference networks the papers count: no auxiliary training heads.
        kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
        model.resolution = 299 if name == "inception_v3" else 224
        return model
    return create_model(spec)


@cache
def profile_spec(spec: str) -> Profile:
    """Profile of a row's model at its 224-style default input (cached: the baselines are big)."""
    model = _build(spec)
    return profile(model, getattr(model, "resolution", 224))


def row_params(row: PaperRow, prof: Profile) -> int:
    """The parameter count comparable to the paper's: conv/FC weights for our MobileNets V1–V3 (BatchNorm
    folds into them, as the papers count), every parameter for the baselines (their papers count biases)."""
    return prof.paper_params if row.build.startswith("mobilenet_") else prof.params


@dataclass
class Comparison:
    table: str
    label: str
    quantity: str  # "Mult-Adds (M)", "params (M)", "Mult-Adds %", ...
    paper: str
    ours: float
    note: str = ""

    @property
    def deviation(self) -> float:
        return (self.ours - float(self.paper)) / float(self.paper) if float(self.paper) else 0.0

    @property
    def matches(self) -> bool:
        return matches_printed(self.ours, self.paper)

    def to_dict(self) -> dict:
        return {
            "table": self.table,
            "label": self.label,
            "quantity": self.quantity,
            "paper": self.paper,
            "ours": self.ours,
            "deviation": self.deviation,
            "matches": self.matches,
            "note": self.note,
        }


def table1_rows(name: str = "mobilenet_v1_1.0_224") -> list[tuple[str, str, str]]:
    """Paper Table 1 read back from the real model: (type / stride, filter shape, input size)."""
    prof = profile(create_model(name))
    rows = []
    last_output = prof.layers[0].input_shape
    for layer in prof.layers:
        if layer.type == "Fully Connected":
            c = layer.input_shape[0]
            c_out = layer.output_shape[0]
            _, h, w = last_output
            rows.append(("Avg Pool / s1", f"Pool {h}×{w}", f"{h}×{w}×{c}"))
            rows.append(("FC / s1", f"{c}×{c_out}", f"1×1×{c}"))
            rows.append(("Softmax / s1", "Classifier", f"1×1×{c_out}"))
            continue
        c, h, w = layer.input_shape
        stride = h // layer.output_shape[1]
        kind = "Conv dw" if layer.type.startswith("Conv DW") else "Conv"
        out_c = layer.output_shape[0]
        k = layer.type.split()[-1]
        shape = f"{k}×{c} dw" if kind == "Conv dw" else f"{k}×{c}×{out_c}"
        rows.append((f"{kind} / s{stride}", shape, f"{h}×{w}×{c}"))
        last_output = layer.output_shape
    return rows


def table1_text(name: str = "mobilenet_v1_1.0_224") -> str:
    lines = [f"{'Type / Stride':<16} {'Filter Shape':<18} {'Input Size':<14}"]
    lines += [f"{t:<16} {f:<18} {i:<14}" for t, f, i in table1_rows(name)]
    return "\n".join(lines)


def table2_comparisons() -> list[Comparison]:
    shares = profile_spec("mobilenet_v1_1.0_224").by_type()
    out = []
    for t, (madds, params) in TABLE2.items():
        ours_m, ours_p = shares.get(t, (0.0, 0.0))
        out.append(Comparison("2", t, "Mult-Adds %", madds, 100 * ours_m, TABLE2_NOTES.get(t, "")))
        out.append(Comparison("2", t, "params %", params, 100 * ours_p))
    return out


def table3_layers() -> dict[str, tuple[nn.Module, int]]:
    """The real layers behind Table 3's rows, with their input side Df."""
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    return {
        "convolution": (conv, 14),
        "depthwise separable": (DepthwiseSeparable(512, 512), 14),
        "α = 0.75": (DepthwiseSeparable(384, 384), 14),
        "ρ = 0.714": (DepthwiseSeparable(384, 384), 10),  # 14 · 0.714 = 10
    }


def table3_comparisons() -> list[Comparison]:
    out = []
    for label, (module, size) in table3_layers().items():
        in_chans = module.in_channels if isinstance(module, nn.Conv2d) else module.depthwise.conv.in_channels
        prof = profile(module, size, in_chans=in_chans)
        madds, params = TABLE3[label]
        out.append(Comparison("3", label, "Mult-Adds (M)", madds, prof.mult_adds / 1e6))
        out.append(Comparison("3", label, "params (M)", params, prof.paper_params / 1e6))
    return out


def resource_comparisons(
    progress: Callable[[str], None] | None = None, rows: list[PaperRow] | None = None
) -> list[Comparison]:
    """Each row's printed Mult-Adds and parameters beside our counts (default: every row that prints them)."""
    out = []
    for row in [r for r in PAPER_ROWS if r.params] if rows is None else rows:
        if progress:
            progress(row.label)
        prof = profile_spec(row.build)
        note = row.note
        if row.mult_adds_without_fc:
            fc = sum(layer.mult_adds for layer in prof.layers if layer.type == "Fully Connected")
            out.append(
                Comparison(
                    row.table,
                    row.label,
                    "Mult-Adds (M)",
                    row.mult_adds,
                    (prof.mult_adds - fc) / 1e6,
                    note + f" [shown without FC; all layers {prof.mult_adds / 1e6:.2f}M]",
                )
            )
        elif row.mult_adds:
            ours = prof.mult_adds / 1e6
            out.append(
                Comparison(row.table, row.label, "Mult-Adds (M)", row.mult_adds, ours, note.format(ours=f"{ours:.2f}"))
            )
        out.append(
            Comparison(row.table, row.label, "params (M)", row.params, row_params(row, prof) / 1e6, row.params_note)
        )
    return out


def all_comparisons() -> list[Comparison]:
    return table2_comparisons() + table3_comparisons() + resource_comparisons() + squeezenet_table6_comparisons()


def format_comparisons(comparisons: list[Comparison]) -> str:
    lines = [f"{'table':<6}{'model / row':<28}{'quantity':<15}{'paper':>9}{'ours':>11}{'Δ':>9}  match  note"]
    for c in comparisons:
        digits = max(printed_digits(c.paper), 2)
        mark = "yes" if c.matches else "NO"
        lines.append(
            f"{c.table:<6}{c.label:<28}{c.quantity:<15}{c.paper:>9}{c.ours:>11.{digits}f}{c.deviation:>+9.2%}  "
            f"{mark:<5}  {c.note}"
        )
    return "\n".join(lines)
