"""Deploy latency and correctness: `mobilenets export` files against each runtime's default export, side by side.

MobileNetV1-1.0-224 with Google's ImageNet weights, batch 1, 2 threads. Every runner lives in this one process
and is timed in interleaved rounds (each round visits every runner in a shuffled order and times a block of
calls), so a busy machine slows all of them alike; the figure per runner is the median of the block medians.

Every runner also has its accuracy measured, because a fast file that gives wrong answers is worth nothing:
  agreement  top-1 agreement with the float PyTorch model on the real photo crops it predicts clearly
             (top-1 probability ≥ 0.2 above the runner-up), on Google's ImageNet MobileNet;
  FM drop    Fashion-MNIST top-1 lost against PyTorch over all 10,000 test images, by the same runner built
             from a model trained here (`--fashion-checkpoint`, or a 3-epoch demo run trained first).
A runner is *correct* with ≥ 95% agreement and a drop ≤ 1 point; "fastest" means the fastest correct runner.
Runners this CPU cannot run (bf16 without AVX512_BF16/AMX; LiteRT when its extra is not installed) are
skipped and the table says why.

Peers ("default export" = what each runtime's own tutorial does):
  PyTorch eager, channels_last, inference_mode
  ONNX Runtime fp32: torch.onnx.export of the unfolded model, default session options
  ONNX Runtime int8: onnxruntime.quantization.quantize_static with its defaults on that file
  ExecuTorch fp32: torch.export + to_edge_transform_and_lower(XnnpackPartitioner())
  OpenVINO f32 / OpenVINO default: ov.convert_model, compiled with INFERENCE_PRECISION_HINT=f32 / defaults
  LiteRT fp32: litert_torch.convert of the unfolded model, ai_edge_litert's Interpreter
Ours: the files `mobilenets export` writes (BN folded, int8 safe on every CPU), every format and precision.

    .venv/bin/python benchmarks/deploy_latency.py --out reports/deploy/$(hostname)   # ~15 min on 2 cores
    .venv/bin/python benchmarks/deploy_latency.py --rounds 3 --block 5 --fm-images 500   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy import export as ex
from mobilenets.deploy import runtime_module
from mobilenets.deploy.bench import timed_calls
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import normalize, real_images
from mobilenets.deploy.verify import compare_outputs
from mobilenets.deps import quiet
from mobilenets.errors import MobileNetsError

MIN_AGREEMENT = 0.95
MAX_DROP_POINTS = 1.0
Fn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Row:
    label: str
    who: str  # "peer" or "ours"
    precision: str
    median_ms: float | None = None
    p90_ms: float | None = None
    agreement_clear: float | None = None
    agreement_all: float | None = None
    fm_top1: float | None = None
    fm_drop_points: float | None = None
    skipped: str = ""

    @property
    def correct(self) -> bool:
        return (
            not self.skipped
            and self.agreement_clear is not None
            and self.agreement_clear >= MIN_AGREEMENT
            and self.fm_drop_points is not None
            and self.fm_drop_points <= MAX_DROP_POINTS
        )


# ----------------------------------------------------------------------------------------------------
# Runners: each factory builds a function from one float32 NCHW image batch (batch 1) to logits


def _onnx_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def peer_factories(threads: int) -> dict[str, tuple[str, Callable]]:
    """label → (precision, factory(model, x, calib, workdir) → Fn) for each runtime's default export."""

    def eager(model, x, calib, workdir):
        net = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

        def run(xn):
            with torch.inference_mode():
                return net(torch.from_numpy(xn).contiguous(memory_format=torch.channels_last)).numpy()

        return run

    def ort_fp32(model, x, calib, workdir):
        path = workdir / f"peer_{x.shape[1]}.onnx"
        with quiet():
            torch.onnx.export(model, (x,), str(path), input_names=["input"], dynamo=False)
        return _onnx_session(path, threads)

    def ort_int8(model, x, calib, workdir):
        from onnxruntime.quantization import CalibrationDataReader, quantize_static

        fp32 = workdir / f"peer_for_int8_{x.shape[1]}.onnx"
        with quiet():
            torch.onnx.export(model, (x,), str(fp32), input_names=["input"], dynamo=False)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(calib.split(1))

            def get_next(self):
                b = next(self.it, None)
                return None if b is None else {"input": b.numpy()}

        path = workdir / f"peer_int8_{x.shape[1]}.onnx"
        with quiet():
            quantize_static(str(fp32), str(path), Reader())
        return _onnx_session(path, threads)

    def et_fp32(model, x, calib, workdir):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        path = workdir / f"peer_{x.shape[1]}.pte"
        with quiet():
            et = to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
            path.write_bytes(et.to_executorch().buffer)
        return runtime_module("executorch").load(path, "fp32", threads)

    def ov(config: dict):
        def make(model, x, calib, workdir):
            import openvino

            with quiet():
                ov_model = openvino.convert_model(model, example_input=x)
            compiled = openvino.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, **config})
            request = compiled.create_infer_request()
            return lambda xn: request.infer({0: xn})[0]

        return make

    def litert_fp32(model, x, calib, workdir):
        litert = runtime_module("tflite")
        path = workdir / f"peer_{x.shape[1]}.tflite"
        litert.write(model, path, x.shape[-1])  # the unfolded model: litert-torch's own conversion
        return litert.load(path, "fp32", threads)

    default_ov = "bf16" if cpu_info().has("bf16") else "fp32"
    peers = {
        "PyTorch eager (channels_last)": ("fp32", eager),
        "ONNX Runtime fp32": ("fp32", ort_fp32),
        "ONNX Runtime int8 (quantize_static defaults)": ("int8", ort_int8),
        "ExecuTorch-XNNPACK fp32": ("fp32", et_fp32),
        "OpenVINO f32": ("fp32", ov({"INFERENCE_PRECISION_HINT": "f32"})),
        f"OpenVINO default ({default_ov} on this CPU)": (default_ov, ov({})),
    }
    if "tflite" in ex.FORMATS:
        peers["LiteRT fp32 (litert-torch defaults)"] = ("fp32", litert_fp32)
    return peers


def our_factories(threads: int) -> dict[str, tuple[str, Callable]]:
    """label → (precision, factory) for every file `mobilenets export` writes."""
    out = {}
    for fmt in ex.FORMATS:
        for prec in ex.FORMAT_PRECISIONS[fmt]:

            def make(model, x, calib, workdir, fmt=fmt, prec=prec):
                path = workdir / f"ours_{x.shape[1]}_{prec}{ex.SUFFIXES[fmt]}"
                ex.export(model, path, fmt, prec, calib_images=calib, verify=False)
                return ex.load_runner(path, fmt, prec, threads, batch_size=1)

            out[f"ours: {ex.RUNTIME_OF[fmt]} {prec}"] = (prec, make)
    return out


def skip_reason(label: str, precision: str) -> str:
    if precision == "bf16" and not cpu_info().has("bf16"):
        return "this CPU has no bf16 math (AVX512_BF16 or AMX)"
    return ""


# ----------------------------------------------------------------------------------------------------
# Accuracy and timing


def logits(fn: Fn, images: torch.Tensor) -> np.ndarray:
    return np.concatenate([fn(img.unsqueeze(0).numpy()) for img in images])


def interleaved(runners: dict[str, Fn], x: np.ndarray, rounds: int, block: int, warmup: int, pause: float = 0.2):
    for fn in runners.values():
        time.sleep(pause)
        for _ in range(warmup):
            fn(x)
    blocks: dict[str, list[float]] = {k: [] for k in runners}
    every: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = runners[name]
            # Let the previous runner's thread pool stop spin-waiting: every runtime here keeps worker
            # threads that busy-wait after a call, and on 2 cores they would steal this runner's time.
            time.sleep(pause)
            fn(x)
            times = timed_calls(lambda fn=fn: fn(x), block)
            blocks[name].append(statistics.median(times) * 1e3)
            every[name].extend(t * 1e3 for t in times)
    return {k: (statistics.median(blocks[k]), float(np.percentile(every[k], 90))) for k in runners}


def fashion_model(checkpoint: str | None, workdir: Path) -> tuple[nn.Module, tuple]:
    """A model trained on Fashion-MNIST here: the checkpoint given, or the demo's 3-epoch run (~1-2 min)."""
    if checkpoint is None:
        from mobilenets.training import demo_config, train

        print("training the demo model on Fashion-MNIST for the accuracy column ...", file=sys.stderr)
        result = train(demo_config(dataset="fashion-mnist", out_dir=str(workdir / "demo")))
        checkpoint = str(result.model_path)
    return ex.build_model(checkpoint=checkpoint)


def measure(args) -> tuple[list[Row], dict]:
    pretrained, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
    calib = real_images(args.calib, 3, 224, split="train", stats=stats)
    verify = real_images(64, 3, 224, split="test", stats=stats)
    x = verify[:1].clone()
    with torch.no_grad():
        reference = pretrained(verify)
    factories = {**peer_factories(args.threads), **our_factories(args.threads)}
    rows = {
        label: Row(label, "ours" if label.startswith("ours") else "peer", prec)
        for label, (prec, _) in factories.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fm_model, fm_stats = fashion_model(args.fashion_checkpoint, workdir)
        from mobilenets.data import load_fashion_mnist

        test = load_fashion_mnist("test")
        n = min(args.fm_images, len(test.labels))
        fm_images = normalize(test.images[:n], fm_model.resolution, fm_stats)
        fm_labels = test.labels[:n].numpy()
        fm_calib = real_images(args.calib, fm_model.in_chans, fm_model.resolution, "train", stats=fm_stats)
        with torch.no_grad():
            fm_ref = float((fm_model(fm_images).argmax(1).numpy() == fm_labels).mean())
        runners = {}
        for label, (prec, make) in factories.items():
            row = rows[label]
            row.skipped = skip_reason(label, prec)
            if row.skipped:
                continue
            print(f"building {label} ...", file=sys.stderr)
            try:
                fn = make(pretrained, x, calib, workdir)
                fm_fn = make(fm_model, fm_images[:1].clone(), fm_calib, workdir)
            except MobileNetsError as e:
                row.skipped = str(e)
                continue
            v = compare_outputs(reference, logits(fn, verify), label, "int8")
            row.agreement_clear, row.agreement_all = v.clear_agreement, v.top1_agreement
            row.fm_top1 = float((logits(fm_fn, fm_images).argmax(1) == fm_labels).mean())
            row.fm_drop_points = 100 * (fm_ref - row.fm_top1)
            runners[label] = fn
            del fm_fn
        print(f"timing {len(runners)} runners: {args.rounds} interleaved rounds × {args.block} calls", file=sys.stderr)
        timings = interleaved(runners, x.numpy(), args.rounds, args.block, args.warmup)
    for label, (med, p90) in timings.items():
        rows[label].median_ms, rows[label].p90_ms = med, p90
    cpu = cpu_info()
    meta = {
        "cpu": {**cpu.to_dict(), "line": cpu.line()},
        "model": "mobilenet_v1_1.0_224 (Google's ImageNet weights), batch 1",
        "threads": args.threads,
        "rounds": args.rounds,
        "block": args.block,
        "clear_images": v.clear_images,
        "fashion_mnist": {"images": n, "pytorch_top1": fm_ref, "model": fm_model.__class__.__name__},
        "torch": torch.__version__,
        "command": " ".join(["benchmarks/deploy_latency.py", *sys.argv[1:]]),
    }
    return list(rows.values()), meta


def summary(rows: list[Row], meta: dict) -> str:
    correct = [r for r in rows if r.correct and r.median_ms is not None]
    peer_fp32 = [r for r in correct if r.who == "peer" and r.precision == "fp32"]
    ours = [r for r in correct if r.who == "ours"]
    fm = meta["fashion_mnist"]
    lines = [
        f"CPU: {meta['cpu']['line']}",
        f"{meta['model']}, {meta['threads']} threads, {meta['rounds']}×{meta['block']} interleaved calls; "
        f"agreement on the {meta['clear_images']} of 64 photo crops the float model predicts clearly; FM drop over "
        f"{fm['images']} Fashion-MNIST test images (PyTorch {100 * fm['pytorch_top1']:.2f}%)",
        "",
        "| runner | median ms | p90 ms | / fastest correct peer fp32 | agreement (clear) | FM drop (pts) | correct |",
        "|---|---|---|---|---|---|---|",
    ]
    best_peer = min((r.median_ms for r in peer_fp32), default=None)
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.label} | — | — | — | — | — | skipped: {r.skipped} |")
            continue
        ratio = f"{r.median_ms / best_peer:.2f}" if best_peer and r.median_ms else "—"
        lines.append(
            f"| {r.label} | {r.median_ms:.2f} | {r.p90_ms:.2f} | {ratio} | {100 * r.agreement_clear:.1f}% | "
            f"{r.fm_drop_points:+.2f} | {'yes' if r.correct else 'NO'} |"
        )
    lines.append("")
    if ours and peer_fp32:
        fastest = min(ours, key=lambda r: r.median_ms)
        peer = min(peer_fp32, key=lambda r: r.median_ms)
        lines.append(
            f"fastest correct file of ours: {fastest.label} {fastest.median_ms:.2f} ms; fastest correct peer fp32: "
            f"{peer.label} {peer.median_ms:.2f} ms; ratio {fastest.median_ms / peer.median_ms:.3f} "
            "(goals: ≤ 0.60 on AVX2-only CPUs, ≤ 0.40 on AVX-512 VNNI CPUs)"
        )
    wrong = [r.label for r in rows if not r.skipped and not r.correct]
    if wrong:
        lines.append(f"not correct (excluded from 'fastest'): {'; '.join(wrong)}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--calib", type=int, default=100, help="real images for int8 calibration")
    p.add_argument("--fm-images", type=int, default=10000, help="Fashion-MNIST test images for the drop column")
    p.add_argument("--fashion-checkpoint", help="model.pt of a Fashion-MNIST run (default: train the demo's)")
    p.add_argument("--out", help="folder for report.md and results.json (written atomically)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows, meta = measure(args)
    text = summary(rows, meta)
    print(text)
    if args.out:
        from mobilenets.io import atomic_write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        data = {**meta, "rows": [{**asdict(r), "correct": r.correct} for r in rows]}
        atomic_write_text(out / "results.json", json.dumps(data, indent=2) + "\n")
        atomic_write_text(out / "report.md", f"# Deploy latency and correctness\n\n`{meta['command']}`\n\n{text}\n")
        print(f"wrote {out / 'report.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
