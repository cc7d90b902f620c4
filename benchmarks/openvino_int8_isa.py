"""Which of oneDNN's int8 kernel families computes an OpenVINO int8 file right? (issue 36)

    .venv/bin/python benchmarks/openvino_int8_isa.py --models v3_fixture v3_trained v1_pretrained \\
        [--images 512] [--out reports/openvino-isa/results.json]

For each model it writes the default int8 IR (NNCF, 7-bit weights) and runs it with OpenVINO's CPU plugin on each
kernel family this CPU has, capped by ``ONEDNN_MAX_CPU_ISA`` (native, which is AMX on a Sapphire Rapids Xeon;
AVX512_CORE_VNNI; AVX2), each in its own process. Every family is judged against the same reference: the file's
own fake-quantized pass, i.e. the IR with each FakeQuantize node rewritten as its float formula (clamp, scale,
round half to even, rescale), run in f32 where no low-precision transformation can touch it. Float PyTorch is
reported beside it. "Clear" decisions are verify.py's: the reference's top-1 probability beats the runner-up's
by 0.2.

Models: ``v3_fixture`` is tests/test_deploy.py's untrained α 0.75 V3-Small at 32 px (BN statistics from real
images, logits ~0.05 wide); ``v3_trained`` the same network trained 200 AdamW steps on Fashion-MNIST (as
tests/conftest.py does); ``v1_pretrained`` Google's MobileNetV1 1.0/224 on photo crops.
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
from torch import nn

from mobilenets.data import FASHION_MNIST_STATS
from mobilenets.deploy import export as ex
from mobilenets.deploy import openvino
from mobilenets.deploy.cpu import cpu_info
from mobilenets.deploy.images import calibrate_bn, fashion_mnist, normalize, real_images
from mobilenets.deploy.verify import CLEAR_MARGIN
from mobilenets.models import create_model

ISAS = {"native": None, "AVX512_CORE_VNNI": "AVX512_CORE_VNNI", "AVX2": "AVX2"}


def judge(logits: np.ndarray, reference: np.ndarray) -> dict:
    ref = torch.from_numpy(reference).float()
    out = torch.from_numpy(logits).float()
    top2 = ref.softmax(1).topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) >= CLEAR_MARGIN
    agree = out.argmax(1) == ref.argmax(1)
    return {
        "max_abs_diff": float((out - ref).abs().max()),
        "rel_max_diff": float((out - ref).abs().max() / ref.abs().max()),
        "mean_abs_diff": float((out - ref).abs().mean()),
        "top1_agreement": float(agree.float().mean()),
        "clear_images": int(clear.sum()),
        "clear_agreement": float(agree[clear].float().mean()) if clear.any() else float("nan"),
    }


def v3_fixture(n: int):
    torch.manual_seed(0)
    model = create_model(
        "mobilenet_v3_small", width_mult=0.75, resolution=32, num_classes=10, in_chans=1, stem_stride=1
    )
    model = calibrate_bn(model, real_images(48, 1, 32, split="train", seed=7))
    return model, real_images(64, 1, 32, split="train"), real_images(n, 1, 32, split="test")


def v3_trained(n: int, steps: int = 200):
    train_x, train_y = fashion_mnist("train")
    test_x, _ = fashion_mnist("test")
    torch.manual_seed(0)
    model = create_model(
        "mobilenet_v3_small", width_mult=0.75, resolution=28, num_classes=10, in_chans=1, stem_stride=1
    )
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, 50000, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(normalize(train_x[idx], 28, FASHION_MNIST_STATS)), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    calib = normalize(train_x[50000:50256], 28, FASHION_MNIST_STATS)
    return model, calib, normalize(test_x[:n], 28, FASHION_MNIST_STATS)


def v1_pretrained(n: int):
    model, stats = ex.build_model("mobilenet_v1_1.0_224", pretrained=True)
    return model, real_images(300, 3, 224, "train", stats=stats), real_images(n, 3, 224, "test", stats=stats)


MODELS = {"v3_fixture": v3_fixture, "v3_trained": v3_trained, "v1_pretrained": v1_pretrained}


def measure(name: str, n: int, tmp: Path) -> dict:
    start = time.time()
    model, calib, images = MODELS[name](n)
    with torch.no_grad():
        float_logits = model(images).numpy()
    path = tmp / f"{name}.xml"
    ex.export(model, path, "openvino", "int8", calib_images=calib, verify=False)
    reference = openvino.run_on_kernels(openvino.write_fake_quant_pass(path, tmp / f"{name}_fq.xml"), images)
    rows, native = {"float PyTorch": judge(float_logits, reference)}, None
    for label, isa in ISAS.items():
        logits = openvino.run_on_kernels(path, images, isa)
        rows[label] = {**judge(logits, reference), "vs_float": judge(logits, float_logits)}
        if native is None:
            native = logits
        else:
            rows[label]["max_abs_diff_vs_native"] = float(np.abs(logits - native).max())
    return {
        "model": name,
        "images": len(images),
        "reference_logit_range": float(np.abs(reference).max()),
        "rows": rows,
        "seconds": time.time() - start,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--images", type=int, default=512, help="real images to compare on (default 512)")
    p.add_argument("--out", type=Path, help="file for the JSON results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            results.append(measure(name, args.images, Path(tmp)))
            r = results[-1]
            print(f"\n{name}: {r['images']} images, reference |logit| ≤ {r['reference_logit_range']:.3g}")
            print(
                "| kernels | max |Δ| vs fake-quant | relative | mean |Δ| | top-1 agreement | clear kept "
                "| max |Δ| vs native |"
            )
            print("|---|---|---|---|---|---|---|")
            for label, row in r["rows"].items():
                print(
                    f"| {label} | {row['max_abs_diff']:.3g} | {row['rel_max_diff']:.2%} | {row['mean_abs_diff']:.3g} | "
                    f"{row['top1_agreement']:.1%} | {row['clear_agreement']:.1%} of {row['clear_images']} | "
                    f"{row.get('max_abs_diff_vs_native', float('nan')):.3g} |"
                )
    print(f"\nCPU: {cpu_info().line()}; load average {os.getloadavg()[0]:.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = {"command": " ".join(sys.argv), "cpu": cpu_info().line(), "results": results}
        args.out.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
