"""Peer: torchvision's own int8 MobileNetV3-Large and MobileNetV2 against our int8 files, side by side.

Theirs: ``torchvision.models.quantization.<arch>(weights=None, quantize=False)`` quantized the way torchvision's
quantization tutorial does it — PyTorch eager-mode post-training quantization with the x86 backend: BN statistics
measured on real images (the weights are random, seeded: nothing is downloaded), ``fuse_model()``, qconfig
``get_default_qconfig("x86")``, ``prepare``, calibration on a few real images, ``convert``; run by PyTorch.
(``quantize=True`` would need torchvision's pretrained weights; we do its PTQ steps ourselves.)
Ours: ``mobilenet_v3_large_1.0_224`` / ``mobilenet_v2_1.0_224`` (same layers; random seeded weights, the same
BN calibration) exported int8 by the library to every runtime and verified by it (``export`` fails a file
whose top-1 disagrees with PyTorch), each run by its own runtime.

Random weights give near-constant logits, on which no int8 file can agree with float (the library's
check and ours alike fail at ~58% for both sides): every model here, theirs and ours, gets the same kind of
last layer, a nearest-prototype classifier over its own penultimate features, one class per calibration
photo (``prototype_head``), so its top-1 is a real decision that int8 error can flip.

Batch 1, 2 threads, every runner in this one process, timed in interleaved rounds (each round visits every
runner in a shuffled order and times a block of calls), so a busy machine slows all of them alike; the figure
per runner is the median of its block medians. Top-1 agreement with the float model on real photo crops is
printed beside every runner (theirs is not checked by torchvision: we measure it the same way as ours).
Goal: our fastest correct int8 file ≤ 0.5× torchvision's int8 model.

    .venv/bin/python benchmarks/peer_torchvision_quantized.py --out reports/peer-torchvision-quantized  # ~15 min
    .venv/bin/python benchmarks/peer_torchvision_quantized.py --runtimes onnxruntime --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from deploy_latency import interleaved  # benchmarks/ is on sys.path when this script runs

from mobilenets.deploy import export as ex
from mobilenets.deploy.bench import FORMAT_OF
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import _photos, calibrate_bn, real_images
from mobilenets.deploy.verify import compare_outputs
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model

# torchvision architecture → our registered model of the same layers
ARCHS = {"mobilenet_v3_large": "mobilenet_v3_large_1.0_224", "mobilenet_v2": "mobilenet_v2_1.0_224"}
RUNTIMES = tuple(r for r, f in FORMAT_OF.items() if f in ex.FORMATS)
GOAL = 0.5
RES = 224


@dataclass
class Row:
    arch: str
    label: str
    who: str  # "torchvision", "ours", or "reference" (torchvision's float model: context, no ratio)
    runtime: str
    median_ms: float | None = None
    p90_ms: float | None = None
    agreement_clear: float | None = None  # top-1 agreement with the float model on its clear predictions
    agreement_all: float | None = None
    correct: bool = False
    failed: str = ""


def prototype_head(model: torch.nn.Module, last: torch.nn.Linear, images: torch.Tensor) -> torch.nn.Module:
    """Set ``last`` (the final Linear) to a nearest-prototype classifier: class k scores the cosine-like match
    of an image's penultimate features with the mean features of the crops of photo k (the crops cycle over
    the photos), scaled so the winning logit is ~10. The other classes score 0."""
    feats = []
    hook = last.register_forward_hook(lambda _m, inputs, _out: feats.append(inputs[0].detach()))
    with torch.no_grad():
        model.eval()(images)
    hook.remove()
    f = feats[0].flatten(1)
    mean = f.mean(0)
    photos = len(_photos())
    protos = torch.stack([f[k::photos].mean(0) for k in range(photos)]) - mean
    gain = 10.0 / (f - mean).norm(dim=1).median()
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.weight[:photos] = gain * protos / protos.norm(dim=1, keepdim=True)
        last.bias[:photos] = -last.weight[:photos] @ mean
    return model


def torchvision_int8(arch: str, calib: torch.Tensor, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(float model, torchvision's eager-mode x86 int8 model of it, what torch said about the API)."""
    import torchvision.models.quantization as tvq
    from torch.ao import quantization as tq

    torch.manual_seed(seed)
    model = calibrate_bn(getattr(tvq, arch)(weights=None, quantize=False), calib)
    prototype_head(model, model.classifier[-1], calib)
    float_model = copy.deepcopy(model)
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fuse_model(is_qat=False)
        model.qconfig = tq.get_default_qconfig("x86")
        prepared = tq.prepare(model)
        with torch.inference_mode():
            prepared(calib)
        quantized = tq.convert(prepared).eval()
    notes = sorted({" ".join(str(w.message).split())[:200] for w in caught if "deprecat" in str(w.message).lower()})
    return float_model, quantized, "; ".join(notes)


def ours_int8(name: str, runtime: str, calib: torch.Tensor, verify: torch.Tensor, seed: int, workdir: Path, threads):
    """Our model exported int8 for ``runtime`` by the library (verified), and a runner of that file."""
    fmt = FORMAT_OF[runtime]
    torch.manual_seed(seed)
    model = calibrate_bn(create_model(name), calib)
    prototype_head(model, model.classifier, calib)
    path = workdir / f"{name}_{runtime}_int8{ex.SUFFIXES[fmt]}"
    result = ex.export(model, path, fmt, "int8", calib_images=calib, verify_images=verify)
    if result.verification is None:
        raise MobileNetsError(f"not verified here: {'; '.join(result.skipped)}")
    return model, ex.load_runner(path, fmt, "int8", threads, batch_size=1), result.verification


def measure(args: argparse.Namespace) -> tuple[list[Row], dict]:
    calib = real_images(args.calib, 3, RES, split="train")
    verify = real_images(args.verify_images, 3, RES, split="test")
    rows, runners, api_notes = [], {}, set()
    with tempfile.TemporaryDirectory(prefix="peer-tv-q-") as tmp:
        for arch in args.archs:
            print(f"{arch}: torchvision eager-mode PTQ (x86)", file=sys.stderr)
            float_model, theirs, note = torchvision_int8(arch, calib, args.seed)
            api_notes |= {note} if note else set()
            with torch.inference_mode():
                reference = float_model(verify)
                outputs = torch.cat([theirs(verify[i : i + 1]) for i in range(len(verify))])
            v = compare_outputs(reference, outputs, "torch x86", "int8")
            label = f"{arch} torchvision int8 (torch eager, x86)"
            rows.append(Row(arch, label, "torchvision", "torch", None, None, v.clear_agreement, v.top1_agreement))
            rows[-1].correct = v.passed

            def run_theirs(x, q=theirs):
                with torch.inference_mode():
                    return q(torch.from_numpy(x))

            runners[label] = run_theirs
            # Context, not a peer: the same torchvision model in float, channels_last, on PyTorch eager.
            label = f"{arch} torchvision fp32 (torch eager, reference)"
            rows.append(Row(arch, label, "reference", "torch", None, None, 1.0, 1.0, True))
            fm = float_model.to(memory_format=torch.channels_last)

            def run_float(x, m=fm):
                with torch.inference_mode():
                    return m(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

            runners[label] = run_float
            for runtime in args.runtimes:
                label = f"{arch} ours {runtime} int8"
                print(f"{arch}: exporting ours int8 for {runtime}", file=sys.stderr)
                try:
                    _, run, v = ours_int8(ARCHS[arch], runtime, calib, verify, args.seed, Path(tmp), args.threads)
                except MobileNetsError as e:
                    rows.append(Row(arch, label, "ours", runtime, failed=str(e).splitlines()[0][:300]))
                    print(f"  failed: {rows[-1].failed}", file=sys.stderr)
                    continue
                rows.append(Row(arch, label, "ours", runtime, None, None, v.clear_agreement, v.top1_agreement, True))
                runners[label] = run
        x = verify[:1].numpy()
        print(f"timing {len(runners)} runners, {args.rounds} interleaved rounds of {args.block}", file=sys.stderr)
        times = interleaved(runners, x, args.rounds, args.block, args.warmup)
    for r in rows:
        if r.label in times:
            r.median_ms, r.p90_ms = (round(t, 4) for t in times[r.label])
    meta = {
        "cpu": cpu_info().line(),
        "torch": torch.__version__,
        "threads": args.threads,
        "batch_size": 1,
        "command": " ".join(["python", *sys.argv]),
        "torch_ao_quantization_notes": sorted(api_notes),
    }
    return rows, meta


def summary(rows: list[Row], meta: dict) -> tuple[str, dict]:
    lines = [
        f"CPU: {meta['cpu']}",
        f"torch {meta['torch']}, batch 1, {meta['threads']} threads, interleaved rounds (median of block medians)",
        "",
        f"{'runner':<60} {'median ms':>9} {'p90 ms':>7} {'agree clear':>11} {'agree all':>9}  ratio vs theirs",
    ]
    ratios = {}
    for arch in dict.fromkeys(r.arch for r in rows):
        theirs = next(r for r in rows if r.arch == arch and r.who == "torchvision")
        for r in (r for r in rows if r.arch == arch):
            if r.failed:
                lines.append(f"{r.label:<60} failed: {r.failed}")
                continue
            ratio = ""
            if r.who == "ours" and theirs.median_ms:
                ratios.setdefault(arch, {})[r.runtime] = round(r.median_ms / theirs.median_ms, 3)
                ratio = f"{ratios[arch][r.runtime]:.3f}"
            lines.append(
                f"{r.label:<60} {r.median_ms:>9.3f} {r.p90_ms:>7.3f} {100 * r.agreement_clear:>10.1f}% "
                f"{100 * r.agreement_all:>8.1f}%  {ratio}"
            )
        ours = [r for r in rows if r.arch == arch and r.who == "ours" and r.correct and r.median_ms]
        if ours and theirs.median_ms:
            best = min(ours, key=lambda r: r.median_ms)
            ratio = best.median_ms / theirs.median_ms
            verdict = "met" if ratio <= GOAL else "not met"
            lines.append(
                f"{arch}: fastest correct file of ours {best.runtime} {best.median_ms:.2f} ms vs torchvision's "
                f"{theirs.median_ms:.2f} ms: ratio {ratio:.3f} (goal ≤ {GOAL}: {verdict})"
            )
            ratios.setdefault(arch, {})["fastest"] = round(ratio, 3)
        lines.append("")
    notes = {n.strip() for joined in meta["torch_ao_quantization_notes"] for n in joined.split("; ")}
    lines += [f"torch warned: {note}" for note in sorted(notes)]
    return "\n".join(lines).rstrip(), ratios


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--calib", type=int, default=32, help="real images for BN statistics and int8 calibration")
    p.add_argument("--verify-images", type=int, default=64, help="real images for the agreement columns")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for report.md and results.json (written atomically)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # theirs runs on PyTorch's pool; each of our runners gets its own
    rows, meta = measure(args)
    text, ratios = summary(rows, meta)
    print(text)
    if args.out:
        from mobilenets.io import atomic_write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        data = {**meta, "ratios": ratios, "rows": [asdict(r) for r in rows]}
        atomic_write_text(out / "results.json", json.dumps(data, indent=2) + "\n")
        title = "# torchvision's quantized MobileNets against our int8 files"
        atomic_write_text(out / "report.md", f"{title}\n\n`{meta['command']}`\n\n```\n{text}\n```\n")
        print(f"wrote {out / 'report.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
