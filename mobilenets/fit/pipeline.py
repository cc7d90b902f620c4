"""`fit` from top to bottom: data → candidates within the budget → search → the winner trained with the time left →
quantized until its file holds → report. Every step leaves its state in the out-dir, so a killed fit resumes."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mobilenets import data as D
from mobilenets.errors import MobileNetsError
from mobilenets.fit import candidates as C
from mobilenets.fit import search as S
from mobilenets.fit.quantize import HeldOut, quantize_until_it_holds
from mobilenets.io import atomic_write_json

DEFAULT_TIME_BUDGET_S = 20 * 60


@dataclass
class FitConfig:
    """What ``fit`` is asked for. Budgets are absolute (``max_params=1.5e6``); at least one is required.

    Args:
        dataset: what ``train`` takes: "fashion-mnist", "digits", a CIFAR folder or an ImageFolder root.
        runtime: the target: an export format or its runtime (onnx/onnxruntime, executorch, openvino,
            tflite/litert, web, ncnn, mnn).
        precision: the file's precision (int8 or fp32; what the runtime offers).
        time_budget_s: the whole fit, latency measurement and quantization included.
        families, widths, resolutions: narrow the candidates (default: every registered classifier family at its
            registered α×ρ; ``resolutions`` may be any side, e.g. 28 for Fashion-MNIST-sized images).
        latency_table: a ``bench --json`` (or ``bench --grid``'s grid.json) measured on the user's device; the
            candidates it lacks are left out. Default: measured here.
        weights_dir: timm/torchvision/our weight files named after the candidates (``mobilenet_v2_1.0_224.pth`` or
            ``mobilenet_v2_1.0.safetensors``: any resolution); V1 α 1 starts from the pretrained ImageNet weights.
        max_trials: candidates the search fine-tunes (best prior first).
        subset: training images per trial; rungs: epochs of it per trial (the pruner's rungs).
        heldout: test-split images the trials are scored on, and the int8 file is checked on.
        max_int8_drop: the largest held-out top-1 drop (points) a quantized file may have.
        qat_steps: steps of the QAT fine-tune when PTQ does not hold.
        storage, study: an Optuna RDB URL and study name shared by several machines (default: out_dir/search.db).
    """

    dataset: str
    out_dir: str = "runs/fit"
    runtime: str = "onnx"
    precision: str = "int8"
    max_latency_ms: float | None = None
    max_params: float | None = None
    max_mult_adds: float | None = None
    max_file_mb: float | None = None
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    data_dir: str | None = None
    families: list[str] | None = None
    widths: list[float] | None = None
    resolutions: list[int] | None = None
    latency_table: str | None = None
    weights_dir: str | None = None
    max_trials: int = 6
    subset: int = 5000
    rungs: int = 3
    heldout: int = 1000
    batch_size: int = 64
    max_int8_drop: float = 1.0
    qat_steps: int = 100
    threads: int | None = None
    seed: int = 0
    storage: str | None = None
    study: str = S.STUDY_NAME
    rank_by: str = "prior"  # or "mult-adds": the naive choice (the most Mult-Adds within the budget)
    search_share: float = 0.5  # of the time left after measuring, for the trials; the rest trains the winner
    progress: bool = True

    def budget(self) -> C.Budget:
        return C.Budget(self.max_latency_ms, self.max_params, self.max_mult_adds, self.max_file_mb)

    def check(self) -> None:
        self.budget().check()
        C.resolve_runtime(self.runtime, self.precision)
        for name, value, low in (("max_trials", self.max_trials, 1), ("subset", self.subset, 1),
                                 ("rungs", self.rungs, 1), ("heldout", self.heldout, 10),
                                 ("batch_size", self.batch_size, 2), ("qat_steps", self.qat_steps, 0)):  # fmt: skip
            if value < low:
                raise MobileNetsError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
        if not (self.time_budget_s > 0 and math.isfinite(self.time_budget_s)):
            raise MobileNetsError(f"--time-budget must be positive, got {self.time_budget_s}")
        if self.rank_by not in C.RANKINGS:
            raise MobileNetsError(f"--rank-by must be one of {', '.join(C.RANKINGS)}, got {self.rank_by!r}")
        C.candidate_space(self.families, self.widths, self.resolutions)  # an unknown family is an error up front
        if self.weights_dir and not Path(self.weights_dir).is_dir():
            raise MobileNetsError(f"--weights-dir {self.weights_dir} is not a folder")


@dataclass
class FitResult:
    """What a fit produced (see report.py for the files)."""

    out_dir: str
    file: str | None
    winner: str | None
    winner_reason: str
    float_test_acc: float | None  # the winner's float model on the whole test split
    file_heldout_acc: float | None  # the shipped file on the held-out images
    float_heldout_acc: float | None  # its float model on the same images
    file_latency_ms: float | None  # the shipped file, timed again here
    file_size_bytes: int | None
    started_from: str
    candidates: list[dict]
    trials: list[dict]
    final: dict
    attempts: list[dict]
    seconds: dict
    config: dict
    cpu: str
    next_tried: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Clock:
    """The fit's time, across resumes: seconds spent by earlier runs (out_dir/state.json) plus this one's."""

    def __init__(self, path: Path, budget_s: float):
        self.path, self.budget_s = path, budget_s
        self.before = 0.0
        self.phases: dict[str, float] = {}
        if path.exists():
            state = json.loads(path.read_text())
            self.before, self.phases = float(state.get("spent_s", 0.0)), dict(state.get("phases", {}))
        self.start = time.perf_counter()
        self.phase_start, self.phase = self.start, None

    def spent(self) -> float:
        return self.before + time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.spent()

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self.phase:
            self.phases[self.phase] = self.phases.get(self.phase, 0.0) + now - self.phase_start
        self.phase, self.phase_start = phase, now
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, {"spent_s": round(self.spent(), 2), "phases": self.phases})


class Progress:
    """A progress bar over the time budget (stderr) and one-line notes."""

    def __init__(self, clock: Clock, show: bool):
        self.clock, self.bar = clock, None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(clock.budget_s), unit="s", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s")  # fmt: skip

    def __call__(self, message: str) -> None:
        if self.bar is None:
            return
        self.bar.n = min(round(self.clock.spent()), self.bar.total)
        self.bar.set_description_str(f"fit: {message[:70]}")
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(cfg: FitConfig, on_trial=None) -> FitResult:
    """Find, train, quantize and verify the most accurate classifier of ``cfg.dataset`` within the budgets.

    Writes to ``cfg.out_dir``: the verified file (``model.onnx``, …) with ``model.safetensors`` and its card
    ``model.json``, ``fit.json``, ``fit.md``, ``fit.png``, and its working state (``latency.json``,
    ``search.db``, ``trials/``, ``final/``, ``state.json``). Raises MobileNetsError when no candidate fits the
    budget, or none yields a file that holds. ``on_trial(record)`` sees every finished trial.
    """
    from mobilenets.training.lock import out_dir_lock

    cfg.check()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with out_dir_lock(out / "fit"):
        return _fit(cfg, out, on_trial)


def _fit(cfg: FitConfig, out: Path, on_trial) -> FitResult:
    from mobilenets.deploy.cpu import cpu_info
    from mobilenets.fit.report import write_report

    fmt, bench_runtime = C.resolve_runtime(cfg.runtime, cfg.precision)
    clock = Clock(out / "state.json", cfg.time_budget_s)
    say = Progress(clock, cfg.progress)
    try:
        clock.enter("candidates")
        say("reading the data")
        train_set = D.load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, max_samples=256, seed=cfg.seed)
        num_classes, in_chans = train_set.num_classes, train_set.in_chans
        shortlisted, everyone = _candidates(cfg, out, bench_runtime, num_classes, in_chans, train_set, say)
        clock.enter("search")
        records = _search(cfg, out, shortlisted, clock, say, on_trial)
        order = [r.candidate for r in S.ranking(records)]
        if not order:
            raise MobileNetsError(
                f"the search finished no rung in its time ({cfg.time_budget_s:.0f} s); give a longer --time-budget "
                "or a smaller --subset"
            )
        by_name = {c.name: c for c in shortlisted}
        shipped, final, attempts, tried = None, {}, [], []
        for name in order:
            tried.append(name)
            clock.enter("final training")
            final = _final_training(cfg, out, by_name[name], records, clock, say)
            clock.enter("quantization")
            shipped, step_attempts = _ship(cfg, out, fmt, by_name[name], final, clock, say)
            attempts += [{"candidate": name, **a.to_dict()} for a in step_attempts]
            if shipped is not None:
                break
        clock.enter("report")
        result = _result(cfg, out, fmt, bench_runtime, shipped, final, attempts, tried, everyone, records, clock)
        result.cpu = cpu_info().line()
        write_report(result, out, cfg)
        clock.enter(None)
        if shipped is None:
            raise MobileNetsError(
                f"no candidate's {fmt} {cfg.precision} file held (tried {', '.join(tried)}); see {out / 'fit.md'}"
            )
        return result
    finally:
        say.close()
        clock.save()


# --- 1. candidates --------------------------------------------------------------------------------------------------


def _candidates(cfg: FitConfig, out: Path, bench_runtime: str, num_classes: int, in_chans: int, train_set, say):
    space = C.candidate_space(cfg.families, cfg.widths, cfg.resolutions)
    say(f"costs of {len(space)} candidates")
    C.add_costs(space, num_classes, in_chans)
    C.add_priors(space)
    table = C.read_latency_table(cfg.latency_table, bench_runtime, cfg.precision) if cfg.latency_table else None
    cache = C.LatencyCache(out / "latency.json")

    def latency_of(c: C.Candidate) -> float | None:
        if table is not None:
            return table.get(c.name)
        key = cache.key(c, num_classes, in_chans, bench_runtime, cfg.precision, cfg.threads)
        if key not in cache.entries:
            say(f"latency of {c.name} ({bench_runtime} {cfg.precision})")
            calib = D.prepare_batch(train_set.subset(32, cfg.seed).images if hasattr(train_set, "images")
                                    else _stack(train_set, 32), train_set.mean, train_set.std, c.resolution,
                                    in_chans)  # fmt: skip
            cache.entries[key] = C.measure_latency(
                c, num_classes, in_chans, bench_runtime, cfg.precision, cfg.threads, calib
            )
            cache.save()
        return cache.entries[key]

    try:
        kept = C.shortlist(space, cfg.budget(), cfg.precision, latency_of, cfg.max_trials, bisect=table is None,
                           rank_by=cfg.rank_by)  # fmt: skip
    finally:
        if table is not None:
            for c in space:
                if c.latency_source == "measured":
                    c.latency_source = "table"
    for c in space:
        if c.init_note is None:
            c.init_note = _init_for(c, cfg)[1]
    atomic_write_json(out / "candidates.json", [c.to_dict() for c in space])
    return kept, space


def _stack(dataset, n: int) -> torch.Tensor:
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([x for x, _y, _p in items if x is not None])


def _init_for(c: C.Candidate, cfg: FitConfig) -> tuple[str | None, str]:
    """(``train --init`` value, what the report says): the pretrained V1 1.0 for V1 at α 1, a file of
    ``weights_dir`` named after the candidate, else None (from scratch)."""
    if cfg.weights_dir:
        folder = Path(cfg.weights_dir)
        stems = [c.name, f"{c.model}_{c.width_mult}" if c.width_mult is not None else c.model]
        for stem in stems:
            for suffix in (".safetensors", ".pth", ".pt", ".bin"):
                path = folder / f"{stem}{suffix}"
                if path.is_file():
                    return str(path), f"weights file {path.name}"
    if c.model == "mobilenet_v1" and c.width_mult == 1.0:
        from mobilenets.weights.pretrained import pretrained_weights_path

        try:
            pretrained_weights_path()
            return "pretrained", "pretrained ImageNet MobileNetV1 1.0/224 (Google's)"
        except MobileNetsError:
            pass
    return None, "from scratch (no pretrained weights for this candidate)"


# --- 2. search ------------------------------------------------------------------------------------------------------


def _train_config(cfg: FitConfig, c: C.Candidate, out_dir: Path, init: str | None, **kw):
    from mobilenets.training import TrainConfig

    return TrainConfig(
        model=c.model,
        width_mult=c.width_mult,
        resolution=c.resolution,
        init=init,
        dataset=cfg.dataset,
        data_dir=cfg.data_dir,
        batch_size=cfg.batch_size,
        preset="finetune" if init else "sgd",
        seed=cfg.seed,
        out_dir=str(out_dir),
        resume=(Path(out_dir) / "checkpoint.pt").exists(),
        progress=False,
        tensorboard=False,
        plots=False,
        **kw,
    )


def _train(tc):
    from mobilenets.training import train

    result = train(tc)
    if result.interrupted:
        raise KeyboardInterrupt
    return result


def _search(cfg: FitConfig, out: Path, shortlisted: list[C.Candidate], clock: Clock, say, on_trial):
    names = [c.name for c in shortlisted]
    by_name = {c.name: c for c in shortlisted}
    study, local = S.open_study(cfg.storage, out / "search.db", cfg.study)
    S.queue_candidates(study, names, local)
    deadline = clock.spent() + cfg.search_share * max(clock.left(), 0.0)
    rung_s: dict[str, float] = {}

    def time_left() -> float:
        return deadline - clock.spent()

    def train_rung(name: str, k: int) -> float:
        c = by_name[name]
        estimate = rung_s.get(name, min(rung_s.values(), default=0.0))
        if time_left() < estimate:
            raise S.OutOfTime
        say(f"trial {name}: epoch {k}/{cfg.rungs} of {cfg.subset} images")
        size = min(cfg.subset, _train_size(cfg))
        steps_per_epoch = size // cfg.batch_size
        if steps_per_epoch < 1:
            raise MobileNetsError(f"--batch-size {cfg.batch_size} is larger than the {size} training images")
        t0 = time.perf_counter()
        result = _train(_train_config(
            cfg, c, out / "trials" / name, _init_for(c, cfg)[0], epochs=cfg.rungs, max_steps=k * steps_per_epoch,
            max_train_samples=cfg.subset, max_test_samples=cfg.heldout, precise_bn=8,
        ))  # fmt: skip
        rung_s[name] = time.perf_counter() - t0
        clock.save()
        return float(result.test_acc)

    S.run_search(study, names, train_rung, cfg.rungs, time_left, on_trial)
    return S.trial_records(study)


_SIZES: dict[tuple, int] = {}


def _train_size(cfg: FitConfig) -> int:
    key = (cfg.dataset, cfg.data_dir)
    if key not in _SIZES:
        _SIZES[key] = len(D.load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, seed=cfg.seed))
    return _SIZES[key]


# --- 3. the winner, trained with the time left ----------------------------------------------------------------------


# Of the time left after the search, what the quantization needs at least (PTQ attempts, a QAT fine-tune, the report).
QUANT_RESERVE_SHARE, QUANT_RESERVE_MIN_S = 0.25, 5.0


def _seconds_per_step(out: Path, c: C.Candidate) -> float:
    """Seconds per training step of ``c``: its trial's, else the local trials' per Mult-Add scaled to it."""
    own = out / "trials" / c.name / "result.json"
    if own.is_file():
        trial = json.loads(own.read_text())
        return trial["train_time_s"] / max(trial["steps"], 1)
    rates = []
    for path in (out / "trials").glob("*/result.json"):
        trial = json.loads(path.read_text())
        mult_adds = _candidates_cost(out).get(path.parent.name)
        if mult_adds:
            rates.append(trial["train_time_s"] / max(trial["steps"], 1) / mult_adds)
    return sorted(rates)[len(rates) // 2] * c.mult_adds if rates else 1.0


def _candidates_cost(out: Path) -> dict[str, int]:
    path = out / "candidates.json"
    return {c["name"]: c["mult_adds"] for c in json.loads(path.read_text())} if path.is_file() else {}


def _final_training(cfg: FitConfig, out: Path, c: C.Candidate, records, clock: Clock, say) -> dict:
    """Continue the winner's trial weights on the whole training set for the time left (less the quantization's
    reserve), the schedule sized to end on time; a plan in final/plan.json makes a resumed fit train the same run.
    A winner whose trial ran on another machine (a shared ``--storage``) starts from its initial weights here."""
    trial_dir = out / "trials" / c.name
    final_dir = out / "final" / c.name
    plan_path = final_dir / "plan.json"
    local = (trial_dir / "result.json").is_file()
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
    else:
        per_step = _seconds_per_step(out, c)
        left = clock.left()
        usable = left - max(QUANT_RESERVE_MIN_S, QUANT_RESERVE_SHARE * left)
        steps = int(usable * 0.8 / max(per_step, 1e-6))  # evaluation and precise BN take the rest
        full = _train_size(cfg)
        per_epoch = full // cfg.batch_size
        if steps < 10 and local:
            plan = {"steps": 0, "note": f"no time left for a final training ({left:.0f} s): the trial's weights ship"}
        else:  # whole epochs of a subset sized so that the schedule ends on the last step
            steps = max(steps, 10)
            epochs = math.ceil(steps / per_epoch)
            per = steps // epochs
            plan = {"steps": per * epochs, "epochs": epochs,
                    "max_train_samples": per * cfg.batch_size if per < per_epoch else None}  # fmt: skip
        plan["init"] = str(trial_dir / "model.pt") if local else _init_for(c, cfg)[0]
        plan["started_from"] = c.init_note + ("" if local else "; its trial ran on another machine")
        final_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_path, plan)
    if plan["steps"] == 0:
        result = json.loads((trial_dir / "result.json").read_text())
        return {**plan, "model_path": str(trial_dir / "model.pt"), "test_acc": None, "trial_acc": result["test_acc"],
                "dir": str(trial_dir)}  # fmt: skip
    say(f"final training of {c.name}: {plan['steps']} steps on the whole training set")
    result = _train(_train_config(
        cfg, c, final_dir, plan["init"], epochs=plan["epochs"], max_train_samples=plan["max_train_samples"],
        eval_every=plan["epochs"],
    ))  # fmt: skip
    return {**plan, "model_path": result.model_path, "test_acc": float(result.test_acc), "dir": str(final_dir),
            "train_time_s": round(result.train_time_s, 1)}  # fmt: skip


# --- 4. quantize until it holds -------------------------------------------------------------------------------------


def heldout_data(cfg: FitConfig, meta: dict) -> HeldOut:
    """Calibration (200 training images) and held-out (``cfg.heldout`` test images) at the model's resolution and
    normalization."""
    res, in_chans = meta["resolution"], meta["model_kwargs"].get("in_chans", 3)

    def images(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = D.load_dataset(cfg.dataset, split, data_dir=cfg.data_dir, max_samples=n, seed=cfg.seed, image_size=res,
                            in_chans=in_chans)  # fmt: skip
        if hasattr(ds, "images"):
            raw, labels = ds.images, ds.labels
        else:
            items = [ds[i] for i in range(len(ds))]
            items = [(x, y) for x, y, _p in items if x is not None]
            raw, labels = torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
        return D.prepare_batch(raw, meta["mean"], meta["std"], res, in_chans), labels

    calib, _ = images("train", 200)
    held, labels = images("test", cfg.heldout)
    return HeldOut(calib, held, labels)


def _ship(cfg: FitConfig, out: Path, fmt: str, c: C.Candidate, final: dict, clock: Clock, say):
    from mobilenets.deploy.export import SUFFIXES
    from mobilenets.predict import checkpoint_model
    from mobilenets.weights.cards import save_weights

    model, card = checkpoint_model(final["model_path"])
    meta = torch.load(final["model_path"], map_location="cpu", weights_only=True)["meta"]
    data = heldout_data(cfg, meta)

    def qat() -> torch.nn.Module:
        from mobilenets.weights.checkpoint import load_model

        say(f"QAT of {c.name}: {cfg.qat_steps} steps")
        steps = max(cfg.qat_steps, 1)
        result = _train(_train_config(
            cfg, c, out / "qat" / c.name, final["model_path"], qat=fmt, epochs=1, max_steps=steps,
            max_train_samples=steps * cfg.batch_size, max_test_samples=cfg.heldout, preset="finetune",
        ))  # fmt: skip
        return load_model(result.model_path)[0]

    path = out / f"model{SUFFIXES[fmt]}"
    shipped, attempts = quantize_until_it_holds(
        model, fmt, cfg.precision, path, data, max_drop_points=cfg.max_int8_drop, max_file_mb=cfg.max_file_mb,
        qat=qat if cfg.qat_steps else None, threads=cfg.threads, say=say,
    )  # fmt: skip
    if shipped is not None:
        verification = shipped.verification.summary() if shipped.verification else None
        card.source["fit"] = dict(file=path.name, runtime=fmt, precision=cfg.precision, verification=verification)
        save_weights(model, card, out / "model.safetensors")
    return shipped, attempts


def _file_latency(path: Path, fmt: str, precision: str, threads: int | None, in_shape) -> float:
    """The shipped file timed here as ``bench`` times a runner (median of 30 batch-1 calls after 5)."""
    import numpy as np

    from mobilenets.deploy.bench.latency import time_calls, torch_threads
    from mobilenets.deploy.export import load_runner

    run = load_runner(path, fmt, precision, threads, 1)
    x = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    time.sleep(0.2)
    with torch_threads(threads):
        return round(time_calls(lambda: run(x), 30, 5).median_ms, 4)


def _result(cfg, out, fmt, bench_runtime, shipped, final, attempts, tried, everyone, records, clock) -> FitResult:
    winner = tried[-1] if shipped is not None else None
    by_name = {c.name: c for c in everyone}
    ranked = S.ranking(records)
    file_latency = file_acc = float_acc = None
    if shipped is not None:
        file_latency = _file_latency(shipped.path, fmt, cfg.precision, cfg.threads, shipped.built_for["input"])
        passed = [a for a in attempts if a["passed"]]
        file_acc = passed[-1]["heldout_acc"] if passed else None
        float_acc = passed[-1]["float_heldout_acc"] if passed else None
    reason = _why(winner, ranked, tried, by_name, cfg) if winner else "no file held"
    return FitResult(
        out_dir=str(out),
        file=str(shipped.path) if shipped else None,
        winner=winner,
        winner_reason=reason,
        float_test_acc=final.get("test_acc") if final else None,
        file_heldout_acc=file_acc,
        float_heldout_acc=float_acc,
        file_latency_ms=file_latency,
        file_size_bytes=shipped.size_bytes if shipped else None,
        started_from=by_name[winner].init_note if winner else "",
        candidates=[c.to_dict() for c in everyone],
        trials=[asdict(r) for r in records],
        final=final,
        attempts=attempts,
        seconds={"total": round(clock.spent(), 1), **{k: round(v, 1) for k, v in clock.phases.items()}},
        config=asdict(cfg),
        cpu="",
        next_tried=tried[:-1] if winner else tried,
    )


def _why(winner: str, ranked, tried, by_name, cfg) -> str:
    top = ranked[0]
    w = next(r for r in ranked if r.candidate == winner)
    c = by_name[winner]
    latency = f"{c.latency_ms:.2f}" if c.latency_ms is not None else "?"
    lines = [
        f"{winner} had the best held-out top-1 among the candidates that went furthest "
        f"({100 * w.last_acc:.2f}% after {w.rungs} epoch(s) of {cfg.subset} images)"
        if winner == top.candidate
        else f"{winner} was next: the file of {', '.join(tried[:-1])} did not hold",
        f"its prior (the papers' ImageNet top-1) {c.top1_prior if c.top1_prior is not None else 'unknown'}, "
        f"latency {latency} ms ({c.latency_source or 'not measured'})",
    ]
    others = [r for r in ranked if r.candidate != winner][:3]
    if others:
        lines.append(
            "behind it: "
            + ", ".join(
                f"{r.candidate} {100 * (r.last_acc or 0):.2f}% ({r.rungs} epoch(s))" for r in others
            )  # fmt: skip
        )
    return "; ".join(lines)
