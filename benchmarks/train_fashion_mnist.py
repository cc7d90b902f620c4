"""Time to a target Fashion-MNIST test accuracy on this machine's CPU cores (or a GPU).

Trains the demo's MobileNet (or any --width-mult / --resolution / --preset) epoch by epoch, evaluates on
the full 10,000-image test set after each, and prints the training seconds (evaluation excluded) at
which the test accuracy first reached the target, plus images/s.

    python benchmarks/train_fashion_mnist.py                       # demo model, target 88%, 2 threads
    python benchmarks/train_fashion_mnist.py --target 0.90 --epochs 6 --width-mult 0.5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mobilenets.training import demo_config, set_cpu_threads, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=float, default=0.88, help="test top-1 to reach, as a fraction")
    p.add_argument("--epochs", type=int, help="epochs to train (default: the demo's)")
    p.add_argument("--width-mult", type=float)
    p.add_argument("--resolution", type=int)
    p.add_argument("--preset")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="runs/bench_fashion_mnist")
    args = p.parse_args()

    threads = set_cpu_threads(args.threads)
    cfg = demo_config(epochs=args.epochs, width_mult=args.width_mult, out_dir=args.out_dir)
    for key in ("resolution", "preset", "batch_size"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.device, cfg.progress, cfg.plots, cfg.tensorboard = args.device, False, False, False
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    reached = next((h for h in result.history if h["test_acc"] >= args.target), None)
    print(
        f"{cfg.model} α={cfg.width_mult} {cfg.resolution}px stem {cfg.stem_stride}, preset {cfg.preset}, "
        f"batch {cfg.batch_size}, {threads} thread(s) on {args.device}"
    )
    for h in result.history:
        print(
            f"  epoch {h['epoch']}: test top-1 {100 * h['test_acc']:.2f}%  after {h['train_time_s']:.1f} s "
            f"of training ({h['img_per_s']:.0f} img/s)"
        )
    if reached:
        print(
            f"time to {100 * args.target:.1f}%: {reached['train_time_s']:.1f} s of training "
            f"({reached['epoch']} epoch(s)); wall time of the whole run {wall:.1f} s"
        )
    else:
        print(
            f"did not reach {100 * args.target:.1f}% in {cfg.epochs} epochs (best "
            f"{100 * max(h['test_acc'] for h in result.history):.2f}%)"
        )
    print(
        json.dumps(
            {
                "target": args.target,
                "time_to_target_s": reached and reached["train_time_s"],
                "epochs_to_target": reached and reached["epoch"],
                "final_test_acc": result.test_acc,
                "threads": threads,
                "wall_s": wall,
            }
        )
    )


if __name__ == "__main__":
    main()
