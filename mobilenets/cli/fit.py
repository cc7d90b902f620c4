"""`mobilenets fit`: from a user's images and a budget to a verified file (see mobilenets/fit)."""

from __future__ import annotations

import argparse
import re
import sys

from mobilenets.cli.common import count, positive_float
from mobilenets.errors import MobileNetsError

EPILOG = """examples:
  mobilenets fit fashion-mnist --runtime onnx --precision int8 --max-latency-ms 1 --resolutions 28 \
      --time-budget 10m --threads 1 -o runs/fit          # 28 px: Fashion-MNIST's own size (small-image stem)
  mobilenets fit ~/photos --runtime tflite --max-latency-ms 5 --max-file-mb 2 --time-budget 1h -o runs/photos
  mobilenets fit fashion-mnist --runtime openvino --max-mult-adds 50M --family mobilenet_v1 mobilenet_v3_small \\
      --resolutions 28 --time-budget 10m -o runs/fit-ov
  mobilenets fit ~/photos --runtime tflite --max-latency-ms 8 --latency-table phone.json -o runs/phone
      # latency measured on the phone: mobilenets bench NAME --runtime litert --precision int8 --json > phone.json
  mobilenets fit fashion-mnist --max-latency-ms 1 --resolutions 28 -o runs/fit   # killed? the same command resumes

What it does: every registered classifier family × α × ρ (--family/--widths/--resolutions narrow them) is costed
for your data; its latency on --runtime at --precision is measured on this CPU (bench's runner; cached in
OUT/latency.json; each family bisected in Mult-Adds order) or read from --latency-table; the ones within every
budget are ranked by the papers' ImageNet top-1. The best --max-trials are fine-tuned on --subset images in
--rungs epochs under Optuna's successive-halving pruner (OUT/search.db: a killed fit resumes); the winner trains
on the whole set with the time left, then is quantized until its file holds: PTQ with the runtime's defaults,
cross-layer equalization, other calibrations, then QAT; the next candidate if nothing holds. Only a file that
passed export's verification and the held-out accuracy check (--max-int8-drop) is written.
OUT gets model.<ext> (+ model.safetensors and its card model.json), fit.md, fit.json and fit.png.

Several machines: give each the same --storage postgresql://user@host/db (any Optuna RDB URL) and --study NAME;
each takes the next queued candidate; a machine that dies has its trial queued again after 2 minutes.
A --latency-table is `mobilenets bench NAME ... --json` output (a JSON list; several runs' lists may be joined
into one) or a `bench --grid --out-dir` grid.json, measured on your device; candidates it lacks are left out.
"""


def duration(text: str) -> float:
    """Seconds of "90s", "20m", "1h", "1h30m"."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration with a unit like 90s, 20m or 1h30m, got {text!r}")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="from your images and a budget (latency, params, Mult-Adds, file size) to a verified int8/fp32 file: "
        "the model, α, ρ, weights and quantization chosen by measurement",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", help="what `train --dataset` takes: fashion-mnist, digits, a CIFAR folder, an ImageFolder")
    p.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files")
    p.add_argument("--runtime", default="onnx", help="onnx, executorch, openvino, tflite, web, ncnn, mnn (or the "
                   "runtime's name: onnxruntime, litert) (default: onnx)")  # fmt: skip
    p.add_argument("--precision", default="int8", help="int8 or fp32 (what the runtime offers; default int8)")
    p.add_argument("--max-latency-ms", type=positive_float, help="median batch-1 latency budget on the runtime (ms)")
    p.add_argument("--max-params", type=count, help="parameter budget (millions, or with K/M/G)")
    p.add_argument("--max-mult-adds", type=count, help="Mult-Adds budget (millions, or with K/M/G)")
    p.add_argument("--max-file-mb", type=positive_float, help="file size budget (MB)")
    p.add_argument("--time-budget", type=duration, default=None, help="the whole fit, e.g. 90s, 20m, 1h (default 20m)")
    p.add_argument("-o", "--out-dir", default="runs/fit", help="(default: runs/fit)")
    p.add_argument("--family", nargs="+", help="only these families (mobilenet_v3 = the four V3 ones)")
    p.add_argument("--widths", type=float, nargs="+", help="only these registered widths α")
    p.add_argument("--resolutions", type=int, nargs="+", help="these input sides instead of the registered ones")
    p.add_argument("--latency-table", help="latency measured on your device (`bench --json`); see below")
    p.add_argument("--weights-dir", help="start candidates from files named after them (NAME.pth/.safetensors)")
    p.add_argument("--rank-by", choices=["prior", "mult-adds"], default="prior",
                   help="order of the candidates: the papers' top-1 (default) or the most Mult-Adds (the naive "
                   "choice, for comparisons)")  # fmt: skip
    p.add_argument("--max-trials", type=int, default=6, help="candidates fine-tuned in the search (default 6)")
    p.add_argument("--subset", type=int, default=5000, help="training images per trial (default 5000)")
    p.add_argument("--rungs", type=int, default=3, help="epochs of the subset per trial (default 3)")
    p.add_argument("--heldout", type=int, default=1000, help="test images the trials and files are scored on")
    p.add_argument("--batch-size", type=int, default=64, help="(default 64)")
    p.add_argument("--max-int8-drop", type=float, default=1.0, help="held-out top-1 points a file may lose (1)")
    p.add_argument("--qat-steps", type=int, default=100, help="QAT fine-tune steps when PTQ fails (0: no QAT)")
    p.add_argument("--storage", help="Optuna RDB URL shared by several machines (default: OUT/search.db)")
    p.add_argument("--study", default="fit", help="study name in --storage (default: fit)")
    p.add_argument("--threads", type=int, help="CPU threads for training and latency (1 on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print fit.json's content at the end")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    import json

    from mobilenets.fit import DEFAULT_TIME_BUDGET_S, FitConfig, fit, summary

    if args.threads is not None:
        if args.threads < 1:
            raise MobileNetsError(f"--threads must be >= 1, got {args.threads}")
        from mobilenets.training import set_cpu_threads

        set_cpu_threads(args.threads)
    cfg = FitConfig(
        dataset=args.data,
        out_dir=args.out_dir,
        runtime=args.runtime,
        precision=args.precision,
        max_latency_ms=args.max_latency_ms,
        max_params=args.max_params,
        max_mult_adds=args.max_mult_adds,
        max_file_mb=args.max_file_mb,
        time_budget_s=args.time_budget or DEFAULT_TIME_BUDGET_S,
        data_dir=args.data_dir,
        families=args.family,
        widths=args.widths,
        resolutions=args.resolutions,
        latency_table=args.latency_table,
        weights_dir=args.weights_dir,
        max_trials=args.max_trials,
        rank_by=args.rank_by,
        subset=args.subset,
        rungs=args.rungs,
        heldout=args.heldout,
        batch_size=args.batch_size,
        max_int8_drop=args.max_int8_drop,
        qat_steps=args.qat_steps,
        threads=args.threads,
        seed=args.seed,
        storage=args.storage,
        study=args.study,
        progress=args.progress,
    )
    result = fit(cfg)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(summary(result, cfg), file=sys.stdout)
    return 0
