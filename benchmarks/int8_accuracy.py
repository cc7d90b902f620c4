"""int8 accuracy drop on real labelled data: models trained by `mobilenets train` (any family: V1, V2, V3),
exported fp32 and int8 to every runtime, each file evaluated by its own runtime on the whole Fashion-MNIST test set.

    mobilenets train --model mobilenet_v3_small --width-mult 0.75 --resolution 28 --stem-stride 1 \
        --preset adamw --epochs 2 --max-train-samples 20000 --out-dir runs/v3s      # likewise mobilenet_v2 0.35
    .venv/bin/python benchmarks/int8_accuracy.py runs/v3s/model.pt runs/v2/model.pt \
        [--calib 500] [--formats onnx openvino] [--out reports/int8-accuracy/CPU]

Stronger int8 (issue 20): ``--strong fmt=calibration[+eq] ...`` adds a PTQ row per runtime with that calibration
(and cross-layer equalization with ``+eq``); ``--qat runs/x_qat/model.pt`` adds the rows of a ``train --qat``
fine-tune of the first checkpoint (its drop is against the float model it started from); ``--latency`` times
each runtime's int8 files side by side (batch 1, interleaved, median) and ``--test-images`` evaluates a subset:

    .venv/bin/python benchmarks/int8_accuracy.py runs/v1/model.pt --qat runs/v1_qat/model.pt \
        --strong onnx=percentile openvino=minmax executorch=mse+eq --latency --test-images 2000

Calibration images come from the training split; the test split is never seen before evaluation. Besides the
accuracy drop, each int8 file's top-1 agreement with the float model on the images that model predicts clearly
is reported (verify.py's rule; exports need 95% of those). The int8 files are the default ones, which cannot
saturate on any CPU (the export's range check), so the figures hold on AVX2-only CPUs as on VNNI ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilenets.data import load_fashion_mnist
from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import normalize, real_images
from mobilenets.deploy.verify import compare_outputs


def _variants(model, fmt: str, strong: dict, qat: str | None) -> list[tuple[str, torch.nn.Module, dict]]:
    """(name, model, export options) of the int8 files to compare for ``fmt``."""
    rows = [("ptq", model, {})]
    for choice in strong.get(fmt, []):
        calibration, _, eq = choice.partition("+")
        rows.append(
            (f"ptq {calibration}{' +CLE' if eq else ''}", model, dict(calibration=calibration, equalize=bool(eq)))
        )
    if qat:
        qat_model, _ = ex.build_model(checkpoint=qat)
        rows.append((f"qat ({qat_model.qat_state['target']})", qat_model, {}))
    return rows


def _latency_ms(paths: list[Path], fmt: str, image: torch.Tensor, threads: int, repeats: int = 200) -> list[float]:
    """Median batch-1 latency of each file, the files run in turn (same machine load for all)."""
    runners = [ex.load_runner(p, fmt, "int8", threads) for p in paths]
    x = image.numpy()
    for run in runners:
        for _ in range(10):
            run(x)
    times = [[] for _ in runners]
    for _ in range(repeats):
        for t, run in zip(times, runners):
            start = time.perf_counter()
            run(x)
            t.append(time.perf_counter() - start)
    return [1000 * float(np.median(t)) for t in times]


def _own_float(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(b) for b in images.split(500)])


def evaluate(
    checkpoint: str,
    formats: list[str],
    n_calib: int,
    threads: int,
    strong: dict | None = None,
    qat: str | None = None,
    latency: bool = False,
    n_test: int | None = None,
) -> dict:
    """PyTorch's top-1 and, per runtime, the fp32 file's top-1 and each int8 file's top-1, clear agreement with the
    float model and (``latency``) batch-1 latency."""
    model, stats = ex.build_model(checkpoint=checkpoint)
    res = model.resolution
    test = load_fashion_mnist("test")
    images = normalize(test.images[:n_test], res, stats)
    labels = test.labels[:n_test].numpy()
    calib = real_images(n_calib, model.in_chans, res, "train", stats=stats)
    with torch.no_grad():
        reference = torch.cat([model(b) for b in images.split(500)])
    row = {
        "checkpoint": checkpoint,
        "model": type(model).__name__,
        "config": model.config_dict() if hasattr(model, "config_dict") else {},
        "pytorch_top1": float((reference.argmax(1).numpy() == labels).mean()),
        "runtimes": {},
    }
    row["num_test_images"] = len(labels)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            # ExecuTorch and LiteRT programs have batch 1: feed them one image at a time.
            batches = images.split(1 if fmt in ("executorch", "tflite") else 500)

            def top1(path, prec, fmt=fmt, batches=batches):
                run = ex.load_runner(path, fmt, prec, threads)  # once: loading a program per image costs more
                logits = np.concatenate([run(b.numpy()) for b in batches])
                return logits, float((logits.argmax(1) == labels).mean())

            path = Path(tmp) / f"m_fp32{ex.SUFFIXES[fmt]}"
            print(f"{checkpoint}: exporting {fmt} fp32 ...", file=sys.stderr)
            ex.export(model, path, fmt, "fp32", verify=False)
            entry = {"fp32_top1": top1(path, "fp32")[1], "int8": {}}
            paths = []
            for k, (name, variant, options) in enumerate(_variants(model, fmt, strong or {}, qat)):
                path = Path(tmp) / f"m_int8_{k}{ex.SUFFIXES[fmt]}"
                print(f"{checkpoint}: exporting {fmt} int8 {name} ...", file=sys.stderr)
                start = time.perf_counter()
                result = ex.export(variant, path, fmt, "int8", calib_images=calib, verify=False, **options)
                export_s = round(time.perf_counter() - start, 1)
                logits, acc = top1(path, "int8")
                v = compare_outputs(reference, logits, ex.RUNTIME_OF[fmt], "int8")
                if name.startswith("qat"):  # a further-trained network: also read it against its own float
                    own = _own_float(variant, images)
                    own_v = compare_outputs(own, logits, ex.RUNTIME_OF[fmt], "int8")
                    own_top1 = float((own.argmax(1).numpy() == labels).mean())
                    entry.setdefault("qat", {})[name] = {
                        "own_float_top1": own_top1,
                        "drop_vs_own_pts": 100 * (own_top1 - acc),
                        "clear_images_vs_own": own_v.clear_images,
                        "clear_agreement_vs_own": own_v.clear_agreement,
                    }
                entry["int8"][name] = {
                    "top1": acc,
                    "drop_pts": 100 * (entry["fp32_top1"] - acc),
                    "clear_images": v.clear_images,
                    "clear_agreement": v.clear_agreement,
                    "top1_agreement": v.top1_agreement,
                    "export_s": export_s,
                    "built_for": result.built_for.get("int8"),
                }
                paths.append(path)
            if latency:
                print(f"{checkpoint}: timing {fmt} int8 files ...", file=sys.stderr)
                for name, ms in zip(entry["int8"], _latency_ms(paths, fmt, images[:1], threads)):
                    entry["int8"][name]["latency_ms"] = ms
            row["runtimes"][fmt] = entry
    return row


def format_report(rows: list[dict], command: str, load: str = "") -> str:
    lines = ["# int8 accuracy on Fashion-MNIST", "", f"`{command}`", "", f"CPU: {cpu_info().line()}{load}", ""]
    for row in rows:
        cfg = row["config"]
        shape = ", ".join(f"{k} {cfg[k]}" for k in ("width_mult", "resolution", "stem_stride") if k in cfg)
        lines += [
            f"## {row['checkpoint']} ({row['model']}{': ' + shape if shape else ''})",
            "",
            f"PyTorch fp32 top-1 {100 * row['pytorch_top1']:.2f}% on {row['num_test_images']:,} test images.",
            "",
            "| runtime | int8 | fp32 top-1 | int8 top-1 | drop (pts) | clear agreement | latency ms (× ptq) "
            "| export s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for fmt, e in row["runtimes"].items():
            base = next(iter(e["int8"].values())).get("latency_ms")
            for name, q in e["int8"].items():
                ms = q.get("latency_ms")
                latency = f"{ms:.3f} ({ms / base:.2f}×)" if ms and base else "-"
                lines.append(
                    f"| {ex.RUNTIME_OF[fmt]} | {name} | {100 * e['fp32_top1']:.2f}% | {100 * q['top1']:.2f}% | "
                    f"{q['drop_pts']:+.2f} | {100 * q['clear_agreement']:.2f}% of {q['clear_images']} | {latency} | "
                    f"{q['export_s']:.0f} |"
                )
        for fmt, e in row["runtimes"].items():
            for name, q in e.get("qat", {}).items():
                lines.append(
                    f"- {ex.RUNTIME_OF[fmt]} {name}: the QAT model's own float top-1 {100 * q['own_float_top1']:.2f}%, "
                    f"int8 drop against it {q['drop_vs_own_pts']:+.2f} pts, its clear decisions kept "
                    f"{100 * q['clear_agreement_vs_own']:.2f}% of {q['clear_images_vs_own']}; int8 from: "
                    f"{e['int8'][name]['built_for'].get('qat')}"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="model.pt of Fashion-MNIST runs of `mobilenets train` / `demo`")
    p.add_argument("--calib", type=int, default=500, help="training images to calibrate int8 on (default 500)")
    p.add_argument("--formats", nargs="+", default=list(ex.FORMATS), help=" ".join(ex.FORMATS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--strong",
        nargs="*",
        default=[],
        help="stronger PTQ rows: FORMAT=CALIBRATION[+eq] ... (repeat a format for more rows)",
    )
    p.add_argument("--qat", help="model.pt of a `train --qat` fine-tune of the (first) checkpoint: QAT rows")
    p.add_argument("--latency", action="store_true", help="time each runtime's int8 files side by side (batch 1)")
    p.add_argument("--test-images", type=int, help="evaluate on the first N test images (default all 10,000)")
    p.add_argument("--out", type=Path, help="folder for report.md and results.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    command = "benchmarks/int8_accuracy.py " + " ".join(sys.argv[1:])
    strong: dict[str, list[str]] = {}
    for choice in args.strong:
        fmt, _, option = choice.partition("=")
        strong.setdefault(fmt, []).append(option)
    rows = [
        evaluate(
            c,
            args.formats,
            args.calib,
            args.threads,
            strong,
            args.qat if i == 0 else None,
            args.latency,
            args.test_images,
        )
        for i, c in enumerate(args.checkpoints)
    ]
    load = f" (load average {os.getloadavg()[0]:.1f} at the end of the run)"
    report = format_report(rows, command, load)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(report)
        results = {"command": command, "cpu": cpu_info().line(), "rows": rows}
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
