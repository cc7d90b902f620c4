"""Transfer measured on real data (issue 11): small-data fine-tuning and distillation on Fashion-MNIST, CPU only.

    .venv/bin/python benchmarks/transfer_fashion_mnist.py --out reports/transfer-fashion-mnist --threads 2
    .venv/bin/python benchmarks/transfer_fashion_mnist.py --quick --out /tmp/transfer      # smoke test

The full plan is 11 runs: about 29 minutes of single-thread CPU time (each piece timed with the engine on one
thread: (a) 7, the teacher 6.5, the four students 15), about 20 minutes on 2 idle cores with --threads 2.
``--set student_epochs=1`` saves about 7 minutes.

(a) Small-data fine-tuning (the paper's §4.3 on Stanford Dogs, in miniature). MobileNet 1.0 trained on 1,000
    Fashion-MNIST training images (100 per class, a fixed class-balanced subset) three ways, with the same
    steps and input size: the ImageNet-pretrained network fine-tuned, the same network as a linear probe
    (backbone frozen) and from random initialization. Scored on all 10,000 test images.
(b) Distillation (the paper's §4.5 and §4.7). An α=1.0 teacher fine-tuned from ImageNet weights on the whole
    training set, then an α=0.25 student trained against the teacher's softened logits and the same student
    alone: same recipe and epochs, two seeds each.

Every run goes through the library (``mobilenets.training.train(TrainConfig(...))``). A finished run is cached
as ``OUT/cells/<run>.json`` (named by a hash of its config), so an interrupted report resumes; the
engine's own files go to ``OUT/runs/`` (not committed). report.md, results.json and transfer.png are
rewritten atomically from the cache at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_path, atomic_write_json, atomic_write_text
from mobilenets.reproduce import config_hash, hardware, load_cached

# Bump when a change here or in the engine makes cached runs incomparable.
CACHE_VERSION = 2  # 2: evaluations with precise BN (issue 34)
FINETUNE_GOAL_PTS = 5.0  # the goal: fine-tuned ≥ 5 points above scratch
DISTILL_GOAL_PTS = 0.5  # … and the distilled student ≥ 0.5 point above the student alone
MIN_NOISE_PTS = 0.5  # a gain below this is never called beyond noise (as mobilenets.reproduce)

# The paper's distillation results (../shared/PAPER.md). It reports no student trained without its teacher:
# its claim is that a distilled MobileNet comes close to the much larger model it learned from.
PAPER_DISTILLATION = [
    {
        "section": "§4.5 face attributes (Table 12, mean AP)",
        "teacher": "in-house baseline: 86.9%, 1600M Mult-Adds, 7.5M params",
        "students": "1.0 MobileNet-224 88.7% (568M, 3.2M); 0.5-224 88.1% (149M, 0.8M); "
        "0.25-224 87.2% (45M, 0.2M); 0.25-128 86.4% (15M, 0.2M)",
    },
    {
        "section": "§4.7 face embeddings (Table 14, 1e-4 accuracy)",
        "teacher": "FaceNet: 83%, 1600M Mult-Adds, 7.5M params",
        "students": "1.0 MobileNet-160 79.4% (286M, 4.9M), trained on FaceNet's outputs",
    },
]

# ----------------------------------------------------------------------------------------------------
# Plans


@dataclass
class Plan:
    """How big a report is. Sizes in pixels; ``None`` samples = the whole split."""

    name: str
    description: str
    # (a) small-data fine-tuning
    finetune_train_samples: int
    finetune_resolution: int
    finetune_epochs: int
    finetune_batch: int
    scratch_preset: str
    # (b) distillation
    teacher_train_samples: int | None
    teacher_resolution: int
    teacher_epochs: int
    teacher_batch: int
    student_width: float
    student_train_samples: int | None
    student_resolution: int
    student_epochs: int
    student_batch: int
    student_preset: str
    seeds: int
    distill_weight: float
    distill_temperature: float
    test_samples: int | None


PLANS = {
    "full": Plan(
        name="full",
        description=(
            "the issue's sizes: (a) 1,000 training images, 96 px, 10 epochs; (b) the 60,000 training images at 64 px, "
            "teacher 1 epoch, students 2 epochs; 11 runs, ~29 min of single-thread CPU time (measured per piece), "
            "about 20 minutes on 2 idle cores"
        ),
        finetune_train_samples=1000,
        finetune_resolution=96,
        finetune_epochs=10,
        finetune_batch=32,
        scratch_preset="sgd",
        teacher_train_samples=None,
        teacher_resolution=64,
        teacher_epochs=1,
        teacher_batch=64,
        student_width=0.25,
        student_train_samples=None,
        student_resolution=64,
        student_epochs=2,
        student_batch=64,
        student_preset="sgd",
        seeds=2,
        distill_weight=0.5,
        distill_temperature=4.0,
        test_samples=None,
    ),
    "quick": Plan(
        name="quick",
        description="smoke test: every run of the full report on a few hundred images, one epoch each",
        finetune_train_samples=100,
        finetune_resolution=64,
        finetune_epochs=1,
        finetune_batch=25,
        scratch_preset="sgd",
        teacher_train_samples=200,
        teacher_resolution=64,
        teacher_epochs=1,
        teacher_batch=50,
        student_width=0.25,
        student_train_samples=200,
        student_resolution=64,
        student_epochs=1,
        student_batch=50,
        student_preset="sgd",
        seeds=2,
        distill_weight=0.5,
        distill_temperature=4.0,
        test_samples=200,
    ),
}


@dataclass
class Arm:
    """One training run: its place in the report and the TrainConfig fields that define it."""

    key: str  # unique within a report, e.g. "student-distilled-s1"
    experiment: str  # "finetune" or "distill"
    role: str  # finetune: "finetune" | "probe" | "scratch"; distill: "teacher" | "alone" | "distilled"
    label: str
    config: dict  # TrainConfig fields (no out_dir/resume/progress); "teacher" is the teacher arm's key


def arms(plan: Plan) -> list[Arm]:
    """Every run of a report, teachers before their students."""
    test = dict(dataset="fashion-mnist", max_test_samples=plan.test_samples, stem_stride=2)
    ft = dict(
        model="mobilenet_v1",
        width_mult=1.0,
        resolution=plan.finetune_resolution,
        max_train_samples=plan.finetune_train_samples,
        epochs=plan.finetune_epochs,
        batch_size=plan.finetune_batch,
        seed=0,  # also fixes the class-balanced subset: the three arms see the same 1,000 images
        **test,
    )
    out = [
        Arm(
            "finetune",
            "finetune",
            "finetune",
            "ImageNet-pretrained, fine-tuned",
            {**ft, "init": "pretrained", "preset": "finetune"},
        ),
        Arm(
            "probe",
            "finetune",
            "probe",
            "ImageNet-pretrained, linear probe (backbone frozen)",
            {**ft, "init": "pretrained", "preset": "finetune", "freeze": True},
        ),
        Arm("scratch", "finetune", "scratch", "random initialization", {**ft, "preset": plan.scratch_preset}),
    ]
    teacher = dict(
        model="mobilenet_v1",
        width_mult=1.0,
        resolution=plan.teacher_resolution,
        max_train_samples=plan.teacher_train_samples,
        epochs=plan.teacher_epochs,
        batch_size=plan.teacher_batch,
        seed=0,
        init="pretrained",
        preset="finetune",
        **test,
    )
    out.append(Arm("teacher", "distill", "teacher", "teacher: 1.0 MobileNet, ImageNet-pretrained, fine-tuned", teacher))
    student = dict(
        model="mobilenet_v1",
        width_mult=plan.student_width,
        resolution=plan.student_resolution,
        max_train_samples=plan.student_train_samples,
        epochs=plan.student_epochs,
        batch_size=plan.student_batch,
        preset=plan.student_preset,
        **test,
    )
    alpha = f"{plan.student_width:g}"
    distill = dict(teacher="teacher", distill_weight=plan.distill_weight, distill_temperature=plan.distill_temperature)
    for seed in range(plan.seeds):
        out.append(Arm(f"alone-s{seed}", "distill", "alone", f"{alpha} MobileNet alone", {**student, "seed": seed}))
        out.append(
            Arm(
                f"distilled-s{seed}",
                "distill",
                "distilled",
                f"{alpha} MobileNet + teacher",
                {**student, "seed": seed, **distill},
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------
# Running, with a per-run cache


def run_record_config(arm: Arm, teacher_runs: dict[str, str]) -> dict:
    """What determines an arm's numbers: its config, the values of its preset (a retuned preset retrains its
    runs), with the teacher named by its own cached run."""
    from mobilenets.training.config import PRESETS

    config = {"cache_version": CACHE_VERSION, **arm.config, "preset_values": dict(PRESETS[arm.config["preset"]])}
    if "teacher" in config:
        config["teacher"] = teacher_runs[config["teacher"]]
    return config


def run_arm(arm: Arm, out_dir: Path, teacher_runs: dict[str, str], verbose: bool) -> tuple[dict, bool]:
    """Train one arm, or reuse its cached record: (the record, whether it was trained now)."""
    from mobilenets.training import TrainConfig, train

    config = run_record_config(arm, teacher_runs)
    name = f"{arm.key}-{config_hash(config)}"
    path = out_dir / "cells" / f"{name}.json"
    record = load_cached(path, config)
    if record is not None:
        return record, False
    fields = {k: v for k, v in config.items() if k not in ("cache_version", "preset_values")}
    if "teacher" in fields:
        teacher_dir = out_dir / "runs" / fields["teacher"]
        if not (teacher_dir / "model.pt").is_file():
            raise MobileNetsError(
                f"the teacher's weights {teacher_dir / 'model.pt'} are gone (runs/ deleted?) but its record is "
                f"cached: delete {out_dir / 'cells' / fields['teacher']}.json to retrain the teacher"
            )
        fields["teacher"] = str(teacher_dir)
    # Channels-last makes MobileNets' depthwise convs several times faster on CPU (oneDNN).
    cfg = TrainConfig(
        **fields,
        eval_every=fields["epochs"],  # test once, at the end: 10,000 images per evaluation cost minutes
        channels_last=True,
        out_dir=str(out_dir / "runs" / name),
        resume=True,
        progress=verbose,
        tensorboard=False,
        plots=False,
    )
    result = train(cfg)
    if result.interrupted:
        raise KeyboardInterrupt(f"interrupted during {arm.key}; run again to resume")
    record = {
        "name": name,
        "key": arm.key,
        "experiment": arm.experiment,
        "role": arm.role,
        "label": arm.label,
        "config": config,
        "train_config": result.config,
        "result": {
            k: getattr(result, k)
            for k in ("test_acc", "test_top5", "test_loss", "train_time_s", "wall_time_s", "epochs", "steps")
        },
        "history": result.history,
        "hardware": hardware(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    Path(result.checkpoint_path).unlink(missing_ok=True)  # model.pt stays: a student's teacher reads it
    return record, True


def run_plan(plan: Plan, out_dir: Path, verbose: bool = False) -> tuple[list[dict], int]:
    """Every arm's record, in plan order, and how many were trained now (the rest came from the cache)."""
    records, teacher_runs, trained = [], {}, 0
    for arm in arms(plan):
        start = time.perf_counter()
        print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {arm.key}: {arm.label} ...", file=sys.stderr, flush=True)
        record, fresh = run_arm(arm, out_dir, teacher_runs, verbose)
        trained += fresh
        res = record["result"]
        print(
            f"    top-1 {100 * res['test_acc']:.2f}%, {res['steps']} steps, {res['wall_time_s']:.0f} s "
            f"({time.perf_counter() - start:.0f} s now)",
            file=sys.stderr,
            flush=True,
        )
        if arm.role == "teacher":
            teacher_runs[arm.key] = record["name"]
        records.append(record)
    return records, trained


# ----------------------------------------------------------------------------------------------------
# Summaries (records -> results.json)


def mult_adds(cfg: dict) -> int:
    """Mult-Adds of one 1-channel image through a run's network (10 classes), counted by the profiler."""
    return _mult_adds(cfg["model"], cfg["width_mult"], cfg["resolution"], cfg["stem_stride"])


@functools.cache
def _mult_adds(model: str, width_mult: float, resolution: int, stem_stride: int) -> int:
    from mobilenets import create_model, profile

    net = create_model(model, width_mult=width_mult, resolution=resolution, stem_stride=stem_stride, in_chans=1)
    net.reset_classifier(10)
    return profile(net).mult_adds


def _row(record: dict) -> dict:
    cfg, res, tc = record["config"], record["result"], record.get("train_config", {})
    return {
        "key": record["key"],
        "role": record["role"],
        "label": record["label"],
        "run": record["name"],
        "init": cfg.get("init") or "random",
        "freeze": bool(cfg.get("freeze")),
        "preset": cfg["preset"],
        "width_mult": cfg["width_mult"],
        "resolution": cfg["resolution"],
        "seed": cfg["seed"],
        "batch_size": cfg["batch_size"],
        "epochs": res["epochs"],
        "steps": res["steps"],
        "lr": tc.get("lr"),
        "backbone_lr_scale": tc.get("backbone_lr_scale"),
        "train_images": tc.get("max_train_samples") or cfg.get("max_train_samples"),
        "mult_adds": mult_adds(cfg),
        "recipe": {k: tc.get(k) for k in RECIPE_FIELDS},
        "top1": 100 * res["test_acc"],
        "top5": 100 * res["test_top5"],
        "train_time_s": res["train_time_s"],
        "wall_time_s": res["wall_time_s"],
    }


RECIPE_FIELDS = (
    "optimizer",
    "momentum",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "depthwise_weight_decay",
    "label_smoothing",
    "ema_decay",
    "crop_scale_min",
    "translate",
    "flip",
)


def _sd(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _group(rows: list[dict]) -> dict:
    accs = [r["top1"] for r in rows]
    return {
        "label": rows[0]["label"],
        "seeds": [r["seed"] for r in rows],
        "top1_per_seed": accs,
        "top1_mean": sum(accs) / len(accs),
        "top1_sd": _sd(accs),
        "top1_spread": max(accs) - min(accs),
        "rows": rows,
    }


def judge_distillation(alone: dict, distilled: dict) -> dict:
    """The gain of the distilled student, and whether it stands out of the seeds' noise.

    Noise: twice the pooled seed standard deviation of the two arms (at least MIN_NOISE_PTS). The gain is
    beyond noise when it exceeds that and every seed's paired difference (same seed: same initialization and
    batch order) has its sign.
    """
    gain = distilled["top1_mean"] - alone["top1_mean"]
    by_seed = dict(zip(alone["seeds"], alone["top1_per_seed"]))
    paired = [d - by_seed[s] for s, d in zip(distilled["seeds"], distilled["top1_per_seed"]) if s in by_seed]
    sds = [g["top1_sd"] for g in (alone, distilled) if g["top1_sd"] is not None]
    pooled = math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else None
    noise = max(MIN_NOISE_PTS, 2 * pooled) if pooled is not None else MIN_NOISE_PTS
    same_sign = bool(paired) and (all(d > 0 for d in paired) or all(d < 0 for d in paired))
    beyond = abs(gain) > noise and same_sign
    verdict = f"{'a gain' if gain > 0 else 'a loss'} beyond the seeds' noise" if beyond else "within the seeds' noise"
    return {
        "gain_pts": gain,
        "paired_diffs_pts": paired,
        "pooled_sd_pts": pooled,
        "noise_pts": noise,
        "beyond_noise": beyond,
        "verdict": verdict,
        "goal_pts": DISTILL_GOAL_PTS,
        "goal_met": gain >= DISTILL_GOAL_PTS,
    }


def summarize(records: list[dict], plan: Plan) -> dict:
    """results.json: every run's row, the two experiments' comparisons and the paper's claims."""
    rows = [_row(r) for r in records]
    by_role = {}
    for row in rows:
        by_role.setdefault(row["role"], []).append(row)
    ft, probe, scratch = (by_role[k][0] for k in ("finetune", "probe", "scratch"))
    alone, distilled = _group(by_role["alone"]), _group(by_role["distilled"])
    return {
        "plan": dataclasses.asdict(plan),
        "finetune": {
            "rows": [ft, probe, scratch],
            "finetune_minus_scratch_pts": ft["top1"] - scratch["top1"],
            "finetune_minus_probe_pts": ft["top1"] - probe["top1"],
            "goal_pts": FINETUNE_GOAL_PTS,
            "goal_met": ft["top1"] - scratch["top1"] >= FINETUNE_GOAL_PTS,
        },
        "distill": {
            "teacher": by_role["teacher"][0],
            "alone": alone,
            "distilled": distilled,
            **judge_distillation(alone, distilled),
        },
        "paper": PAPER_DISTILLATION,
        "runs": len(rows),
        "train_time_s": sum(r["train_time_s"] for r in rows),
        "wall_time_s_runs": sum(r["wall_time_s"] for r in rows),
    }


# ----------------------------------------------------------------------------------------------------
# report.md and the plot


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _recipe(row: dict) -> str:
    text = f"`{row['preset']}`, lr {row['lr']:.3g}" if row.get("lr") is not None else f"`{row['preset']}`"
    if row.get("backbone_lr_scale") not in (None, 1, 1.0) and not row["freeze"]:
        text += f" (backbone ×{row['backbone_lr_scale']:g})"
    return text


def _recipes_text(rows: list[dict]) -> str:
    """Each engine preset the runs used, with its resolved values."""
    seen: dict[str, str] = {}
    for row in rows:
        rc = row.get("recipe") or {}
        if row["preset"] in seen or not rc.get("optimizer"):
            continue
        seen[row["preset"]] = (
            f"`{row['preset']}`: {rc['optimizer']} (momentum {rc['momentum']}), {rc['schedule']} schedule, "
            f"{rc['warmup_epochs']} warmup epochs, weight decay {rc['weight_decay']} ({rc['depthwise_weight_decay']} "
            f"on depthwise filters, none on BN), label smoothing {rc['label_smoothing']}, EMA {rc['ema_decay']}, "
            f"random crops ≥ {rc['crop_scale_min']} of the area, shifts ±{rc['translate']}, "
            f"flips {'on' if rc['flip'] else 'off'}"
        )
    return "<br>".join(seen.values()) + ("<br>" if seen else "") + "lr: linear in the batch size (per row below)"


def _run_cells(row: dict) -> list[str]:
    return [
        f"{row['mult_adds'] / 1e6:.1f}",
        f"{row['resolution']} px",
        f"{row['steps']:,}",
        f"{row['epochs']}",
        f"{row['batch_size']}",
        f"{row['train_time_s']:.0f} / {row['wall_time_s']:.0f}",
    ]


RUN_HEADER = ["M Mult-Adds", "input", "steps", "epochs", "batch", "train / wall (s)"]


def _finetune_section(res: dict) -> list[str]:
    f = res["finetune"]
    rows = [
        [r["label"], r["init"], "classifier only" if r["freeze"] else "all", _recipe(r), f"**{r['top1']:.2f}**"]
        + _run_cells(r)
        for r in f["rows"]
    ]
    ft, _, scratch = f["rows"]
    gap = f["finetune_minus_scratch_pts"]
    goal = "met" if f["goal_met"] else "**not met**"
    return [
        "## (a) Small-data fine-tuning",
        "",
        f"1.0 MobileNet on {ft['train_images']:,} training images (a class-balanced subset fixed by seed 0: the "
        f"same images for every row), one seed per row; test top-1 on {res['test_images']}.",
        "",
        _md_table(["run", "init", "trains", "recipe", "top-1 %"] + RUN_HEADER, rows),
        "",
        f"- Fine-tuned − scratch: **{gap:+.2f} points** (goal ≥ +{f['goal_pts']:g}: {goal}).",
        f"- Fine-tuned − linear probe: **{f['finetune_minus_probe_pts']:+.2f} points**.",
        f"- One seed per row: differences of a point or two are within what a re-run moves (see the seeds in "
        f"(b)). The pretrained rows keep the ImageNet weights' TensorFlow conventions (SAME padding, ReLU6, "
        f"inputs in [-1, 1]); the stem's RGB filters are summed for the 1-channel images. Scratch uses the "
        f"`{scratch['preset']}` preset, the engine's default from-scratch recipe.",
        "",
    ]


def _distill_section(res: dict) -> list[str]:
    d = res["distill"]
    t, alone, dist = d["teacher"], d["alone"], d["distilled"]

    def group_row(g: dict) -> list[str]:
        r = g["rows"][0]
        per_seed = ", ".join(f"{a:.2f}" for a in g["top1_per_seed"])
        sd = f" ± {g['top1_sd']:.2f}" if g["top1_sd"] is not None else ""
        return [g["label"], _recipe(r), f"**{g['top1_mean']:.2f}**{sd}", per_seed] + _run_cells(r)

    rows = [[t["label"], _recipe(t), f"**{t['top1']:.2f}**", str(t["seed"])] + _run_cells(t)]
    rows += [group_row(alone), group_row(dist)]
    w, temp = res["plan"]["distill_weight"], res["plan"]["distill_temperature"]
    paired = ", ".join(f"{x:+.2f}" for x in d["paired_diffs_pts"])
    goal = "met" if d["goal_met"] else "**not met**"
    pooled = f"{d['pooled_sd_pts']:.2f}" if d["pooled_sd_pts"] is not None else "n/a"
    lines = [
        "## (b) Distillation",
        "",
        f"Teacher trained on {t['train_images'] or 'all'} training images; students on "
        f"{alone['rows'][0]['train_images'] or 'all'}, with the same recipe and epochs with and without the "
        f"teacher. Distillation loss (1 − α)·CE(labels) + α·T²·KL(teacher ‖ student) with α = {w:g}, T = {temp:g}; "
        "the teacher sees the student's augmented batch. Per-seed runs of the students share their seed's "
        "initialization and batch order. Test top-1 on " + res["test_images"] + "; timings are per seed.",
        "",
        _md_table(["run", "recipe", "top-1 % (mean ± s.d.)", "per seed"] + RUN_HEADER, rows),
        "",
        f"- Distilled − alone: **{d['gain_pts']:+.2f} points** (per seed: {paired}); goal ≥ "
        f"+{d['goal_pts']:g}: {goal}.",
        f"- Seeds' noise: twice the pooled seed s.d. ({pooled}), at least {MIN_NOISE_PTS:g}: "
        f"{d['noise_pts']:.2f} points. The gain is **{d['verdict']}** (beyond it needs |gain| above the noise "
        "and every seed's paired difference of the same sign).",
        f"- The student is {t['top1'] - dist['top1_mean']:.2f} points below its teacher with the teacher, "
        f"{t['top1'] - alone['top1_mean']:.2f} without.",
        "",
        "The paper's distillation claims, beside ours (the paper trains no student without its teacher, so it "
        "states how close a distilled MobileNet comes to a much larger model):",
        "",
        _md_table(
            ["", "teacher", "distilled MobileNets"],
            [[p["section"], p["teacher"], p["students"]] for p in res["paper"]]
            + [
                [
                    "ours, Fashion-MNIST top-1",
                    f"1.0 MobileNet-{t['resolution']}: {t['top1']:.2f}%",
                    f"{dist['label']}: {dist['top1_mean']:.2f}% (alone: {alone['top1_mean']:.2f}%)",
                ]
            ],
        ),
        "",
    ]
    return lines


def render_markdown(res: dict) -> str:
    """report.md from results.json's dict."""
    hw = res["hardware"]
    mem = f", {hw['memory_gib']} GiB RAM" if "memory_gib" in hw else ""
    lines = [
        f"# Transfer on Fashion-MNIST: fine-tuning ImageNet weights on {res['finetune']['rows'][0]['train_images']:,} "
        "images, and distillation",
        "",
        "Regenerate (finished runs are reused from `cells/`; delete it to retrain):",
        "",
        "```",
        res["command"],
        "```",
        "",
        _md_table(
            ["", ""],
            [
                ["Plan", f"`{res['plan']['name']}`: {res['plan']['description']}"],
                [
                    "Hardware",
                    f"{hw['cpu']}, {hw['cpu_count']} cores (torch threads: {hw['torch_threads']}){mem}, "
                    f"{hw.get('gpu') or 'no GPU'}; torch {hw['torch']}",
                ],
                [
                    "Data",
                    "Fashion-MNIST (28×28 grey) resized on the fly to each run's input side; test top-1 on "
                    + res["test_images"],
                ],
                [
                    "Recipes",
                    _recipes_text(
                        res["finetune"]["rows"] + [res["distill"]["teacher"]] + res["distill"]["alone"]["rows"]
                    ),
                ],
                [
                    "Compute",
                    f"{res['runs']} runs: {res['train_time_s'] / 60:.1f} min of training steps, "
                    f"{res['wall_time_s_runs'] / 60:.1f} min wall with data loading and evaluation. This "
                    f"invocation trained {res['trained_runs']} and took {res['wall_time_s'] / 60:.1f} min",
                ],
            ],
        ),
        "",
        f"![top-1 of every run]({res['plot']})",
        "",
    ]
    lines += _finetune_section(res) + _distill_section(res)
    return "\n".join(lines)


def write_plot(res: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.2]})
    rows = res["finetune"]["rows"]
    names = ["fine-tuned", "linear probe", "scratch"]
    ax_a.barh(names[::-1], [r["top1"] for r in rows][::-1], color=["#999999", "#7fa7d9", "#1f5fa8"])
    for i, r in enumerate(rows[::-1]):
        ax_a.text(r["top1"], i, f" {r['top1']:.1f}", va="center", fontsize=8)
    low = min(r["top1"] for r in rows)
    ax_a.set_xlim(max(0, low - 15), 100)
    ax_a.set_xlabel("test top-1 (%)")
    r0 = rows[0]
    ax_a.set_title(
        f"(a) 1.0 MobileNet, {r0['train_images']:,} images, {r0['resolution']} px, {r0['steps']} steps", fontsize=9
    )

    d = res["distill"]
    groups = [("alone", d["alone"], "#999999"), ("+ teacher", d["distilled"], "#1f5fa8")]
    for x, (_, g, color) in enumerate(groups):
        ax_b.scatter([x] * len(g["top1_per_seed"]), g["top1_per_seed"], color=color, zorder=3, label=None)
        ax_b.hlines(g["top1_mean"], x - 0.2, x + 0.2, color=color, lw=2)
    ax_b.axhline(d["teacher"]["top1"], color="#d95f02", ls="--", lw=1, label=f"teacher {d['teacher']['top1']:.1f}%")
    ax_b.set_xticks(range(len(groups)), [f"{d['alone']['label']}", "… + teacher"], fontsize=8)
    ax_b.set_xlim(-0.6, len(groups) - 0.4)
    ax_b.set_ylabel("test top-1 (%)")
    ax_b.set_title(f"(b) distillation: {d['gain_pts']:+.2f} pts, {d['verdict']} (dots: seeds, bars: means)", fontsize=9)
    ax_b.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(res: dict, out_dir: Path) -> dict[str, Path]:
    """results.json, transfer.png and report.md into ``out_dir``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "plot": out_dir / "transfer.png", "report": out_dir / "report.md"}
    res = {**res, "plot": paths["plot"].name}
    atomic_write_json(paths["json"], res)
    write_plot(res, paths["plot"])
    atomic_write_text(paths["report"], render_markdown(res) + "\n")
    return paths


# ----------------------------------------------------------------------------------------------------


def build_results(records: list[dict], plan: Plan, command: str, trained: int, wall_time_s: float) -> dict:
    res = summarize(records, plan)
    test = plan.test_samples
    res.update(
        command=command,
        hardware=hardware(),
        trained_runs=trained,
        wall_time_s=wall_time_s,
        test_images=f"{test:,} test images (a class-balanced subset)" if test else "all 10,000 test images",
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return res


def override_plan(plan: Plan, settings: list[str]) -> Plan:
    """``plan`` with ``FIELD=VALUE`` settings applied (values parsed as the field's type; "none" for None)."""
    fields = {f.name: f for f in dataclasses.fields(Plan) if f.name not in ("name", "description")}
    changes: dict = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or key not in fields:
            raise MobileNetsError(f"--set {setting!r}: give FIELD=VALUE with FIELD one of {', '.join(fields)}")
        current = getattr(plan, key)
        try:
            if text.lower() == "none" and "None" in str(fields[key].type):
                changes[key] = None
            elif isinstance(current, str):
                changes[key] = text
            else:
                changes[key] = float(text) if isinstance(current, float) else int(text)
        except ValueError:
            raise MobileNetsError(f"--set {setting!r}: {text!r} is not a valid {key}") from None
    if not changes:
        return plan
    note = ", ".join(f"{k}={v}" for k, v in changes.items())
    return dataclasses.replace(plan, **changes, description=f"{plan.description}; changed: {note}")


def set_threads(threads: int | None) -> None:
    """--threads: torch's CPU threads (None keeps torch's default)."""
    if threads is not None:
        if threads < 1:
            raise MobileNetsError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def run_script(main) -> None:
    """Run a benchmark's ``main()``: a MobileNetsError is one line on stderr and exit status 2."""
    try:
        sys.exit(main())
    except MobileNetsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports/transfer-fashion-mnist", help="report folder (cells/ is the cache)")
    p.add_argument("--quick", action="store_true", help="smoke test: a few hundred images per run")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one size of the plan, e.g. --set student_epochs=1 (fields: see Plan); the report says so",
    )
    p.add_argument("--verbose", action="store_true", help="the engine's progress bars")
    args = p.parse_args(argv)
    set_threads(args.threads)
    plan = override_plan(PLANS["quick" if args.quick else "full"], args.set)
    out_dir = Path(args.out)
    command = shlex.join(
        [".venv/bin/python", "benchmarks/transfer_fashion_mnist.py", *(argv if argv is not None else sys.argv[1:])]
    )
    start = time.perf_counter()
    records, trained = run_plan(plan, out_dir, args.verbose)
    res = build_results(records, plan, command, trained, time.perf_counter() - start)
    paths = write_report(res, out_dir)
    print(f"wrote {paths['report']}, {paths['json']}, {paths['plot']}")
    return 0


if __name__ == "__main__":
    run_script(main)
