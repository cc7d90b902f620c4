"""The `mobilenets` command line: a few lines per subcommand, each calling the library."""

from __future__ import annotations

import argparse
import json
import sys

from mobilenets.errors import MobileNetsError

EPILOG = """examples:
  mobilenets list 'mobilenet_v1_0.5*'
  mobilenets profile mobilenet_v1_0.75_160 --per-layer
  mobilenets profile mobilenet_v1 --width-mult 0.6 --resolution 200 --json
  mobilenets paper-tables
"""


def _positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# --- list -------------------------------------------------------------------------------------------


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered model names",
        epilog="example: mobilenets list 'mobilenet_v1_*_224'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern (default: all)")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from mobilenets.models import list_models

    names = list_models(args.pattern)
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
        "  mobilenets profile mobilenet_v1 --width-mult 0.5 --resolution 160 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="registered model name (see `mobilenets list`)")
    p.add_argument("--width-mult", type=_positive_float, help="width multiplier α (MobileNets only)")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the name's, e.g. 224)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    p.add_argument("--in-chans", type=int, help="input channels (default 3)")
    p.add_argument("--per-layer", action="store_true", help="print every conv/FC layer")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from mobilenets.models import create_model
    from mobilenets.profile import format_profile, profile

    model = create_model(
        args.name,
        width_mult=args.width_mult,
        resolution=args.resolution,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
    )
    prof = profile(model)
    if args.json:
        print(json.dumps({"model": args.name, **prof.to_dict()}, indent=2, ensure_ascii=False))
    else:
        print(format_profile(prof, per_layer=args.per_layer, title=f"{args.name} ({type(model).__name__})"))
    return 0


# --- paper-tables -----------------------------------------------------------------------------------


def _add_paper_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "paper-tables",
        help="every resource figure of paper Tables 1-9 beside our profiled count",
        epilog="example: mobilenets paper-tables --json > tables.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_paper_tables)


def cmd_paper_tables(args: argparse.Namespace) -> int:
    from mobilenets import paper

    comparisons = paper.all_comparisons()
    if args.json:
        print(
            json.dumps(
                {"table1": paper.table1_rows(), "comparisons": [c.to_dict() for c in comparisons]},
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print("Table 1 — MobileNet body architecture, read back from mobilenet_v1_1.0_224\n")
    print(paper.table1_text())
    print("\nTables 2–9 — the paper's figures beside ours (Mult-Adds and parameters in millions)\n")
    print(paper.format_comparisons(comparisons))
    mobilenet = [c for c in comparisons if c.table in "234567" or "MobileNet" in c.label]
    bad = [c for c in mobilenet if not c.matches and not c.note]
    print(
        f"\n{sum(c.matches for c in mobilenet)}/{len(mobilenet)} MobileNet figures match the paper to its "
        f"printed precision; every other mismatch is explained in its note."
    )
    return 1 if bad else 0


# --- reproduce --------------------------------------------------------------------------------------


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="train the paper's comparisons (Tables 4-9, Figures 4-5) on a real dataset and write a report",
        description="Train and evaluate the paper's comparisons with one recipe and fixed seeds, then write "
        "report.md (paper figures beside ours), PNG plots and results.json to --out. Every finished run is "
        "cached under OUT/cells/: a re-run reuses it and an interrupted reproduction resumes.",
        epilog="examples:\n  mobilenets reproduce --preset tiny --out /tmp/tiny      # digits, 2 cells, seconds\n"
        "  nice mobilenets reproduce --preset quick --threads 1   # Fashion-MNIST subset, CPU, ~20 min\n"
        "  mobilenets reproduce --preset full --seeds 3           # the whole dataset, on a GPU",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        help="fashion-mnist, digits, or a folder (ImageFolder tree or CIFAR python pickles); default: the preset's",
    )
    p.add_argument("--preset", default="quick", help="tiny (CI), quick (CPU, minutes) or full (GPU); default quick")
    p.add_argument("--out", help="output folder (default reports/<preset>-<dataset>)")
    p.add_argument("--seeds", type=int, help="runs per cell, seeds 0..N-1 (default: the preset's: 1 quick, 2 full)")
    p.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files (default: Debian's)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads for torch; 1 is fastest on a busy shared machine")
    p.add_argument("--verbose", action="store_true", help="show each run's per-epoch progress bars")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mobilenets.reproduce import default_command, get_preset, reproduce
    from mobilenets.reproduce_report import write_report

    dataset = args.dataset or get_preset(args.preset).dataset
    out = args.out or f"reports/{args.preset}-{dataset.rstrip('/').split('/')[-1]}"
    result = reproduce(
        dataset,
        preset=args.preset,
        out_dir=out,
        seeds=args.seeds,
        data_dir=args.data_dir,
        device=args.device,
        threads=args.threads,
        verbose=args.verbose,
        command=default_command(dataset, args.preset, out, args.seeds, args.threads),
    )
    paths = write_report(result)
    for claim in result.claims:
        print(f"claim {claim.id}: {claim.verdict:<14} {claim.title}")
    print(f"{result.trained_runs} run(s) trained, {result.cached_runs} reused from {out}/cells/")
    print(f"report: {paths['report']}")
    return 0


# ----------------------------------------------------------------------------------------------------

SUBCOMMANDS = [_add_list, _add_profile, _add_paper_tables]
SUBCOMMANDS.append(_add_reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="MobileNets (Howard et al., 2017): build any α×ρ variant, count its cost, and more.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MobileNetsError as e:
        print(f"mobilenets: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilenets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
