"""One GPU's first check (issue 31): the CUDA-only tests, our MobileNetV1 and V3-Large against timm's, and
Fashion-MNIST time to 94%, each step capped in time, all results under OUT.

    OUT=/tmp/gpu bash benchmarks/gpu_check.sh               # on one H100/H200: under 8 minutes
    OUT=/tmp/dry bash benchmarks/gpu_check.sh --dry-run     # the same steps tiny on the CPU (~35 s)
    bash benchmarks/gpu_check.sh --only fashion_mnist --fm-epochs 20      # re-run one step

The steps, in order; each runs in its own process, stopped at its cap (SIGTERM, then SIGKILL), and all of them
within --budget-s:

  environment         python, torch (2.11 expected on the GPU machine: a warning otherwise), CUDA, the GPU's name,
                      driver, timm, mobilenets from this checkout, Fashion-MNIST's files. Nothing is installed
                      and nothing downloaded (PIP_NO_INDEX, HF_HUB_OFFLINE). A problem stops the check at once with
                      one line: "gpu_check: error: ...".
  cuda_tests          every test that skips without CUDA (a skipif whose reason names CUDA, GPU, NCCL or nvJPEG, in
                      the test files that mention cuda), run by pytest; they must pass. The dry run lists them.
  mobilenet_v1        benchmarks/gpu_train.py: 1.0 at 224, batch 256, bf16 autocast, channels-last, eager and
                      torch.compile, beside timm's mobilenetv1_100 in the same run (and the engine's own step):
                      train and inference img/s, peak memory, ratios against timm and against the H100 anchors.
  fashion_mnist       the training engine (GPU-resident uint8 data, bf16, channels-last): MobileNetV1 α=1.0 at
                      28 px with the small-image stem, the sgd preset, batch 512, 16 epochs; test top-1 after each
                      epoch, seconds of training until 94% (goal ≤ 20 s) and until the anchor's 93.6% (about 52 s).
  mobilenet_v3_large  as mobilenet_v1, beside timm's mobilenetv3_large_100.

The dry run takes the same steps on the CPU with tiny models and batches: gpu_train.py --smoke, a few Fashion-MNIST
images (synthetic IDX files when the dataset is not installed), the CUDA tests collected, not run.

Fashion-MNIST: the device tool copies the git working tree only. Carry the IDX files in an ignored folder:

    mkdir -p .fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .fashion-mnist/
    x=$(git rev-parse --git-path info/exclude); grep -qx /.fashion-mnist/ "$x" || echo /.fashion-mnist/ >> "$x"
    # then run with carry [".fashion-mnist"]; it is found there (or give --fashion-mnist DIR)

Files under OUT (the device tool brings back 8 at most): summary.json and summary.md (rewritten after every step,
so a check stopped from outside keeps what it measured), gpu_check.log (every step's output), cuda_tests.xml (JUnit),
mobilenet_v1.json, fashion_mnist.json, mobilenet_v3_large.json. Each records the GPU, driver, CUDA, torch and timm.
Exit code: 0 when every step ran and the tests passed (goals met or not: they are measurements), 1 when a step failed
or hit its cap, 2 when the environment stopped the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _folder in (REPO, REPO / "benchmarks"):  # mobilenets from this checkout (gpu_check.sh puts it first); gpu_train
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))
try:
    from mobilenets.training import atomic_write_text
except ImportError as e:  # the check's one-line failure, not a traceback
    sys.exit(f"gpu_check: error: cannot import mobilenets from {REPO} ({e}): run it with the project's Python")
TESTS = REPO / "tests"
EXPECTED_TORCH = "2.11"
FASHION_MNIST_FILES = [
    f"{split}-{kind}-idx{n}-ubyte" for split in ("train", "t10k") for kind, n in (("images", 3), ("labels", 1))
]
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_CARRIED = REPO / ".fashion-mnist"  # an ignored folder the device tool's carry brings along
# A skipif whose reason says this marks a test that needs a GPU.
CUDA_REASON = re.compile(r"cuda|gpu|nccl|nvjpeg", re.IGNORECASE)
# Fashion-MNIST: the goal (issue 31) and the anchor it is set against (a plain MobileNetV1 at 32 px, H100).
FM_TARGET, FM_GOAL_S = 0.94, 20.0
FM_ANCHOR = dict(test_acc=0.936, train_time_s=52.0, what="a plain MobileNetV1 at 32 px on an H100")
GRACE_S = 15  # after SIGTERM: the engine saves a checkpoint and returns its partial result


@dataclasses.dataclass
class Step:
    name: str
    cap_s: float  # on the GPU
    dry_cap_s: float  # on the CPU (a loaded 2-core machine)
    what: str


STEPS = [
    Step("environment", 60, 120, "python, torch, CUDA, GPU, driver, timm, data"),
    Step("cuda_tests", 150, 120, "the tests that skip without CUDA"),
    Step("mobilenet_v1", 180, 120, "ours vs timm mobilenetv1_100, bf16, channels-last, eager and compiled"),
    Step("fashion_mnist", 120, 120, "the engine's time to 94% test top-1"),
    Step("mobilenet_v3_large", 180, 120, "ours vs timm mobilenetv3_large_100, the same way"),
]
STEP_NAMES = [s.name for s in STEPS]


# ----------------------------------------------------------------------------------------------------
# The steps' own work, each run as `gpu_check.py --step NAME --work DIR` in a process of its own.


def fashion_mnist_dir(explicit: str | None = None) -> tuple[Path | None, list[Path]]:
    """(the first folder holding all four Fashion-MNIST IDX files or None, the folders looked in)."""
    if explicit:
        tried = [Path(explicit)]
    else:
        env = os.environ.get("MOBILENETS_FASHION_MNIST")  # where mobilenets.data looks first too
        tried = [*([Path(env)] if env else []), FASHION_MNIST_SYSTEM, FASHION_MNIST_CARRIED]
    for d in tried:
        if all((d / f"{name}.gz").exists() or (d / name).exists() for name in FASHION_MNIST_FILES):
            return d, tried
    return None, tried


def missing_data_message(tried: list[Path]) -> str:
    return (
        f"Fashion-MNIST's four IDX files are not in {', '.join(map(str, tried))}: on a GPU machine carry them "
        "(mkdir -p .fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .fashion-mnist/, ignore it in "
        ".git/info/exclude, carry ['.fashion-mnist']) or pass --fashion-mnist DIR"
    )


def write_synthetic_idx(folder: Path, train: int = 256, test: int = 128) -> Path:
    """Random 28×28 uint8 images and labels in Fashion-MNIST's IDX format: the dry run's data when the set is absent."""
    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for stem, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            # IDX: two zero bytes, the type (0x08: unsigned byte), the number of dimensions, each as big-endian int32.
            header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / f"{prefix}-{stem}.gz", "wb") as f:
                f.write(header + array.tobytes())
    return folder


def check_environment(dry_run: bool, fashion_mnist: str | None) -> dict:
    """What the machine is, and the problems that stop the check (``problems``) or only qualify it (``warnings``)."""
    import torch

    import mobilenets

    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda_available=torch.cuda.is_available(),
        cuda=torch.version.cuda,
        cudnn=None,
        gpu=None,
        gpu_memory_gib=None,
        driver=None,
        cpu_count=os.cpu_count(),
        mobilenets=str(Path(mobilenets.__file__).resolve().parent),
    )
    problems, warnings = [], []
    if not torch.__version__.startswith(EXPECTED_TORCH + "."):
        warnings.append(f"torch {torch.__version__}, not the GPU machine's {EXPECTED_TORCH}: figures may differ")
    if torch.cuda.is_available():
        from gpu_train import gpu_driver

        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            driver=gpu_driver(),
        )
    elif not dry_run:
        problems.append(
            f"CUDA is not available (torch {torch.__version__}, CUDA build {torch.version.cuda}, sees no GPU): "
            "run on a GPU machine, or pass --dry-run for the CPU rehearsal"
        )
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError as e:
        info["timm"] = None
        problems.append(f"timm is not importable ({e}); nothing is installed over the network: carry its wheel")
    import torchvision

    info["torchvision"] = torchvision.__version__
    if not Path(info["mobilenets"]).is_relative_to(REPO):
        problems.append(f"mobilenets is imported from {info['mobilenets']}, not from {REPO}: run gpu_check.sh")
    data, tried = fashion_mnist_dir(fashion_mnist)
    info["fashion_mnist"] = str(data) if data else None
    if data is None:
        note = "the dry run writes synthetic IDX files" if dry_run else "the fashion_mnist step will fail"
        warnings.append(f"{missing_data_message(tried)}; {note}")
    return dict(result=info, problems=problems, warnings=warnings)


class CudaOnly:
    """pytest plugin: keep the tests that skip without CUDA (see CUDA_REASON), deselect the rest."""

    def __init__(self) -> None:
        self.selected: list[str] = []

    @staticmethod
    def needs_cuda(item) -> bool:
        for mark in item.iter_markers("skipif"):
            reason = mark.kwargs.get("reason", mark.args[1] if len(mark.args) > 1 else "")
            if CUDA_REASON.search(str(reason)):
                return True
        return False

    def pytest_collection_modifyitems(self, config, items) -> None:
        keep = [item for item in items if self.needs_cuda(item)]
        config.hook.pytest_deselected(items=[item for item in items if not self.needs_cuda(item)])
        items[:] = keep
        self.selected = [item.nodeid for item in keep]


def run_cuda_tests(dry_run: bool, work: Path) -> dict:
    """pytest over the CUDA-only tests (collected only in the dry run); the counts from its JUnit file."""
    import pytest

    files = [str(p.relative_to(REPO)) for p in sorted(TESTS.glob("test_*.py")) if "cuda" in p.read_text().lower()]
    plugin = CudaOnly()
    xml = work / "cuda_tests.xml"
    argv = [*files, "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    rc = int(pytest.main([*argv, "--collect-only"] if dry_run else argv, plugins=[plugin]))
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    if xml.exists() and not dry_run:
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result = dict(files=files, selected=plugin.selected, pytest_exit_code=rc, ran=not dry_run, **counts)
    if not plugin.selected:
        return dict(status="failed", message=f"no CUDA-only tests found in {', '.join(files)}", result=result)
    if dry_run:
        ok = rc == 0
        message = f"{len(plugin.selected)} CUDA-only tests collected (the dry run does not run them)"
    else:
        ok = rc == 0 and counts["passed"] > 0
        message = (
            f"{counts['passed']} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
        )
    return dict(status="ok" if ok else "failed", message=message, result=result)


def fashion_mnist_config(args: argparse.Namespace, data_dir: Path, out_dir: Path):
    """The engine's run: GPU-resident uint8 data, bf16 and channels-last on the GPU; tiny and on the CPU dry."""
    from mobilenets.training import TrainConfig

    kw = dict(
        model="mobilenet_v1",
        width_mult=args.fm_width_mult,
        resolution=28,
        stem_stride=1,  # Fashion-MNIST's 28 px keep a 2×2 final map
        dataset="fashion-mnist",
        data_dir=str(data_dir),
        preset="sgd",
        epochs=args.fm_epochs,
        batch_size=args.fm_batch_size,
        compile=args.fm_compile,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
        plots=False,
    )
    if args.dry_run:
        kw.update(device="cpu", epochs=1, batch_size=32, max_train_samples=128, max_test_samples=64)
    else:
        kw.update(device="cuda", amp="bf16", channels_last=True, gpu_data=True)
    return TrainConfig(**kw)


def train_fashion_mnist(args: argparse.Namespace, work: Path) -> dict:
    """Train with the engine, evaluating after every epoch: seconds of training to FM_TARGET and to the anchor's."""
    from mobilenets.training import train

    data_dir, tried = fashion_mnist_dir(args.fashion_mnist)
    synthetic = data_dir is None
    if synthetic:
        if not args.dry_run:
            return dict(status="failed", message=missing_data_message(tried), result={})
        data_dir = write_synthetic_idx(work / "synthetic-fashion-mnist")
    if args.dry_run:
        import torch

        torch.set_num_threads(1)  # tiny batches on a shared CPU
    cfg = fashion_mnist_config(args, data_dir, work / "fashion_mnist_run")
    start = time.perf_counter()
    r = train(cfg)
    wall = time.perf_counter() - start

    def seconds_to(acc: float) -> float | None:
        return next((h["train_time_s"] for h in r.history if h["test_acc"] >= acc), None)

    to_target, to_anchor = seconds_to(FM_TARGET), seconds_to(FM_ANCHOR["test_acc"])
    keys = ("epoch", "test_acc", "train_time_s", "img_per_s", "train_loss")
    result = dict(
        data=str(data_dir),
        synthetic=synthetic,
        config=r.config,
        history=[{k: h.get(k) for k in keys} for h in r.history],
        final_test_acc=r.test_acc,
        best_test_acc=max((h["test_acc"] for h in r.history), default=None),
        train_time_s=r.train_time_s,
        wall_s=round(wall, 1),
        interrupted=r.interrupted,
        target=FM_TARGET,
        time_to_target_s=to_target,
        anchor=FM_ANCHOR,
        time_to_anchor_acc_s=to_anchor,
        speedup_vs_anchor=round(FM_ANCHOR["train_time_s"] / to_anchor, 2) if to_anchor else None,
        goals=[
            dict(
                metric=f"seconds of training to {100 * FM_TARGET:g}% test top-1",
                value=to_target,
                goal=FM_GOAL_S,
                met=to_target is not None and to_target <= FM_GOAL_S,
            )
        ],
    )
    best = result["best_test_acc"] or 0.0
    if to_target is not None:
        message = f"{100 * FM_TARGET:g}% after {to_target:.1f} s of training (goal ≤ {FM_GOAL_S:g} s)"
    else:
        message = f"{100 * FM_TARGET:g}% not reached: best {100 * best:.2f}% in {r.train_time_s:.1f} s of training"
    if synthetic:
        message += "; synthetic data (Fashion-MNIST absent)"
    return dict(status="failed" if r.interrupted else "ok", message=message, result=result)


def run_one_step(args: argparse.Namespace) -> int:
    """`--step NAME`: do that step in this process and write WORK/NAME.json."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "environment":
        record = check_environment(args.dry_run, args.fashion_mnist)
        record["status"] = "failed" if record["problems"] else "ok"
        record["message"] = "; ".join(record["problems"] or record["warnings"] or ["ready"])
        for line in record["warnings"]:
            print(f"warning: {line}")
        print(json.dumps(record["result"], indent=2))
    elif args.step == "cuda_tests":
        record = run_cuda_tests(args.dry_run, work)
    elif args.step == "fashion_mnist":
        record = train_fashion_mnist(args, work)
    else:
        sys.exit(f"error: --step {args.step} is not run in-process")
    (work / f"{args.step}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"{args.step}: {record['status']}: {record['message']}")
    return 0


# ----------------------------------------------------------------------------------------------------
# The check: each step in its own process, capped, its output streamed to the console and the log.


def step_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INDEX="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(argv: list[str], cap_s: float, log, tail: deque) -> tuple[int | None, float]:
    """Run argv in a process group of its own for at most cap_s: (exit code, None when stopped at the cap; seconds).
    Its output goes to the console, the log and ``tail``; what it leaves running (compile workers) is ended."""
    start = time.monotonic()
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    proc = subprocess.Popen(argv, cwd=REPO, env=step_env(), start_new_session=True, **pipe)

    def pump() -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
            if line.strip():
                tail.append(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=cap_s)
    except subprocess.TimeoutExpired:
        rc = None
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=5)
    return rc, time.monotonic() - start


def step_argv(step: str, args: argparse.Namespace, work: Path) -> list[str]:
    if step.startswith("mobilenet_"):
        bench = [sys.executable, str(REPO / "benchmarks" / "gpu_train.py"), "--model", step, "--out", str(work / step)]
        impls = "timm,ours,ours-engine" if step == "mobilenet_v1" else "timm,ours"  # V3: no time for the engine row
        config = "1.0-32" if args.dry_run else "1.0-224"
        return [*bench, "--impls", impls, "--configs", config, *(["--smoke"] if args.dry_run else [])]
    argv = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--work", str(work)]
    argv += ["--fm-epochs", str(args.fm_epochs), "--fm-batch-size", str(args.fm_batch_size)]
    argv += ["--fm-width-mult", str(args.fm_width_mult), *(["--fm-compile"] if args.fm_compile else [])]
    if args.fashion_mnist:
        argv += ["--fashion-mnist", args.fashion_mnist]
    return [*argv, *(["--dry-run"] if args.dry_run else [])]


def read_step(step: str, work: Path, rc: int | None, tail: deque, cap: float) -> dict:
    """The step's record: its own JSON (gpu_train's results.json for the benchmarks), else what its output says."""
    last = tail[-1] if tail else "(no output)"
    stopped = f"stopped at its {cap:.0f} s cap"
    if step.startswith("mobilenet_"):
        path = work / step / "results.json"
        result = json.loads(path.read_text()) if path.exists() else {}
        if rc == 0:
            n, best = len(result.get("rows", [])), bench_headline(result)
            return dict(status="ok", message=f"{n} rows measured" + (f"; {best}" if best else ""), result=result)
        if rc is None:
            n = len(result.get("rows", []))
            return dict(status="timeout", message=f"{stopped} after {n} rows; last output: {last}", result=result)
        return dict(status="failed", message=last, result=result)
    path = work / f"{step}.json"
    record = json.loads(path.read_text()) if path.exists() else dict(status="failed", message=last, result={})
    if rc is None:
        record.update(status="timeout", message=f"{stopped}; " + (record["message"] if path.exists() else last))
    elif rc != 0:
        record.update(status="failed", message=last)
    return record


def bench_headline(result: dict) -> str:
    """The best of our compiled rows against the anchor (or this run's timm), for the one-line message."""
    parts = []
    for metric, what in (("train_img_per_s", "train"), ("infer_img_per_s", "infer")):
        goals = [g for g in result.get("goals", []) if g["metric"] == metric and g["impl"] == "ours"]
        if goals:
            g = max(goals, key=lambda g: g["value"])
            ref = "anchor" if g["vs_anchor"] is not None else "timm compiled"
            parts.append(f"{what} {g['value']:,.0f} img/s = {g['vs_anchor'] or g['vs_timm_compiled']:.2f}× {ref}")
    return ", ".join(parts)


def run_check(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    wanted = STEP_NAMES if not args.only else ["environment", *[s for s in STEP_NAMES if s in args.only]]
    summary = dict(
        check="benchmarks/gpu_check.sh" + (" --dry-run" if args.dry_run else ""),
        dry_run=args.dry_run,
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        budget_s=args.budget_s,
        status="running",
        environment={},
        steps=[],
    )
    deadline = time.monotonic() + args.budget_s
    try:
        with open(out / "gpu_check.log", "w") as log:
            for step in [s for s in STEPS if s.name in wanted]:
                record = run_capped(step, args, work, log, deadline)
                summary["steps"].append(record)
                if step.name == "environment":
                    summary["environment"] = record.get("result", {})
                write_outputs(out, work, summary, record)
                line = (
                    f"gpu_check: {record['name']}: {record['status']} in {record['seconds']:.0f} s: {record['message']}"
                )
                print(line, flush=True)
                log.write(line + "\n")
                if step.name == "environment" and record["status"] != "ok":
                    summary["status"] = "stopped"
                    write_outputs(out, work, summary, None)
                    print(f"gpu_check: error: {record['message']}", file=sys.stderr)
                    return 2
        failed = [s["name"] for s in summary["steps"] if s["status"] != "ok"]
        summary["status"] = "failed" if failed else "ok"
        write_outputs(out, work, summary, None)
        print(render_summary(summary))
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_capped(step: Step, args: argparse.Namespace, work: Path, log, deadline: float) -> dict:
    left = deadline - time.monotonic() - GRACE_S
    cap = min(args.caps.get(step.name, step.dry_cap_s if args.dry_run else step.cap_s), left)
    record = dict(name=step.name, what=step.what, cap_s=round(cap, 1))
    if left < 5:
        return dict(record, status="skipped", seconds=0.0, message=f"no time left in --budget-s {args.budget_s}")
    if step.name == "fashion_mnist" and not args.dry_run:
        data, tried = fashion_mnist_dir(args.fashion_mnist)
        if data is None:  # fail here, before a process and its imports
            return dict(record, status="failed", seconds=0.0, message=missing_data_message(tried), result={})
    header = f"\n===== {step.name} (cap {cap:.0f} s): {step.what} =====\n"
    print(header, end="", flush=True)
    log.write(header)
    log.flush()
    tail: deque = deque(maxlen=20)
    rc, seconds = run_process(step_argv(step.name, args, work), cap, log, tail)
    return dict(record, seconds=round(seconds, 1), exit_code=rc, **read_step(step.name, work, rc, tail, cap))


# ----------------------------------------------------------------------------------------------------
# Results: summary.json/.md, one JSON per measured step, the tests' JUnit file; each with the environment.


def write_outputs(out: Path, work: Path, summary: dict, record: dict | None) -> None:
    env = summary["environment"]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / "summary.md", render_summary(summary))
    if record is None or record["name"] == "environment":
        return
    if record["name"] == "cuda_tests":
        xml = work / "cuda_tests.xml"
        if xml.exists():
            atomic_write_text(out / "cuda_tests.xml", junit_with_environment(xml, env))
        return
    data = dict(step=record["name"], status=record["status"], message=record["message"], environment=env)
    data.update(record.get("result") or {})
    atomic_write_text(out / f"{record['name']}.json", json.dumps(data, indent=2, default=str) + "\n")


def junit_with_environment(xml: Path, env: dict) -> str:
    """The JUnit file with the machine in each test suite's <properties>."""
    tree = ET.parse(xml)
    root = tree.getroot()
    for suite in [root] if root.tag == "testsuite" else root.findall("testsuite"):
        props = suite.find("properties")
        if props is None:
            props = ET.Element("properties")
            suite.insert(0, props)
        for key in ("gpu", "driver", "cuda", "torch", "timm", "python"):
            ET.SubElement(props, "property", name=key, value=str(env.get(key)))
    return ET.tostring(root, encoding="unicode") + "\n"


def environment_line(env: dict) -> str:
    if not env:
        return "environment: not read"
    where = env.get("gpu") or "no GPU (CPU)"
    return (
        f"{where}, driver {env.get('driver') or '-'}, CUDA {env.get('cuda') or '-'}, cuDNN {env.get('cudnn') or '-'}; "
        f"torch {env.get('torch')}, torchvision {env.get('torchvision')}, timm {env.get('timm')}, "
        f"Python {env.get('python')}, {env.get('cpu_count')} CPUs"
    )


def render_summary(summary: dict) -> str:
    title = "GPU check (dry run on the CPU)" if summary["dry_run"] else "GPU check"
    lines = [
        f"# {title}: {summary['status']}",
        "",
        f"`{summary['check']}`, started {summary['started']}, budget {summary['budget_s']} s.",
        "",
        f"Machine: {environment_line(summary['environment'])}.",
        "",
        "| step | status | seconds | cap s | result |",
        "|---|---|---|---|---|",
    ]
    for s in summary["steps"]:
        message = str(s["message"]).replace("|", "/").replace("\n", " ")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['cap_s']:.0f} | {message} |")
    for s in summary["steps"]:
        lines += render_step(s)
    return "\n".join(lines) + "\n"


def render_step(s: dict) -> list[str]:
    r = s.get("result") or {}
    if s["name"] == "environment":
        return ["", "## environment", "", *[f"- {k}: {v}" for k, v in r.items()]]
    if s["name"] == "cuda_tests":
        return ["", "## cuda_tests", "", *[f"- `{t}`" for t in r.get("selected", [])]]
    if s["name"].startswith("mobilenet_") and r.get("rows"):
        from gpu_train import format_goal

        fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
        lines = ["", f"## {s['name']} vs timm {r['timm_model']}", "", f"`{r['command']}`", ""]
        lines += ["| config | model | compile | train img/s | infer img/s | train peak MiB | infer peak MiB |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(
                f"| {row['config']} | {row['impl']} | {'yes' if row['compiled'] else 'no'} | "
                f"{fmt(row['train_img_per_s'])} | {fmt(row['infer_img_per_s'])} | {fmt(row['train_peak_mib'])} | "
                f"{fmt(row['infer_peak_mib'])} |"
            )
        return [
            *lines,
            "",
            *[f"- {line}" for line in r.get("ratios", [])],
            *[f"- {format_goal(g)}" for g in r["goals"]],
        ]
    if s["name"] == "fashion_mnist" and r.get("history"):
        c = r["config"]
        lines = ["", "## fashion_mnist", ""]
        lines.append(
            f"{c['model']} α={c['width_mult']} at {c['resolution']} px (stem {c['stem_stride']}), "
            f"preset {c['preset']}, batch {c['batch_size']}, {c['epochs']} epochs, amp {c['amp']}, "
            f"compile {c['compile']}, data {r['data']}."
        )
        lines += ["", "| epoch | test top-1 % | s of training | img/s |", "|---|---|---|---|"]
        for h in r["history"]:
            lines.append(
                f"| {h['epoch']} | {100 * h['test_acc']:.2f} | {h['train_time_s']:.1f} | {h['img_per_s']:.0f} |"
            )
        a = r["anchor"]
        to_anchor = r["time_to_anchor_acc_s"]
        lines += [
            "",
            f"- to {100 * r['target']:g}%: {_seconds(r['time_to_target_s'])} (goal ≤ {FM_GOAL_S:g} s)",
            f"- to the anchor's {100 * a['test_acc']:g}%: {_seconds(to_anchor)} against {a['train_time_s']:g} s for "
            f"{a['what']}" + (f" ({r['speedup_vs_anchor']}× faster)" if to_anchor else ""),
        ]
        return lines
    return []


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s of training" if value is not None else "not reached"


# ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU")
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check", help="results folder (default $OUT)")
    p.add_argument("--budget-s", type=float, default=470, help="all steps within this many seconds (default 470)")
    p.add_argument("--only", help=f"comma-separated steps after the environment's: {', '.join(STEP_NAMES[1:])}")
    p.add_argument("--cap", action="append", default=[], metavar="STEP=S", help="a step's cap in seconds")
    p.add_argument("--fashion-mnist", metavar="DIR", help="folder of the four IDX files (default: looked for)")
    p.add_argument("--fm-epochs", type=int, default=16)
    p.add_argument("--fm-batch-size", type=int, default=512)
    p.add_argument("--fm-width-mult", type=float, default=1.0)
    p.add_argument("--fm-compile", action="store_true", help="torch.compile the Fashion-MNIST model")
    p.add_argument("--step", choices=STEP_NAMES, help=argparse.SUPPRESS)  # one step in-process (internal)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.only:
        args.only = [s.strip() for s in args.only.split(",")]
        unknown = sorted(set(args.only) - set(STEP_NAMES))
        if unknown:
            p.error(f"unknown --only {', '.join(unknown)}; choose from {', '.join(STEP_NAMES)}")
    args.caps = {}
    for item in args.cap:
        name, _, seconds = item.partition("=")
        if name not in STEP_NAMES or not re.fullmatch(r"\d+(\.\d+)?", seconds):
            p.error(f"--cap {item}: give STEP=SECONDS with STEP one of {', '.join(STEP_NAMES)}")
        args.caps[name] = float(seconds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step:
        return run_one_step(args)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
