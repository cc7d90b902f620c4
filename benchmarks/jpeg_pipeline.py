"""JPEG ImageFolder input pipelines side by side: a standard PIL DataLoader against mobilenets.data.jpeg.

Both deliver training batches to --device: RandomResizedCrop(--resolution) + horizontal flip + ImageNet
normalization, float32 NCHW, from the same folder of 500×375 JPEGs (re-encoded crops of real photos,
written once to --data unless it already holds them).

  PIL DataLoader: torchvision.datasets.ImageFolder + torchvision.transforms, DataLoader with --workers
      worker processes (pinned memory and non-blocking copies on CUDA): what most training scripts use.
  jpeg pipeline: --workers threads read the files (and, on the CPU, decode them); decode_jpeg decodes the
      batch (nvJPEG on CUDA), one roi_align per batch crops and resizes, flips and normalization are batch
      operations on the device.

img/s counts the images after the first batch of an epoch, over the time since that batch arrived (worker
start-up excluded for both), best of --epochs passes; the batches are consumed by a device sync only.

    python benchmarks/jpeg_pipeline.py --device cpu --workers 1 --images 512 --batch-size 64 --resolution 224
    python benchmarks/jpeg_pipeline.py --device cuda --workers 15 --images 4096 --batch-size 256 \
        --out reports/jpeg_pipeline
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from mobilenets import data as D
from mobilenets.data import jpeg as J


def software() -> dict:
    import PIL
    import torchvision

    from mobilenets.reproduce import hardware

    info = hardware()
    info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on a shared machine skews CPU figures
    info.update(torchvision=torchvision.__version__, pillow=PIL.__version__, cuda=torch.version.cuda)
    return info


def prepare_folder(root: Path, images: int) -> Path:
    """``root`` holding at least ``images`` JPEGs (written when missing)."""
    have = sorted(root.rglob("*.jpg")) if root.exists() else []
    if len(have) < images:
        D.write_photo_folder(root, images, num_classes=4)
    return root


def time_epochs(make_batches, device: torch.device, epochs: int) -> dict:
    """Best steady-state img/s over ``epochs`` passes (images after the first batch / time since it came)."""
    best = 0.0
    total = 0
    for _ in range(epochs):
        n, first_at, wall0 = 0, None, time.perf_counter()
        for x, _y, *_ in make_batches():
            if first_at is None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                first_at = time.perf_counter()
                continue
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter()
        total = n
        if n:
            best = max(best, n / (end - first_at))
        startup_s = first_at - wall0 if first_at else None
    return dict(img_per_s=round(best, 1), images_timed=total, first_batch_s=round(startup_s or 0, 3))


def pil_loader(root: Path, args, device: torch.device):
    from torchvision import datasets, transforms

    mean, std = D.IMAGENET_STATS
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(args.resolution, antialias=True),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    ds = datasets.ImageFolder(str(root), transform=tf)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )

    def batches():
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return batches, len(ds)


def jpeg_loader(root: Path, args, device: torch.device):
    ds = D.ImageFolderDataset(root, "train", args.resolution)
    epoch = [0]

    def batches():
        order = J.epoch_batches(len(ds), args.batch_size, seed=0, epoch=epoch[0], shuffle=True, drop_last=True)
        epoch[0] += 1
        yield from J.JpegLoader(
            ds,
            order,
            resolution=args.resolution,
            device=device,
            train=True,
            threads=args.workers,
            prefetch=2,
            builders=args.builders,
        )

    return batches, len(ds)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers / jpeg pipeline threads")
    p.add_argument("--images", type=int, default=1024, help="JPEGs in the folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument(
        "--builders", type=int, default=1, help="jpeg pipeline: batches decoded at once (threads, CUDA streams)"
    )
    p.add_argument("--epochs", type=int, default=2, help="passes over the folder per pipeline (best counts)")
    p.add_argument("--data", help="folder of JPEGs to use or fill (default: a temporary one)")
    p.add_argument("--threads", type=int, help="torch CPU threads in the main process (default: torch's)")
    p.add_argument("--out", help="folder for results.json and results.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tmp = None
    if args.data:
        root = prepare_folder(Path(args.data), args.images)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="jpeg-bench-")
        root = prepare_folder(Path(tmp.name), args.images)
    info = software()
    print(
        f"# {info['cpu']} ({info['cpu_count']} cores, load average {info['load_avg_1m']}) | "
        f"GPU: {info['gpu'] or 'none'} | device {device}"
    )
    print(
        f"# torch {info['torch']} | torchvision {info['torchvision']} | Pillow {info['pillow']} | "
        f"CUDA {info['cuda'] or '-'} | torch threads {torch.get_num_threads()}"
    )
    rows = []
    for name, make in (("PIL DataLoader", pil_loader), ("jpeg pipeline", jpeg_loader)):
        batches, n = make(root, args, device)
        r = time_epochs(batches, device, args.epochs)
        rows.append(dict(pipeline=name, workers=args.workers, device=str(device), **r))
        timed = f"{r['images_timed']} images timed, first batch {r['first_batch_s']} s"
        print(f"{name:>16}: {r['img_per_s']:8.1f} img/s  ({timed})")
        sys.stdout.flush()
    ratio = rows[1]["img_per_s"] / max(rows[0]["img_per_s"], 1e-9)
    print(f"jpeg pipeline / PIL DataLoader: {ratio:.2f}×")
    command = "python benchmarks/jpeg_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = dict(
        command=command,
        settings={k: getattr(args, k) for k in ("images", "batch_size", "resolution", "workers", "builders")},
        machine=info,
        rows=rows,
        ratio=round(ratio, 3),
    )
    if args.out:
        write_report(Path(args.out), result)
    if tmp is not None:
        tmp.cleanup()
    return result


def write_report(out: Path, result: dict) -> None:
    from mobilenets.io import atomic_write_text

    m, st = result["machine"], result["settings"]
    lines = [
        "# JPEG input pipelines: PIL DataLoader vs mobilenets.data.jpeg",
        "",
        f"`{result['command']}`",
        "",
        f"{m['cpu']} ({m['cpu_count']} cores); GPU: {m['gpu'] or 'none'}; torch {m['torch']}, torchvision "
        f"{m['torchvision']}, Pillow {m['pillow']}, CUDA {m['cuda'] or '-'}; load average {m['load_avg_1m']} "
        "when it started.",
        f"{st['images']} JPEGs of 500×375, batch {st['batch_size']}, RandomResizedCrop {st['resolution']} + flip + "
        f"normalize; jpeg pipeline builders: {st['builders']}.",
        "",
        "| pipeline | device | workers | img/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['pipeline']} | {r['device']} | {r['workers']} | {r['img_per_s']:,.0f} |" for r in result["rows"]]
    lines += ["", f"jpeg pipeline / PIL DataLoader: **{result['ratio']:.2f}×**", ""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "results.md", "\n".join(lines))


if __name__ == "__main__":
    main()
