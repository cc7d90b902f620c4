"""Deploy latency: `mobilenets export` files against each runtime's default export of the same model.

MobileNetV1-1.0-224, batch 1, 2 threads. Every runner lives in this one process and is timed in
interleaved rounds (each round visits every runner in a shuffled order and times a block of calls), so a
busy machine slows all of them alike; the figure per runner is the median over rounds of the block medians.

Peers ("default export" = what each runtime's own tutorial does):
  PyTorch eager, channels_last, inference_mode
  ONNX Runtime fp32: torch.onnx.export of the unfolded model, default session options
  ONNX Runtime int8: onnxruntime.quantization.quantize_static with its defaults on that file
  ExecuTorch fp32: torch.export + to_edge_transform_and_lower(XnnpackPartitioner())
  OpenVINO f32 / OpenVINO default: ov.convert_model, compiled with INFERENCE_PRECISION_HINT=f32 / defaults
  (on CPUs with AVX512_BF16 or AMX OpenVINO's default precision is bf16)
Ours: the files `mobilenets export` writes (BN folded, verified), fp32, bf16 and int8.
The model is Google's pretrained ImageNet MobileNetV1 (ReLU6, TF "SAME" padding, 1001 classes), so the
int8 agreement figures mean something; `--random` uses random weights instead.

    .venv/bin/python benchmarks/deploy_latency.py [--rounds 15 --block 20 --threads 2]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilenets import export as ex
from mobilenets.bench import timed_calls
from mobilenets.models import create_model


def bn_calibrated(name: str, images: torch.Tensor) -> torch.nn.Module:
    """Random weights with BN statistics measured on real photos (pretrained weights: use --checkpoint)."""
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def peers(model, x: torch.Tensor, calib: torch.Tensor, workdir: Path, threads: int) -> dict:
    import onnxruntime as ort
    import openvino as ov
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    runners = {}
    xn = x.numpy()
    eager = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)

    def run_eager():
        with torch.inference_mode():
            return eager(xc)

    runners["PyTorch eager (channels_last)"] = ("peer", "fp32", run_eager)

    onnx_path = workdir / "peer.onnx"
    with ex._quiet():
        torch.onnx.export(model, (x,), str(onnx_path), input_names=["input"], dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    runners["ONNX Runtime fp32"] = ("peer", "fp32", lambda: sess.run(None, {"input": xn}))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib.split(1))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b.numpy()}

    q_path = workdir / "peer_int8.onnx"
    with ex._quiet():
        quantize_static(str(onnx_path), str(q_path), Reader())
    qsess = ort.InferenceSession(str(q_path), so, providers=["CPUExecutionProvider"])
    runners["ONNX Runtime int8 (quantize_static defaults)"] = ("peer", "int8", lambda: qsess.run(None, {"input": xn}))

    with ex._quiet():
        et = to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
        (workdir / "peer.pte").write_bytes(et.to_executorch().buffer)
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(str(workdir / "peer.pte")).load_method("forward")
    runners["ExecuTorch-XNNPACK fp32"] = ("peer", "fp32", lambda: method.execute([x]))

    core = ov.Core()
    with ex._quiet():
        ov_model = ov.convert_model(model, example_input=x)
    for label, cfg, prec in (
        ("OpenVINO f32", {"INFERENCE_PRECISION_HINT": "f32"}, "fp32"),
        ("OpenVINO default (bf16 where the CPU has it)", {}, "bf16"),
    ):
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, **cfg})
        req = compiled.create_infer_request()
        runners[label] = ("peer", prec, (lambda r: lambda: r.infer({0: xn}))(req))
    return runners


def ours(model, x: torch.Tensor, calib: torch.Tensor, verify: torch.Tensor, workdir: Path, threads: int) -> dict:
    runners, notes = {}, {}
    xn = x.numpy()
    for fmt, prec in (
        ("onnx", "fp32"),
        ("executorch", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("onnx", "int8"),
        ("executorch", "int8"),
        ("openvino", "int8"),
    ):
        label = f"ours: {ex.RUNTIME_OF[fmt]} {prec}"
        path = workdir / f"ours_{prec}{ex.SUFFIXES[fmt]}"
        print(f"exporting {label} ...", file=sys.stderr)
        result = ex.export(model, path, fmt, prec, calib_images=calib, verify_images=verify, min_agreement=0.0)
        notes[label] = result.verification
        if fmt == "onnx":
            sess = ex.onnxruntime_session(path, threads)
            runners[label] = ("ours", prec, (lambda s: lambda: s.run(None, {"input": xn}))(sess))
        elif fmt == "executorch":
            method = ex.executorch_method(path, threads)
            runners[label] = ("ours", prec, (lambda m: lambda: m.execute([x]))(method))
        else:
            req = ex.openvino_compiled(path, prec, threads, batch_size=1).create_infer_request()
            runners[label] = ("ours", prec, (lambda r: lambda: r.infer({0: xn}))(req))
    return runners, notes


def interleaved(
    runners: dict, rounds: int, block: int, warmup: int, pause: float = 0.2
) -> dict[str, tuple[float, float]]:
    for _, _, fn in runners.values():
        time.sleep(pause)
        for _ in range(warmup):
            fn()
    blocks: dict[str, list[float]] = {k: [] for k in runners}
    every: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = runners[name][2]
            # Let the previous runner's thread pool stop spin-waiting: every runtime here keeps worker
            # threads that busy-wait after a call, and on 2 cores they would steal this runner's time.
            time.sleep(pause)
            fn()
            times = timed_calls(fn, block)
            blocks[name].append(statistics.median(times) * 1e3)
            every[name].extend(t * 1e3 for t in times)
    return {k: (statistics.median(blocks[k]), float(np.percentile(every[k], 90))) for k in runners}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--calib", type=int, default=100, help="real images for int8 calibration")
    p.add_argument(
        "--random",
        action="store_true",
        help="random weights with BN statistics from photos instead of Google's pretrained ImageNet weights",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    res = 224
    if args.random:
        weights = "random weights + BN statistics from photos"
        stats = None
    else:
        weights = "Google's pretrained ImageNet weights"
        model, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
    calib = ex.real_images(args.calib, 3, res, split="train", stats=stats)
    verify = ex.real_images(64, 3, res, split="test", stats=stats)
    if args.random:
        model = bn_calibrated("mobilenet_v1_1.0_224", calib)
    x = verify[:1].clone()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        runners = peers(model, x, calib, workdir, args.threads)
        mine, notes = ours(model, x, calib, verify, workdir, args.threads)
        runners.update(mine)
        print(f"timing {len(runners)} runners: {args.rounds} interleaved rounds × {args.block} calls", file=sys.stderr)
        stats = interleaved(runners, args.rounds, args.block, args.warmup)

    peer_fp32 = min(stats[k][0] for k, (who, prec, _) in runners.items() if who == "peer" and prec == "fp32")
    peer_any = min(stats[k][0] for k, (who, _, _) in runners.items() if who == "peer")
    print(
        f"\nMobileNetV1-1.0-224 ({weights}), batch 1, {args.threads} threads, "
        f"{args.rounds}×{args.block} interleaved calls\n"
    )
    print(f"{'runner':<48} {'median ms':>9} {'p90 ms':>8} {'/best peer fp32':>15} {'/best peer':>10}  top-1 agreement")
    for name in runners:
        med, p90 = stats[name]
        v = notes.get(name)
        agree = ""
        if v is not None:
            agree = (
                f"{100 * v.top1_agreement:.1f}% all, {100 * v.clear_agreement:.1f}% clear (max|Δ| {v.max_abs_diff:.2g})"
            )
        print(f"{name:<48} {med:>9.3f} {p90:>8.3f} {med / peer_fp32:>15.2f} {med / peer_any:>10.2f}  {agree}")
    ours_fp32 = min(stats[k][0] for k, (who, prec, _) in runners.items() if who == "ours" and prec == "fp32")
    ours_any = min(stats[k][0] for k, (who, _, _) in runners.items() if who == "ours")
    fastest = min((k for k in runners if runners[k][0] == "ours"), key=lambda k: stats[k][0])
    print(f"\nours fp32 best / peers' fp32 best: {ours_fp32 / peer_fp32:.3f}  (goal ≤ 1.05)")
    print(f"ours fastest ({fastest}) / peers' fastest: {ours_any / peer_any:.3f}  (goal < 1)")
    clear = next(iter(notes.values())).clear_images
    print("agreement: top-1 agreement with the float PyTorch model on 64 real photo crops, and on the")
    print(f"{clear} of them it predicts clearly (top-1 probability ≥ 0.2 above the runner-up); with --random")
    print("the logits are nearly tied and agreement says little")
    return 0


if __name__ == "__main__":
    sys.exit(main())
