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


# --- export -----------------------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width-mult", type=_positive_float, help="width multiplier α (MobileNets only)")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the name's, e.g. 224)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    p.add_argument("--in-chans", type=int, help="input channels (default 3; 1 uses Fashion-MNIST images)")
    p.add_argument("--stem-stride", type=int, help="stride of the first conv (1 for 28-32 px images)")
    p.add_argument("--checkpoint", help="weights to load: a state_dict file (torch.save / safetensors)")


def _build_model(args: argparse.Namespace):
    from mobilenets.export import load_weights
    from mobilenets.models import create_model

    model = create_model(
        args.name,
        width_mult=args.width_mult,
        resolution=args.resolution,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        stem_stride=args.stem_stride,
    )
    if args.checkpoint:
        load_weights(model, args.checkpoint)
    return model.eval()


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="fold BN, export to ONNX / ExecuTorch-XNNPACK / OpenVINO (fp32, bf16, int8) and verify",
        epilog="examples:\n"
        "  mobilenets export mobilenet_v1_1.0_224 --format onnx -o mobilenet.onnx\n"
        "  mobilenets export mobilenet_v1_1.0_224 --format openvino --precision int8 --calib 300 -o m.xml\n"
        "  mobilenets export mobilenet_v1_0.5_160 --format executorch --precision int8 -o m.pte\n"
        "  mobilenets export mobilenet_v1 --width-mult 0.25 --resolution 28 --in-chans 1 --num-classes 10 \\\n"
        "      --stem-stride 1 --checkpoint fmnist.pt --format onnx --precision int8 -o fmnist_int8.onnx\n\n"
        "The file is checked by its own runtime against PyTorch on real images (photos for 3-channel models,\n"
        "Fashion-MNIST for 1-channel ones); a file that fails is not written.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="registered model name (see `mobilenets list`)")
    _add_model_args(p)
    p.add_argument("--format", default="onnx", help="onnx | executorch | openvino (default onnx)")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 (OpenVINO) | int8 (default fp32)")
    p.add_argument("-o", "--output", help="output file (.onnx, .pte or .xml; default NAME[_PRECISION].EXT)")
    p.add_argument("--calib", type=int, default=200, help="real training images to calibrate int8 on (default 200)")
    p.add_argument("--verify-images", type=int, default=32, help="real images to verify on (default 32)")
    p.add_argument("--min-agreement", type=float, help="top-1 agreement required, 0-1 (default .97 fp32, .8 int8)")
    p.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from mobilenets import export as ex

    ex.check_target(args.format, args.precision)
    if args.calib < 1 or args.verify_images < 1:
        raise MobileNetsError("--calib and --verify-images must be >= 1")
    model = _build_model(args)
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    output = args.output or f"{args.name}{suffix}{ex.SUFFIXES[args.format]}"
    res = model.resolution
    calib = ex.real_images(args.calib, model.in_chans, res, "train") if args.precision == "int8" else None
    verify = None if args.no_verify else ex.real_images(args.verify_images, model.in_chans, res, "test")
    result = ex.export(
        model,
        output,
        args.format,
        args.precision,
        calib_images=calib,
        verify=not args.no_verify,
        verify_images=verify,
        min_agreement=args.min_agreement,
        progress=lambda m: print(m, file=sys.stderr),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if result.verification is not None:
        print(result.verification.summary())
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {args.format} {args.precision})")
    return 0


# --- bench ------------------------------------------------------------------------------------------


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency (median, p90) on eager / ONNX Runtime / ExecuTorch / OpenVINO; --grid for the α×ρ grid",
        epilog="examples:\n"
        "  mobilenets bench mobilenet_v1_1.0_224 --runtime onnxruntime openvino --precision fp32 int8 --threads 2\n"
        "  mobilenets bench mobilenet_v1_0.5_160 --runtime eager --batch-size 1 8\n"
        "  mobilenets bench --grid --runtime onnxruntime openvino --precision fp32 int8 --out-dir reports/grid\n"
        "  mobilenets bench --grid --widths 0.25 0.5 --resolutions 128 --runtime eager --out-dir /tmp/g",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="registered model name (not with --grid)")
    _add_model_args(p)
    p.add_argument("--grid", action="store_true", help="the 16 models α∈{1,.75,.5,.25} × {224,192,160,128}")
    p.add_argument("--widths", type=float, nargs="+", help="subset of the grid's widths")
    p.add_argument("--resolutions", type=int, nargs="+", help="subset of the grid's resolutions")
    p.add_argument(
        "--runtime", nargs="+", default=["eager", "onnxruntime"], help="eager onnxruntime executorch openvino"
    )
    p.add_argument("--precision", nargs="+", default=["fp32"], help="fp32 bf16 int8 (each runtime runs what it can)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's default)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--out-dir", help="--grid: write grid.json and PNG plots here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilenets import bench

    for r in args.runtime:
        if r not in bench.RUNTIMES:
            raise MobileNetsError(f"unknown runtime {r!r}; choose from {', '.join(bench.RUNTIMES)}")
    if args.threads is not None and args.threads < 1:
        raise MobileNetsError(f"--threads must be >= 1, got {args.threads}")
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.grid:
        if args.name:
            raise MobileNetsError("--grid measures the paper's 16 models: drop the model name")
        if len(args.batch_size) != 1:
            raise MobileNetsError("--grid takes one --batch-size")
        if args.out_dir and not Path(args.out_dir).is_dir():
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        rows = bench.bench_grid(
            args.widths or bench.GRID_WIDTHS,
            args.resolutions or bench.GRID_RESOLUTIONS,
            args.runtime,
            args.precision,
            args.batch_size[0],
            args.threads,
            args.runs,
            args.warmup,
            progress=say,
        )
        if args.out_dir:
            bench.save_grid(rows, Path(args.out_dir) / "grid.json")
            for path in bench.plot_grid(rows, args.out_dir):
                say(f"wrote {path}")
        if args.json:
            print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
        else:
            print(bench.format_grid(rows))
        return 0
    if not args.name:
        raise MobileNetsError("give a model name (e.g. mobilenet_v1_1.0_224) or --grid")
    model = _build_model(args)
    results = bench.bench_model(
        model,
        args.name,
        args.runtime,
        args.precision,
        args.batch_size,
        args.threads,
        args.runs,
        args.warmup,
        skip_unsupported=True,
        progress=say,
    )
    if not results:
        raise MobileNetsError(
            f"none of {', '.join(args.runtime)} runs {', '.join(args.precision)}: "
            "eager fp32/bf16, onnxruntime fp32/int8, executorch fp32/int8 (batch 1), openvino fp32/bf16/int8"
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        return 0
    print(f"{'runtime':<12} {'precision':<9} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8}")
    for r in results:
        img_per_s = r.batch_size / r.latency.median_ms * 1e3
        print(
            f"{r.runtime:<12} {r.precision:<9} {r.batch_size:>5} {r.latency.median_ms:>10.3f} "
            f"{r.latency.p90_ms:>8.3f} {img_per_s:>8.1f}"
        )
    return 0


# --- select -----------------------------------------------------------------------------------------


def _count(text: str) -> float:
    """A count in millions ("1.5" = 1.5M) or with a suffix: 500K, 1.5M, 0.2G."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}
    try:
        if text and text[-1].upper() in scale:
            return float(text[:-1]) * scale[text[-1].upper()]
        return float(text) * 1e6
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 1.5 (millions), 500K or 1.5M, got {text!r}") from None


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="the α×ρ MobileNets that fit a latency / parameter / Mult-Adds budget, best first",
        epilog="examples:\n"
        "  mobilenets select --max-params 1.5            # millions; 1500K and 1.5M also work\n"
        "  mobilenets select --max-madds 200M\n"
        "  mobilenets select --max-latency-ms 2 --runtime onnxruntime/int8 --results reports/grid/grid.json\n"
        "  mobilenets select --max-latency-ms 5 --runtime onnxruntime   # measures the grid first",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--max-latency-ms", type=_positive_float, help="median batch-1 latency budget (ms)")
    p.add_argument("--max-params", type=_count, help="parameter budget (millions, or with K/M/G)")
    p.add_argument("--max-madds", type=_count, help="Mult-Adds budget (millions, or with K/M/G)")
    p.add_argument("--runtime", help="runtime or runtime/precision for the latency budget, e.g. onnxruntime/int8")
    p.add_argument("--results", help="grid.json from `mobilenets bench --grid --out-dir` (else measured now)")
    p.add_argument("--threads", type=int, help="threads when measuring now")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_select)


def cmd_select(args: argparse.Namespace) -> int:
    from mobilenets import bench

    if args.max_latency_ms is None and args.max_params is None and args.max_madds is None:
        raise MobileNetsError("give a budget: --max-latency-ms, --max-params or --max-madds")
    if args.results:
        rows = bench.load_grid(args.results)
    elif args.max_latency_ms is not None:
        runtime, _, precision = (args.runtime or "onnxruntime").partition("/")
        bench.check_runtime(runtime, precision or "fp32")
        print(f"measuring the grid on {runtime} {precision or 'fp32'} (pass --results to reuse)", file=sys.stderr)
        rows = bench.bench_grid(
            runtimes=[runtime],
            precisions=[precision or "fp32"],
            threads=args.threads,
            runs=20,
            warmup=3,
            progress=lambda m: print(m, file=sys.stderr),
        )
    else:
        rows = bench.grid_cost_rows()
    chosen = bench.select(rows, args.max_latency_ms, args.max_params, args.max_madds, args.runtime)
    if args.json:
        print(json.dumps([{**s.row.to_dict(), "selected_latency_ms": s.latency_ms} for s in chosen], indent=2))
        return 0
    if not chosen:
        print("no variant fits the budget")
        return 1
    print(f"{'model':<22} {'Mult-Adds (M)':>13} {'params (M)':>10} {'top-1 %':>8} {'latency ms':>10}")
    for s in chosen:
        top1 = f"{s.row.top1:.1f}" if s.row.top1 is not None else "—"
        lat = f"{s.latency_ms:.2f}" if s.latency_ms is not None else "—"
        print(f"{s.row.model:<22} {s.row.mult_adds / 1e6:>13.1f} {s.row.num_params / 1e6:>10.2f} {top1:>8} {lat:>10}")
    return 0


# ----------------------------------------------------------------------------------------------------

SUBCOMMANDS = [_add_list, _add_profile, _add_paper_tables, _add_export, _add_bench, _add_select]


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
