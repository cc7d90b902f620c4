"""`mobilenets export`, `bench` and `select`: files for each runtime, their latency, the variant that fits."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobilenets.cli.common import count, positive_float
from mobilenets.errors import MobileNetsError

# --- export -----------------------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser, weights: bool = True) -> None:
    p.add_argument("--width-mult", type=positive_float, help="width multiplier α (MobileNets only)")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the name's, e.g. 224)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    p.add_argument("--in-chans", type=int, help="input channels (default 3; 1 uses Fashion-MNIST images)")
    p.add_argument("--stem-stride", type=int, help="stride of the first conv (1 for 28-32 px images)")
    p.add_argument(
        "--checkpoint",
        help="model.pt/checkpoint.pt of `mobilenets train` (rebuilds its own model), or a plain state_dict",
    )
    if weights:
        p.add_argument("--weights", help="weights file: ours (.safetensors + card), timm (.pth) or TF-slim (.pb)")
        p.add_argument(
            "--pretrained", action="store_true", help="Google's ImageNet MobileNetV1 1.0 (see `mobilenets predict`)"
        )


def _build_model(args: argparse.Namespace):
    """(model in eval mode, the (mean, std) its weights expect or None) from the shared model options."""
    from mobilenets.deploy.export import build_model

    return build_model(
        args.name,
        checkpoint=args.checkpoint,
        weights=getattr(args, "weights", None),
        pretrained=getattr(args, "pretrained", False),
        width_mult=args.width_mult,
        resolution=args.resolution,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        stem_stride=args.stem_stride,
    )


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="fold BN, export to ONNX / ExecuTorch-XNNPACK / OpenVINO / LiteRT / ncnn / MNN (fp32, fp16, bf16, int8) "
        "and verify",
        epilog="examples:\n"
        "  mobilenets export mobilenet_v1_1.0_224 --pretrained --format onnx -o mobilenet.onnx\n"
        "  mobilenets export --checkpoint runs/demo/model.pt --format onnx --precision int8 -o demo_int8.onnx\n"
        "  mobilenets export mobilenet_v1_1.0_224 --format openvino --precision int8 --calib 300 -o m.xml\n"
        "  mobilenets export mobilenet_v1_0.5_160 --format executorch --precision int8 -o m.pte\n"
        "  mobilenets export mobilenet_v1_1.0_224 --pretrained --format tflite --precision int8 -o m.tflite\n"
        "  mobilenets export --checkpoint runs/demo/model.pt --format web -o demo_web   # a web page\n"
        "  mobilenets export mobilenet_v1_1.0_224 --pretrained --format ncnn -o m.param   # + m.bin, m.param.json\n"
        "  mobilenets export mobilenet_v1_1.0_224 --pretrained --format mnn --precision fp16 -o m_fp16.mnn\n"
        "  mobilenets export mobilenet_v1 --width-mult 0.25 --resolution 28 --in-chans 1 --num-classes 10 \\\n"
        "      --stem-stride 1 --checkpoint fmnist.pt --format onnx --precision int8 -o fmnist_int8.onnx\n"
        "  mobilenets export --checkpoint runs/det/model.pt --format onnx --precision int8 -o det_int8.onnx\n"
        "  mobilenets export --checkpoint runs/det/model.pt --format ncnn --precision fp16 -o det_fp16.param\n"
        "  mobilenets export --checkpoint runs/det/model.pt --format web -o det_web   # draws boxes on a photo\n\n"
        "A detector's file (ONNX, OpenVINO fp32) gives final boxes, labels and scores, NMS included; it is checked\n"
        "on detections (composite test images + photos: fp32 the same detections, fp16 (ncnn, MNN) the same\n"
        "within IoU 0.98 and score 0.05, int8 its confident ones kept and COCO mAP within 1 point) and takes a\n"
        "[0, 1] image resized to its input (see deploy/detection.py).\n"
        "The file is checked by its own runtime against PyTorch on real images (photos for 3-channel models,\n"
        "Fashion-MNIST for 1-channel ones); a file that fails is not written. int8 files are safe on every CPU\n"
        "(7-bit weights where activations are u8: no saturation on x86 without VNNI); a file for a CPU feature\n"
        "this machine lacks (bf16) is still written, and the output says which check could not run here.\n"
        "--format web writes a folder (model.onnx, model.json, classify.js, index.html, onnxruntime-web's wasm)\n"
        "that classifies offline under any static server; it is verified in headless Chromium, on the page's\n"
        "own decoding and preprocessing too (needs `apt-get install chromium` and `npm ci` in the repository).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "name", nargs="?", help="registered model name (see `mobilenets list`); optional with a training --checkpoint"
    )
    _add_model_args(p)
    p.add_argument(
        "--format", default="onnx", help="onnx | executorch | openvino | tflite | web | ncnn | mnn (default onnx)"
    )
    p.add_argument(
        "--precision", default="fp32", help="fp32 | fp16 (ncnn, MNN) | bf16 (OpenVINO) | int8 (default fp32)"
    )
    p.add_argument(
        "-o",
        "--output",
        help="output file (.onnx, .pte, .xml or .tflite; default NAME[_PRECISION].EXT), or folder for web "
        "(default NAME[_PRECISION]_web)",
    )
    p.add_argument(
        "--int8-weight-bits",
        type=int,
        default=7,
        choices=(7, 8),
        help="ONNX/OpenVINO int8 weights: 7 (default) runs right on every CPU; 8 is only right on CPUs with "
        "VNNI/AMX or Arm, and saturates (wrong answers) on AVX2-only x86",
    )
    p.add_argument("--calib", type=int, default=200, help="real training images to calibrate int8 on (default 200)")
    p.add_argument(
        "--calibration",
        help="int8 activation ranges: onnx minmax|percentile, openvino nncf|minmax|histogram, "
        "executorch/tflite minmax|mse, mnn ema|kl (default: the first)",
    )
    p.add_argument(
        "--equalize",
        action="store_true",
        help="int8 after cross-layer equalization of ReLU-joined depthwise/pointwise pairs (Nagel et al. 2019)",
    )
    p.add_argument(
        "--verify-images", type=int, default=512, help="real images to verify on (default 512; ~1 min at 1.0/224)"
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        help="top-1 agreement required, 0-1, within the measured agreement's 95%% interval "
        "(default .97: fp32 on all images, int8 on the float model's clear decisions)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from mobilenets.deploy import export as ex
    from mobilenets.deploy.images import real_images

    if _is_detector_export(args):
        return _export_detector(args)
    ex.check_target(args.format, args.precision, args.int8_weight_bits)
    ex.check_calibration(args.format, args.calibration)
    if args.calib < 1 or args.verify_images < 1:
        raise MobileNetsError("--calib and --verify-images must be >= 1")
    model, stats = _build_model(args)
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    output = args.output or f"{args.name or 'model'}{suffix}{ex.SUFFIXES[args.format] or '_web'}"
    res = model.resolution
    calib = real_images(args.calib, model.in_chans, res, "train", stats=stats) if args.precision == "int8" else None
    verify = None if args.no_verify else real_images(args.verify_images, model.in_chans, res, "test", stats=stats)
    result = ex.export(
        model,
        output,
        args.format,
        args.precision,
        calib_images=calib,
        verify=not args.no_verify,
        verify_images=verify,
        min_agreement=args.min_agreement,
        weight_bits=args.int8_weight_bits,
        calibration=args.calibration,
        equalize=args.equalize,
        progress=lambda m: print(m, file=sys.stderr),
        card=_web_card(args, model, stats) if args.format == "web" else None,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if result.verification is not None:
        print(result.verification.summary())
    for line in result.checks:
        print(line)
    for why in result.skipped:
        print(f"not verified here: {why}")
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {args.format} {args.precision})")
    print(f"runs on: {result.built_for['runs_on']}")
    if args.format == "web":
        print(f"serve it: cd {result.path} && python -m http.server (or python serve.py for 2 threads: ?threads=2)")
    return 0


def _is_detector_export(args: argparse.Namespace) -> bool:
    """Whether `export` was given a detector: a detection run's model.pt, or a detector's name."""
    from mobilenets.detection import is_detector

    if args.checkpoint:
        from mobilenets.weights.checkpoint import load_checkpoint

        if not Path(args.checkpoint).is_file():  # the classifier path says what is missing, and how to fix it
            return False
        meta = load_checkpoint(args.checkpoint).get("meta")
        return isinstance(meta, dict) and meta.get("task") == "detection"
    return bool(args.name) and is_detector(args.name)


def _export_detector(args: argparse.Namespace) -> int:
    """`export` of a detector: the file gives final boxes, labels and scores, verified on detections."""
    from mobilenets.deploy import detection as det

    for flag, value in (("--calibration", args.calibration), ("--equalize", args.equalize)):
        if value:
            raise MobileNetsError(f"{flag} is for classifiers; a detector's int8 calibrates by MinMax")
    if args.min_agreement is not None or args.in_chans or args.stem_stride or getattr(args, "weights", None):
        raise MobileNetsError(
            "--min-agreement, --in-chans, --stem-stride and --weights are for classifiers; a detector exports from "
            "its --checkpoint (or its name, with random weights: --no-verify)"
        )
    if args.calib < 1 or args.verify_images < 1:
        raise MobileNetsError("--calib and --verify-images must be >= 1")
    if args.checkpoint:
        from mobilenets.weights.checkpoint import load_model

        if args.width_mult or args.resolution or args.num_classes:
            raise MobileNetsError("a detector's checkpoint sets its width, size and classes; drop those options")
        model, meta = load_model(args.checkpoint)
        # Calibrated on the detector's own training images, verified on its test split (mAP: same classes).
        classes, name, spec = meta.get("classes"), meta["model"], meta.get("dataset") or "composite"
    else:
        from mobilenets.detection import create_detector

        kwargs = {"width_mult": args.width_mult, "size": args.resolution, "num_classes": args.num_classes}
        model = create_detector(args.name, **{k: v for k, v in kwargs.items() if v is not None}).eval()
        classes, name, spec = None, args.name, "composite"
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    calib = dataset = None
    if args.precision == "int8":
        say(f"calibrating on {args.calib} training images of {spec}")
        calib = det.calibration_images(model.resolution, args.calib, spec)
    if not args.no_verify:
        from mobilenets.data.detection import load_detection_dataset

        test = load_detection_dataset(spec, "test")
        dataset = test.subset(range(min(args.verify_images, len(test))))
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    from mobilenets.deploy.export import SUFFIXES

    output = args.output or f"{name}{suffix}{SUFFIXES.get(args.format) or '_web'}"
    result = det.export_detector(
        model,
        output,
        args.format,
        args.precision,
        classes=classes,
        calib_images=calib,
        verify=not args.no_verify,
        verify_dataset=dataset,
        weight_bits=args.int8_weight_bits,
        progress=say,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if result.verification is not None:
        print(result.verification.summary())
    for line in result.checks:  # ncnn, MNN: the figures under the runtime's defaults; web: the page on image files
        print(line)
    info = result.built_for
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {args.format} {args.precision} detector)")
    print(f"NMS: in the {info['nms']['where']} ({info['nms']['op']})")
    if "int8" in info:
        print(f"float in the int8 file: {info['int8']['float']}")
    print(f"runs on: {info['runs_on']}")
    if args.format == "web":
        print(f"serve it: cd {result.path} && python -m http.server, then drop a photo on the page")
    return 0


def _web_card(args: argparse.Namespace, model, stats):
    """The classes and preprocessing of the page: from the checkpoint's run or the weights' card."""
    from mobilenets.deploy.web import card_for

    return card_for(
        model,
        stats,
        checkpoint=args.checkpoint,
        weights=args.weights,
        pretrained=args.pretrained,
        name=args.name,
    )


# --- bench ------------------------------------------------------------------------------------------


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from mobilenets.deploy.bench import GRID_FAMILIES  # the families' declarations (cheap: no runtime is imported)

    p = sub.add_parser(
        "bench",
        help="latency (median, p90) on eager / ONNX Runtime / ExecuTorch / OpenVINO / LiteRT; --grid for the "
        "V1/V2/V3 α×ρ grids and V4 beside SqueezeNet and Xception, and the SSD/SSDLite detectors",
        epilog="examples:\n"
        "  mobilenets bench mobilenet_v1_1.0_224 --runtime onnxruntime openvino --precision fp32 int8 --threads 2\n"
        "  mobilenets bench mobilenet_v1_0.5_160 --runtime eager --batch-size 1 8\n"
        "  mobilenets bench --grid --runtime onnxruntime openvino --precision fp32 int8 --out-dir reports/grid\n"
        "  mobilenets bench --grid --widths 0.25 0.5 --resolutions 128 --runtime eager --out-dir /tmp/g\n"
        "  mobilenets bench --grid --family mobilenet_v1 mobilenet_v3_small --runtime onnxruntime --precision int8\n"
        "  mobilenets bench --grid --family squeezenet xception --runtime openvino --out-dir /tmp/g\n"
        "  mobilenets bench --grid --family mobilenet_v1 mobilenet_v2 mobilenet_v3 mobilenet_v4 --published-only \\\n"
        "      --list   # the rows a Pareto front against the papers' top-1 needs, timing nothing\n"
        "  mobilenets bench --grid --runtime litert --precision int8 --out-dir reports/grid --keep-measured\n"
        "  mobilenets bench ssdlite320_mobilenet_v3_large --runtime eager --threads 2   # image → boxes, NMS included\n"
        "  mobilenets bench --grid --family detectors --runtime eager onnxruntime --threads 2 --out-dir /tmp/gd\n"
        "  mobilenets bench --grid --family ssdlite320_mobilenet_v3_small --widths 0.25 --resolutions 128 \\\n"
        "      --runtime eager --runs 5\n"
        "--grid without --widths/--resolutions measures each family's widths at its largest resolution and its\n"
        "resolutions at α=1 (the shape of V1 Tables 6-7) plus every variant a paper prints a top-1 for,\n"
        "V4's five sizes at their paper resolutions, and SqueezeNet 1.0 (plain, simple and complex bypass),\n"
        "SqueezeNet 1.1 and Xception: 35 models.\n"
        "A runtime/precision whose export fails for a model is reported in the table, not fatal.\n"
        "Detectors join with --family detectors (or a detector's name): each at α 1, 0.75, 0.5 at its own size\n"
        "and at 256 and 192 px at α 1 (any α and size with --widths/--resolutions), in a table of their own with\n"
        "the papers' COCO mAP. Their latency is one image to final boxes (resize, network, box decoding, NMS)\n"
        "on eager and on each runtime `export` writes a detector file for; the other runtimes are skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="registered model or detector name (not with --grid)")
    _add_model_args(p, weights=False)
    p.add_argument("--grid", action="store_true", help="the MobileNetV1-V4 grid and the seed networks (see below)")
    p.add_argument(
        "--family",
        nargs="+",
        help=f"--grid: only these families (default: {' '.join(GRID_FAMILIES)}; mobilenet_v3 = the four V3 ones, "
        "mobilenet_v4 = the five V4 sizes; "
        "detectors = every SSD/SSDLite detector, or name one)",
    )
    p.add_argument("--widths", type=float, nargs="+", help="--grid: every registered α×ρ with these widths")
    p.add_argument("--resolutions", type=int, nargs="+", help="--grid: every registered α×ρ with these resolutions")
    p.add_argument(
        "--published-only",
        action="store_true",
        help="--grid: only the variants a paper prints an accuracy for (the points of a Pareto front against the "
        "papers' top-1 or COCO mAP)",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="--grid: print the models it would measure, with the papers' accuracy, and exit (nothing is timed)",
    )
    p.add_argument(
        "--keep-measured",
        action="store_true",
        help="--grid: keep the cells OUT_DIR/grid.json already has (measure only missing and failed ones)",
    )
    p.add_argument(
        "--runtime",
        nargs="+",
        default=["eager", "onnxruntime"],
        help="eager onnxruntime executorch openvino litert web (onnxruntime-web in headless Chromium) ncnn mnn",
    )
    p.add_argument(
        "--precision", nargs="+", default=["fp32"], help="fp32 fp16 bf16 int8 (each runtime runs what it can)"
    )
    p.add_argument("--batch-size", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's default)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--out-dir", help="--grid: write grid.json, grid.txt and PNG plots here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:

    from mobilenets.deploy import bench

    for r in args.runtime:
        if r not in bench.RUNTIMES:
            raise MobileNetsError(f"unknown runtime {r!r}; choose from {', '.join(bench.RUNTIMES)}")
    if args.threads is not None and args.threads < 1:
        raise MobileNetsError(f"--threads must be >= 1, got {args.threads}")
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.grid:
        return _bench_grid(args, bench, say)
    if args.list or args.published_only:
        raise MobileNetsError("--list and --published-only choose rows of the grid: add --grid")
    if args.checkpoint and _is_detector_export(args):  # a detection run's model.pt: the detector it trained
        from mobilenets.weights.checkpoint import load_model

        model = load_model(args.checkpoint)[0].eval()
        args.name = args.name or model.config.get("name") or "detector"
    elif not args.name:
        raise MobileNetsError("give a model name (e.g. mobilenet_v1_1.0_224) or --grid")
    else:
        model = _bench_detector(args) if args.name.startswith("ssd") and not args.checkpoint else _build_model(args)[0]
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
            "eager fp32/bf16, onnxruntime fp32/int8, executorch fp32/int8 (batch 1), openvino fp32/bf16/int8, "
            "litert fp32/int8 (batch 1), web fp32/int8"
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        return 0
    from mobilenets.deploy.cpu import cpu_info

    print(f"CPU: {cpu_info().line()}")
    print(f"{'runtime':<12} {'precision':<9} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8}")
    for r in results:
        if r.latency is None:
            print(f"{r.runtime:<12} {r.precision:<9} {r.batch_size:>5}  skipped: {r.skipped}")
            continue
        img_per_s = r.batch_size / r.latency.median_ms * 1e3
        print(
            f"{r.runtime:<12} {r.precision:<9} {r.batch_size:>5} {r.latency.median_ms:>10.3f} "
            f"{r.latency.p90_ms:>8.3f} {img_per_s:>8.1f}"
        )
    for batch in sorted({r.batch_size for r in results if r.latency is not None}):
        best = min(
            (r for r in results if r.latency is not None and r.batch_size == batch), key=lambda r: r.latency.median_ms
        )
        print(
            f"fastest on this CPU at batch {batch}: {best.runtime} {best.precision} ({best.latency.median_ms:.3f} ms)"
        )
    return 0


def _bench_detector(args: argparse.Namespace):
    """An untrained detector by name (a trained one comes from its --checkpoint, as a classifier's)."""
    from mobilenets.detection import create_detector

    if args.in_chans or args.stem_stride:
        raise MobileNetsError("a detector takes --width-mult, --resolution and --num-classes (3-channel images)")
    kwargs = {"width_mult": args.width_mult, "size": args.resolution, "num_classes": args.num_classes}
    return create_detector(args.name, **{k: v for k, v in kwargs.items() if v is not None}).eval()


def _bench_grid(args: argparse.Namespace, bench, say) -> int:

    from mobilenets.deploy.cpu import cpu_info
    from mobilenets.io import atomic_write_text

    if args.name:
        raise MobileNetsError("--grid measures the grid of registered variants: drop the model name")
    if len(args.batch_size) != 1:
        raise MobileNetsError("--grid takes one --batch-size")
    # bad input fails before any work
    names = bench.grid_names(args.widths, args.resolutions, args.family, args.published_only)
    if args.list:
        return _list_grid(names, bench)
    previous = []
    if args.keep_measured:
        if not args.out_dir:
            raise MobileNetsError("--keep-measured reads OUT_DIR/grid.json: give --out-dir")
        old = Path(args.out_dir) / "grid.json"
        if old.exists():
            measured_on = bench.load_grid_cpu(old)
            if measured_on != cpu_info().line():
                raise MobileNetsError(f"{old} was measured on {measured_on or 'an unrecorded CPU'}, not this one")
            previous = bench.load_grid(old)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    say(f"grid: {len(names)} models × {', '.join(args.runtime)} × {', '.join(args.precision)}")
    rows = bench.bench_grid(
        args.widths,
        args.resolutions,
        args.runtime,
        args.precision,
        args.batch_size[0],
        args.threads,
        args.runs,
        args.warmup,
        progress=say,
        families=args.family,
        previous=previous,
        published_only=args.published_only,
    )
    if args.keep_measured:  # rows of the old file outside this grid stay in it
        measured = {r.model for r in rows}
        rows += [r for r in previous if r.model not in measured]
    table = bench.format_grid(rows)
    if args.out_dir:
        bench.save_grid(rows, Path(args.out_dir) / "grid.json")
        atomic_write_text(Path(args.out_dir) / "grid.txt", table + "\n")
        for path in bench.plot_grid(rows, args.out_dir):
            say(f"wrote {path}")
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
    else:
        print(table)
    return 0


def _list_grid(names: list[str], bench) -> int:
    """`bench --grid --list`: the rows the grid would measure and the accuracy each paper prints for them."""
    known = bench.known_top1()
    width = max(len(n) for n in names)
    for name in names:
        if bench.is_classifier_family(bench.family_of(name)):
            top1, source = known.get(name, (None, ""))
            shown = f"top-1 {top1:.1f}% ({source})" if top1 is not None else "no published top-1"
        else:
            from mobilenets.deploy.bench import detectors

            coco_map, source = detectors.coco_map(name)
            shown = f"COCO mAP {coco_map:.1f} ({source})" if coco_map is not None else "no published COCO mAP"
        print(f"{name:<{width}}  {shown}")
    print(f"{len(names)} models")
    return 0


# --- select -----------------------------------------------------------------------------------------


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="the V1/V2/V3 α×ρ MobileNets (and SqueezeNet, Xception), or the SSD/SSDLite detectors, that fit a "
        "latency / parameter / Mult-Adds budget, most accurate first",
        epilog="examples:\n"
        "  mobilenets select --max-params 1.5            # millions; 1500K and 1.5M also work\n"
        "  mobilenets select --max-madds 200M\n"
        "  mobilenets select --max-latency-ms 2 --runtime onnxruntime/int8 --results reports/grid/grid.json\n"
        "  mobilenets select --max-latency-ms 5 --runtime onnxruntime   # measures the grid first\n"
        "  mobilenets select --max-madds 100M --family mobilenet_v1 mobilenet_v3_small\n"
        "  mobilenets select --max-madds 1G --family detectors\n"
        "  mobilenets select --max-latency-ms 300 --family detectors --runtime eager   # measures them first\n"
        "  mobilenets select --max-latency-ms 100 --runtime onnxruntime --results /tmp/gd/grid.json\n"
        "Best first = highest ImageNet top-1: the papers' figure, else (~) interpolated within the family\n"
        "in log Mult-Adds between its published points; variants with neither last, by Mult-Adds.\n"
        "Detectors (--family detectors, or in --results) are ranked in a table of their own by the COCO mAP the\n"
        "papers print (V1 Table 13, V2 Table 6, V3 Table 6, torchvision), which exists only at α 1 and the\n"
        "detector's own size: other variants show — and follow, by Mult-Adds. Nothing is interpolated.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--max-latency-ms", type=positive_float, help="median batch-1 latency budget (ms)")
    p.add_argument("--max-params", type=count, help="parameter budget (millions, or with K/M/G)")
    p.add_argument("--max-madds", type=count, help="Mult-Adds budget (millions, or with K/M/G)")
    p.add_argument(
        "--runtime",
        help="runtime or runtime/precision for the latency budget, e.g. onnxruntime/int8 (measuring now: default "
        "onnxruntime)",
    )
    p.add_argument("--results", help="grid.json from `mobilenets bench --grid --out-dir` (else measured now)")
    p.add_argument("--family", nargs="+", help="only these families (default: all in the results / the grid)")
    p.add_argument("--threads", type=int, help="threads when measuring now")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_select)


def cmd_select(args: argparse.Namespace) -> int:
    from mobilenets.deploy import bench
    from mobilenets.deploy.cpu import cpu_info

    if args.max_latency_ms is None and args.max_params is None and args.max_madds is None:
        raise MobileNetsError("give a budget: --max-latency-ms, --max-params or --max-madds")
    families = bench.check_families(args.family) if args.family else None
    runtime = None  # what a latency budget is measured on now (with --results: any runtime, or --runtime)
    if args.results:
        rows = bench.load_grid(args.results)
        if families:
            rows = [r for r in rows if r.family in families]
        measured_on, here = bench.load_grid_cpu(args.results), cpu_info().line()
        if args.max_latency_ms is not None and measured_on != here:
            print(
                f"note: the latencies in {args.results} were measured on {measured_on or 'an unrecorded CPU'}; "
                f"this CPU is {here}: measure here for a budget that holds here (drop --results)",
                file=sys.stderr,
            )
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
            families=families,
        )
    else:
        rows = bench.grid_cost_rows(families=families)
    chosen = bench.select(rows, args.max_latency_ms, args.max_params, args.max_madds, args.runtime)
    timed = {k for r in rows if r.task == "detection" for k in r.latency_ms}
    if args.max_latency_ms is not None and any(r.task == "detection" for r in rows):
        wanted = args.runtime or runtime
        if not any(wanted is None or wanted in (k, k.split("/")[0]) for k in timed):
            print(
                f"note: no detector has a {wanted or 'measured'} latency in these results (measured: "
                f"{', '.join(sorted(timed)) or 'none'}); detectors run on eager and their export's runtimes",
                file=sys.stderr,
            )
    if args.json:
        print(
            json.dumps(
                [{**s.row.to_dict(), "selected_latency_ms": s.latency_ms, "estimated_top1": s.top1} for s in chosen],
                indent=2,
            )
        )
        return 0
    if not chosen:
        print("no variant fits the budget")
        return 1
    classifiers = [c for c in chosen if not c.is_detector]
    detectors = [c for c in chosen if c.is_detector]
    if classifiers:
        _print_selection(classifiers, "model", "top-1 %")
    if any(s.top1_estimated for s in classifiers):
        print("~: no published top-1; interpolated within the family in log Mult-Adds between its published points")
    if detectors:
        if classifiers:
            print()
        _print_selection(detectors, "detector", "COCO mAP")
        print(
            "COCO mAP: the papers' figure for the detector at α 1 and its own size (sources: mobilenets paper-tables); "
            "— where none is printed"
        )
    return 0


def _print_selection(chosen: list, first_column: str, accuracy_column: str) -> None:
    width = max(22, *(len(s.row.model) for s in chosen))
    print(f"{first_column:<{width}} {'Mult-Adds (M)':>13} {'params (M)':>10} {accuracy_column:>8} {'latency ms':>10}")
    for s in chosen:
        if s.accuracy is None:
            accuracy = "—"
        else:
            accuracy = f"~{s.accuracy:.1f}" if s.top1_estimated else f"{s.accuracy:.1f}"
        lat = f"{s.latency_ms:.2f}" if s.latency_ms is not None else "—"
        row = s.row
        print(
            f"{row.model:<{width}} {row.mult_adds / 1e6:>13.1f} {row.num_params / 1e6:>10.2f} {accuracy:>8} {lat:>10}"
        )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's subcommands (in `mobilenets --help` order)."""
    _add_export(sub)
    _add_bench(sub)
    _add_select(sub)
