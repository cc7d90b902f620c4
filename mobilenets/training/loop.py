"""The training loop: one CPU, one GPU, or many processes under ``torchrun`` (DistributedDataParallel).

:func:`train` reads top to bottom: set up the data, build the model, the optimizer, resume, run the epochs
(each a loop of steps, then an evaluation and a checkpoint), save and report.

Evaluation and model.pt use the model with its BatchNorm statistics recomputed for the current weights (precise BN,
see :mod:`mobilenets.training.precise_bn`), on a copy: the training, its RNG and its checkpoints never see it.

Determinism: the sample order of every epoch and the random crops of every step are fixed by
(seed, epoch, step), and the global RNG (dropout) is reseeded per step. So a run resumed from a
checkpoint continues bit-for-bit (on CPU and deterministic GPU ops), and N processes under torchrun
see exactly the batches one process sees (``batch_size`` is the global batch, split across ranks).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilenets import data as D
from mobilenets.detection import is_detector
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_text
from mobilenets.models import model_defaults
from mobilenets.training.checkpoint import (
    _ckpt_step,
    _set_rng_state,
    atomic_save,
    check_resumable,
    load_checkpoint,
    note_resume_numerics,
    save_run_checkpoint,
)
from mobilenets.training.config import GPU_SYNC_EVERY, RESUME_FREE, TrainConfig, model_kwargs
from mobilenets.training.detection import DetectionTrainResult, train_detector
from mobilenets.training.distributed import (
    Dist,
    _autocast,
    _rank_part,
    all_reduce,
    resolve_device,
    setup_distributed,
)
from mobilenets.training.evaluate import EvalResult, evaluate
from mobilenets.training.init import start_model
from mobilenets.training.lock import out_dir_lock
from mobilenets.training.logs import _tensorboard, plot_confusion, plot_curves, write_metrics_csv
from mobilenets.training.losses import classification_loss, distillation_loss
from mobilenets.training.optim import (
    ModelEma,
    backbone_bn_eval,
    backbone_parameters,
    build_optimizer,
    head_module,
    lr_factor,
    set_backbone_trainable,
)
from mobilenets.training.precise_bn import recompute_bn_stats
from mobilenets.training.signals import StopFlag, step_seed
from mobilenets.training.teacher import Teacher, load_teacher

# The precise-BN pass's image order: epoch_order's permutation for an epoch no run reaches, the same every pass.
PRECISE_BN_EPOCH = -1


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions (0.91 = 91%); times in seconds.

    ``history`` has one dict per evaluated epoch: epoch, step, lr, train_loss, train_acc, test_loss,
    test_acc, test_top5, train_time_s (cumulative, training only), img_per_s. ``precise_bn_s``: the time
    this process spent recomputing BatchNorm statistics (precise BN) before evaluations and model.pt.
    """

    test_acc: float
    test_top5: float
    test_loss: float
    train_time_s: float
    wall_time_s: float
    epochs: int
    steps: int
    history: list[dict]
    out_dir: str
    checkpoint_path: str
    model_path: str
    config: dict
    classes: list[str]
    per_class_acc: list[float]
    step_losses: list[float]
    skipped_files: int = 0
    interrupted: bool = False
    steps_per_epoch: int = 0
    precise_bn_s: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return d


def default_resolution(cfg: TrainConfig, train_set: D.Dataset) -> int:
    """The input side a run uses when none is given (see TrainConfig.resolution)."""
    if isinstance(train_set, D.ArrayDataset):
        return max(train_set.image_size, 16 if cfg.stem_stride in (None, 1) else 32)
    return model_defaults(cfg.model).get("resolution", 224)


def load_train_test(cfg: TrainConfig) -> tuple[D.Dataset, D.Dataset]:
    size = cfg.resolution or model_defaults(cfg.model).get("resolution", 224)
    kw = dict(data_dir=cfg.data_dir, seed=cfg.seed, image_size=size)
    train_set = D.load_dataset(cfg.dataset, "train", max_samples=cfg.max_train_samples, **kw)
    test_set = D.load_dataset(cfg.dataset, "test", max_samples=cfg.max_test_samples, **kw)
    if isinstance(train_set, D.ImageFolderDataset):
        train_set.check_readable()
        test_set.check_readable()
    if train_set.classes != test_set.classes:
        raise MobileNetsError(
            f"train and test splits of {cfg.dataset} have different classes "
            f"({len(train_set.classes)} vs {len(test_set.classes)}); give both splits the same class folders"
        )
    return train_set, test_set


def train(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> TrainResult | DetectionTrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` and evaluate it on the test split; see TrainConfig. A detector
    (``ssdlite320_mobilenet_v3_large``, ...) trains on a detection dataset and returns a
    :class:`~mobilenets.training.detection.DetectionTrainResult` (COCO mAP instead of top-1).

    Writes to ``cfg.out_dir``: config.json, checkpoint.pt (latest, for --resume), model.pt (the trained
    weights for ``mobilenets eval``), metrics.csv, steps.csv, tensorboard/, curves.png, confusion.png and
    result.json. ``on_step(step, info)`` is called on rank 0 after every optimizer step.
    SIGINT/SIGTERM save a checkpoint and return early with ``interrupted=True``; a NaN/Inf loss raises
    MobileNetsError naming the step and keeps the last good checkpoint.
    """
    wall_start = time.perf_counter()
    cfg = cfg.resolved()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    # One run per --out-dir: the main process holds its lock (the other ranks of a torchrun job write through it).
    lock = out_dir_lock(cfg.out_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        dist_info = setup_distributed(device.type)
        try:
            if is_detector(cfg.model):
                return train_detector(cfg, device, dist_info, on_step, wall_start)
            return _train(cfg, device, dist_info, on_step, wall_start)
        finally:
            if dist_info.initialized_here:
                import torch.distributed as dist

                dist.destroy_process_group()


@dataclass
class _Run:
    """What the steps of one run share; :func:`_train` fills it in top to bottom."""

    cfg: TrainConfig
    device: torch.device
    dist_info: Dist
    out_dir: Path
    # data (_setup_data)
    train_set: Any = None
    test_set: Any = None
    in_chans: int = 3
    steps_per_epoch: int = 0
    total_steps: int = 0
    last_step: int = 0
    amp: str = "off"
    channels_last: bool = True
    sync_every: int = 1
    augment: Any = None
    # model (_build_model, _wrap_model)
    model: Any = None
    train_model: Any = None
    eval_model: Any = None
    meta: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    teacher: Teacher | None = None
    frozen_params: list = field(default_factory=list)  # the backbone's, while it is frozen
    # optimizer (_build_optimizer)
    optimizer: Any = None
    scheduler: Any = None
    ema: Any = None
    scaler: Any = None
    # progress (_resume, _start_logs, the loop)
    state: dict = field(default_factory=dict)
    writer: Any = None
    bad: Any = None
    # precise BN (_evaluated_model): (step, the evaluated copy) of the latest pass, and the time spent in passes
    precise: tuple[int, Any] | None = None
    precise_bn_s: float = 0.0

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def model_path(self) -> Path:
        return self.out_dir / "model.pt"

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.dist_info.is_main


def _train(cfg: TrainConfig, device: torch.device, dist_info: Dist, on_step, wall_start: float) -> TrainResult:
    run = _Run(cfg, device, dist_info, Path(cfg.out_dir))
    _setup_data(run)
    _build_model(run)
    _load_teacher(run)
    _build_optimizer(run)
    _resume(run)
    _wrap_model(run)
    _start_logs(run)
    last_eval, interrupted = _epoch_loop(run, on_step)
    return _finish(run, last_eval, interrupted, wall_start)


def _setup_data(run: _Run) -> None:
    """Load the splits, settle the resolution and the step counts, pick AMP and the memory format."""
    cfg, device, dist_info = run.cfg, run.device, run.dist_info
    train_set, test_set = load_train_test(cfg)
    if cfg.resolution is None:
        cfg.resolution = default_resolution(cfg, train_set)
    if cfg.stem_stride is None and "width_mult" in model_defaults(cfg.model):
        cfg.stem_stride = 1 if cfg.resolution <= 64 else 2
    run.in_chans = train_set.in_chans
    run.steps_per_epoch = len(train_set) // cfg.batch_size
    if run.steps_per_epoch == 0:
        raise MobileNetsError(
            f"batch_size {cfg.batch_size} is larger than the training set ({len(train_set)} images); lower it"
        )
    if cfg.batch_size % (dist_info.world_size * cfg.accum_steps):
        raise MobileNetsError(
            f"batch_size {cfg.batch_size} must divide by the {dist_info.world_size} process(es) × "
            f"accum_steps {cfg.accum_steps}"
        )
    run.total_steps = run.steps_per_epoch * cfg.epochs
    run.last_step = min(run.total_steps, cfg.max_steps or run.total_steps)
    on_gpu = device.type == "cuda"
    # Channels-last runs MobileNets' depthwise/pointwise convs faster on GPUs and on CPUs (oneDNN, ~1.4x).
    run.channels_last = True if cfg.channels_last is None else cfg.channels_last
    run.amp = ("bf16" if on_gpu and not cfg.qat else "off") if cfg.amp == "auto" else cfg.amp
    run.sync_every = cfg.sync_every or (GPU_SYNC_EVERY if on_gpu else 1)
    if isinstance(train_set, D.ArrayDataset) and (cfg.gpu_data if cfg.gpu_data is not None else on_gpu):
        train_set, test_set = train_set.to(device), test_set.to(device)
    run.train_set, run.test_set = train_set, test_set
    run.augment = D.Augment(crop_scale=(cfg.crop_scale_min, 1.0), translate=cfg.translate, flip=cfg.flip)


def _build_model(run: _Run) -> None:
    """The network (seeded), on the device, and the metadata model.pt stores to rebuild it."""
    cfg, train_set = run.cfg, run.train_set
    torch.manual_seed(cfg.seed)
    model, init_meta = start_model(cfg, train_set.num_classes, run.in_chans, train_set.classes)
    kwargs = init_meta.get("model_kwargs") or model_kwargs(cfg, train_set.num_classes, run.in_chans)
    if init_meta:  # the weights' input convention (TF-slim's [-1, 1]) for training, evaluation and model.pt
        for ds in (train_set, run.test_set):
            ds.mean, ds.std = tuple(init_meta["mean"]), tuple(init_meta["std"])
        if run.dist_info.is_main:
            print("\n".join(init_meta["notes"]), file=sys.stderr)
    model = model.to(run.device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.qat:  # fake int8 quantization of the target runtime; the float parameters are the graph's
        from mobilenets.quant.qat import prepare

        model = prepare(model, cfg.qat, cfg.resolution)
    run.model = model
    run.meta = dict(
        model=cfg.model,
        model_kwargs=kwargs,
        classes=list(train_set.classes),
        mean=list(train_set.mean),
        std=list(train_set.std),
        resolution=cfg.resolution,
        in_chans=run.in_chans,
        dataset=str(cfg.dataset),
    )
    if init_meta:  # where the weights came from: model.pt's card
        run.meta["init"] = dict(source=init_meta["source"], notes=init_meta["notes"])
    if cfg.qat:
        run.meta["qat"] = dict(target=cfg.qat)
    run.config = asdict(cfg)


def _load_teacher(run: _Run) -> None:
    """The distillation teacher (frozen, on the device), recorded in the run's metadata."""
    if run.cfg.teacher:
        run.teacher = load_teacher(run.cfg.teacher, run.train_set.classes, run.device, run.channels_last)
        run.meta["teacher"] = dict(run.teacher.info)


def _build_optimizer(run: _Run) -> None:
    """Optimizer, learning-rate schedule, EMA of the weights and the fp16 gradient scaler.

    A --freeze backbone is frozen first, so the optimizer holds the classifier only. A --freeze-epochs
    backbone is frozen per epoch (see _apply_freeze): the optimizer holds it from the start.
    """
    cfg = run.cfg
    if cfg.freeze:
        set_backbone_trainable(run.model, False)
    # A QAT graph has lost the module types that pick each weight's decay: group the float model's (same) tensors.
    run.optimizer = build_optimizer(getattr(run.model, "float_model", run.model), cfg)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, lambda s: lr_factor(s, run.total_steps, run.steps_per_epoch, cfg)
    )
    run.ema = ModelEma(run.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp == "fp16")


def _resume(run: _Run) -> None:
    """Fresh progress counters, or everything the checkpoint in out_dir holds when --resume finds one."""
    run.state = dict(
        epoch=0,
        step_in_epoch=0,
        step=0,
        train_time_s=0.0,
        history=[],
        step_losses=[],
        epoch_stats=[0.0, 0.0, 0.0],
        skipped=0,
    )
    cfg, ckpt_path = run.cfg, run.ckpt_path
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        check_resumable(ckpt["config"], run.config, ckpt_path, RESUME_FREE)
        note_resume_numerics(ckpt.get("numerics"), run.device, ckpt_path, run.dist_info.is_main)
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        if run.ema is not None:
            run.ema.module.load_state_dict(ckpt["ema"])
        run.state.update(ckpt["state"])
        # A run stopped by max_steps mid-epoch logged a partial-epoch evaluation; the epoch's real row comes later.
        run.state["history"] = [h for h in run.state["history"] if h["step"] % run.steps_per_epoch == 0]
        _set_rng_state(ckpt["rng"])
    elif cfg.resume and run.dist_info.is_main:
        print(f"note: no checkpoint in {run.out_dir}; starting a new run", file=sys.stderr)


def _wrap_model(run: _Run) -> None:
    """SyncBatchNorm, DDP and torch.compile around the model; the model evaluated is the EMA's when there is one."""
    cfg, dist_info = run.cfg, run.dist_info
    on_gpu = run.device.type == "cuda"
    if cfg.sync_bn and not on_gpu:
        raise MobileNetsError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm is CUDA-only); drop it on the CPU")
    if cfg.sync_bn and dist_info.enabled:
        run.model = nn.SyncBatchNorm.convert_sync_batchnorm(run.model)
    run.train_model = run.model
    if dist_info.enabled:
        # --freeze-epochs: DDP registers the backbone (trainable now) but gets no gradient for it while frozen.
        run.train_model = nn.parallel.DistributedDataParallel(
            run.model,
            device_ids=[run.device.index] if on_gpu else None,
            broadcast_buffers=True,
            find_unused_parameters=cfg.freeze_epochs > 0,
        )
    if cfg.compile:
        run.train_model = torch.compile(run.train_model)
    run.eval_model = run.ema.module if run.ema is not None else run.model


def _start_logs(run: _Run) -> None:
    if run.dist_info.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out_dir / "config.json", json.dumps(run.config, indent=2) + "\n")
    run.writer = _tensorboard(run.out_dir, run.state["step"], run.cfg.tensorboard and run.dist_info.is_main)


def _evaluate(run: _Run) -> EvalResult:
    return evaluate(
        _evaluated_model(run),
        run.test_set,
        resolution=run.cfg.resolution,
        device=run.device,
        amp=run.amp,
        channels_last=run.channels_last,
        num_workers=run.cfg.num_workers,
        dist_info=run.dist_info,
        data_pipeline=run.cfg.data_pipeline,
    )


def _evaluated_model(run: _Run) -> nn.Module:
    """The model evaluated and saved as model.pt: the EMA's or the trained one, with --precise-bn a copy of it
    whose BatchNorm statistics are recomputed for the current weights (once per step reached).

    A copy, so the run's own model, its moving averages, the EMA and the checkpoints stay exactly what training
    made them, and the pass runs under a saved-and-restored RNG on an image order of its own: a run trains the
    same weights with precise BN on or off, and a resumed run still equals an uninterrupted one. A QAT run is
    left alone: QAT folds its BatchNorm into the convolutions with frozen statistics before training, so there
    is nothing to recompute, and a forward pass in training mode would move its fake-quantize observers.
    """
    cfg, step = run.cfg, run.state["step"]
    if not cfg.precise_bn or cfg.qat:
        return run.eval_model
    if run.precise is not None and run.precise[0] == step:
        return run.precise[1]
    t0 = time.perf_counter()
    model = copy.deepcopy(run.eval_model)
    cuda = [run.device.index or 0] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _autocast(run.device, run.amp):
        recompute_bn_stats(model, _precise_bn_batches(run), keep=_frozen_modules(run, model), dist_info=run.dist_info)
    run.precise = (step, model.eval())
    run.precise_bn_s += time.perf_counter() - t0
    return model


def _precise_bn_batches(run: _Run):
    """The precise-BN pass's inputs: the first --precise-bn global batches (the whole set when it has fewer) of a
    fixed permutation of the training set, split as training splits them (this rank's part, then --accum-steps
    micro-batches: the batch size BatchNorm trained with), with evaluation's transforms (see precise_bn.py)."""
    cfg, ds = run.cfg, run.train_set
    order = D.epoch_order(len(ds), cfg.seed, PRECISE_BN_EPOCH)
    num = min(cfg.precise_bn, run.steps_per_epoch)
    for images, _labels, _bad in _train_batches(ds, order, 0, num, cfg, run.dist_info, run.device):
        for part in images.tensor_split(cfg.accum_steps):
            if len(part) >= 2:  # BatchNorm needs 2 (a batch of unreadable files may leave fewer)
                part = part.to(run.device, non_blocking=True)
                yield D.prepare_batch(
                    part, ds.mean, ds.std, cfg.resolution, run.in_chans, channels_last=run.channels_last
                )


def _frozen_modules(run: _Run, model: nn.Module) -> list[nn.Module]:
    """A frozen backbone's modules (--freeze, --freeze-epochs while the last step's epoch was frozen): its
    BatchNorm layers kept the statistics the classifier trained on, and keep them."""
    cfg = run.cfg
    epoch = max(run.state["step"] - 1, 0) // run.steps_per_epoch  # the epoch of the last step taken
    if not (cfg.freeze or epoch < cfg.freeze_epochs):
        return []
    head = {id(m) for m in head_module(model).modules()}
    return [m for m in model.modules() if id(m) not in head]


# --- the epoch loop ---------------------------------------------------------------------------------


def _epoch_loop(run: _Run, on_step) -> tuple[EvalResult | None, bool]:
    """Epochs until the last step; returns the latest evaluation and whether a signal stopped the run."""
    run.bad = D.BadFiles()
    last_eval: EvalResult | None = None
    interrupted = False
    with StopFlag() as stop:
        while run.state["step"] < run.last_step:
            epoch = run.state["epoch"]
            interrupted = _train_epoch(run, stop, on_step)
            if interrupted:
                save_run_checkpoint(run)
                break
            result = _end_epoch(run, epoch)
            if result is not None:
                last_eval = result
    return last_eval, interrupted


def _train_epoch(run: _Run, stop: StopFlag, on_step) -> bool:
    """The steps of one epoch (from where a resumed run left off); True when a signal asked to stop.

    A step's loss and accuracy stay on the device until a read-back, every ``sync_every`` steps and before
    every checkpoint: reading them waits for the GPU, so in between the CPU queues steps ahead of it.
    A read-back checks the window's losses before the window's last optimizer step; with sync_every 1 (the
    CPU's default) a non-finite loss stops the run before it touches the weights.
    """
    from tqdm.auto import tqdm

    cfg, state = run.cfg, run.state
    epoch = state["epoch"]
    order = D.epoch_order(len(run.train_set), cfg.seed, epoch)
    first = state["step_in_epoch"]
    steps_here = min(run.steps_per_epoch, first + run.last_step - state["step"])
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=first,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        disable=not run.show,
        dynamic_ncols=True,
        leave=True,
        file=sys.stderr,
    )
    run.train_model.train()
    _apply_freeze(run, epoch)
    interrupted = False
    window: list[_PendingStep] = []  # steps whose stats are still on the device
    batches = _train_batches(run.train_set, order, first, steps_here, cfg, run.dist_info, run.device)
    for k, (images, labels, bad_paths) in enumerate(batches, start=first):
        t0 = time.perf_counter()
        run.bad.add(bad_paths)
        if len(labels) < 2:  # (almost) every file of this batch was unreadable: BatchNorm needs 2
            state["step_in_epoch"] = k + 1
            bar.update(1)
            continue
        step = state["step"]
        stats = _forward_backward(run, images, labels, epoch, k, stop)
        window.append(_PendingStep(step, k, stats, run.optimizer.param_groups[0]["lr"]))
        checkpoint_due = bool(cfg.checkpoint_every) and (step + 1) % cfg.checkpoint_every == 0
        read_now = len(window) >= run.sync_every or checkpoint_due or k + 1 >= steps_here or step + 1 >= run.last_step
        values = _read_back(run, window, epoch, bar) if read_now else None
        _optimizer_step(run, step)
        state["step"] = step + 1
        state["step_in_epoch"] = k + 1
        window[-1].time_s = time.perf_counter() - t0
        if values is not None:
            interrupted = _log_window(run, bar, epoch, window, values, on_step)
            window = []
        if interrupted:
            break
        if checkpoint_due:
            save_run_checkpoint(run)
        if state["step"] >= run.last_step:
            break
    if window:  # the epoch's last batches were unreadable: log the steps before them
        interrupted = _log_window(run, bar, epoch, window, _read_back(run, window, epoch, bar), on_step)
    bar.close()
    return interrupted


@dataclass
class _PendingStep:
    step: int
    k: int  # the batch's index in its epoch
    stats: torch.Tensor  # [loss sum, correct, images, stop requested], on the device
    lr: float
    time_s: float = 0.0


def _read_back(run: _Run, window: list[_PendingStep], epoch: int, bar) -> torch.Tensor:
    """The window's stats on the host, (steps, 4) float64: one synchronization. Raises on a non-finite loss."""
    values = torch.stack([p.stats for p in window]).cpu()
    losses = values[:, 0] / values[:, 2]
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        i = int(bad[0])
        run.writer.close()
        bar.close()
        _raise_non_finite(run, float(losses[i]), window[i].step, epoch, window[i].k, len(window) - 1 - i)
    return values


def _log_window(run: _Run, bar, epoch: int, window: list[_PendingStep], values: torch.Tensor, on_step) -> bool:
    """Account for the window's steps (epoch stats, step losses, time, progress, TensorBoard, ``on_step``);
    True when a signal asked to stop."""
    state = run.state
    for pending, row in zip(window, values.tolist()):
        for i in range(3):
            state["epoch_stats"][i] += row[i]
        step_loss = row[0] / row[2]
        state["step_losses"].append(step_loss)
        state["train_time_s"] += pending.time_s
        if run.dist_info.is_main:
            run.writer.add_scalar("train/loss", step_loss, pending.step + 1)
            run.writer.add_scalar("train/lr", pending.lr, pending.step + 1)
            if on_step is not None:
                on_step(pending.step + 1, dict(epoch=epoch, loss=step_loss, lr=pending.lr))
    if run.show:
        es = state["epoch_stats"]
        window_s = sum(p.time_s for p in window)
        bar.set_postfix(
            loss=f"{state['step_losses'][-1]:.3f}",
            acc=f"{es[1] / es[2]:.3f}",
            img_s=f"{run.cfg.batch_size * len(window) / max(window_s, 1e-9):.0f}",
            refresh=False,
        )
        bar.update(len(window))
    return bool(values[:, 3].any())


def _apply_freeze(run: _Run, epoch: int) -> None:
    """--freeze: keep the backbone's BN in eval mode. --freeze-epochs N: the same for epochs < N, then unfreeze."""
    cfg = run.cfg
    frozen = cfg.freeze or epoch < cfg.freeze_epochs
    if cfg.freeze_epochs:
        set_backbone_trainable(run.model, not frozen)
        if epoch == cfg.freeze_epochs and run.show:
            print(f"epoch {epoch + 1}: the backbone is unfrozen; fine-tuning every weight", file=sys.stderr)
    run.frozen_params = backbone_parameters(run.model) if frozen else []
    if frozen:
        backbone_bn_eval(run.model)


def _forward_backward(
    run: _Run, images: torch.Tensor, labels: torch.Tensor, epoch: int, k: int, stop: StopFlag
) -> torch.Tensor:
    """Gradients of one global batch; returns [loss sum, correct, images, stop requested] summed over ranks,
    float64 on the device. Nothing here waits for the GPU."""
    cfg, device, dist_info = run.cfg, run.device, run.dist_info
    # Per-step seed for dropout and the crops: a resumed run replays exactly these numbers.
    torch.manual_seed(step_seed(cfg.seed, run.state["step"], dist_info.rank))
    rand = _rank_part(D.augment_rand(cfg.batch_size, D.step_generator(cfg.seed, epoch, k)), dist_info)
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    # Gradient accumulation: micro-batches of the rank's share, gradients summed before the step. The
    # micro-batches are contiguous slices (bounds computed on the host: no index tensor to copy).
    chunks = torch.arange(len(labels)).tensor_split(cfg.accum_steps)
    for j, idx in enumerate(chunks):
        last_chunk = j == len(chunks) - 1
        part = slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)
        sync = run.train_model.no_sync() if dist_info.enabled and not last_chunk else contextlib.nullcontext()
        with sync:
            x = D.prepare_batch(
                images[part],
                run.train_set.mean,
                run.train_set.std,
                cfg.resolution,
                run.in_chans,
                run.augment,
                rand[part],
                run.channels_last,
            )
            y = labels[part]
            with _autocast(device, run.amp):
                logits = run.train_model(x)
                loss = _loss(run, x, logits, y)
            run.scaler.scale(loss * (len(idx) / len(labels))).backward()
        loss_sum += loss.detach().float() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
    counts = torch.tensor([float(len(labels)), float(stop.signum is not None)], dtype=torch.float64)
    stats = torch.cat([torch.stack([loss_sum, correct.float()]).double(), counts.to(device, non_blocking=True)])
    return all_reduce(stats, dist_info)


def _loss(run: _Run, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The label loss, or with a teacher the distillation loss (its logits from the same batch, no gradients)."""
    cfg = run.cfg
    if run.teacher is None:
        return classification_loss(logits, y, cfg.label_smoothing)
    teacher_logits = run.teacher.logits(x, run.train_set.mean, run.train_set.std)
    return distillation_loss(
        logits, teacher_logits, y, cfg.distill_weight, cfg.distill_temperature, cfg.label_smoothing
    )


def _raise_non_finite(run: _Run, step_loss: float, step: int, epoch: int, k: int, steps_after: int = 0) -> None:
    ckpt_path = run.ckpt_path
    where = (
        f"the last good checkpoint {ckpt_path} (step {_ckpt_step(ckpt_path)})"
        if ckpt_path.exists()
        else "no checkpoint was written yet"
    )
    when = (
        "before updating the weights"
        if not steps_after
        else f"{steps_after} step(s) later (the next read-back, --sync-every)"
    )
    raise MobileNetsError(
        f"loss is {step_loss} at step {step + 1} (epoch {epoch + 1}, batch {k + 1}); stopped "
        f"{when}, keeping {where}. Lower --lr, check the data, or use --amp off"
    )


def _optimizer_step(run: _Run, step: int) -> None:
    """Apply the gradients, advance the schedule and the EMA."""
    for p in run.frozen_params:  # DDP with find_unused_parameters may hand a frozen weight a zero gradient
        p.grad = None
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model, step)


def _end_epoch(run: _Run, epoch: int) -> EvalResult | None:
    """At an epoch's end (or the last step): evaluate when due, log, warn about bad files, checkpoint."""
    state = run.state
    epoch_done = state["step_in_epoch"] >= run.steps_per_epoch
    if not (epoch_done or state["step"] >= run.last_step):
        return None
    es = state["epoch_stats"]
    train_loss, train_acc = es[0] / max(es[2], 1), es[1] / max(es[2], 1)
    if epoch_done:
        state.update(epoch=epoch + 1, step_in_epoch=0, epoch_stats=[0.0, 0.0, 0.0])
    result = None
    if (epoch + 1) % run.cfg.eval_every == 0 or state["step"] >= run.last_step:
        result = _evaluate(run)
        _log_epoch(run, epoch, epoch_done, train_loss, train_acc, result)
    if run.bad.count and run.dist_info.is_main:
        print(f"warning: epoch {epoch + 1}: {run.bad.message()}", file=sys.stderr)
    state["skipped"] += run.bad.count
    run.bad = D.BadFiles()
    save_run_checkpoint(run)
    return result


def _log_epoch(run: _Run, epoch: int, epoch_done: bool, train_loss: float, train_acc: float, ev: EvalResult) -> None:
    from tqdm.auto import tqdm

    state = run.state
    row = dict(
        epoch=round(state["step"] / run.steps_per_epoch, 3) if not epoch_done else epoch + 1,
        step=state["step"],
        lr=run.optimizer.param_groups[0]["lr"],
        train_loss=train_loss,
        train_acc=train_acc,
        test_loss=ev.loss,
        test_acc=ev.top1,
        test_top5=ev.top5,
        train_time_s=state["train_time_s"],
        img_per_s=state["step"] * run.cfg.batch_size / max(state["train_time_s"], 1e-9),
    )
    state["history"].append(row)
    if not run.dist_info.is_main:
        return
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5"):
        run.writer.add_scalar(key.replace("_", "/", 1), row[key], state["step"])
    write_metrics_csv(run.out_dir / "metrics.csv", state["history"])
    if run.show:
        tqdm.write(
            f"epoch {epoch + 1}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
            f"test loss {ev.loss:.4f} top-1 {100 * ev.top1:.2f}% "
            f"top-5 {100 * ev.top5:.2f}%",
            file=sys.stderr,
        )


def _finish(run: _Run, last_eval: EvalResult | None, interrupted: bool, wall_start: float) -> TrainResult:
    """Final evaluation when none is fresh, model.pt, steps.csv, plots and result.json."""
    cfg, state, out_dir = run.cfg, run.state, run.out_dir
    run.writer.close()
    if last_eval is None:  # interrupted before any evaluation, or resumed at the end
        last_eval = _evaluate(run)
    model = _evaluated_model(run)  # on every rank: under torchrun the precise-BN pass is collective
    if run.dist_info.is_main:
        final = dict(meta=run.meta, config=run.config, model=model.state_dict(), ema=None)
        if cfg.qat:  # model.pt holds the float model (eval, export, predict load it as any) and the QAT state
            final.update(model=run.model.float_state(), qat=run.model.qat_state())
        atomic_save(final, run.model_path)
        write_metrics_csv(out_dir / "steps.csv", [dict(step=i + 1, loss=v) for i, v in enumerate(state["step_losses"])])
        if cfg.plots and state["history"]:
            plot_curves(state["history"], out_dir / "curves.png", title=f"{cfg.model} on {cfg.dataset}")
            plot_confusion(last_eval, out_dir / "confusion.png")
    result = TrainResult(
        test_acc=last_eval.top1,
        test_top5=last_eval.top5,
        test_loss=last_eval.loss,
        train_time_s=state["train_time_s"],
        wall_time_s=time.perf_counter() - wall_start,
        epochs=state["epoch"],
        steps=state["step"],
        history=state["history"],
        out_dir=str(out_dir),
        checkpoint_path=str(run.ckpt_path),
        model_path=str(run.model_path),
        config=run.config,
        classes=list(run.train_set.classes),
        per_class_acc=last_eval.per_class_acc,
        step_losses=state["step_losses"],
        skipped_files=state["skipped"],
        interrupted=interrupted,
        steps_per_epoch=run.steps_per_epoch,
        precise_bn_s=run.precise_bn_s,
        model=model,
    )
    if run.dist_info.is_main:
        atomic_write_text(out_dir / "result.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _train_batches(
    train_set: D.Dataset,
    order: torch.Tensor,
    first: int,
    last: int,
    cfg: TrainConfig,
    dist_info: Dist,
    device: torch.device | None = None,
):
    """Batches ``first``..``last``-1 of an epoch: (uint8 images, labels, unreadable paths) for this rank.

    Global batch k is order[k·B:(k+1)·B]; rank r takes its r-th contiguous part, so the union over ranks
    is exactly what one process sees, and rank r's images are one process's r-th accumulation micro-batch.
    With ``cfg.data_pipeline == "jpeg"`` ImageFolder batches are decoded on ``device`` (the same center
    squares as the PIL path's; the augmentation happens later, in prepare_batch, either way).
    """
    B = cfg.batch_size
    if isinstance(train_set, D.ArrayDataset):
        order = order.to(train_set.images.device)  # once per epoch: slicing it per step copies nothing
        for k in range(first, last):
            idx = _rank_part(order[k * B : (k + 1) * B], dist_info)
            yield train_set.images[idx], train_set.labels[idx], []
        return
    index_lists = [_rank_part(order[k * B : (k + 1) * B], dist_info) for k in range(first, last)]
    if cfg.data_pipeline == "jpeg":
        from mobilenets.data.jpeg import JpegLoader

        yield from JpegLoader(
            train_set,
            [idx.tolist() for idx in index_lists],
            resolution=train_set.image_size,
            device=device or "cpu",
            output="uint8",
            threads=cfg.num_workers or 4,
        )
        return
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=[idx.tolist() for idx in index_lists],
        num_workers=cfg.num_workers,
        collate_fn=D.collate_skip_bad,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    yield from loader
