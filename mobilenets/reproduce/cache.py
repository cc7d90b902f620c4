"""The per-run cache: one JSON file per finished run under ``out_dir/cells/``, named by a hash of everything
that determines its numbers, and :class:`CellResult`, a cell's cached runs summarized."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from mobilenets.reproduce.plan import ALT_RECIPES, Cell
from mobilenets.reproduce.presets import Preset

# Bump when a change to this package or the engine makes old cached runs incomparable.
CACHE_VERSION = 2  # 2: evaluations with precise BN (issue 34)


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
        "train_overrides": dict(sorted(recipe_overrides(cell, preset).items())),
        "seed": seed,
    }


def recipe_overrides(cell: Cell, preset: Preset) -> dict:
    """The TrainConfig fields a cell's recipe sets beyond the engine preset."""
    if cell.recipe:
        return {**preset.train_overrides, **ALT_RECIPES[cell.recipe]["train_overrides"]}
    return dict(preset.train_overrides)


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(cell: Cell, seed: int, config: dict) -> str:
    return f"{cell.key}-s{seed}-{config_hash(config)}"


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
