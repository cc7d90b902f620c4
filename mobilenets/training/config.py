"""What a training run depends on: :class:`TrainConfig`, the recipes (presets), the flags' help, the demo's run."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

from mobilenets import data as D
from mobilenets.detection import is_detector
from mobilenets.errors import MobileNetsError
from mobilenets.models import FAMILIES, family_of, model_defaults

# --qat without --lr: the preset's rate times this (see mobilenets.quant.qat). 1e-3 for SGD at batch 128:
# 150 steps of V1 α=0.5 on Fashion-MNIST from 78.33% kept or passed it (78.40% ExecuTorch scheme, 79.34%
# ONNX Runtime's 7-bit one); the preset's / 10 (0.02) gave 79.07% and 77.15% (reports/int8-qat).
QAT_LR_SCALE = 0.005
# --teacher without --distill-weight: half label loss, half distillation (Hinton et al.'s soft and hard targets).
DEFAULT_DISTILL_WEIGHT = 0.5
# --precise-bn's default, in training batches: 4,096 images at batch 128, 2.2% of `mobilenets demo`'s run (a pass per
# evaluation); 200 would cost ~9% and scored no better (reports/precise-bn). Detectron2's PreciseBN averages 3,200.
PRECISE_BN_BATCHES = 32


@dataclass
class TrainConfig:
    """Everything a run depends on. ``None`` means "the preset's value" (or the model's, for model fields).

    The resolved config (presets applied, see :meth:`resolved`) is saved as ``config.json`` in ``out_dir``.

    Model:
        model: registered name (``mobilenets list``), e.g. "mobilenet_v1" or "mobilenet_v1_0.5_160".
        width_mult: α; None keeps the name's.
        resolution: input side; images are resized to it. None: the dataset's image side for built-in
            small sets (28 for Fashion-MNIST, 32 for digits and CIFAR; at least the model's minimum), else
            the name's (224).
        stem_stride: 2 as in the paper; 1 is the small-image stem (28–32 px inputs keep a 2×2 final map
            instead of 1×1). None: 1 when resolution ≤ 64, else 2. MobileNets only.
        dropout: before the classifier; None keeps the model's (0).
        init: start from weights instead of a random initialization: "pretrained" (Google's ImageNet
            MobileNetV1 1.0), our ``.safetensors``, a ``model.pt``/``checkpoint.pt`` of an earlier run, a timm
            state dict or a TF-slim ``.pb``. The weights' conventions (α, ReLU6, padding, BN ε, input mean/std)
            carry through the run and its saved model; see :mod:`mobilenets.training.init`.
    Data:
        dataset: "fashion-mnist", "digits", or a path (ImageFolder root, CIFAR python-pickle folder).
        data_dir: folder with Fashion-MNIST's IDX files (default /usr/share/datasets/fashion-mnist).
        max_train_samples / max_test_samples: class-balanced subsets (None: all).
        num_workers: DataLoader worker processes for ImageFolder data (in-memory sets need none); with the
            jpeg pipeline, its file-reading threads (0: 4).
        data_pipeline: how ImageFolder files become batches: "pil" (DataLoader workers decoding with PIL)
            or "jpeg" (:mod:`mobilenets.data.jpeg`: batched nvJPEG decoding on the GPU, threads on the CPU;
            the same pixels within one level).
    Schedule and optimizer (None: from ``preset``, one of "paper" (the model family's paper recipe: V2's,
    V3's, each V4 size's, V1's for V1 and the other families — see PAPER_PRESETS), "sgd", "adamw",
    "finetune" — see PRESETS):
        epochs, max_steps (stop early after this many optimizer steps), batch_size (global, all ranks),
        accum_steps (micro-batches per step: batch_size / (processes × accum_steps) images per forward),
        optimizer ("rmsprop" TF-style, "sgd", "adamw"), lr (None: the preset's per-256 rate scaled by
        batch_size/256), momentum, rmsprop_eps (ε inside RMSprop's square root), weight_decay,
        depthwise_weight_decay (paper: none on depthwise filters), schedule ("cosine", "exponential",
        "constant"), warmup_epochs, lr_decay (exponential: factor per epoch), label_smoothing, ema_decay
        (0: no EMA of weights), crop_scale_min (smallest random crop, as a fraction of the area; 1: no
        crops), translate (random shift, fraction of the side), flip.
    Transfer (fine-tuning and distillation):
        freeze: linear probe — the backbone (everything but ``model.classifier``) gets no gradients and its
            BatchNorm layers stay in eval mode (running statistics frozen).
        freeze_epochs: a linear probe for this many epochs, then every weight trains.
        backbone_lr_scale: the backbone's learning rate is ``lr × backbone_lr_scale``, the classifier's ``lr``
            (None: the preset's, 1).
        teacher: distill from this model: "pretrained" (Google's ImageNet MobileNetV1, 1001 classes), a
            registered name with weights (mobilenet_v1_1.0_160), or a run (its folder, model.pt or
            checkpoint.pt) trained on the same classes. It sees the student's augmented batch at its own
            resolution and normalization.
        distill_weight: α of ``(1 − α)·CE(labels) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))``; None:
            DEFAULT_DISTILL_WEIGHT (0.5) with a teacher, 0 without.
        distill_temperature: T.
    Quantization:
        qat: quantization-aware training towards this export format's int8 scheme ("executorch", "tflite",
            "onnx", "openvino"; see :mod:`mobilenets.quant.qat`), usually a short fine-tune from ``init``.
    Run:
        seed, device ("auto", "cpu", "cuda", "cuda:1"), amp ("auto": bf16 on GPU, off on CPU; "bf16",
        "fp16", "off"), channels_last (None: on), compile (torch.compile), sync_bn (DDP),
        gpu_data (None: keep in-memory sets on the GPU), out_dir, checkpoint_every (steps; 0: epoch ends
        only), sync_every (steps between reading the loss back to the host, which waits for the GPU; None: 1 on
        CPU, where it costs nothing, GPU_SYNC_EVERY on GPU), resume (continue from ``out_dir``/checkpoint.pt),
        eval_every (epochs), progress (tqdm), tensorboard, plots.
    """

    # model
    model: str = "mobilenet_v1"
    width_mult: float | None = None
    resolution: int | None = None
    stem_stride: int | None = None
    dropout: float | None = None
    init: str | None = None
    # data
    dataset: str = "fashion-mnist"
    test_dataset: str | None = None
    data_dir: str | None = None
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    num_workers: int = 0
    data_pipeline: str = "pil"
    # schedule and optimizer
    preset: str | None = None
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    accum_steps: int = 1
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    rmsprop_eps: float | None = None
    weight_decay: float | None = None
    depthwise_weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    lr_decay: float | None = None
    label_smoothing: float | None = None
    ema_decay: float | None = None
    crop_scale_min: float | None = None
    translate: float | None = None
    flip: bool | None = None
    # transfer
    freeze: bool = False
    freeze_epochs: int = 0
    backbone_lr_scale: float | None = None
    teacher: str | None = None
    distill_weight: float | None = None
    distill_temperature: float = 4.0
    # quantization
    qat: str | None = None
    # run
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    sync_bn: bool = False
    gpu_data: bool | None = None
    out_dir: str = "runs/train"
    checkpoint_every: int = 0
    sync_every: int | None = None
    resume: bool = False
    eval_every: int = 1
    precise_bn: int = PRECISE_BN_BATCHES
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with every preset value filled in and the values checked."""
        cfg = dataclasses.replace(self)
        if cfg.preset is None:
            cfg.preset = "ssdlite" if is_detector(cfg.model) else "sgd"
        preset = preset_values(cfg.preset, cfg.model)
        if cfg.qat and cfg.ema_decay is None:  # QAT fine-tunes are short; the weights trained are the ones exported
            cfg.ema_decay = 0.0
        for key, value in preset.items():
            if key == "lr_per_256":
                continue
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        if cfg.lr is None:
            cfg.lr = preset["lr_per_256"] * cfg.batch_size / 256
            if cfg.qat:  # a short fine-tune of a BN-folded network: the preset's rate wrecks it
                cfg.lr *= QAT_LR_SCALE
        if cfg.rmsprop_eps is None:  # the presets without RMSprop leave it out (their values key caches)
            cfg.rmsprop_eps = 1.0
        if cfg.distill_weight is None:
            cfg.distill_weight = DEFAULT_DISTILL_WEIGHT if cfg.teacher else 0.0
        if cfg.flip is None:
            # Mirrored digits are different symbols; clothes, photos and CIFAR objects are not.
            cfg.flip = str(cfg.dataset).lower() != "digits"
        cfg._check()
        from mobilenets.quant.qat import check_config

        check_config(cfg)
        return cfg

    def _check(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.amp in ("auto", "bf16", "fp16", "off"), "amp must be auto, bf16, fp16 or off"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.accum_steps >= 1, "accum_steps must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a finite number > 0"),
            (self.rmsprop_eps > 0 and math.isfinite(self.rmsprop_eps), "rmsprop_eps must be a finite number > 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1) (0 turns EMA off)"),
            (0 < self.crop_scale_min <= 1, "crop_scale_min must be in (0, 1]"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.sync_every is None or self.sync_every >= 1, "sync_every must be >= 1"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.precise_bn >= 0, "precise_bn must be >= 0 (0 turns it off)"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.data_pipeline in ("pil", "jpeg"), "data_pipeline must be pil or jpeg"),
        ]
        for ok, message in checks + self._transfer_checks():
            if not ok:
                raise MobileNetsError(f"bad training config: {message}")

    def _transfer_checks(self) -> list[tuple[bool, str]]:
        w, t = self.distill_weight, self.distill_temperature
        return [
            (
                not (self.freeze and self.freeze_epochs),
                "give --freeze (a linear probe for the whole run) or --freeze-epochs N (a probe, then full "
                "fine-tuning), not both",
            ),
            (self.freeze_epochs >= 0, "freeze_epochs must be >= 0"),
            (
                self.freeze_epochs < self.epochs,
                f"freeze_epochs {self.freeze_epochs} leaves no epoch of full fine-tuning in {self.epochs} "
                "epoch(s); lower --freeze-epochs below --epochs, or use --freeze for a linear probe",
            ),
            (
                self.backbone_lr_scale > 0 and math.isfinite(self.backbone_lr_scale),
                "backbone_lr_scale must be a finite number > 0 (use --freeze to keep the backbone fixed)",
            ),
            (0 <= w <= 1, "distill_weight must be in [0, 1]"),
            (t > 0 and math.isfinite(t), "distill_temperature must be a finite number > 0"),
            (w == 0 or self.teacher, f"--distill-weight {w} needs a --teacher to distill from"),
            (
                w > 0 or not self.teacher,
                "--teacher needs --distill-weight above 0 (e.g. 0.5: half label loss, half distillation)",
            ),
        ]


# The papers' recipes (``--preset paper`` picks the model family's, see preset_values) live in the families'
# declarations (``Family.paper_recipe``, in each model file); families without one (SqueezeNet, DenseNet, Xception)
# take V1's. PRESETS below adds three that train faster on today's hardware. lr_per_256 is scaled linearly to the
# batch size unless --lr is given: lr = lr_per_256 × batch_size / 256 (Goyal et al.'s rule).
PAPER_PRESETS: dict[str, dict] = {name: f.paper_recipe for name, f in FAMILIES.items() if f.paper_recipe}
PRESETS: dict[str, dict] = {
    "paper": FAMILIES["mobilenet_v1"].paper_recipe,  # the model's family's; see preset_values
    "sgd": dict(
        optimizer="sgd",
        lr_per_256=0.4,
        momentum=0.9,
        weight_decay=5e-5,
        depthwise_weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.3,
        lr_decay=1.0,
        label_smoothing=0.1,
        ema_decay=0.0,
        crop_scale_min=1.0,
        translate=0.1,
        backbone_lr_scale=1.0,
    ),
    "adamw": dict(
        optimizer="adamw",
        lr_per_256=4e-3,
        momentum=0.9,  # Adam's beta1
        weight_decay=0.05,
        depthwise_weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.5,
        lr_decay=1.0,
        label_smoothing=0.1,
        ema_decay=0.999,
        crop_scale_min=1.0,
        translate=0.1,
        backbone_lr_scale=1.0,
    ),
    # Detectors (SSD, SSDLite): torchvision's reference recipe for ssdlite320_mobilenet_v3_large (references/
    # detection: SGD with momentum, lr 0.15 at batch 8 × 24 = 0.2 per 256, weight decay 4e-5, cosine over 600 epochs
    # after a short warmup), the augmentation being SSD's (mobilenets.data.detection.train_transform). The
    # classification-only values (label smoothing, crops, shifts) are left neutral.
    "ssdlite": dict(
        optimizer="sgd",
        lr_per_256=0.2,
        momentum=0.9,
        weight_decay=4e-5,
        depthwise_weight_decay=4e-5,
        schedule="cosine",
        warmup_epochs=1.0,
        lr_decay=1.0,
        label_smoothing=0.0,
        ema_decay=0.0,
        crop_scale_min=1.0,
        translate=0.0,
        backbone_lr_scale=1.0,
    ),
    # Fine-tuning pretrained weights: 4x below sgd's rate, a short warmup, cosine, light weight decay and
    # none on depthwise filters and BN (as the paper trains them), every layer at the same rate. Chosen by a
    # sweep on transfer (a) of benchmarks/transfer_fashion_mnist.py scored on held-out training images (README):
    # the backbone at 0.1x (the earlier default) kept the ImageNet features from adapting to gray clothes and
    # lost to a linear probe; --backbone-lr-scale still sets it.
    "finetune": dict(
        optimizer="sgd",
        lr_per_256=0.1,
        momentum=0.9,
        weight_decay=1e-5,
        depthwise_weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.1,
        lr_decay=1.0,
        label_smoothing=0.1,
        ema_decay=0.0,
        crop_scale_min=1.0,
        translate=0.1,
        backbone_lr_scale=1.0,
    ),
}


def paper_recipe(model: str) -> dict:
    """The paper recipe ``--preset paper`` gives ``model``: its family's declared one (V1, V2, V3), V1's for every
    family without one (SqueezeNet, DenseNet, Xception) and for a name the registry does not know."""
    try:
        recipe = family_of(model).paper_recipe
    except MobileNetsError:
        recipe = None
    return recipe or FAMILIES["mobilenet_v1"].paper_recipe


def preset_values(preset: str, model: str) -> dict:
    """The values a preset gives a run of ``model`` (``lr_per_256`` among them); "paper" is the family's."""
    if preset not in PRESETS:
        raise MobileNetsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset == "paper" and is_detector(model):
        raise MobileNetsError(
            f"{model} has no paper preset here (the papers trained detectors with TF's object detection API, on 8+ "
            "accelerators for 400k+ steps); use --preset ssdlite, torchvision's reference recipe"
        )
    if preset == "ssdlite" and not is_detector(model):
        raise MobileNetsError(f"--preset ssdlite is the detectors' recipe; {model} is a classifier: use sgd or paper")
    return dict(paper_recipe(model) if preset == "paper" else PRESETS[preset])


OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("cosine", "exponential", "constant")
# Fields that may differ between a run and the run it resumes (they do not change the numbers).
# Steps between host synchronizations on a GPU: the loss/accuracy read-back, the NaN check, the stop flag and
# the progress bar. Each read waits for the GPU to drain; in between the CPU queues the next steps ahead.
GPU_SYNC_EVERY = 25

RESUME_FREE = {
    "resume",
    "progress",
    "tensorboard",
    "plots",
    "num_workers",
    "device",
    "out_dir",
    "epochs",
    "max_steps",
    "checkpoint_every",
    "precise_bn",  # it changes what is evaluated and saved as model.pt, never the training
    "sync_every",
    "eval_every",
}


def model_kwargs(cfg: TrainConfig, num_classes: int, in_chans: int) -> dict:
    """The create_model keyword arguments of a run (what model.pt stores to rebuild the network)."""
    defaults = model_defaults(cfg.model)
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, resolution=cfg.resolution)
    if cfg.dropout is not None:
        kwargs["dropout"] = cfg.dropout
    if "width_mult" in defaults:
        if cfg.width_mult is not None:
            kwargs["width_mult"] = cfg.width_mult
        kwargs["stem_stride"] = cfg.stem_stride
    elif cfg.width_mult is not None:
        raise MobileNetsError(f"{cfg.model} has no width multiplier; drop --width-mult or pick a MobileNet")
    return kwargs


FIELD_HELP = {
    "model": "registered model name (`mobilenets list`)",
    "width_mult": "width multiplier α (default: the name's)",
    "resolution": "input side in pixels; images are resized to it (default: 28 for Fashion-MNIST, 16 for "
    "digits, 32 for CIFAR, the name's 224 for image folders)",
    "stem_stride": "first conv's stride: 2 as in the paper, 1 = small-image stem for 28-32 px inputs "
    "(default: 1 when resolution <= 64)",
    "dropout": "dropout before the classifier (default: the model's, 0)",
    "init": "start from weights: 'pretrained' (Google's ImageNet MobileNetV1 1.0) or a file: .safetensors, "
    "a run's model.pt/checkpoint.pt, a timm .pth, a TF-slim .pb (default: random)",
    "qat": "quantization-aware training: fake int8 quantization of this export format's scheme (executorch, "
    "tflite, onnx, openvino; bare --qat: executorch) of the trained model --init names; default --lr: the "
    "preset's / 200",
    "dataset": "fashion-mnist, digits, a CIFAR python folder or an ImageFolder root; for a detector: composite (the "
    "built-in Fashion-MNIST-on-photos set), coco:DIR (train.json, test.json), coco:ANNOTATIONS.json:IMAGES_DIR, "
    "voc:ROOT or yolo:ROOT",
    "test_dataset": "detectors: the evaluation split when --dataset names a single COCO file "
    "(coco:VAL.json:VAL_IMAGES); default: --dataset's own test split",
    "data_dir": "folder with Fashion-MNIST's four IDX .gz files (default: /usr/share/datasets/fashion-mnist)",
    "max_train_samples": "train on a class-balanced subset of this size",
    "max_test_samples": "evaluate on a class-balanced subset of this size",
    "num_workers": "DataLoader worker processes decoding ImageFolder images (jpeg pipeline: reading threads, 0: 4)",
    "data_pipeline": "ImageFolder decoding: pil (DataLoader workers) or jpeg (batched nvJPEG on the GPU, "
    "threads on the CPU; see mobilenets/data/jpeg.py)",
    "preset": "recipe: paper (the model family's own: V1, V2 or V3 paper), sgd, adamw, finetune, or ssdlite "
    "(detectors: torchvision's reference recipe); other flags override its values (default: sgd for classifiers, "
    "ssdlite for detectors)",
    "epochs": "passes over the training set",
    "max_steps": "stop after this many optimizer steps (the schedule still spans --epochs)",
    "batch_size": "global batch size (split across torchrun processes and accumulation steps)",
    "accum_steps": "gradient accumulation: micro-batches per optimizer step (same result, less memory)",
    "optimizer": "rmsprop (TF-style, the paper's), sgd (Nesterov) or adamw",
    "lr": "peak learning rate (default: the preset's per-256 rate × batch_size/256)",
    "momentum": "momentum (Adam's beta1 for adamw)",
    "rmsprop_eps": "rmsprop: epsilon inside the square root (paper V1/V2 1.0, V3 1e-3)",
    "weight_decay": "L2 / decoupled weight decay on conv and FC weights (never on BN and biases)",
    "depthwise_weight_decay": "weight decay on depthwise filters (the paper: little or none)",
    "schedule": "learning-rate schedule after warmup: cosine, exponential or constant",
    "warmup_epochs": "linear warmup length in epochs",
    "lr_decay": "exponential schedule: LR factor per epoch",
    "label_smoothing": "label smoothing (the paper: none)",
    "ema_decay": "EMA of the weights, evaluated and saved instead of the raw weights (0 = off)",
    "crop_scale_min": "smallest random crop as a fraction of the image area (1 = no crops)",
    "translate": "random shift as a fraction of the image side",
    "flip": "random horizontal flips (default: on, off for digits)",
    "freeze": "linear probe: train only the classifier; the backbone's weights and BN statistics stay fixed",
    "freeze_epochs": "linear probe for the first N epochs, then fine-tune every weight (e.g. --freeze-epochs 2)",
    "backbone_lr_scale": "backbone learning rate = lr × this; the classifier gets lr (default: 1, every preset)",
    "teacher": "distill from: pretrained (Google's ImageNet MobileNetV1, 1001 classes), a registered name with "
    "weights (mobilenet_v1_1.0_160), or an earlier run on the same classes (its folder or model.pt)",
    "distill_weight": "distillation weight α: loss = (1-α)·CE(labels) + α·T²·KL(teacher‖student) "
    f"(default: {DEFAULT_DISTILL_WEIGHT} with --teacher)",
    "distill_temperature": "distillation temperature T (softens both models' logits)",
    "seed": "seed of the initial weights, sample order and augmentation",
    "device": "auto, cpu, cuda or cuda:N",
    "amp": "mixed precision: auto (bf16 on GPU, off on CPU), bf16, fp16 or off",
    "channels_last": "channels-last memory format (default: on)",
    "compile": "torch.compile the model",
    "sync_bn": "synchronized BatchNorm across torchrun processes",
    "gpu_data": "keep in-memory datasets on the GPU (default: on GPU)",
    "out_dir": "where checkpoints, metrics, plots and TensorBoard events go",
    "checkpoint_every": "also checkpoint every N steps (0 = at epoch ends only)",
    "sync_every": "read the loss and accuracy back from the GPU every N steps (default: 1 on CPU, "
    f"{GPU_SYNC_EVERY} on GPU; a non-finite loss is caught up to N steps late, the saved checkpoint stays good)",
    "resume": "continue bit-for-bit from OUT_DIR/checkpoint.pt",
    "eval_every": "evaluate on the test split every N epochs",
    "precise_bn": "before each evaluation and model.pt, recompute BatchNorm's statistics for the current weights "
    "over N training batches (all when fewer; see mobilenets/training/precise_bn.py); --no-precise-bn: keep "
    "training's moving averages",
    "progress": "tqdm progress bars",
    "tensorboard": "write TensorBoard events to OUT_DIR/tensorboard",
    "plots": "write curves.png and confusion.png at the end",
}


# The demo's run, tuned to pass 88% on Fashion-MNIST within a few minutes on 2 CPU cores: the sgd preset
# without label smoothing and random shifts (both slow down a 3-epoch run; they pay off in long ones).
DEMO = dict(
    model="mobilenet_v1",
    width_mult=0.25,
    resolution=28,
    stem_stride=1,
    epochs=3,
    batch_size=128,
    preset="sgd",
    label_smoothing=0.0,
    translate=0.0,
)


def demo_config(
    dataset: str | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    width_mult: float | None = None,
    out_dir: str = "runs/demo",
) -> TrainConfig:
    """The config `mobilenets demo` trains: a small MobileNet on Fashion-MNIST (digits when it is missing)."""
    if dataset is None:
        dataset = "fashion-mnist" if D.fashion_mnist_dir(data_dir) else "digits"
        if dataset == "digits":
            print(
                "note: Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist, or make data); "
                "the demo trains on scikit-learn's digits instead",
                file=sys.stderr,
            )
    kw = dict(DEMO)
    if dataset == "digits":
        kw.update(resolution=16, epochs=15, batch_size=64)
    if epochs is not None:
        kw["epochs"] = epochs
    if width_mult is not None:
        kw["width_mult"] = width_mult
    return TrainConfig(dataset=dataset, data_dir=data_dir, out_dir=out_dir, **kw)
