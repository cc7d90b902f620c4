"""Reproduce the paper's comparisons (Tables 4–9, Figures 4–5, and the SqueezeNet paper's bypass comparison, its
Table 6) on a real dataset, with one shared recipe.

    from mobilenets.reproduce import reproduce
    result = reproduce("fashion-mnist", preset="quick", out_dir="reports/quick-fashion-mnist")

Reads top to bottom: presets, the plan (which cells each paper table needs), the per-run cache, the
runner, then the five claims judged from the numbers. :mod:`mobilenets.reproduce_report` writes
report.md, the PNG plots and results.json from what :func:`reproduce` returns.

A *cell* is one model at one input size (e.g. 0.75 MobileNet at 48 px); a *run* is one cell trained with
one seed. Tables share cells (1.0 MobileNet at the top resolution appears in Tables 4, 6, 7, 8 and the
grid) and each cell is trained once. Every finished run is written to ``out_dir/cells/`` as one JSON file
named by a hash of everything that determines its numbers, so a re-run reuses it and an interrupted
reproduction resumes with the first unfinished run (which itself resumes from the engine's checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from mobilenets import paper
from mobilenets.errors import MobileNetsError
from mobilenets.profile import profile
from mobilenets.train import TrainConfig, train

# Bump when a change to this module or the engine makes old cached runs incomparable.
CACHE_VERSION = 1

# ----------------------------------------------------------------------------------------------------
# Presets


@dataclass
class Preset:
    """How big a reproduction is: which cells, how much data and training, how many seeds.

    Args:
        widths: α values, largest first (the paper's 1, 0.75, 0.5, 0.25).
        resolutions: input sides, largest first: the analog of the paper's 224/192/160/128.
        stem_stride: MobileNets' stem stride. 1 (the small-image stem) at half the input side gives the
            same feature-map sizes as 2 at the full side, for the same body cost.
        tables: the comparisons to run: "4", "5", "6", "7", "grid" (Figures 4–5), "8-9" (SqueezeNet 1.1,
            DenseNet-121 and Xception at the top resolution), "bypass" (SqueezeNet 1.0 without, with simple
            and with complex bypass: the SqueezeNet paper's Table 6).
        recipe: the training engine's preset (mobilenets.train.PRESETS); ``train_overrides`` sets any other
            TrainConfig field, the same for every cell.
    """

    name: str
    description: str
    dataset: str
    widths: tuple[float, ...]
    resolutions: tuple[int, ...]
    stem_stride: int
    tables: tuple[str, ...]
    epochs: int
    batch_size: int
    max_train_samples: int | None
    max_test_samples: int | None
    seeds: int
    recipe: str = "sgd"
    train_overrides: dict = field(default_factory=dict)


ALL_TABLES = ("4", "5", "6", "7", "grid", "8-9", "bypass")

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="CI smoke test: digits, one epoch, two cells (Table 4 at α=0.25, 32 px)",
        dataset="digits",
        widths=(0.25,),
        resolutions=(32,),
        stem_stride=1,
        tables=("4",),
        epochs=1,
        batch_size=32,
        max_train_samples=None,
        max_test_samples=None,
        seeds=1,
        train_overrides=dict(warmup_epochs=0.0),
    ),
    "quick": Preset(
        name="quick",
        description=(
            "CPU, about 15 minutes on a busy 2-core machine: two epochs over a class-balanced subset of 4,000 "
            "training images, 2,000 test images, 32–56 px inputs with the small-image stem, one seed"
        ),
        dataset="fashion-mnist",
        widths=(1.0, 0.75, 0.5, 0.25),
        resolutions=(56, 48, 40, 32),  # the paper's 224/192/160/128 divided by 4: the same ρ values
        stem_stride=1,
        tables=ALL_TABLES,
        epochs=2,
        batch_size=32,
        max_train_samples=4000,
        max_test_samples=2000,
        seeds=1,
    ),
    "full": Preset(
        name="full",
        description="GPU: the whole dataset, 112/96/80/64 px with the paper's stride-2 stem, two seeds",
        dataset="fashion-mnist",
        widths=(1.0, 0.75, 0.5, 0.25),
        resolutions=(112, 96, 80, 64),  # 28-px images upsampled 4×…2.3×: the paper's ρ = 1 … 0.571
        stem_stride=2,
        tables=ALL_TABLES,
        epochs=15,
        batch_size=256,
        max_train_samples=None,
        max_test_samples=None,
        seeds=2,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise MobileNetsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


# ----------------------------------------------------------------------------------------------------
# The plan: cells and the tables that use them

FAMILIES = {
    # family: (registered model name, display name)
    "mobilenet": ("mobilenet_v1", "MobileNet"),
    "conv": ("mobilenet_v1_conv", "Conv MobileNet"),
    "shallow": ("mobilenet_v1_shallow", "Shallow MobileNet"),
    "squeezenet": ("squeezenet1_1", "SqueezeNet 1.1"),
    "densenet": ("densenet121", "DenseNet-121"),
    "xception": ("xception", "Xception"),
    "squeezenet1_0": ("squeezenet1_0", "SqueezeNet 1.0"),
    "squeezenet_simple": ("squeezenet1_0_simple_bypass", "SqueezeNet 1.0 simple bypass"),
    "squeezenet_complex": ("squeezenet1_0_complex_bypass", "SqueezeNet 1.0 complex bypass"),
}
BYPASS_FAMILIES = ("squeezenet1_0", "squeezenet_simple", "squeezenet_complex")


def _width_text(alpha: float) -> str:
    """α as the paper prints it: "1.0", "0.75", "0.5"."""
    return "1.0" if alpha == 1 else f"{alpha:g}"


# Alternative recipes for a baseline that the shared recipe cannot train. SqueezeNet has no BatchNorm: with
# the shared SGD recipe (lr 0.05 at batch 32) its ReLU outputs die in the first steps and it stays at chance,
# so it is also trained with AdamW (no weight EMA, which lags in short runs) — reported as a separate row.
ALT_RECIPES = {
    "adamw": {"label": "AdamW", "recipe": "adamw", "train_overrides": {"ema_decay": 0.0}},
}


@dataclass(frozen=True)
class Cell:
    """One model at one input size, trained with the preset's recipe or a named alternative (ALT_RECIPES)."""

    family: str
    resolution: int
    width_mult: float | None = None  # MobileNets only
    stem_stride: int | None = None  # MobileNets only
    recipe: str | None = None  # None: the preset's recipe, shared by every cell

    @property
    def model(self) -> str:
        return FAMILIES[self.family][0]

    @property
    def is_mobilenet(self) -> bool:
        return self.width_mult is not None

    @property
    def key(self) -> str:
        key = (
            f"{self.family}-a{self.width_mult}-r{self.resolution}"
            if self.is_mobilenet
            else (f"{self.family}-r{self.resolution}")
        )
        return f"{key}-{self.recipe}" if self.recipe else key

    @property
    def label(self) -> str:
        """The paper's way of naming it, e.g. "0.75 MobileNet-48" (α first, input side last)."""
        name = FAMILIES[self.family][1]
        label = f"{_width_text(self.width_mult)} {name}" if self.is_mobilenet else name
        label = f"{label}-{self.resolution}"
        return f"{label} ({ALT_RECIPES[self.recipe]['label']})" if self.recipe else label

    def model_kwargs(self) -> dict:
        kw: dict = {"resolution": self.resolution}
        if self.is_mobilenet:
            kw.update(width_mult=self.width_mult, stem_stride=self.stem_stride)
        return kw


@dataclass
class Row:
    cell: Cell
    paper: paper.PaperRow | None  # the paper's row this cell stands for (None: the paper has none)


@dataclass
class Table:
    id: str  # "4", "5", "6", "7", "grid", "8-9"
    title: str
    rows: list[Row]


def _paper_row(table: str, label: str) -> paper.PaperRow | None:
    for row in paper.ROWS + paper.OTHER_ROWS:
        if row.table == table and row.label == label:
            return row
    return None


def plan(preset: Preset) -> list[Table]:
    """The tables a preset fills, each row a cell beside the paper's row it stands for.

    The paper's α and resolutions map onto the preset's by position: its 224/192/160/128 are our
    ``resolutions`` in order, so "1.0 MobileNet-160" is our α=1 at ``resolutions[2]``.
    """
    widths, sizes, stem = preset.widths, preset.resolutions, preset.stem_stride
    top, alpha = sizes[0], widths[0]
    paper_sizes = (224, 192, 160, 128)

    def mobilenet(a: float, r: int, family: str = "mobilenet") -> Cell:
        return Cell(family, r, a, stem)

    def paper_size(r: int) -> int | None:
        i = sizes.index(r)
        return paper_sizes[i] if i < len(paper_sizes) else None

    tables: list[Table] = []
    for tid in preset.tables:
        if tid == "4":
            rows = [
                Row(mobilenet(alpha, top, "conv"), _paper_row("4", "Conv MobileNet")),
                Row(mobilenet(alpha, top), _paper_row("4", "MobileNet")),
            ]
            tables.append(Table("4", "Table 4 — depthwise separable vs full convolution", rows))
        elif tid == "5":
            thin = next((a for a in widths if a == 0.75), widths[min(1, len(widths) - 1)])
            rows = [
                Row(mobilenet(thin, top), _paper_row("5", "0.75 MobileNet")),
                Row(mobilenet(alpha, top, "shallow"), _paper_row("5", "Shallow MobileNet")),
            ]
            tables.append(Table("5", "Table 5 — narrow vs shallow MobileNet", rows))
        elif tid == "6":
            rows = [Row(mobilenet(a, top), _paper_row("6", f"{_width_text(a)} MobileNet-224")) for a in widths]
            tables.append(Table("6", "Table 6 — MobileNet width multiplier α", rows))
        elif tid == "7":
            rows = [Row(mobilenet(alpha, r), _paper_row("7", f"1.0 MobileNet-{paper_size(r)}")) for r in sizes]
            tables.append(Table("7", "Table 7 — MobileNet resolution ρ", rows))
        elif tid == "grid":
            rows = [Row(mobilenet(a, r), None) for a in widths for r in sizes]
            tables.append(Table("grid", "Figures 4–5 — the α×ρ grid", rows))
        elif tid == "8-9":
            half = next((a for a in widths if a == 0.5), widths[-1])
            mid = sizes[min(2, len(sizes) - 1)]
            rows = [
                Row(mobilenet(alpha, top), _paper_row("8", "1.0 MobileNet-224")),
                Row(mobilenet(half, mid), _paper_row("9", f"0.50 MobileNet-{paper_size(mid)}")),
                Row(Cell("squeezenet", top), _paper_row("9", "SqueezeNet")),
                Row(Cell("squeezenet", top, recipe="adamw"), _paper_row("9", "SqueezeNet")),
                Row(Cell("densenet", top), None),
                Row(Cell("xception", top), _paper_row("X 3", "Xception (299)")),
            ]
            tables.append(Table("8-9", "Tables 8–9 — MobileNet vs other networks at the same input size", rows))
        elif tid == "bypass":
            # SqueezeNet has no BatchNorm and stays at chance under the shared SGD recipe: all three use the
            # AdamW alternative (same recipe, budget and seeds for each).
            rows = [
                Row(Cell(family, top, recipe="adamw"), paper_row)
                for family, paper_row in zip(BYPASS_FAMILIES, paper.squeezenet_table6_rows())
            ]
            tables.append(Table("bypass", "SqueezeNet paper Table 6 — bypass connections", rows))
        else:
            raise MobileNetsError(f"unknown table {tid!r}; choose from {', '.join(ALL_TABLES)}")
    return tables


def plan_cells(tables: list[Table]) -> list[Cell]:
    """Every distinct cell of the tables, in order of first use."""
    cells: dict[Cell, None] = {}
    for table in tables:
        for row in table.rows:
            cells.setdefault(row.cell)
    return list(cells)


# ----------------------------------------------------------------------------------------------------
# The per-run cache


def dataset_id(dataset: str) -> str:
    """What names a dataset in a cache key: the built-in name, or the absolute path of a folder."""
    key = dataset.lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist", "digits"):  # the spellings mobilenets.data accepts
        return "digits" if key == "digits" else "fashion-mnist"
    return str(Path(dataset).expanduser().resolve())


def run_config(cell: Cell, seed: int, preset: Preset, dataset: str, data_dir: str | None = None) -> dict:
    """Everything that determines a run's numbers (and nothing else: not the device, not the output folder)."""
    return {
        "cache_version": CACHE_VERSION,
        "model": cell.model,
        **cell.model_kwargs(),
        "dataset": dataset_id(dataset),
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "max_train_samples": preset.max_train_samples,
        "max_test_samples": preset.max_test_samples,
        "epochs": preset.epochs,
        "batch_size": preset.batch_size,
        "recipe": ALT_RECIPES[cell.recipe]["recipe"] if cell.recipe else preset.recipe,
        "train_overrides": dict(sorted(_overrides(cell, preset).items())),
        "seed": seed,
    }


def _overrides(cell: Cell, preset: Preset) -> dict:
    """The TrainConfig fields a cell's recipe sets beyond the engine preset."""
    if cell.recipe:
        return {**preset.train_overrides, **ALT_RECIPES[cell.recipe]["train_overrides"]}
    return dict(preset.train_overrides)


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(cell: Cell, seed: int, config: dict) -> str:
    return f"{cell.key}-s{seed}-{config_hash(config)}"


def write_json_atomic(path: Path, obj) -> None:
    """JSON to a temporary file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_cached(path: Path, config: dict, done: tuple[str, ...] = ("result", "test_acc")) -> dict | None:
    """The cached record at ``path`` if it was made with exactly ``config`` and is complete: the key path
    ``done`` (by default ``record["result"]["test_acc"]``) leads to a value."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("config") != config:
        return None
    value = record
    for key in done:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return record


# ----------------------------------------------------------------------------------------------------
# Running


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
class CellResult:
    """A cell's runs, summarized: accuracies are percentages, costs exact counts."""

    cell: Cell
    runs: list[dict]  # the cached records, one per seed
    mult_adds: int
    params: int
    paper_params: int

    @property
    def accs(self) -> list[float]:
        return [100 * r["result"]["test_acc"] for r in self.runs]

    @property
    def acc(self) -> float:
        return sum(self.accs) / len(self.accs)

    @property
    def acc_sd(self) -> float | None:
        """Sample standard deviation over seeds (None with one seed)."""
        a = self.accs
        if len(a) < 2:
            return None
        m = sum(a) / len(a)
        return math.sqrt(sum((x - m) ** 2 for x in a) / (len(a) - 1))

    @property
    def top5(self) -> float:
        return sum(100 * r["result"]["test_top5"] for r in self.runs) / len(self.runs)

    @property
    def train_time_s(self) -> float:
        return sum(r["result"]["train_time_s"] for r in self.runs) / len(self.runs)

    def to_dict(self) -> dict:
        return {
            "key": self.cell.key,
            "label": self.cell.label,
            "model": self.cell.model,
            **self.cell.model_kwargs(),
            "mult_adds": self.mult_adds,
            "params": self.params,
            "paper_params": self.paper_params,
            "top1_mean": self.acc,
            "top1_sd": self.acc_sd,
            "top1_per_seed": self.accs,
            "top5_mean": self.top5,
            "train_time_s_mean": self.train_time_s,
            "seeds": [r["config"]["seed"] for r in self.runs],
            "runs": [r["name"] for r in self.runs],
        }


@dataclass
class Reproduction:
    """What :func:`reproduce` returns; :func:`mobilenets.reproduce_report.write_report` writes it out."""

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
        **_overrides(cell, preset),
    )


def _check_dataset(dataset: str, data_dir: str | None, preset: Preset) -> dict:
    """Load the test split once up front so a missing dataset fails before any training."""
    from mobilenets import data as D

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
    Returns the numbers; write them with :func:`mobilenets.reproduce_report.write_report`.
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
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir / "cells"

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
            write_json_atomic(path, record)
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


# ----------------------------------------------------------------------------------------------------
# The five claims, judged from the numbers

# Accuracy differences below the tolerance are called ties. It is twice a measured noise level, never less
# than MIN_TOLERANCE_PTS: the pooled seed standard deviation with several seeds, and with one seed the
# residual standard deviation of the α×ρ grid around an additive fit (accuracy = f(α) + g(ρ)), the textbook
# noise estimate of a two-way table without replicates.
MIN_TOLERANCE_PTS = 0.5
# "About 1 point" (Table 4: −1.1) and "nearly as accurate" (Table 8: VGG16 −0.9) are read as within 2 points.
NEAR_PTS = 2.0

AGREES, DISAGREES, PARTLY, INCONCLUSIVE, NOT_RUN = "agrees", "disagrees", "partly agrees", "inconclusive", "not run"


@dataclass
class Claim:
    id: int
    title: str
    paper: str  # what the paper measured
    ours: str  # what we measured
    verdict: str
    detail: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def noise(results: dict[str, CellResult], tables: list[Table] | None = None) -> tuple[float, str]:
    """The tie threshold in accuracy points and how it was measured (see MIN_TOLERANCE_PTS)."""
    sds = [r.acc_sd for r in results.values() if r.acc_sd is not None]
    if sds:
        pooled = math.sqrt(sum(s * s for s in sds) / len(sds))
        return max(MIN_TOLERANCE_PTS, 2 * pooled), f"twice the pooled seed standard deviation ({pooled:.2f})"
    grid = _table(tables or [], "grid")
    if grid:
        widths = sorted({r.cell.width_mult for r in grid.rows})
        sizes = sorted({r.cell.resolution for r in grid.rows})
        acc = {(r.cell.width_mult, r.cell.resolution): results[r.cell.key].acc for r in grid.rows}
        if len(widths) >= 2 and len(sizes) >= 2 and len(acc) == len(widths) * len(sizes):
            mean = sum(acc.values()) / len(acc)
            row = {a: sum(acc[a, s] for s in sizes) / len(sizes) for a in widths}
            col = {s: sum(acc[a, s] for a in widths) / len(widths) for s in sizes}
            ss = sum((acc[a, s] - row[a] - col[s] + mean) ** 2 for a in widths for s in sizes)
            sd = math.sqrt(ss / ((len(widths) - 1) * (len(sizes) - 1)))
            return max(MIN_TOLERANCE_PTS, 2 * sd), (
                f"one seed, so twice the residual standard deviation ({sd:.2f}) of the α×ρ grid around an "
                "additive fit accuracy = f(α) + g(ρ)"
            )
    return MIN_TOLERANCE_PTS, "one seed and no grid to measure noise on: a floor, not an estimate"


def tolerance(results: dict[str, CellResult], tables: list[Table] | None = None) -> float:
    """Accuracy differences below this many points are within noise (see :func:`noise`)."""
    return noise(results, tables)[0]


def loglinear_fit(mult_adds: list[float], accs: list[float]) -> tuple[float, float]:
    """Least-squares fit of accuracy against log10(Mult-Adds): (points per 10× Mult-Adds, R²)."""
    xs = [math.log10(m) for m in mult_adds]
    n = len(xs)
    if n < 2:
        return float("nan"), float("nan")
    mx, my = sum(xs) / n, sum(accs) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, accs))
    syy = sum((y - my) ** 2 for y in accs)
    if sxx == 0:
        return float("nan"), float("nan")
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy else 1.0
    return slope, r2


def fewer(big: float, small: float) -> str:
    """ "8.6× fewer" when ``small`` is smaller, "1.5× more" when it is not."""
    return f"{big / small:.1f}× fewer" if big >= small else f"{small / big:.1f}× more"


def _bypass_claim(table: Table | None, results: dict[str, CellResult], tol: float) -> Claim:
    """SqueezeNet paper §6: a simple bypass beats vanilla SqueezeNet, and beats the costlier complex bypass."""
    title = "A simple bypass makes SqueezeNet more accurate, and beats the complex bypass at lower cost"
    if table is None:
        return Claim(6, title, "", "", NOT_RUN)
    vanilla, simple, complex_ = (results[row.cell.key] for row in table.rows)
    gain, over_complex = simple.acc - vanilla.acc, simple.acc - complex_.acc
    ours = (
        f"vanilla {vanilla.acc:.2f}%, simple bypass {simple.acc:.2f}% ({gain:+.2f}), complex bypass "
        f"{complex_.acc:.2f}% ({complex_.acc - vanilla.acc:+.2f}) at {fewer(complex_.params, simple.params)} "
        "parameters for the simple one"
    )
    beats_vanilla, beats_complex = gain > tol, over_complex > tol
    if beats_vanilla and beats_complex:
        verdict, detail = AGREES, f"the simple bypass wins both comparisons beyond the {tol:.1f}-point noise."
    elif gain < -tol:
        verdict, detail = DISAGREES, f"the simple bypass is {-gain:.2f} points *worse* than vanilla SqueezeNet."
    elif beats_vanilla or beats_complex:
        verdict = PARTLY
        detail = (
            f"the simple bypass beats {'vanilla' if beats_vanilla else 'the complex bypass'} beyond the "
            f"{tol:.1f}-point noise but is within it of {'the complex bypass' if beats_vanilla else 'vanilla'}."
        )
    else:
        verdict, detail = INCONCLUSIVE, f"all three are within the {tol:.1f}-point noise of the simple bypass."
    paper_txt = "vanilla 57.5%, simple bypass 60.4% (+2.9), complex bypass 58.8% (+1.3); 4.8, 4.8 and 7.7 MB"
    return Claim(6, title, paper_txt, ours, verdict, detail)


def _table(tables: list[Table], tid: str) -> Table | None:
    return next((t for t in tables if t.id == tid), None)


def _sweep_claim(
    cid: int, title: str, table: Table | None, results: dict[str, CellResult], tol: float, what: str
) -> Claim:
    """Claims 3 and 4: accuracy falls steadily as α (or ρ) shrinks, about linearly in log Mult-Adds."""
    if table is None or len(table.rows) < 2:
        return Claim(cid, title, "", "", NOT_RUN)
    rows = [(row, results[row.cell.key]) for row in table.rows]
    paper_rows = [row.paper for row, _ in rows if row.paper is not None]
    paper_txt, paper_slope = "", None
    if len(paper_rows) == len(rows):
        paper_slope, r2 = loglinear_fit([float(p.mult_adds) for p in paper_rows], [float(p.top1) for p in paper_rows])
        paper_txt = (
            f"{' → '.join(p.top1 for p in paper_rows)}% as {what} shrinks; {paper_slope:.1f} points per 10× Mult-Adds "
            f"(log-linear fit R² = {r2:.2f})"
        )
    accs = [r.acc for _, r in rows]
    slope, r2 = loglinear_fit([r.mult_adds for _, r in rows], accs)
    rises = [(rows[i][1].cell.label, rows[i + 1][1].cell.label, accs[i + 1] - accs[i]) for i in range(len(accs) - 1)]
    inversions = [(a, b, d) for a, b, d in rises if d > tol]
    ours = (
        f"{' → '.join(f'{a:.2f}' for a in accs)}%; {slope:.1f} points per 10× Mult-Adds (R² = {r2:.2f}); "
        f"{len(inversions)} step(s) where accuracy rose by more than {tol:.1f} points"
    )
    total_drop = accs[0] - accs[-1]
    if not inversions and total_drop > tol:
        verdict = AGREES
        detail = f"accuracy falls monotonically (within {tol:.1f} points) by {total_drop:.2f} points in all."
    elif total_drop > tol:
        verdict = PARTLY
        detail = "accuracy falls overall but not monotonically: " + "; ".join(
            f"{b} beats {a} by {d:.2f} points" for a, b, d in inversions
        )
    elif abs(total_drop) <= tol:
        verdict = INCONCLUSIVE
        detail = f"the largest and smallest {what} are within {tol:.1f} points: the sweep is flat at this budget."
    else:
        verdict = DISAGREES
        detail = f"the smallest {what} is {-total_drop:.2f} points *more* accurate than the largest."
    if paper_slope is not None and verdict != DISAGREES:
        detail += (
            f" The decline is {slope:.1f} points per 10× fewer Mult-Adds against the paper's {paper_slope:.1f}"
            + (": much flatter than on ImageNet." if slope < paper_slope / 2 else ".")
        )
    return Claim(cid, title, paper_txt, ours, verdict, detail)


def assess_claims(tables: list[Table], results: dict[str, CellResult]) -> list[Claim]:
    """The paper's five claims and the SqueezeNet paper's bypass claim, each with our numbers and a verdict (see
    the thresholds above)."""
    tol = tolerance(results, tables)
    claims = []

    # 1. Table 4: depthwise separable ≈ full convolution at ~8–9× fewer Mult-Adds.
    title = "Depthwise separable convolutions cost ~8–9× fewer Mult-Adds than full ones for ~1 point of accuracy"
    t4 = _table(tables, "4")
    if t4:
        conv, sep = (results[row.cell.key] for row in t4.rows)
        ratio = conv.mult_adds / sep.mult_adds
        diff = sep.acc - conv.acc
        ours = (
            f"MobileNet {sep.acc:.2f}% vs Conv MobileNet {conv.acc:.2f}% ({diff:+.2f} points) at "
            f"{fewer(conv.mult_adds, sep.mult_adds)} Mult-Adds and {fewer(conv.params, sep.params)} parameters"
        )
        cost_ok = 7 <= ratio <= 10
        if diff >= -NEAR_PTS and cost_ok:
            verdict = AGREES
            detail = (
                f"separable is {abs(diff):.2f} points {'more' if diff > 0 else 'less'} accurate than full "
                f'convolution (paper: 1.1 less), within the {NEAR_PTS:g} points read as "about 1 point", at '
                f"{ratio:.1f}× fewer Mult-Adds (paper: 8.6×)."
            )
        elif diff >= -NEAR_PTS:
            verdict, detail = PARTLY, f"accuracy holds but the cost ratio {ratio:.1f}× is outside 7–10×"
        else:
            verdict, detail = DISAGREES, f"separable loses {-diff:.2f} points, more than {NEAR_PTS:g}"
        claims.append(
            Claim(
                1,
                title,
                "MobileNet 70.6% vs Conv MobileNet 71.7% (−1.1) at 8.6× fewer Mult-Adds",
                ours,
                verdict,
                detail,
            )
        )
    else:
        claims.append(Claim(1, title, "", "", NOT_RUN))

    # 2. Table 5: at about equal cost, thinner beats shallower.
    title = "At equal cost a thinner network beats a shallower one"
    t5 = _table(tables, "5")
    if t5:
        thin, shallow = (results[row.cell.key] for row in t5.rows)
        diff = thin.acc - shallow.acc
        ours = (
            f"{thin.cell.label} {thin.acc:.2f}% ({thin.mult_adds / 1e6:.1f}M Mult-Adds) vs "
            f"{shallow.cell.label} {shallow.acc:.2f}% ({shallow.mult_adds / 1e6:.1f}M): {diff:+.2f} points"
        )
        if diff > tol:
            verdict = AGREES
            detail = (
                f"the thinner network is {diff:.2f} points more accurate (paper: 3.1), beyond the "
                f"{tol:.1f}-point noise."
            )
        elif diff < -tol:
            verdict = DISAGREES
            detail = (
                f"the shallower network is {-diff:.2f} points more accurate, beyond the {tol:.1f}-point noise: "
                "the opposite of the paper's +3.1."
            )
        else:
            verdict = INCONCLUSIVE
            detail = f"the two are {abs(diff):.2f} points apart, within the {tol:.1f}-point noise."
        claims.append(
            Claim(
                2,
                title,
                "0.75 MobileNet 68.4% vs Shallow MobileNet 65.3% (+3.1) at 325M vs 307M",
                ours,
                verdict,
                detail,
            )
        )
    else:
        claims.append(Claim(2, title, "", "", NOT_RUN))

    # 3–4. Tables 6–7: smooth decline with α and with ρ.
    claims.append(
        _sweep_claim(
            3, "Accuracy falls smoothly as the width multiplier α shrinks", _table(tables, "6"), results, tol, "α"
        )
    )
    claim4 = _sweep_claim(
        4, "Accuracy falls smoothly as the resolution multiplier ρ shrinks", _table(tables, "7"), results, tol, "ρ"
    )
    grid = _table(tables, "grid")
    if grid and claim4.verdict != NOT_RUN:
        cells = [results[row.cell.key] for row in grid.rows]
        slope, r2 = loglinear_fit([c.mult_adds for c in cells], [c.acc for c in cells])
        claim4.ours += f"; over the {len(cells)}-cell α×ρ grid, {slope:.1f} points per 10× Mult-Adds, R² = {r2:.2f}"
        claim4.paper += "; Figure 4: the 16 α×ρ models lie on a log-linear trend (a drop at α = 0.25)"
    claims.append(claim4)

    # 5. Tables 8–9: MobileNet vs SqueezeNet and DenseNet per Mult-Add.
    title = "MobileNet beats SqueezeNet and nearly matches much larger networks per Mult-Add"
    t89 = _table(tables, "8-9")
    if t89:
        claims.append(_baseline_claim(title, t89, tables, results, tol))
    else:
        claims.append(Claim(5, title, "", "", NOT_RUN))

    # 6. SqueezeNet paper Table 6: bypass connections.
    claims.append(_bypass_claim(_table(tables, "bypass"), results, tol))
    return claims


def _baseline_claim(title: str, t89: Table, tables: list[Table], results: dict[str, CellResult], tol: float) -> Claim:
    # SqueezeNet's best showing (the shared recipe or its alternative): the claim is MobileNet beating it.
    squeeze = max((results[r.cell.key] for r in t89.rows if r.cell.family == "squeezenet"), key=lambda r: r.acc)
    dense = next(results[r.cell.key] for r in t89.rows if r.cell.family == "densenet")
    top = results[t89.rows[0].cell.key]
    mobilenets = {k: r for k, r in results.items() if r.cell.family == "mobilenet"}
    parts, verdicts = [], []

    # SqueezeNet: is there a MobileNet at no more Mult-Adds with higher accuracy (the paper's 0.50 MobileNet-160)?
    cheaper = [r for r in mobilenets.values() if r.mult_adds <= squeeze.mult_adds]
    if cheaper:
        best = max(cheaper, key=lambda r: r.acc)
        diff = best.acc - squeeze.acc
        parts.append(
            f"best MobileNet at ≤ SqueezeNet 1.1's {squeeze.mult_adds / 1e6:.1f}M Mult-Adds: {best.cell.label} "
            f"{best.acc:.2f}% vs {squeeze.cell.label} {squeeze.acc:.2f}% ({diff:+.2f} points, "
            f"{fewer(squeeze.mult_adds, best.mult_adds)} Mult-Adds)"
        )
        verdicts.append(AGREES if diff > tol else DISAGREES if diff < -tol else INCONCLUSIVE)
    else:
        cheapest = min(mobilenets.values(), key=lambda r: r.mult_adds)
        parts.append(
            f"SqueezeNet 1.1 ({squeeze.mult_adds / 1e6:.1f}M Mult-Adds, {squeeze.acc:.2f}%) is cheaper than every "
            f"MobileNet here (cheapest {cheapest.cell.label}: {cheapest.mult_adds / 1e6:.1f}M, {cheapest.acc:.2f}%)"
        )
        verdicts.append(AGREES if cheapest.acc > squeeze.acc + tol else INCONCLUSIVE)

    # DenseNet-121: the cheapest MobileNet within NEAR_PTS of it, and how many fewer Mult-Adds it needs.
    diff = top.acc - dense.acc
    parts.append(
        f"{top.cell.label} {top.acc:.2f}% vs DenseNet-121 {dense.acc:.2f}% ({diff:+.2f} points) at "
        f"{fewer(dense.mult_adds, top.mult_adds)} Mult-Adds and {fewer(dense.params, top.params)} parameters"
    )
    near = [r for r in mobilenets.values() if r.acc >= dense.acc - NEAR_PTS]
    if near:
        cheapest = min(near, key=lambda r: r.mult_adds)
        ratio = dense.mult_adds / cheapest.mult_adds
        parts.append(
            f"cheapest MobileNet within {NEAR_PTS:g} points of DenseNet-121: {cheapest.cell.label} "
            f"{cheapest.acc:.2f}% at {fewer(dense.mult_adds, cheapest.mult_adds)} Mult-Adds"
        )
        # The paper's "much larger" networks cost 2.7× (GoogleNet) to 27× (VGG16) more.
        verdicts.append(AGREES if ratio >= 2 else PARTLY)
    else:
        parts.append(f"no MobileNet comes within {NEAR_PTS:g} points of DenseNet-121")
        verdicts.append(DISAGREES)

    if all(v == AGREES for v in verdicts):
        verdict = AGREES
    elif all(v == DISAGREES for v in verdicts):
        verdict = DISAGREES
    elif AGREES in verdicts or PARTLY in verdicts:
        verdict = PARTLY
    else:
        verdict = INCONCLUSIVE if INCONCLUSIVE in verdicts else DISAGREES
    paper_txt = (
        "0.50 MobileNet-160 60.2% vs SqueezeNet 57.5% at 22× fewer Mult-Adds (76M vs 1700M); "
        "1.0 MobileNet-224 70.6% vs VGG16 71.5% at 27× fewer Mult-Adds, vs GoogleNet 69.8% at 2.7× fewer"
    )
    detail = f"SqueezeNet part: {verdicts[0]}; DenseNet part: {verdicts[1]}."
    return Claim(5, title, paper_txt, "; ".join(parts), verdict, detail)
