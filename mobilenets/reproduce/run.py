"""The runner: every cell of a preset trained with each seed (or read from the cache), then judged."""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from mobilenets import data as D
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_json
from mobilenets.profile import profile
from mobilenets.reproduce.cache import (
    CellResult,
    dataset_id,
    load_cached,
    recipe_overrides,
    run_config,
    run_name,
)
from mobilenets.reproduce.claims import Claim, assess_claims
from mobilenets.reproduce.plan import ALT_RECIPES, Cell, Table, plan, plan_cells
from mobilenets.reproduce.presets import Preset, get_preset
from mobilenets.training import TrainConfig, train


def hardware() -> dict:
    """The machine a run used, for the report's header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


@dataclass
class Reproduction:
    """What :func:`reproduce` returns; :func:`mobilenets.reproduce.report.write_report` writes it out."""

    preset: Preset
    dataset: str
    out_dir: Path
    command: str
    tables: list[Table]
    cells: dict[str, CellResult]  # by Cell.key
    claims: list[Claim]
    hardware: dict
    dataset_info: dict
    recipe: dict  # the resolved training config shared by every run (model fields left out)
    started: str
    wall_time_s: float
    trained_runs: int  # runs trained by this invocation (the rest came from the cache)
    cached_runs: int

    def result(self, cell: Cell) -> CellResult | None:
        return self.cells.get(cell.key)


def default_command(
    dataset: str, preset: str, out_dir: str | os.PathLike, seeds: int | None = None, threads: int | None = None
) -> str:
    args = ["mobilenets", "reproduce", "--dataset", dataset, "--preset", preset, "--out", str(out_dir)]
    if seeds is not None:
        args += ["--seeds", str(seeds)]
    if threads is not None:
        args += ["--threads", str(threads)]
    return shlex.join(args)


def _train_config(
    cell: Cell, seed: int, preset: Preset, dataset: str, data_dir: str | None, run_dir: Path, device: str, verbose: bool
) -> TrainConfig:
    # Channels-last makes MobileNets' depthwise convs several times faster on CPU (oneDNN); the engine
    # turns it on by itself on GPU.
    channels_last = True if cell.is_mobilenet or torch.cuda.is_available() else None
    return TrainConfig(
        model=cell.model,
        width_mult=cell.width_mult,
        resolution=cell.resolution,
        stem_stride=cell.stem_stride,
        dataset=dataset,
        data_dir=data_dir,
        max_train_samples=preset.max_train_samples,
        max_test_samples=preset.max_test_samples,
        preset=ALT_RECIPES[cell.recipe]["recipe"] if cell.recipe else preset.recipe,
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        seed=seed,
        device=device,
        channels_last=channels_last,
        out_dir=str(run_dir),
        resume=True,
        progress=verbose,
        tensorboard=False,
        plots=False,
        **recipe_overrides(cell, preset),
    )


def _check_dataset(dataset: str, data_dir: str | None, preset: Preset) -> dict:
    """Load the test split once up front so a missing dataset fails before any training."""
    info = {"name": dataset_id(dataset)}
    for split, limit in (("train", preset.max_train_samples), ("test", preset.max_test_samples)):
        full = D.load_dataset(dataset, split, data_dir=data_dir, image_size=preset.resolutions[0])
        info[f"{split}_size"] = len(full)
        info[f"{split}_used"] = min(len(full), limit) if limit else len(full)
        info["num_classes"] = full.num_classes
        info["in_chans"] = full.in_chans
        info["image_size"] = getattr(full, "image_size", None)
    return info


def reproduce(
    dataset: str | None = None,
    preset: str | Preset = "quick",
    out_dir: str | os.PathLike | None = None,
    seeds: int | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    verbose: bool = False,
    progress: bool = True,
    command: str | None = None,
    on_run_done: Callable[[dict], None] | None = None,
) -> Reproduction:
    """Train and evaluate every cell of ``preset`` on ``dataset`` (seeds 0..N-1), reusing cached runs.

    Args:
        dataset: "fashion-mnist", "digits" or a folder (ImageFolder / CIFAR); None: the preset's.
        out_dir: where cells/ (the cache), runs/ (engine checkpoints) and the report go.
            None: ``reports/<preset>-<dataset>``.
        seeds: runs per cell; None: the preset's.
        threads: CPU threads for torch (None: torch's default). On a busy machine 1 can be several times
            faster than 2: OpenMP threads spin waiting for each other when the cores are shared.
        verbose: show the engine's per-epoch progress bars under the bar over runs.
        on_run_done: called with each run's record once it is cached (the tests interrupt here).
    Returns the numbers; write them with :func:`mobilenets.reproduce.report.write_report`.
    """
    wall_start = time.perf_counter()
    if threads is not None:
        if threads < 1:
            raise MobileNetsError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    preset_obj = preset if isinstance(preset, Preset) else get_preset(preset)
    dataset = dataset or preset_obj.dataset
    if seeds is not None:
        if seeds < 1:
            raise MobileNetsError(f"--seeds must be at least 1, got {seeds}")
        preset_obj = dataclasses.replace(preset_obj, seeds=seeds)
    if out_dir is None:
        out_dir = Path("reports") / f"{preset_obj.name}-{Path(dataset).name or 'data'}"
    out_dir = Path(out_dir)
    command = command or default_command(dataset, preset_obj.name, out_dir, seeds, threads)
    dataset_info = _check_dataset(dataset, data_dir, preset_obj)

    tables = plan(preset_obj)
    cells = plan_cells(tables)
    jobs = [(cell, seed) for cell in cells for seed in range(preset_obj.seeds)]
    cache_dir = out_dir / "cells"
    cache_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    records: dict[str, list[dict]] = {cell.key: [] for cell in cells}
    trained = cached = 0
    recipe: dict = {}
    bar = tqdm(jobs, desc="reproduce", unit="run", disable=not progress, dynamic_ncols=True)
    for cell, seed in bar:
        config = run_config(cell, seed, preset_obj, dataset, data_dir)
        name = run_name(cell, seed, config)
        path = cache_dir / f"{name}.json"
        record = load_cached(path, config)
        bar.set_description(f"{cell.label} seed {seed}")
        if record is None:
            run_dir = out_dir / "runs" / name
            cfg = _train_config(cell, seed, preset_obj, dataset, data_dir, run_dir, device, verbose)
            result = train(cfg)
            if result.interrupted:
                raise KeyboardInterrupt(f"interrupted during {cell.label} seed {seed}; run again to resume")
            prof = profile(result.model, cell.resolution)
            record = {
                "name": name,
                "cell": cell.key,
                "label": cell.label,
                "config": config,
                "train_config": result.config,
                "result": {
                    k: getattr(result, k)
                    for k in ("test_acc", "test_top5", "test_loss", "train_time_s", "wall_time_s", "epochs", "steps")
                },
                "history": result.history,
                "cost": {"mult_adds": prof.mult_adds, "params": prof.params, "paper_params": prof.paper_params},
                "hardware": hardware(),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            atomic_write_json(path, record)
            # The run is cached: its resume checkpoint is dead weight (model.pt stays for `mobilenets eval`).
            Path(result.checkpoint_path).unlink(missing_ok=True)
            trained += 1
            if on_run_done is not None:
                on_run_done(record)
        else:
            cached += 1
        records[cell.key].append(record)
        recipe = recipe or record.get("train_config", {})
        bar.set_postfix(top1=f"{100 * record['result']['test_acc']:.2f}%", refresh=False)
    bar.close()

    results = {}
    for cell in cells:
        runs = records[cell.key]
        cost = runs[0]["cost"]
        results[cell.key] = CellResult(cell, runs, cost["mult_adds"], cost["params"], cost["paper_params"])
    model_fields = {"model", "width_mult", "resolution", "stem_stride", "seed", "out_dir", "resume", "progress"}
    recipe = {k: v for k, v in recipe.items() if k not in model_fields}
    return Reproduction(
        preset=preset_obj,
        dataset=dataset,
        out_dir=out_dir,
        command=command,
        tables=tables,
        cells=results,
        claims=assess_claims(tables, results),
        hardware=hardware(),
        dataset_info=dataset_info,
        recipe=recipe,
        started=started,
        wall_time_s=time.perf_counter() - wall_start,
        trained_runs=trained,
        cached_runs=cached,
    )
