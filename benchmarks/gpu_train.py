"""GPU training and inference throughput: our MobileNetV1 (or V3-Large) and training step against timm's, in one run.

Per configuration (MobileNetV1 1.0 at 224 and α=0.25 at 128; MobileNetV3-Large 1.0 at 224; batch 256), with and
without torch.compile, all in bf16 autocast and channels-last on the same device:

  timm          timm.create_model("mobilenetv1_100" / "mobilenetv3_large_100", pretrained=False) (V1 α=0.25:
                timm's own _gen_mobilenet_v1 builder with channel_multiplier=0.25, the same 470k parameters as ours)
  ours          mobilenets.models.create_model("mobilenet_v1" / "mobilenet_v3_large", width_mult=..., resolution=...)
  ours-engine   our model driven the way `mobilenets train` drives it: uint8 batches resident on the
                device, augmentation and normalization by mobilenets.data.prepare_batch, the schedule's
                LambdaLR step, and loss/accuracy kept on the device and read back every GPU_SYNC_EVERY
                steps (the loop's --sync-every default: one host synchronization per window)

The timm and ours rows share one step (synthetic normalized input, cross-entropy with label smoothing 0.1,
the sgd preset's optimizer from mobilenets.training.build_optimizer), so they compare the networks; the engine
row shows what the training loop adds. Train img/s: optimizer steps × batch / time; inference img/s:
inference_mode forward passes; peak memory: torch.cuda.max_memory_allocated per measurement.

Issue 12's goals on one H100: training ≥ 1.5× timm compiled (≥ 17k img/s), inference ≥ 1.5× (≥ 80k img/s). The
timm figures they scale (ANCHORS) were measured on an H100 outside this repository; every run also prints ours
against the timm rows it measured itself, which is the comparison that holds on any GPU.

    python benchmarks/gpu_train.py --out reports/gpu_train          # on a GPU (~5 min with compilation)
    python benchmarks/gpu_train.py --model mobilenet_v3_large --impls timm,ours --out reports/gpu_train_v3
    python benchmarks/gpu_train.py --smoke                          # CPU, fp32, tiny: checks the script
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilenets import data as D
from mobilenets.io import atomic_write_text
from mobilenets.models import create_model
from mobilenets.training import TrainConfig, build_optimizer, lr_factor
from mobilenets.training.config import GPU_SYNC_EVERY

# (label, width_mult, resolution): issue 12's two MobileNetV1 configurations.
CONFIGS = [("1.0-224", 1.0, 224), ("0.25-128", 0.25, 128)]
SMOKE_CONFIGS = [("1.0-32", 1.0, 32), ("0.25-32", 0.25, 32)]
IMPLS = ("timm", "ours", "ours-engine")
# Our model name: timm's name for the same network (equal parameter counts), its configurations and their smoke runs.
MODELS = {
    "mobilenet_v1": dict(timm="mobilenetv1_100", configs=CONFIGS, smoke=SMOKE_CONFIGS),
    "mobilenet_v3_large": dict(
        timm="mobilenetv3_large_100", configs=[("1.0-224", 1.0, 224)], smoke=[("1.0-32", 1.0, 32)]
    ),
}
# timm measured on one H100 (issue 31): mobilenetv1_100, batch 256, bf16, channels-last, torch.compile. The goal
# is ours at GOAL_RATIO × these; they hold for an H100 only, so each run also sets ours beside its own timm rows.
ANCHORS = {
    ("mobilenet_v1", "1.0-224"): dict(
        train_img_per_s=11_559, infer_img_per_s=52_466, what="timm mobilenetv1_100, channels-last + compile, H100"
    ),
}
GOAL_RATIO = 1.5


@dataclasses.dataclass
class Settings:
    device: torch.device
    amp: bool  # bf16 autocast
    channels_last: bool
    batch_size: int
    steps: int
    warmup: int
    num_classes: int = 1000


def gpu_driver() -> str | None:
    """The NVIDIA driver's version from nvidia-smi, or None without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def software() -> dict:
    import timm
    import torchvision

    from mobilenets.reproduce import hardware

    info = hardware()
    info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on a shared machine skews CPU figures
    info.update(
        torchvision=torchvision.__version__,
        timm=timm.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        driver=gpu_driver(),
    )
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


# ----------------------------------------------------------------------------------------------------
# Models and steps


def build_model(impl: str, model: str, width_mult: float, resolution: int, num_classes: int) -> nn.Module:
    if impl == "timm":
        import timm

        if width_mult == 1.0:
            return timm.create_model(MODELS[model]["timm"], pretrained=False, num_classes=num_classes)
        if model != "mobilenet_v1":
            raise ValueError(f"timm's {MODELS[model]['timm']} is measured at width 1.0 only")
        import logging

        from timm.models.efficientnet import _gen_mobilenet_v1  # timm registers no α=0.25 MobileNetV1

        logging.getLogger("timm").setLevel(logging.ERROR)  # "no pretrained configuration" for the unnamed variant
        return _gen_mobilenet_v1(f"mobilenetv1_{round(width_mult * 100):03d}", width_mult, num_classes=num_classes)
    return create_model(model, width_mult=width_mult, resolution=resolution, num_classes=num_classes)


def train_config(batch_size: int) -> TrainConfig:
    return TrainConfig(preset="sgd", batch_size=batch_size, epochs=1).resolved()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(s: Settings):
    return torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.amp)


def make_plain_step(model: nn.Module, run_model, s: Settings, resolution: int):
    """One optimizer step on a fixed synthetic normalized batch (the same for timm and ours)."""
    cfg = train_config(s.batch_size)
    optimizer = build_optimizer(model, cfg)
    memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
    x = torch.randn(s.batch_size, 3, resolution, resolution, device=s.device).contiguous(memory_format=memory_format)
    y = torch.randint(0, s.num_classes, (s.batch_size,), device=s.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(s):
            logits = run_model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        loss.backward()
        optimizer.step()

    return step


def make_engine_step(model: nn.Module, run_model, s: Settings, resolution: int):
    """One step as `mobilenets train` takes it on a GPU-resident uint8 dataset (see mobilenets.training)."""
    cfg = train_config(s.batch_size)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = 1000
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(k, 10 * steps_per_epoch, steps_per_epoch, cfg)
    )
    augment = D.Augment(crop_scale=(cfg.crop_scale_min, 1.0), translate=cfg.translate, flip=cfg.flip)
    mean, std = D.IMAGENET_STATS
    # A small pool of stored images at the model's resolution, as ImageFolder batches arrive (uint8, on device).
    images = torch.randint(0, 256, (s.batch_size, 3, resolution, resolution), dtype=torch.uint8, device=s.device)
    labels = torch.randint(0, s.num_classes, (s.batch_size,), device=s.device)
    k = [0]
    window: list[torch.Tensor] = []

    def step() -> None:
        rand = D.augment_rand(s.batch_size, D.step_generator(0, 0, k[0]))
        k[0] += 1
        x = D.prepare_batch(images, mean, std, resolution, 3, augment, rand, s.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(s):
            logits = run_model(x)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        loss.backward()
        correct = (logits.detach().argmax(1) == labels).sum()
        window.append(torch.stack([loss.detach().float() * s.batch_size, correct.float()]))
        if len(window) >= GPU_SYNC_EVERY:  # the loop's read-back: the host waits for the GPU here only
            float(torch.stack(window).cpu()[:, 0].sum())
            window.clear()
        optimizer.step()
        scheduler.step()

    return step


def throughput(fn, s: Settings, batch: int) -> tuple[float, float | None]:
    """(img/s over s.steps calls after s.warmup, peak device memory in MiB or None on the CPU)."""
    on_gpu = s.device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(s.device)
    for _ in range(s.warmup):
        fn()
    _sync(s.device)
    t0 = time.perf_counter()
    for _ in range(s.steps):
        fn()
    _sync(s.device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(s.device) / 2**20 if on_gpu else None
    return s.steps * batch / dt, peak


def measure(impl: str, name: str, width_mult: float, resolution: int, compiled: bool, s: Settings) -> dict:
    torch.manual_seed(0)
    model = build_model(impl, name, width_mult, resolution, s.num_classes).to(s.device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if compiled else model
    model.train()
    make = make_engine_step if impl == "ours-engine" else make_plain_step
    train_img_s, train_peak = throughput(make(model, run_model, s, resolution), s, s.batch_size)
    infer_img_s = infer_peak = None
    if impl != "ours-engine":  # the engine row's network is the "ours" row's
        model.eval()
        memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
        x = torch.randn(s.batch_size, 3, resolution, resolution, device=s.device).contiguous(
            memory_format=memory_format
        )

        def infer() -> None:
            with torch.inference_mode(), _autocast(s):
                run_model(x)

        infer_img_s, infer_peak = throughput(infer, s, s.batch_size)
    row = dict(
        model=name,
        impl=impl,
        width_mult=width_mult,
        resolution=resolution,
        compiled=compiled,
        batch_size=s.batch_size,
        num_params=sum(p.numel() for p in model.parameters()),
        train_img_per_s=round(train_img_s, 1),
        infer_img_per_s=round(infer_img_s, 1) if infer_img_s else None,
        train_peak_mib=round(train_peak) if train_peak is not None else None,
        infer_peak_mib=round(infer_peak) if infer_peak is not None else None,
    )
    return row


def release(device: torch.device, compiled: bool) -> None:
    """Free the last measurement's model, optimizer and compiled graphs before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if compiled:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------------
# Running and reporting


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="mobilenet_v1", help="ours (timm's is the same network)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation happens here)")
    p.add_argument("--compile", choices=("both", "on", "off"), default="both")
    p.add_argument("--amp", choices=("bf16", "off"), default="bf16")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of: {', '.join(IMPLS)}")
    p.add_argument("--configs", help="comma-separated subset of the model's configurations (V1: 1.0-224, 0.25-128)")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (fp32, batch 4, 1 step): checks the script")
    p.add_argument("--out", help="folder for results.json and results.md (rewritten after every measurement)")
    args = p.parse_args(argv)
    configs = MODELS[args.model]["configs"]
    if args.smoke:
        args.device, args.amp, args.batch_size, args.steps, args.warmup = "cpu", "off", 4, 1, 1
        if args.compile == "both":
            args.compile = "off"  # inductor's C++ compilation takes minutes on a small CPU
        configs = MODELS[args.model]["smoke"]
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(",")]
        unknown = sorted(set(wanted) - {c[0] for c in configs})
        if unknown:
            sys.exit(f"error: unknown --configs {', '.join(unknown)}; choose from {', '.join(c[0] for c in configs)}")
        configs = [c for c in configs if c[0] in wanted]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; run on a GPU machine, or pass --smoke (tiny CPU run) or --device cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    s = Settings(device, args.amp == "bf16", not args.no_channels_last, args.batch_size, args.steps, args.warmup)
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.compile]
    impls = [i.strip() for i in args.impls.split(",")]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        sys.exit(f"error: unknown --impls {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops on a shared CPU: more threads only wait on each other
    command = "python benchmarks/gpu_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = dict(command=command, model=args.model, timm_model=MODELS[args.model]["timm"])
    try:
        info = software()
        print(header(info, device, s))
        result.update(settings=dataclasses.asdict(s) | {"device": str(device)}, machine=info, rows=[])

        def record(row: dict) -> None:  # a run stopped at a time limit keeps the rows measured so far
            result["rows"].append(row)
            result["ratios"], result["goals"] = ratios(result["rows"]), goals(args.model, result["rows"])
            if args.out:
                write_report(Path(args.out), result)

        run(args.model, configs, modes, impls, s, record)
    finally:
        torch.set_num_threads(threads)
    for line in result["ratios"]:
        print(line)
    for g in result["goals"]:
        print(format_goal(g))
    return result


def run(name: str, configs: list[tuple], modes: list[bool], impls: list[str], s: Settings, record) -> None:
    """Measure every (configuration, compile mode, implementation), eager first; ``record(row)`` after each."""
    for label, width_mult, resolution in configs:
        for compiled in modes:
            for impl in impls:
                row = measure(impl, name, width_mult, resolution, compiled, s)
                release(s.device, compiled)
                row["config"] = label
                print(format_row(row), flush=True)
                record(row)


def header(info: dict, device: torch.device, s: Settings) -> str:
    return (
        f"# device {device}: {info['gpu'] or info['cpu']} | CPU {info['cpu']}\n"
        f"# torch {info['torch']} | torchvision {info['torchvision']} | timm {info['timm']} | "
        f"CUDA {info['cuda'] or '-'} | cuDNN {info['cudnn'] or '-'} | driver {info['driver'] or '-'}\n"
        f"# batch {s.batch_size} | {'bf16 autocast' if s.amp else 'fp32'} | "
        f"{'channels-last' if s.channels_last else 'NCHW'} | {s.steps} timed steps after {s.warmup}"
    )


def format_row(r: dict) -> str:
    infer = f"{r['infer_img_per_s']:10.0f}" if r["infer_img_per_s"] else f"{'-':>10}"
    mem = f"{r['train_peak_mib']} MiB" if r["train_peak_mib"] is not None else "-"
    return (
        f"{r['config']:>8} {r['impl']:>11} {'compiled' if r['compiled'] else 'eager':>8}: "
        f"train {r['train_img_per_s']:9.0f} img/s | infer {infer} img/s | train peak {mem}"
    )


def ratios(rows: list[dict]) -> list[str]:
    """ours / timm per configuration and compile mode."""
    lines = []
    by_key = {(r["config"], r["compiled"], r["impl"]): r for r in rows}
    for (config, compiled, impl), r in by_key.items():
        timm_row = by_key.get((config, compiled, "timm"))
        if impl == "timm" or timm_row is None:
            continue
        parts = [f"train {r['train_img_per_s'] / timm_row['train_img_per_s']:.2f}×"]
        if r["infer_img_per_s"] and timm_row["infer_img_per_s"]:
            parts.append(f"infer {r['infer_img_per_s'] / timm_row['infer_img_per_s']:.2f}×")
        mode = "compiled" if compiled else "eager"
        lines.append(f"{config} {mode}: {impl} / timm: {', '.join(parts)}")
    return lines


def goals(name: str, rows: list[dict]) -> list[dict]:
    """Each of our rows against the goal: GOAL_RATIO × timm compiled, as the H100 anchor (where the configuration
    has one) and as this run's own timm compiled row; ``met`` follows the anchor, else this run's timm. Rows with
    neither reference (an eager-only run without an anchor) are left out."""
    out = []
    timm_compiled = {r["config"]: r for r in rows if r["impl"] == "timm" and r["compiled"]}
    for r in rows:
        if r["impl"] == "timm":
            continue
        anchor = ANCHORS.get((name, r["config"]))
        for metric in ("train_img_per_s", "infer_img_per_s"):
            if not r[metric]:
                continue
            vs_anchor = r[metric] / anchor[metric] if anchor else None
            timm_row = timm_compiled.get(r["config"])
            vs_timm = r[metric] / timm_row[metric] if timm_row and timm_row[metric] else None
            if vs_anchor is None and vs_timm is None:
                continue
            out.append(
                dict(
                    config=r["config"],
                    impl=r["impl"],
                    compiled=r["compiled"],
                    metric=metric,
                    value=r[metric],
                    vs_anchor=round(vs_anchor, 3) if vs_anchor is not None else None,
                    vs_timm_compiled=round(vs_timm, 3) if vs_timm is not None else None,
                    goal=GOAL_RATIO,
                    met=(vs_anchor if vs_anchor is not None else vs_timm) >= GOAL_RATIO,
                )
            )
    return out


def format_goal(g: dict) -> str:
    what = "train" if g["metric"] == "train_img_per_s" else "infer"
    anchor = f"{g['vs_anchor']:.2f}× the H100 anchor" if g["vs_anchor"] is not None else "no anchor"
    timm = f"{g['vs_timm_compiled']:.2f}× this run's timm compiled" if g["vs_timm_compiled"] is not None else "-"
    verdict = "goal met" if g["met"] else "goal not met"
    return (
        f"{g['config']} {g['impl']} {'compiled' if g['compiled'] else 'eager'} {what} {g['value']:,.0f} img/s: "
        f"{anchor}, {timm} (goal ≥ {g['goal']}×: {verdict})"
    )


def write_report(out: Path, result: dict) -> None:
    m, s = result["machine"], result["settings"]
    fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
    lines = [
        f"# GPU training and inference throughput: ours vs timm {result['timm_model']}",
        "",
        f"`{result['command']}`",
        "",
        f"Device {s['device']}: **{m['gpu'] or m['cpu']}**; CPU {m['cpu']}. torch {m['torch']}, torchvision "
        f"{m['torchvision']}, timm {m['timm']}, CUDA {m['cuda'] or '-'}, cuDNN {m['cudnn'] or '-'}, "
        f"driver {m['driver'] or '-'}.",
        f"Batch {s['batch_size']}, {'bf16 autocast' if s['amp'] else 'fp32'}, "
        f"{'channels-last' if s['channels_last'] else 'NCHW'}, {s['steps']} timed steps after {s['warmup']}.",
        "",
        "| config | model | compile | train img/s | infer img/s | train peak MiB | infer peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['config']} | {r['impl']} | {'yes' if r['compiled'] else 'no'} | {fmt(r['train_img_per_s'])} | "
            f"{fmt(r['infer_img_per_s'])} | {fmt(r['train_peak_mib'])} | {fmt(r['infer_peak_mib'])} |"
        )
    lines += ["", *[f"- {line}" for line in result["ratios"]]]
    anchors = [(config, a) for (name, config), a in ANCHORS.items() if name == result["model"]]
    lines += [
        f"- anchor {config}: {a['what']}: train {a['train_img_per_s']:,}, infer {a['infer_img_per_s']:,} img/s"
        for config, a in anchors
    ]
    lines += [*[f"- {format_goal(g)}" for g in result["goals"]], ""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "results.md", "\n".join(lines))


if __name__ == "__main__":
    main()
