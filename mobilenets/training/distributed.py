"""Where a run executes: devices, torchrun processes (DDP), mixed precision, CPU threads."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from mobilenets.errors import MobileNetsError


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    here = False
    if device_kind == "cuda":  # NCCL's communicators and barriers use the current device: this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        here = True
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), here)


def all_reduce(t: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    """The sum of ``t`` over the processes, on ``t``'s device (NCCL reduces GPU tensors only: a CPU tensor
    makes the trip through this rank's GPU)."""
    if not dist_info.enabled:
        return t
    import torch.distributed as dist

    if t.device.type == "cpu" and dist.get_backend() == "nccl":
        return all_reduce(t.to(torch.device("cuda", torch.cuda.current_device())), dist_info).cpu()
    dist.all_reduce(t)
    return t


def _rank_part(batch: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    """This rank's contiguous share of a global batch (rows ``batch`` is indexed by)."""
    return batch.tensor_split(dist_info.world_size)[dist_info.rank]


def _autocast(device: torch.device, amp: str):
    if amp in ("bf16", "fp16") and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return torch.autocast(device.type, enabled=False)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def resolve_device(name: str, dist_info_local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info_local_rank)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MobileNetsError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MobileNetsError("device cuda requested but no GPU is available; use --device cpu")
    return device


def set_cpu_threads(threads: int | None = None) -> int:
    """Use ``threads`` CPU threads, or by default the cores that are idle right now (at least 1).

    On a shared machine, threads that fight other processes for the cores make PyTorch's OpenMP
    barriers wait for the slowest one: on 2 busy cores, 2 threads ran a MobileNet step ~10x slower
    than 1 thread. So the default counts the cores other processes leave free, measured over 0.3 s.
    """
    if threads is None:
        cores = os.cpu_count() or 1
        threads = max(1, min(cores, round(cores - busy_cores())))
    torch.set_num_threads(threads)
    return threads


def busy_cores(window_s: float = 0.3) -> float:
    """How many cores' worth of CPU time the whole machine used in the last ``window_s`` seconds."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values[:8]), idle

    try:
        total0, idle0 = read()
        time.sleep(window_s)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):  # not Linux: fall back to the 1-minute load average
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    if total1 == total0:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))
