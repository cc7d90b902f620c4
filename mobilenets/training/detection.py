"""Training a detector (SSD, SSDLite) on the classification engine's run.

What a detection run shares with a classification run (``mobilenets.training.train`` calls :func:`train_detector`
for a detector's name): one run per ``--out-dir`` (the lock), the resolved ``config.json``, the optimizer, its
weight-decay groups and learning-rate schedule, the EMA of weights, atomic ``checkpoint.pt`` / ``model.pt``, a
bit-for-bit ``--resume``, ``--init``, progress bars, TensorBoard, ``metrics.csv`` / ``steps.csv``, ``curves.png``
and ``result.json``. What differs is the step and the evaluation:

- the batch: :class:`mobilenets.data.detection.TransformedDetection` augments each image with
  ``torchvision.transforms.v2`` (SSD's policy: photometric distortion, zoom out, IoU crop, flip) under a seed of
  (seed, epoch, image), so a resumed run and any number of DataLoader workers see the same pixels and boxes;
- the loss: torchvision's SSD loss (smooth-L1 on the matched anchors' box offsets + cross-entropy with 3:1 hard
  negative mining, both divided by the number of matched anchors), ``model(images, targets)``;
- the evaluation: COCO mAP@[.5:.95], mAP@.5 and per-class AP by pycocotools on the test split.

Precise BN is not applied to detectors (their forward pass in training mode needs targets): SSDLite's BatchNorm
momentum of 0.03 keeps the moving averages close to the current weights.

``--qat TARGET --init RUN/model.pt`` fine-tunes a trained detector through fake int8 quantization of the parts its
int8 files quantize (:mod:`mobilenets.quant.qat_detection`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilenets import data as D
from mobilenets.data.detection import (
    DetectionDataset,
    TransformedDetection,
    detection_collate,
    load_detection_dataset,
    train_transform,
)
from mobilenets.detection import create_detector, detector_defaults, torchvision_key_map
from mobilenets.detection.coco_eval import DetectionEval, evaluate_detector
from mobilenets.errors import MobileNetsError
from mobilenets.io import atomic_write_text
from mobilenets.training.checkpoint import (
    _ckpt_step,
    _set_rng_state,
    atomic_save,
    check_resumable,
    load_checkpoint,
    note_resume_numerics,
    save_run_checkpoint,
)
from mobilenets.training.config import RESUME_FREE, TrainConfig
from mobilenets.training.distributed import Dist, _autocast, all_reduce, resolve_device
from mobilenets.training.logs import _tensorboard, plot_detection_curves, write_metrics_csv
from mobilenets.training.optim import ModelEma, build_optimizer, lr_factor
from mobilenets.training.signals import StopFlag, step_seed
from mobilenets.weights.checkpoint import load_model

# TrainConfig fields that mean nothing for a detector (classification's augmentation and transfer options).
CLASSIFIER_ONLY = ("stem_stride", "dropout", "teacher", "freeze", "freeze_epochs", "data_pipeline")


@dataclass
class DetectionTrainResult:
    """What a detection run produced. mAPs are fractions (0.31 = 31.0 mAP); times in seconds.

    ``history`` has one dict per evaluated epoch: epoch, step, lr, train_loss, train_box_loss, train_cls_loss,
    test_map, test_map50, test_map75, train_time_s, img_per_s.
    """

    test_map: float
    test_map50: float
    test_map75: float
    per_class_ap: dict
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
    step_losses: list[float]
    skipped: dict = field(default_factory=dict)
    interrupted: bool = False
    steps_per_epoch: int = 0
    task: str = "detection"
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}


@dataclass
class _Run:
    cfg: TrainConfig
    device: torch.device
    dist_info: Dist
    out_dir: Path
    train_set: DetectionDataset | None = None
    test_set: DetectionDataset | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0
    last_step: int = 0
    amp: str = "off"
    model: Any = None
    train_model: Any = None
    eval_model: Any = None
    meta: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    optimizer: Any = None
    scheduler: Any = None
    ema: Any = None
    scaler: Any = None
    state: dict = field(default_factory=dict)
    writer: Any = None

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def model_path(self) -> Path:
        return self.out_dir / "model.pt"

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.dist_info.is_main


def train_detector(
    cfg: TrainConfig, device: torch.device, dist_info: Dist, on_step=None, wall_start: float | None = None
) -> DetectionTrainResult:
    """Train the detector ``cfg.model`` on ``cfg.dataset`` (a detection spec: ``coco:…``, ``voc:…``, ``yolo:…``,
    ``composite``) and evaluate it on the test split (``cfg.test_dataset`` or the dataset's own); see
    :func:`mobilenets.training.train`, which holds the out-dir lock and the process group around this."""
    wall_start = time.perf_counter() if wall_start is None else wall_start
    run = _Run(cfg, device, dist_info, Path(cfg.out_dir))
    _check_config(cfg)
    _setup_data(run)
    _build_model(run)
    _build_optimizer(run)
    _resume(run)
    _wrap_model(run)
    if dist_info.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out_dir / "config.json", json.dumps(run.config, indent=2) + "\n")
    run.writer = _tensorboard(run.out_dir, run.state["step"], cfg.tensorboard and dist_info.is_main)
    last_eval, interrupted = _epoch_loop(run, on_step)
    return _finish(run, last_eval, interrupted, wall_start)


def _check_config(cfg: TrainConfig) -> None:
    defaults = TrainConfig()
    for name in CLASSIFIER_ONLY:
        if getattr(cfg, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise MobileNetsError(f"{flag} is a classifier option; {cfg.model} is a detector: drop {flag}")
    if cfg.backbone_lr_scale != 1.0:
        raise MobileNetsError("--backbone-lr-scale is a classifier option for now; drop it for a detector")
    if cfg.accum_steps != 1:
        raise MobileNetsError("--accum-steps is not supported for detectors yet; lower --batch-size instead")
    if cfg.batch_size < 2:
        raise MobileNetsError(
            "a detector needs --batch-size >= 2: its BatchNorm layers see 1×1 maps at the extra layers, where one "
            "image gives no variance"
        )


def _setup_data(run: _Run) -> None:
    cfg, dist_info = run.cfg, run.dist_info
    train_set = load_detection_dataset(cfg.dataset, "train", max_samples=cfg.max_train_samples, seed=cfg.seed)
    test_set = load_detection_dataset(
        cfg.test_dataset or cfg.dataset, "test", max_samples=cfg.max_test_samples, seed=cfg.seed
    )
    if list(train_set.classes) != list(test_set.classes):
        raise MobileNetsError(
            f"the train and test splits name different classes ({len(train_set.classes)}: "
            f"{', '.join(train_set.classes[:3])}… vs {len(test_set.classes)}: {', '.join(test_set.classes[:3])}…); "
            "give both splits the same categories"
        )
    if cfg.resolution is None:
        cfg.resolution = detector_defaults(cfg.model)["size"]
    if cfg.width_mult is None:
        cfg.width_mult = detector_defaults(cfg.model)["width_mult"]
    run.steps_per_epoch = len(train_set) // cfg.batch_size
    if run.steps_per_epoch == 0:
        raise MobileNetsError(
            f"batch_size {cfg.batch_size} is larger than the training set ({len(train_set)} images); lower it"
        )
    if cfg.batch_size % dist_info.world_size:
        raise MobileNetsError(f"batch_size {cfg.batch_size} must divide by the {dist_info.world_size} process(es)")
    run.total_steps = run.steps_per_epoch * cfg.epochs
    run.last_step = min(run.total_steps, cfg.max_steps or run.total_steps)
    run.amp = ("bf16" if run.device.type == "cuda" else "off") if cfg.amp == "auto" else cfg.amp
    run.train_set, run.test_set = train_set, test_set
    for split, ds in (("train", train_set), ("test", test_set)):
        if ds.report() and dist_info.is_main:
            print(f"note: {split} split: {ds.report()}", file=sys.stderr)


def _build_model(run: _Run) -> None:
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    kwargs = dict(num_classes=run.train_set.num_classes, width_mult=cfg.width_mult, size=cfg.resolution)
    model = create_detector(cfg.model, **kwargs)
    run.meta = dict(
        task="detection",
        model=cfg.model,
        model_kwargs=kwargs,
        classes=list(run.train_set.classes),
        category_ids=list(run.train_set.category_ids),
        resolution=cfg.resolution,
        in_chans=3,
        dataset=str(cfg.dataset),
    )
    resuming = cfg.resume and run.ckpt_path.exists()
    if cfg.init and resuming:  # the checkpoint holds the weights and says where they came from
        run.meta = load_checkpoint(run.ckpt_path)["meta"]
        model = create_detector(cfg.model, **run.meta["model_kwargs"])
    elif cfg.init:
        with torch.random.fork_rng(devices=[]):
            source, notes = init_detector(model, cfg.init)
        # The weights' input normalization is the detector's own (model.transform): model.pt must rebuild it.
        kwargs.update(image_mean=list(model.transform.image_mean), image_std=list(model.transform.image_std))
        run.meta["init"] = dict(source=source, notes=notes)
        if run.dist_info.is_main:
            print("\n".join(notes), file=sys.stderr)
    model = model.to(run.device)
    if cfg.qat:  # fake int8 in the scopes the int8 files quantize; the float parameters are the graphs'
        from mobilenets.quant.qat_detection import prepare_detector

        model = prepare_detector(model, cfg.qat)
        run.meta["qat"] = dict(
            target=cfg.qat,
            export="int8 files quantize these weights with the runtime's PTQ (the grids training used); "
            "activation ranges are calibrated on real images",
        )
    run.model = model
    run.config = asdict(cfg)


def init_detector(model: nn.Module, spec: str) -> tuple[dict, list[str]]:
    """Load ``--init`` weights into a detector: an earlier detector run (its model.pt/checkpoint.pt: every tensor that
    fits, the class head replaced when the classes differ), or a classifier's weights (``pretrained``, a
    ``.safetensors``, a classifier run, a timm/torchvision MobileNet state dict, a TF-slim ``.pb``) for the backbone,
    whose layers keep the classifier's names. Returns (source, notes for the log)."""
    from mobilenets.training.init import read_init

    path = Path(str(spec)).expanduser()
    if path.suffix in (".pt", ".pth") and path.is_file():
        ckpt = load_checkpoint(path)
        meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
        if isinstance(meta, dict) and meta.get("task") == "detection":
            state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
            return _load_fitting(model, state, "", {"init": str(spec), "format": "mobilenets_detector_run"}, path)
        tv_state = _torchvision_ssdlite_state(path)
        if tv_state is not None:
            mapping = torchvision_key_map(model)  # torchvision key -> ours
            ours = {mapping[k]: v for k, v in tv_state.items() if k in mapping}
            return _load_fitting(model, ours, "", {"init": str(spec), "format": "torchvision_ssdlite"}, path)
    src = read_init(spec)
    backbone = model.config.get("backbone")
    if src.arch != backbone:
        raise MobileNetsError(
            f"--init {spec} holds {src.arch} weights but {model.config['name']}'s backbone is {backbone}; give "
            f"{backbone} weights (e.g. a {backbone} run's model.pt, or 'pretrained' for mobilenet_v1)"
        )
    if src.width_mult is not None and abs(float(src.width_mult) - float(model.config["width_mult"])) > 1e-9:
        raise MobileNetsError(
            f"--init {spec} is α={src.width_mult} but the detector is α={model.config['width_mult']}; "
            f"use --width-mult {src.width_mult}"
        )
    # The detector normalizes its inputs itself: take the weights' convention (TF-slim's [-1, 1], timm's ImageNet).
    model.transform.image_mean, model.transform.image_std = list(src.mean), list(src.std)
    source, notes = _load_fitting(model, src.tensors, "backbone.", dict(src.source), Path(str(spec)))
    notes.append(f"input normalization from the weights: mean {list(src.mean)}, std {list(src.std)}")
    return source, notes


def _torchvision_ssdlite_state(path: Path) -> dict | None:
    """A torchvision SSDLite state dict (``ssdlite320_mobilenet_v3_large``'s layout) in ``path``, else None."""
    from mobilenets import weights as W

    obj = W.read_torch_file(path)
    if isinstance(obj, dict) and "meta" in obj:
        return None
    state = W.state_dict_from(obj, path)
    tv = any(k.startswith("backbone.features.0.0.") for k in state) and any(k.startswith("head.") for k in state)
    return state if tv else None


def _load_fitting(model: nn.Module, tensors: dict, prefix: str, source: dict, path: Path) -> tuple[dict, list[str]]:
    state = model.state_dict()
    fitted = {prefix + k: v for k, v in tensors.items() if prefix + k in state and state[prefix + k].shape == v.shape}
    if not fitted:
        raise MobileNetsError(f"--init {path}: none of its tensors fits {model.config['name']}; check the model name")
    state.update(fitted)
    model.load_state_dict(state)
    body = sum(1 for k in state if k.startswith(prefix)) if prefix else len(state)
    notes = [f"init: {len(fitted)} of {body} tensors{' of the backbone' if prefix else ''} from {path.name}"]
    return source, notes


def _build_optimizer(run: _Run) -> None:
    cfg = run.cfg
    run.optimizer = build_optimizer(run.model, cfg)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, lambda s: lr_factor(s, run.total_steps, run.steps_per_epoch, cfg)
    )
    run.ema = ModelEma(run.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp == "fp16")


def _resume(run: _Run) -> None:
    run.state = dict(
        epoch=0, step_in_epoch=0, step=0, train_time_s=0.0, history=[], step_losses=[], epoch_stats=[0.0] * 4
    )
    cfg = run.cfg
    if cfg.resume and run.ckpt_path.exists():
        ckpt = load_checkpoint(run.ckpt_path)
        check_resumable(ckpt["config"], run.config, run.ckpt_path, RESUME_FREE)
        note_resume_numerics(ckpt.get("numerics"), run.device, run.ckpt_path, run.dist_info.is_main)
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        if run.ema is not None:
            run.ema.module.load_state_dict(ckpt["ema"])
        run.state.update(ckpt["state"])
        run.state["history"] = [h for h in run.state["history"] if h["step"] % run.steps_per_epoch == 0]
        _set_rng_state(ckpt["rng"])
    elif cfg.resume and run.dist_info.is_main:
        print(f"note: no checkpoint in {run.out_dir}; starting a new run", file=sys.stderr)


def _wrap_model(run: _Run) -> None:
    run.train_model = run.model
    if run.dist_info.enabled:
        on_gpu = run.device.type == "cuda"
        if run.cfg.sync_bn and on_gpu:
            run.model = nn.SyncBatchNorm.convert_sync_batchnorm(run.model)
        run.train_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if on_gpu else None
        )
    if run.cfg.compile:
        run.train_model = torch.compile(run.train_model)
    run.eval_model = run.ema.module if run.ema is not None else run.model


# --- the loop -----------------------------------------------------------------------------------------


def _epoch_loop(run: _Run, on_step) -> tuple[DetectionEval | None, bool]:
    last_eval, interrupted = None, False
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


def _batches(run: _Run, epoch: int, first: int, last: int):
    """Global batches ``first``..``last``-1 of an epoch, this rank's part: (float images, targets) lists."""
    cfg, world, rank = run.cfg, run.dist_info.world_size, run.dist_info.rank
    B = cfg.batch_size
    order = D.epoch_order(len(run.train_set), cfg.seed, epoch).tolist()
    per_rank = B // world
    index_lists = [order[k * B : (k + 1) * B][rank * per_rank : (rank + 1) * per_rank] for k in range(first, last)]
    data = TransformedDetection(run.train_set, train_transform(cfg.resolution), seed=cfg.seed)
    data.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=index_lists,
        num_workers=cfg.num_workers,
        collate_fn=detection_collate,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader


def _train_epoch(run: _Run, stop: StopFlag, on_step) -> bool:
    from tqdm.auto import tqdm

    cfg, state = run.cfg, run.state
    epoch, first = state["epoch"], state["step_in_epoch"]
    steps_here = min(run.steps_per_epoch, first + run.last_step - state["step"])
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=first,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        disable=not run.show,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    run.train_model.train()
    interrupted = False
    for k, (images, targets) in enumerate(_batches(run, epoch, first, steps_here), start=first):
        t0 = time.perf_counter()
        step = state["step"]
        stats = _forward_backward(run, images, targets, stop)  # [loss, box, cls, images, stop] summed over ranks
        loss = stats[0] / stats[3]
        if not math.isfinite(loss):
            bar.close()
            run.writer.close()
            _raise_non_finite(run, loss, step, epoch, k)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.model, step)
        lr = run.optimizer.param_groups[0]["lr"]
        state.update(step=step + 1, step_in_epoch=k + 1)
        state["train_time_s"] += time.perf_counter() - t0
        for i in range(4):
            state["epoch_stats"][i] += stats[i]
        state["step_losses"].append(loss)
        if run.dist_info.is_main:
            run.writer.add_scalar("train/loss", loss, step + 1)
            run.writer.add_scalar("train/lr", lr, step + 1)
            if on_step is not None:
                on_step(step + 1, dict(epoch=epoch, loss=loss, lr=lr))
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{cfg.batch_size / max(time.perf_counter() - t0, 1e-9):.1f}")
        bar.update(1)
        if stats[4]:
            interrupted = True
            break
        if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
            save_run_checkpoint(run)
        if state["step"] >= run.last_step:
            break
    bar.close()
    return interrupted


def _forward_backward(run: _Run, images: list, targets: list, stop: StopFlag) -> list[float]:
    """Gradients of this rank's part of one batch; the batch's [loss sum, box loss sum, class loss sum, images,
    stop requested] over every rank (one read-back per step: the NaN check needs it before the update)."""
    cfg, device = run.cfg, run.device
    torch.manual_seed(step_seed(cfg.seed, run.state["step"], run.dist_info.rank))
    images = [x.to(device, non_blocking=True) for x in images]
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    run.optimizer.zero_grad(set_to_none=True)
    with _autocast(device, run.amp):
        losses = run.train_model(images, targets)
    loss = losses["bbox_regression"].float() + losses["classification"].float()
    run.scaler.scale(loss).backward()
    n = float(len(images))
    box, cls = float(losses["bbox_regression"].detach()), float(losses["classification"].detach())
    stats = torch.tensor([(box + cls) * n, box * n, cls * n, n, float(stop.signum is not None)], dtype=torch.float64)
    return all_reduce(stats.to(device), run.dist_info).cpu().tolist()


def _raise_non_finite(run: _Run, loss: float, step: int, epoch: int, k: int) -> None:
    where = (
        f"the last good checkpoint {run.ckpt_path} (step {_ckpt_step(run.ckpt_path)})"
        if run.ckpt_path.exists()
        else "no checkpoint was written yet"
    )
    raise MobileNetsError(
        f"loss is {loss} at step {step + 1} (epoch {epoch + 1}, batch {k + 1}); stopped before updating the weights, "
        f"keeping {where}. Lower --lr, check the boxes of the data, or use --amp off"
    )


def _evaluate(run: _Run) -> DetectionEval:
    model = run.eval_model.eval()
    try:
        return evaluate_detector(
            model,
            run.test_set,
            batch_size=max(2, min(run.cfg.batch_size, 16)),
            device=run.device,
            progress=run.show,
            num_workers=run.cfg.num_workers,
        )
    finally:
        run.train_model.train()


def _end_epoch(run: _Run, epoch: int) -> DetectionEval | None:
    from tqdm.auto import tqdm

    state = run.state
    epoch_done = state["step_in_epoch"] >= run.steps_per_epoch
    if not (epoch_done or state["step"] >= run.last_step):
        return None
    es = state["epoch_stats"]
    n = max(es[3], 1)
    train_loss, train_box, train_cls = es[0] / n, es[1] / n, es[2] / n
    if epoch_done:
        state.update(epoch=epoch + 1, step_in_epoch=0, epoch_stats=[0.0] * 4)
    result = None
    if (epoch + 1) % run.cfg.eval_every == 0 or state["step"] >= run.last_step:
        result = _evaluate(run) if run.dist_info.is_main else None
        row = dict(
            epoch=epoch + 1 if epoch_done else round(state["step"] / run.steps_per_epoch, 3),
            step=state["step"],
            lr=run.optimizer.param_groups[0]["lr"],
            train_loss=train_loss,
            train_box_loss=train_box,
            train_cls_loss=train_cls,
            test_map=result.map if result else float("nan"),
            test_map50=result.map50 if result else float("nan"),
            test_map75=result.map75 if result else float("nan"),
            train_time_s=state["train_time_s"],
            img_per_s=state["step"] * run.cfg.batch_size / max(state["train_time_s"], 1e-9),
        )
        state["history"].append(row)
        if run.dist_info.is_main:
            for key in ("train_loss", "train_box_loss", "train_cls_loss", "test_map", "test_map50"):
                run.writer.add_scalar(key.replace("_", "/", 1), row[key], state["step"])
            write_metrics_csv(run.out_dir / "metrics.csv", state["history"])
            if run.show:
                tqdm.write(
                    f"epoch {epoch + 1}: train loss {train_loss:.4f} (box {train_box:.4f}, class {train_cls:.4f}) | "
                    f"test mAP {100 * result.map:.1f}  mAP@.5 {100 * result.map50:.1f}",
                    file=sys.stderr,
                )
    save_run_checkpoint(run)
    return result


def _finish(run: _Run, last_eval: DetectionEval | None, interrupted: bool, wall_start: float) -> DetectionTrainResult:
    cfg, state, out_dir = run.cfg, run.state, run.out_dir
    run.writer.close()
    if last_eval is None and run.dist_info.is_main:
        last_eval = _evaluate(run)
    model = run.eval_model.eval()
    if run.dist_info.is_main:
        # A QAT run's model.pt holds the trained weights in the detector's own layout (BN folded into identities).
        weights = run.model.float_state() if cfg.qat else model.state_dict()
        atomic_save(dict(meta=run.meta, config=run.config, model=weights, ema=None), run.model_path)
        write_metrics_csv(out_dir / "steps.csv", [dict(step=i + 1, loss=v) for i, v in enumerate(state["step_losses"])])
        if cfg.plots and state["history"]:
            plot_detection_curves(state["history"], out_dir / "curves.png", title=f"{cfg.model} on {cfg.dataset}")
    skipped = dict(run.train_set.skipped + run.test_set.skipped)
    result = DetectionTrainResult(
        test_map=last_eval.map if last_eval else float("nan"),
        test_map50=last_eval.map50 if last_eval else float("nan"),
        test_map75=last_eval.map75 if last_eval else float("nan"),
        per_class_ap=dict(last_eval.per_class_ap) if last_eval else {},
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
        step_losses=state["step_losses"],
        skipped=skipped,
        interrupted=interrupted,
        steps_per_epoch=run.steps_per_epoch,
        model=model,
    )
    if run.dist_info.is_main:
        atomic_write_text(out_dir / "result.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def evaluate_detector_file(
    path: str,
    *,
    dataset: str | None = None,
    split: str = "test",
    max_samples: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
) -> tuple[DetectionEval, dict]:
    """COCO mAP of a detector run's ``model.pt`` on ``split`` of ``dataset`` (default: the one it trained on).
    Returns the evaluation and the run's meta. The dataset's classes must be the run's, in the same order."""
    model, meta = load_model(path)
    spec = dataset or meta.get("dataset")
    ds = load_detection_dataset(spec, split, max_samples=max_samples)
    if list(ds.classes) != list(meta["classes"]):
        raise MobileNetsError(
            f"{spec} names other classes than the model was trained on ({len(ds.classes)} vs {len(meta['classes'])}); "
            "evaluate on data with the run's categories"
        )
    dev = resolve_device(device)
    result = evaluate_detector(model.to(dev), ds, batch_size=batch_size, device=dev, progress=progress)
    return result, meta
