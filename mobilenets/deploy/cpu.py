"""The CPU a file runs on: its model name and the instruction sets deploy cares about.

x86: AVX2, AVX-512, VNNI (AVX512_VNNI or AVX_VNNI: 32-bit int8 dot products), AVX512_BF16, AMX.
Arm: NEON (asimd) and dotprod (asimddp). Read from /proc/cpuinfo on Linux, sysctl on macOS.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass

from mobilenets.errors import MobileNetsError

X86_FEATURES = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX": ("amx_tile",),
}
ARM_FEATURES = {"NEON": ("asimd", "neon"), "dotprod": ("asimddp", "dotprod")}
# What each runtime feature needs, and the error's wording.
NEEDS = {
    "bf16": (("AVX512_BF16", "AMX"), "bf16 math (AVX512_BF16 or AMX)"),
    "vnni": (("VNNI", "AMX"), "int8 dot products without saturation (VNNI or AMX)"),
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    flags: frozenset[str]

    @property
    def is_arm(self) -> bool:
        return self.arch.lower() in ("aarch64", "arm64") or self.arch.lower().startswith("arm")

    @property
    def features(self) -> dict[str, bool]:
        table = ARM_FEATURES if self.is_arm else X86_FEATURES
        return {name: any(f in self.flags for f in flags) for name, flags in table.items()}

    def has(self, need: str) -> bool:
        """``need`` is a key of NEEDS ("bf16", "vnni"); Arm CPUs never saturate int8 (sdot / smlal)."""
        if need == "vnni" and self.is_arm:
            return True
        feats = self.features
        return any(feats.get(f, False) for f in NEEDS[need][0])

    def line(self) -> str:
        """One line naming the CPU and its deploy-relevant instruction sets, e.g. for a table's header."""
        feats = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in self.features.items())
        return f"{self.model} ({self.arch}; {feats})"

    def to_dict(self) -> dict:
        return {"model": self.model, "arch": self.arch, "features": self.features}


def _linux_cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    return model, flags


def _macos_cpuinfo() -> tuple[str, set[str]]:
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = sysctl("machdep.cpu.brand_string")
    flags = {f.lower() for f in (sysctl("machdep.cpu.features") + " " + sysctl("machdep.cpu.leaf7_features")).split()}
    if platform.machine() == "arm64":
        flags |= {"asimd"} | ({"asimddp"} if sysctl("hw.optional.arm.FEAT_DotProd") == "1" else set())
    return model, flags


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached). ``MOBILENETS_CPU_FLAGS`` replaces the flags (to test a CPU you lack)."""
    model, flags = "", set()
    try:
        if os.path.exists("/proc/cpuinfo"):
            model, flags = _linux_cpuinfo()
        elif platform.system() == "Darwin":
            model, flags = _macos_cpuinfo()
    except OSError:
        pass
    override = os.environ.get("MOBILENETS_CPU_FLAGS")
    if override is not None:
        flags = set(override.replace(",", " ").split())
    return CpuInfo(model or platform.processor() or "unknown CPU", platform.machine() or "unknown", frozenset(flags))


def require_feature(need: str, purpose: str) -> None:
    """Raise one clear line when this CPU lacks ``need`` (a key of NEEDS) for ``purpose``."""
    info = cpu_info()
    if not info.has(need):
        raise MobileNetsError(
            f"{purpose} needs {NEEDS[need][1]}, which this CPU lacks ({info.line()}): "
            "run it on a CPU that has it, or choose another precision"
        )


THREADS_ENV = "MOBILENETS_THREADS"


def runtime_threads(threads: int | None) -> int | None:
    """The thread count a runtime runs with: ``threads`` when given (``--threads``), else ``MOBILENETS_THREADS`` when
    set, else None (the runtime's own default: all cores for ONNX Runtime, OpenVINO and ExecuTorch). Set the variable
    when several jobs share a machine: runtimes that each take every core spin against one another."""
    if threads:
        return threads
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise MobileNetsError(f"{THREADS_ENV}={value!r} is not a thread count; set a whole number ≥ 1 or unset it")
    return int(value)
