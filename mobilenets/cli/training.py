"""`mobilenets train`, `eval` and `demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mobilenets.cli.common import positive_float
from mobilenets.errors import MobileNetsError

# --- train / eval / demo ----------------------------------------------------------------------------

TRAIN_EPILOG = """examples:
  mobilenets train --dataset fashion-mnist --width-mult 0.5 --epochs 5
  mobilenets train --dataset digits --width-mult 0.25 --epochs 3 --out-dir runs/digits
  mobilenets train --model mobilenet_v1_0.75_160 --dataset ~/photos --preset paper --epochs 30
  mobilenets train --dataset fashion-mnist --out-dir runs/fm --resume       # continue after a stop
  torchrun --nproc-per-node 4 -m mobilenets train --dataset ~/photos --sync-bn   # several GPUs/processes

fine-tuning and distillation:
  mobilenets train --dataset digits --width-mult 0.25 --epochs 3 --freeze   # linear probe: the classifier only
  mobilenets train --dataset ~/photos --preset finetune --freeze-epochs 2 --epochs 10   # probe, then all weights
  mobilenets train --dataset ~/photos --preset finetune --backbone-lr-scale 0.3   # backbone lr = 0.3 × lr
  mobilenets train --dataset fashion-mnist --width-mult 1.0 --out-dir runs/teacher     # a big model first,
  mobilenets train --dataset fashion-mnist --width-mult 0.25 --teacher runs/teacher --distill-weight 0.5
      # then a small one learns from its logits too (loss = 0.5·CE + 0.5·T²·KL, T = --distill-temperature 4)

presets (--preset), lr per 256 images (scaled linearly to --batch-size):
  paper    the model family's paper recipe; V1-V3 TF-style RMSprop (decay 0.9, momentum 0.9), exponential
           decay applied per step, no label smoothing, no weight decay on depthwise filters and BN:
           V1 (also SqueezeNet, DenseNet): lr 0.36 (0.045 per 32), eps 1.0, x0.94 every 2 epochs, wd 4e-5,
             crops >= 35% of the area
           V2: lr 0.12 (0.045 per 96), eps 1.0, x0.98 per epoch, wd 4e-5, crops >= 35%
           V3: lr 0.00625 (0.1 per 4096), eps 1e-3, x0.97 every 2.4 epochs (the reference code's; the
             paper's "0.01 every 3 epochs" read literally stops training), wd 1e-5, dropout 0.2,
             EMA 0.9999 (ramped: short runs average their last ~1/9), Inception crops >= 8%
           V4 (TF Model Garden's configs): AdamW, cosine after a 1,560-step warmup (5 epochs at batch 4096,
             20 at 16384), label smoothing 0.1, Inception crops >= 8%, decay on depthwise filters too:
             Conv-S lr 0.000125 (0.002 per 4096), beta1 0.6, wd 0.01, dropout 0.3, EMA 0.9999;
             Conv-M lr 0.00025 (0.004 per 4096), wd 0.1; Hybrid-M lr 0.00025 (0.016 per 16384), wd 0.1;
             Conv-L lr 6.25e-05 (0.004 per 16384), wd 0.2; Hybrid-L lr 0.00015625 (0.01 per 16384), wd 0.2
  sgd      Nesterov SGD, lr 0.4, cosine with warmup, label smoothing 0.1
  adamw    AdamW, lr 4e-3, cosine with warmup, label smoothing, EMA 0.999
  finetune for pretrained weights: Nesterov SGD at 1/4 of sgd's rate, 0.1-epoch warmup, cosine, light weight
           decay and none on depthwise filters and BN, every layer at the same rate (benchmarks/finetune_sweep.py)
A flag left out takes the preset's value; the resolved config is saved as OUT_DIR/config.json.
"""


def _train_flag_type(annotation: str):
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str, "bool": bool}[base]


def _add_train(sub: argparse._SubParsersAction) -> None:
    import dataclasses

    from mobilenets.training import FIELD_HELP, TrainConfig

    p = sub.add_parser(
        "train",
        help="train a model on Fashion-MNIST, digits, CIFAR or an ImageFolder (CPU, GPU or torchrun)",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _train_flag_type(str(f.type))
        help_text = FIELD_HELP.get(f.name, "")
        if f.default is not None and help_text:
            help_text += f" (default: {f.default})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif f.name == "qat":  # bare --qat: ExecuTorch's scheme, whose int8 file is the trained graph itself
            p.add_argument(flag, nargs="?", const="executorch", default=None, help=help_text, metavar="FORMAT")
        else:
            p.add_argument(flag, type=kind, default=f.default, help=help_text, metavar=f.name.upper())
    p.add_argument("--no-precise-bn", dest="precise_bn", action="store_const", const=0, help="same as --precise-bn 0")
    p.add_argument("--data", dest="data_dir", help="alias of --data-dir")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's, all cores); 1 is fastest on a busy shared machine",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from mobilenets.training import TrainConfig, set_cpu_threads, train
    from mobilenets.training.config import DEFAULT_DISTILL_WEIGHT

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    if args.threads is not None:
        if args.threads < 1:
            raise MobileNetsError(f"--threads must be >= 1, got {args.threads}")
        set_cpu_threads(args.threads)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if cfg.teacher and cfg.distill_weight is None and main_process:
        print(
            f"note: --teacher without --distill-weight: distilling with weight {DEFAULT_DISTILL_WEIGHT} (loss = "
            f"{1 - DEFAULT_DISTILL_WEIGHT:g}·CE + {DEFAULT_DISTILL_WEIGHT:g}·T²·KL); --distill-weight sets it",
            file=sys.stderr,
        )
    result = train(cfg)
    if not main_process:
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(_train_summary(result))
    return 130 if result.interrupted else 0


def _train_summary(result) -> str:
    out = result.out_dir
    detector = getattr(result, "task", "") == "detection"
    if result.interrupted:
        head = (
            f"interrupted at step {result.steps}; checkpoint saved to {result.checkpoint_path}\n"
            f"continue with the same command plus --resume"
        )
    elif detector:
        head = (
            f"test mAP {100 * result.test_map:.1f}  mAP@.5 {100 * result.test_map50:.1f}  (COCO, pycocotools) after "
            f"{_how_long(result)}, {result.train_time_s:.0f} s of training"
        )
    else:
        head = (
            f"test top-1 {100 * result.test_acc:.2f}%  top-5 {100 * result.test_top5:.2f}%  after "
            f"{_how_long(result)}, {result.train_time_s:.0f} s of training"
        )
    # Only what this run wrote: --no-plots writes no PNG, --no-tensorboard no events, a run stopped before its
    # first evaluation no metrics.csv (a file left by an earlier run in the same folder is not this run's).
    plots, tensorboard = result.config.get("plots"), result.config.get("tensorboard")
    files = [
        (True, f"  weights      {out}/model.pt        (mobilenets eval {out}/model.pt)"),
        (True, f"  checkpoint   {result.checkpoint_path}"),
        (plots and _written(out, "curves.png"), f"  curves       {out}/curves.png"),
        (plots and not detector and _written(out, "confusion.png"), f"  confusion    {out}/confusion.png"),
        (detector, f"  detect       mobilenets predict --checkpoint {out}/model.pt IMAGES"),
        (result.history and _written(out, "metrics.csv"), f"  metrics      {out}/metrics.csv, {out}/steps.csv"),
        (tensorboard and _written(out, "tensorboard"), f"  tensorboard  tensorboard --logdir {out}/tensorboard"),
    ]
    files = [line for shown, line in files if shown]
    if detector and result.skipped:
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items()))
        files.append(f"  skipped {what} (see the notes above)")
    if getattr(result, "skipped_files", 0):
        files.append(f"  skipped {result.skipped_files} unreadable image file(s) (see the warnings above)")
    return head + "\n" + "\n".join(files)


def _written(out: str, name: str) -> bool:
    return (Path(out) / name).exists()


def _how_long(result) -> str:
    """How far the run went, e.g. "2 epoch(s), 30 steps" or "12 steps (0.4 of epoch 1)" when --max-steps
    stopped it inside an epoch."""
    per_epoch = result.steps_per_epoch
    if not per_epoch or result.steps % per_epoch == 0:
        return f"{result.epochs} epoch(s), {result.steps} steps"
    whole, part = divmod(result.steps, per_epoch)
    into = f"{part / per_epoch:.2g} of epoch {whole + 1}"
    return f"{result.steps} steps ({whole} epoch(s) and {into})" if whole else f"{result.steps} steps ({into})"


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/top-5, per-class accuracy and a confusion matrix of a trained model; COCO mAP of a detector",
        epilog="examples:\n  mobilenets eval runs/train/model.pt\n"
        "  mobilenets eval runs/train/model.pt --dataset ~/photos --split test --confusion cm.png\n"
        "  mobilenets eval runs/ssdlite/model.pt                 # a detector: mAP@[.5:.95], mAP@.5, per-class AP\n"
        "  mobilenets eval runs/ssdlite/model.pt --dataset coco:val.json:val_images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "weights", help="model.pt or checkpoint.pt written by `mobilenets train` (a classifier or a detector)"
    )
    p.add_argument("--dataset", help="dataset name or path (default: the one it was trained on)")
    p.add_argument("--data", "--data-dir", dest="data_dir", help="folder with Fashion-MNIST's IDX files")
    p.add_argument("--split", default="test", choices=["train", "test"], help="(default: test)")
    p.add_argument("--max-samples", type=int, help="evaluate a class-balanced subset of this size")
    p.add_argument("--batch-size", type=int, default=256, help="(default: 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--confusion", help="confusion-matrix PNG path (default: next to the weights)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilenets.training import evaluate_file, plot_confusion
    from mobilenets.weights.checkpoint import load_checkpoint

    if (load_checkpoint(args.weights).get("meta") or {}).get("task") == "detection":
        return _eval_detector(args)
    result = evaluate_file(
        args.weights,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        device=args.device,
    )
    png = Path(args.confusion) if args.confusion else Path(args.weights).with_name("confusion_eval.png")
    plot_confusion(result, png)
    if args.json:
        print(json.dumps({**result.to_dict(), "confusion_png": str(png)}, indent=2))
        return 0
    print(
        f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}  "
        f"({result.num_samples} images)"
    )
    width = max(len(c) for c in result.classes)
    for name, acc in zip(result.classes, result.per_class_acc):
        print(f"  {name:<{width}}  {100 * acc:6.2f}%")
    print(f"confusion matrix: {png}")
    return 0


def _eval_detector(args: argparse.Namespace) -> int:
    from mobilenets.training.detection import evaluate_detector_file

    result, meta = evaluate_detector_file(
        args.weights,
        dataset=args.dataset,
        split=args.split,
        max_samples=args.max_samples,
        batch_size=min(args.batch_size, 16),
        device=args.device,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps({"model": meta["model"], **result.to_dict()}, indent=2))
    else:
        print(f"{meta['model']} on {args.dataset or meta.get('dataset')} ({args.split} split)\n{result.format()}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: profile a small MobileNet, train it on Fashion-MNIST on the CPU, report",
        epilog="examples:\n  mobilenets demo\n  mobilenets demo --epochs 3 --out-dir runs/demo3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default=None, help="default: fashion-mnist, or digits when it is missing")
    p.add_argument("--data", dest="data_dir", help="folder with Fashion-MNIST's IDX files")
    p.add_argument("--epochs", type=int, help="training epochs (default: the demo's, see mobilenets.training)")
    p.add_argument("--width-mult", type=positive_float, help="α of the demo MobileNet")
    p.add_argument("--out-dir", default="runs/demo", help="(default: runs/demo)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the idle cores)")
    p.add_argument("--max-train-samples", type=int, help="train on a class-balanced subset (a quicker look)")
    p.add_argument("--max-test-samples", type=int, help="evaluate on a class-balanced subset")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from mobilenets.models import create_model
    from mobilenets.profile import format_profile, profile
    from mobilenets.training import demo_config, set_cpu_threads, train

    threads = set_cpu_threads(args.threads)
    cfg = demo_config(
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        width_mult=args.width_mult,
        out_dir=args.out_dir,
    )
    cfg.max_train_samples, cfg.max_test_samples = args.max_train_samples, args.max_test_samples
    model = create_model(
        cfg.model,
        width_mult=cfg.width_mult,
        resolution=cfg.resolution,
        stem_stride=cfg.stem_stride,
        in_chans=1,
        num_classes=10,
    )
    print(
        f"== 1. the model: {cfg.model} α={cfg.width_mult}, {cfg.resolution}×{cfg.resolution} grayscale input, "
        f"small-image stem (stride {cfg.stem_stride}) =="
    )
    print(format_profile(profile(model), title=f"{cfg.model} α={cfg.width_mult} @ {cfg.resolution} px"))
    print(
        f"\n== 2. training on {cfg.dataset} ({cfg.epochs} epoch(s), batch {cfg.batch_size}, preset {cfg.preset}, "
        f"{threads} CPU thread(s)) ==",
        flush=True,
    )
    result = train(cfg)
    print(f"\n== 3. result ==\n{_train_summary(result)}")
    _demo_predictions()
    return 130 if result.interrupted else 0


def _demo_predictions() -> None:
    """Step 4 of the demo: Google's pretrained ImageNet MobileNetV1 classifies the bundled real photos."""
    from mobilenets.predict import bundled_images, format_predictions, predict_images
    from mobilenets.weights import pretrained_model

    print("\n== 4. pretrained ImageNet MobileNetV1 1.0/224 (Google's weights) on the bundled photos, top-5 ==")
    try:
        model, card = pretrained_model()
    except MobileNetsError as e:
        print(f"skipped: {e}")
        return
    print(format_predictions(predict_images(model, card, bundled_images(), topk=5)))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's subcommands (in `mobilenets --help` order)."""
    _add_train(sub)
    _add_eval(sub)
    _add_demo(sub)
