"""`mobilenets list`, `profile` and `paper-tables`: the registry and the models' costs."""

from __future__ import annotations

import argparse
import json

from mobilenets.cli.common import positive_float
from mobilenets.errors import MobileNetsError

# --- list -------------------------------------------------------------------------------------------


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered model names (classifiers and detectors)",
        epilog="examples:\n  mobilenets list 'mobilenet_v1_*_224'\n  mobilenets list 'ssd*'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern (default: all)")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from mobilenets.detection import list_detectors
    from mobilenets.models import list_models

    names = sorted(list_models(args.pattern) + list_detectors(args.pattern))
    if not names:
        raise MobileNetsError(f"no model matches {args.pattern!r}; run `mobilenets list` to see all names")
    print("\n".join(names))
    return 0


# --- profile ----------------------------------------------------------------------------------------


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="exact Mult-Adds and parameters of a model (per layer, by type as paper Table 2)",
        epilog="examples:\n  mobilenets profile mobilenet_v1_1.0_224 --per-layer\n"
        "  mobilenets profile mobilenet_v1 --width-mult 0.5 --resolution 160 --json\n"
        "  mobilenets profile mobilenet_v1 --features-only --resolution 300   # an SSD300 backbone\n"
        "  mobilenets profile mobilenet_v3_small_0.75_224                      # with the V3 paper's figures\n"
        "  mobilenets profile mobilenet_v3_large_0.75_224 --layout torchvision # torchvision's thinner α=0.75\n"
        "  mobilenets profile mobilenet_v2 --grid\n"
        "  mobilenets profile ssdlite320_mobilenet_v3_large                     # a detector: backbone, extra, head",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="registered model name (see `mobilenets list`)")
    p.add_argument(
        "--layout",
        choices=("tf", "torchvision"),
        help="MobileNetV3 at α ≠ 1: 'tf' (default; the paper's, TF-slim's and Keras's widths) or 'torchvision' "
        "(torchvision's and timm's α ≠ 1 checkpoints)",
    )
    p.add_argument("--width-mult", type=positive_float, help="width multiplier α (MobileNets only)")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the name's, e.g. 224)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    p.add_argument("--in-chans", type=int, help="input channels (default 3)")
    p.add_argument("--per-layer", action="store_true", help="print every conv/FC layer")
    p.add_argument(
        "--features-only",
        action="store_true",
        help="count the backbone alone: no classifier, up to the stride-32 feature map (as a detector uses it)",
    )
    p.add_argument(
        "--grid",
        action="store_true",
        help="Markdown table of Mult-Adds for the registered α×ρ variants of NAME's family",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from mobilenets.detection import DETECTORS

    if args.name in DETECTORS or args.name.startswith("ssd"):  # a misspelt detector gets the detectors' hint
        return _profile_detector(args)
    from mobilenets.models import FAMILY_GRIDS, base_name, create_model
    from mobilenets.profile import format_profile, grid_table, profile

    if args.grid:
        family = base_name(args.name)  # mobilenet_v1_0.75_160 -> mobilenet_v1
        if family not in FAMILY_GRIDS:
            raise MobileNetsError(f"--grid needs a MobileNet family ({', '.join(FAMILY_GRIDS)}), got {args.name!r}")
        print(grid_table(family))
        return 0
    model = create_model(
        args.name,
        width_mult=args.width_mult,
        resolution=args.resolution,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        layout=args.layout,
        features_only=args.features_only,
    )
    prof = profile(model)
    if args.json:
        print(json.dumps({"model": args.name, **prof.to_dict()}, indent=2, ensure_ascii=False))
    else:
        print(format_profile(prof, per_layer=args.per_layer, title=f"{args.name} ({type(model).__name__})"))
        if not args.features_only and args.width_mult is args.resolution is args.layout is None:
            for line in paper_lines(args.name, prof):
                print(line)
    return 0


def _profile_detector(args: argparse.Namespace) -> int:
    """A detector's exact costs per part (no NMS), counted on the meta device (shapes only: instant)."""
    import torch

    from mobilenets.detection import create_detector
    from mobilenets.detection.costs import detector_costs

    if args.grid or args.features_only or args.per_layer or args.layout or args.in_chans:
        raise MobileNetsError("for a detector, profile takes --width-mult, --resolution, --num-classes and --json")
    kwargs = {"width_mult": args.width_mult, "size": args.resolution, "num_classes": args.num_classes}
    with torch.device("meta"):
        model = create_detector(args.name, **{k: v for k, v in kwargs.items() if v is not None})
    costs = detector_costs(model)
    if args.json:
        parts = {k: {"mult_adds": m, "num_params": n} for k, (m, n) in costs.parts.items()}
        out = {"model": args.name, "input_size": list(costs.input_size), "mult_adds": costs.mult_adds}
        print(json.dumps({**out, "num_params": costs.params, "parts": parts}, indent=2))
        return 0
    h, w = costs.input_size
    print(
        f"{args.name} at {h}×{w}, {model.num_classes} classes (background included); box decoding and NMS not counted"
    )
    print(f"{'part':<10} {'Mult-Adds (M)':>14} {'params (M)':>11}")
    for part, (mult_adds, params) in costs.parts.items():
        print(f"{part:<10} {mult_adds / 1e6:>14.1f} {params / 1e6:>11.3f}")
    print(f"{'total':<10} {costs.mult_adds / 1e6:>14.1f} {costs.params / 1e6:>11.3f}")
    print("the papers' figures beside ours: python -m mobilenets.detection.costs (reports/detection/costs.md)")
    return 0


def paper_lines(name: str, prof) -> list[str]:
    """The paper's figures for a registered name (its first row in the papers' tables), beside ours."""
    from mobilenets import paper

    row = next((r for r in paper.ROWS + paper.V2_V3_ROWS + paper.V4_ROWS if r.build == name), None)
    if row is None:
        return []
    source = paper.table_source(row.table).replace(" Table", ", Table")  # "V3 paper, Table 3", "V4 paper"
    return [
        f"paper ({source}, {row.label}): {row.mult_adds} M Mult-Adds, "
        f"{row.params} M parameters, ImageNet top-1 {row.top1}%"
    ]


# --- paper-tables -----------------------------------------------------------------------------------


def _add_paper_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "paper-tables",
        help="every resource figure of paper Tables 1-9 (and the V2-V4 papers' tables) beside our profiled count; "
        "the detection tables (V1 Table 13, V2 Tables 5-6, V3 Table 6, torchvision's SSDLite) after them",
        epilog="examples:\n  mobilenets paper-tables\n  mobilenets paper-tables --json > tables.json   "
        "# the detection rows under 'detection'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_paper_tables)


def cmd_paper_tables(args: argparse.Namespace) -> int:
    from mobilenets import paper
    from mobilenets.detection import costs

    comparisons = paper.all_comparisons()
    detection = costs.cost_comparisons()
    if args.json:
        out = {"table1": paper.table1_rows(), "comparisons": [c.to_dict() for c in comparisons]}
        print(json.dumps({**out, "detection": [c.to_dict() for c in detection]}, indent=2, ensure_ascii=False))
        return 0
    print("Table 1 — MobileNet body architecture, read back from mobilenet_v1_1.0_224\n")
    print(paper.table1_text())
    print(
        "\nTables 2–9, V2 paper Table 4, V3 paper Table 3, the V4 paper's results — the papers' figures beside ours "
        "(Mult-Adds and parameters in millions)\n"
    )
    print(paper.format_comparisons(comparisons))
    mobilenet = [c for c in comparisons if c.table in "234567" or "MobileNet" in c.label or c.table == "V4"]
    bad = [c for c in mobilenet if not c.matches and not c.note]
    print(
        f"\n{sum(c.matches for c in mobilenet)}/{len(mobilenet)} MobileNet figures match the paper to its "
        f"printed precision; every other mismatch is explained in its note."
    )
    print(
        "\nDetection — V1 paper Table 13, V2 paper Tables 5–6, V3 paper Table 6, torchvision's SSDLite: the COCO mAP "
        "they print,\nand their Mult-Adds (billions) and parameters (millions) beside our exact count of the same "
        "model (× = ours / paper;\nbox decoding and NMS not counted). Layout TF: 3 anchors per location on the lowest "
        "map, as the papers ran;\ntorchvision: 6 there, our SSDLite builders' default.\n"
    )
    print(costs.format_cost_comparisons(detection))
    bad += [c for c in detection if not c.note]
    return 1 if bad else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's subcommands (in `mobilenets --help` order)."""
    _add_list(sub)
    _add_profile(sub)
    _add_paper_tables(sub)
