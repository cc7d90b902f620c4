"""Training-step time of MobileNetV1, V2 and V3 side by side, interleaved, on this machine's CPU.

On a shared machine the wall time of a whole run follows the other jobs' load; steps timed in turn, model by
model, in one process see the same load, so their ratios hold. Each step is what `mobilenets train` does on
Fashion-MNIST at 28 px (small-image stem, channels-last, Nesterov SGD): forward, cross-entropy, backward,
update, on a batch of 1-channel images.

    python benchmarks/train_step_families.py                 # the three models of the README's table, 1 thread
    python benchmarks/train_step_families.py --rounds 5 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mobilenets.models import create_model
from mobilenets.profile import profile
from mobilenets.training import set_cpu_threads

# (registered name, α): the demo's V1 first, the reference of the ratios.
MODELS = [("mobilenet_v1", 0.25), ("mobilenet_v3_small", 0.5), ("mobilenet_v2", 0.35)]


def step_timer(name: str, width_mult: float, batch_size: int, resolution: int):
    """A function that runs one training step of the model and returns its seconds."""
    torch.manual_seed(0)
    model = create_model(name, width_mult=width_mult, resolution=resolution, stem_stride=1, in_chans=1, num_classes=10)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 1, resolution, resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up: oneDNN picks its kernels
        step()
    return model, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds; each times every model once (default 3)")
    p.add_argument("--steps", type=int, default=10, help="steps per model per round (default 10)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    threads = set_cpu_threads(args.threads)
    timers = {m: step_timer(*m, args.batch_size, args.resolution) for m in MODELS}
    times: dict[tuple, list[float]] = {m: [] for m in MODELS}
    for _ in range(args.rounds):
        for m, (_, step) in timers.items():
            times[m].append(statistics.median(step() for _ in range(args.steps)))
    base = statistics.median(times[MODELS[0]])
    print(f"training step, batch {args.batch_size} at {args.resolution} px, {threads} thread(s), median of rounds")
    print(f"{'model':<24} {'Mult-Adds':>10} {'params':>8} {'ms/step':>8} {'vs V1':>6}")
    for (name, alpha), (model, _) in timers.items():
        cost = profile(model.eval())
        ms = statistics.median(times[(name, alpha)])
        print(
            f"{name + ' α=' + str(alpha):<24} {cost.mult_adds / 1e6:>9.2f}M {cost.params / 1e6:>7.3f}M "
            f"{1000 * ms:>8.1f} {ms / base:>5.2f}x"
        )


if __name__ == "__main__":
    main()
