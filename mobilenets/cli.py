"""The `mobilenets` command line: a few lines per subcommand, each calling the library."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from mobilenets.errors import MobileNetsError

EPILOG = """examples:
  mobilenets list 'mobilenet_v1_0.5*'
  mobilenets profile mobilenet_v1_0.75_160 --per-layer
  mobilenets profile mobilenet_v1 --width-mult 0.6 --resolution 200 --json
  mobilenets profile mobilenet_v1 --grid
  mobilenets paper-tables
  mobilenets demo
  mobilenets train --dataset fashion-mnist --width-mult 0.5 --epochs 5
  mobilenets eval runs/train/model.pt
  mobilenets predict photo.jpg --topk 3
  mobilenets reproduce --preset quick
"""


def _positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# --- list -------------------------------------------------------------------------------------------


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered model names",
        epilog="example: mobilenets list 'mobilenet_v1_*_224'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern (default: all)")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from mobilenets.models import list_models

    names = list_models(args.pattern)
    if not names:
        raise MobileNetsError(f"no model matches {args.pattern!r}; run `mobilenets list` to see all names")
    print("\n".join(names))
    return 0


# --- profile ----------------------------------------------------------------------------------------


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="exact Mult-Adds and parameters of a model (per layer, by type as paper Table 2)",
        epilog="examples:\n  mobilenets profile mobilenet_v1_1.0_224 --per-layer\n"
        "  mobilenets profile mobilenet_v1 --width-mult 0.5 --resolution 160 --json\n"
        "  mobilenets profile mobilenet_v1 --features-only --resolution 300   # an SSD300 backbone\n"
        "  mobilenets profile mobilenet_v3_small_0.75_224                      # with the V3 paper's figures\n"
        "  mobilenets profile mobilenet_v3_large_0.75_224 --layout torchvision # torchvision's thinner α=0.75\n"
        "  mobilenets profile mobilenet_v2 --grid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="registered model name (see `mobilenets list`)")
    p.add_argument(
        "--layout",
        choices=("tf", "torchvision"),
        help="MobileNetV3 at α ≠ 1: 'tf' (default; the paper's, TF-slim's and Keras's widths) or 'torchvision' "
        "(torchvision's and timm's α ≠ 1 checkpoints)",
    )
    p.add_argument("--width-mult", type=_positive_float, help="width multiplier α (MobileNets only)")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the name's, e.g. 224)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    p.add_argument("--in-chans", type=int, help="input channels (default 3)")
    p.add_argument("--per-layer", action="store_true", help="print every conv/FC layer")
    p.add_argument(
        "--features-only",
        action="store_true",
        help="count the backbone alone: no classifier, up to the stride-32 feature map (as a detector uses it)",
    )
    p.add_argument(
        "--grid",
        action="store_true",
        help="Markdown table of Mult-Adds for the registered α×ρ variants of NAME's family",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from mobilenets.models import FAMILY_GRIDS, create_model
    from mobilenets.profile import format_profile, grid_table, profile

    if args.grid:
        family = re.sub(r"_\d+\.\d+_\d+$", "", args.name)  # mobilenet_v1_0.75_160 -> mobilenet_v1
        if family not in FAMILY_GRIDS:
            raise MobileNetsError(f"--grid needs a MobileNet family ({', '.join(FAMILY_GRIDS)}), got {args.name!r}")
        print(grid_table(family))
        return 0
    model = create_model(
        args.name,
        width_mult=args.width_mult,
        resolution=args.resolution,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        layout=args.layout,
        features_only=args.features_only,
    )
    prof = profile(model)
    if args.json:
        print(json.dumps({"model": args.name, **prof.to_dict()}, indent=2, ensure_ascii=False))
    else:
        print(format_profile(prof, per_layer=args.per_layer, title=f"{args.name} ({type(model).__name__})"))
        if not args.features_only and args.width_mult is args.resolution is args.layout is None:
            for line in paper_lines(args.name, prof):
                print(line)
    return 0


def paper_lines(name: str, prof) -> list[str]:
    """The paper's figures for a registered name (its first row in the papers' tables), beside ours."""
    from mobilenets import paper

    row = next((r for r in paper.ROWS + paper.V2_V3_ROWS if r.build == name), None)
    if row is None:
        return []
    generation, _, table = row.table.rpartition(" ")
    return [
        f"paper ({generation or 'V1'} paper, Table {table}, {row.label}): {row.mult_adds} M Mult-Adds, "
        f"{row.params} M parameters, ImageNet top-1 {row.top1}%"
    ]


# --- paper-tables -----------------------------------------------------------------------------------


def _add_paper_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "paper-tables",
        help="every resource figure of paper Tables 1-9 (and the V2/V3 papers' tables) beside our profiled count",
        epilog="example: mobilenets paper-tables --json > tables.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_paper_tables)


def cmd_paper_tables(args: argparse.Namespace) -> int:
    from mobilenets import paper

    comparisons = paper.all_comparisons()
    if args.json:
        print(
            json.dumps(
                {"table1": paper.table1_rows(), "comparisons": [c.to_dict() for c in comparisons]},
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print("Table 1 — MobileNet body architecture, read back from mobilenet_v1_1.0_224\n")
    print(paper.table1_text())
    print(
        "\nTables 2–9, V2 paper Table 4, V3 paper Table 3 — the papers' figures beside ours "
        "(Mult-Adds and parameters in millions)\n"
    )
    print(paper.format_comparisons(comparisons))
    mobilenet = [c for c in comparisons if c.table in "234567" or "MobileNet" in c.label]
    bad = [c for c in mobilenet if not c.matches and not c.note]
    print(
        f"\n{sum(c.matches for c in mobilenet)}/{len(mobilenet)} MobileNet figures match the paper to its "
        f"printed precision; every other mismatch is explained in its note."
    )
    return 1 if bad else 0


# --- import-weights ---------------------------------------------------------------------------------


def _add_import_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-weights",
        help="convert TF-slim .pb, timm or torchvision .pth/.safetensors MobileNet V1/V2/V3 weights to our "
        ".safetensors + card",
        epilog="examples:\n  mobilenets import-weights mobilenet_v1_1.0_224_frozen.pb -o mnv1.safetensors\n"
        "  mobilenets import-weights mobilenet_v1_0.5_160_frozen.pb -o mnv1_0.5.safetensors --drop-background\n"
        "  mobilenets import-weights timm_mobilenetv1_100.pth -o timm_mnv1.safetensors\n"
        "  mobilenets import-weights mobilenet_v3_large-8738ca79.pth -o mnv3.safetensors   # torchvision\n"
        "  mobilenets import-weights tf_mobilenetv3_large_100-427764d5.pth -o tf_mnv3.safetensors   # timm\n"
        "  mobilenets import-weights model.safetensors --timm-model tf_mobilenetv3_small_minimal_100 -o m.safetensors\n"
        "the source (TF-slim, timm, torchvision), the family, α and the classes are read from the file;\n"
        "timm's tf_* ports have the same tensors as timm's own models but TF padding and BN ε 1e-3: the timm\n"
        "model name comes from --timm-model, else the file's path, else timm's own model is assumed.\n"
        "writes OUT.safetensors (model card in its header) and OUT.json (the same card, for people)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="SRC.pb (TF frozen graph), SRC.pth/.pt/.bin or SRC.safetensors (timm or torchvision)")
    p.add_argument("-o", "--output", required=True, help="OUT.safetensors")
    p.add_argument("--model", help="expected model name, checked against the file (e.g. mobilenet_v3_large_1.0_224)")
    p.add_argument("--timm-model", help="timm model the state dict is of (e.g. tf_mobilenetv3_large_100)")
    p.add_argument("--drop-background", action="store_true", help="TF graphs: drop class 0 → 1000 classes")
    p.add_argument("--resolution", type=int, help="input side recorded in the card (default: from the source)")
    p.set_defaults(func=cmd_import_weights)


def cmd_import_weights(args: argparse.Namespace) -> int:
    from mobilenets.weights import card_path, import_weights

    card = import_weights(
        args.src,
        args.output,
        drop_background=args.drop_background,
        resolution=args.resolution,
        model_name=args.model,
        timm_model=args.timm_model,
    )
    kw = card.model_kwargs
    conventions = ", ".join(f"{k}={kw[k]:g}" if k == "bn_eps" else f"{k}={kw[k]}" for k in CONVENTIONS if k in kw)
    bg = ", background class 0" if card.background_class else ""
    timm_name = card.source.get("timm_model")
    if timm_name:
        how = card.source.get("timm_model_from")
        bg += f"; timm {timm_name}" + (" (assumed: pass --timm-model if it is another)" if how == "assumed" else "")
    out = f"{args.output} (+ {card_path(args.output).name})"
    print(f"{args.src} → {out}: {card.name}, {conventions}, {card.num_classes} classes{bg}")
    return 0


CONVENTIONS = ("act", "padding", "bn_eps", "layout")  # the card's options that change the numbers


# --- predict ----------------------------------------------------------------------------------------


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files with pretrained ImageNet MobileNetV1 weights (top-k classes)",
        epilog="examples:\n  mobilenets predict                      # the bundled demo photos\n"
        "  mobilenets predict cat.jpg photos/ --topk 3\n"
        "  mobilenets predict cat.png --weights mnv1.safetensors --json\n"
        "  mobilenets predict photos/ --checkpoint runs/pets/model.pt   # a `mobilenets train` run: its classes\n"
        "without --weights: Google's MobileNetV1 1.0/224, converted once from the graph that\n"
        "`pip install --no-deps nudity==0.2.3` installs and cached in $MOBILENETS_CACHE\n"
        "(default $XDG_CACHE_HOME/mobilenets or ~/.cache/mobilenets)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", help="image files or folders (default: the bundled demo photos)")
    p.add_argument("--model", help="expected model name, checked against the weights (e.g. mobilenet_v1_1.0_224)")
    p.add_argument("--weights", help="weights file (.safetensors, .pth or .pb); default: pretrained ImageNet")
    p.add_argument("--checkpoint", help="model.pt/checkpoint.pt of `mobilenets train`: its classes and preprocessing")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from mobilenets.predict import bundled_images, checkpoint_model, format_predictions, predict_images
    from mobilenets.weights import load_weights, pretrained_model

    if args.weights and args.checkpoint:
        raise MobileNetsError("give one source of weights: --weights FILE or --checkpoint FILE")
    if args.checkpoint:
        if args.model:
            raise MobileNetsError("--model is for --weights; a --checkpoint rebuilds its own model")
        model, card = checkpoint_model(args.checkpoint)
    elif args.weights:
        model, card = load_weights(args.weights, model_name=args.model)
    else:
        model, card = pretrained_model(args.model)
    results = predict_images(model, card, args.images or bundled_images(), topk=args.topk)
    if args.json:
        print(json.dumps({"model": card.name, "results": [r.to_dict() for r in results]}, indent=2, ensure_ascii=False))
    elif any(r.error is None for r in results):
        print(format_predictions(results))
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"mobilenets: error: {r.path}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


# --- reproduce --------------------------------------------------------------------------------------


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="train the paper's comparisons (Tables 4-9, Figures 4-5) on a real dataset and write a report",
        description="Train and evaluate the paper's comparisons with one recipe and fixed seeds, then write "
        "report.md (paper figures beside ours), PNG plots and results.json to --out. Every finished run is "
        "cached under OUT/cells/: a re-run reuses it and an interrupted reproduction resumes.",
        epilog="examples:\n  mobilenets reproduce --preset tiny --out /tmp/tiny      # digits, 2 cells, seconds\n"
        "  nice mobilenets reproduce --preset quick --threads 1   # Fashion-MNIST subset, CPU, ~15 min\n"
        "  mobilenets reproduce --preset full --seeds 3           # the whole dataset, on a GPU",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        help="fashion-mnist, digits, or a folder (ImageFolder tree or CIFAR python pickles); default: the preset's",
    )
    p.add_argument("--preset", default="quick", help="tiny (CI), quick (CPU, minutes) or full (GPU); default quick")
    p.add_argument("--out", help="output folder (default reports/<preset>-<dataset>)")
    p.add_argument("--seeds", type=int, help="runs per cell, seeds 0..N-1 (default: the preset's: 1 quick, 2 full)")
    p.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files (default: Debian's)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: the idle cores); 1 is fastest on a busy shared machine",
    )
    p.add_argument("--verbose", action="store_true", help="show each run's per-epoch progress bars")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mobilenets.reproduce import default_command, get_preset, reproduce
    from mobilenets.reproduce_report import write_report

    dataset = args.dataset or get_preset(args.preset).dataset
    out = args.out or f"reports/{args.preset}-{dataset.rstrip('/').split('/')[-1]}"
    if args.threads is None and args.device in ("auto", "cpu"):
        import torch

        from mobilenets.train import set_cpu_threads

        if args.device == "cpu" or not torch.cuda.is_available():
            set_cpu_threads()  # the cores other processes leave idle: see --threads
    result = reproduce(
        dataset,
        preset=args.preset,
        out_dir=out,
        seeds=args.seeds,
        data_dir=args.data_dir,
        device=args.device,
        threads=args.threads,
        verbose=args.verbose,
        command=default_command(dataset, args.preset, out, args.seeds, args.threads),
    )
    paths = write_report(result)
    for claim in result.claims:
        print(f"claim {claim.id}: {claim.verdict:<14} {claim.title}")
    print(f"{result.trained_runs} run(s) trained, {result.cached_runs} reused from {out}/cells/")
    print(f"report: {paths['report']}")
    return 0


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
  paper    the model family's paper recipe; all TF-style RMSprop (decay 0.9, momentum 0.9), exponential
           decay applied per step, no label smoothing, no weight decay on depthwise filters and BN:
           V1 (also SqueezeNet, DenseNet): lr 0.36 (0.045 per 32), eps 1.0, x0.94 every 2 epochs, wd 4e-5,
             crops >= 35% of the area
           V2: lr 0.12 (0.045 per 96), eps 1.0, x0.98 per epoch, wd 4e-5, crops >= 35%
           V3: lr 0.00625 (0.1 per 4096), eps 1e-3, x0.97 every 2.4 epochs (the reference code's; the
             paper's "0.01 every 3 epochs" read literally stops training), wd 1e-5, dropout 0.2,
             EMA 0.9999 (ramped: short runs average their last ~1/9), Inception crops >= 8%
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

    from mobilenets.train import FIELD_HELP, TrainConfig

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
        else:
            p.add_argument(flag, type=kind, default=f.default, help=help_text, metavar=f.name.upper())
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

    from mobilenets.train import TrainConfig, set_cpu_threads, train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    if args.threads is not None:
        if args.threads < 1:
            raise MobileNetsError(f"--threads must be >= 1, got {args.threads}")
        set_cpu_threads(args.threads)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(_train_summary(result))
    return 130 if result.interrupted else 0


def _train_summary(result) -> str:
    out = result.out_dir
    if result.interrupted:
        head = (
            f"interrupted at step {result.steps}; checkpoint saved to {result.checkpoint_path}\n"
            f"continue with the same command plus --resume"
        )
    else:
        head = (
            f"test top-1 {100 * result.test_acc:.2f}%  top-5 {100 * result.test_top5:.2f}%  after "
            f"{result.epochs} epoch(s), {result.steps} steps, {result.train_time_s:.0f} s of training"
        )
    files = [
        f"  weights      {out}/model.pt        (mobilenets eval {out}/model.pt)",
        f"  checkpoint   {result.checkpoint_path}",
        f"  curves       {out}/curves.png",
        f"  confusion    {out}/confusion.png",
        f"  metrics      {out}/metrics.csv, {out}/steps.csv",
        f"  tensorboard  tensorboard --logdir {out}/tensorboard",
    ]
    if result.skipped_files:
        files.append(f"  skipped {result.skipped_files} unreadable image file(s) (see the warnings above)")
    return head + "\n" + "\n".join(files)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/top-5, per-class accuracy and a confusion matrix of a trained model",
        epilog="examples:\n  mobilenets eval runs/train/model.pt\n"
        "  mobilenets eval runs/train/model.pt --dataset ~/photos --split test --confusion cm.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("weights", help="model.pt or checkpoint.pt written by `mobilenets train`")
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

    from mobilenets.train import evaluate_file, plot_confusion

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


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: profile a small MobileNet, train it on Fashion-MNIST on the CPU, report",
        epilog="examples:\n  mobilenets demo\n  mobilenets demo --epochs 3 --out-dir runs/demo3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default=None, help="default: fashion-mnist, or digits when it is missing")
    p.add_argument("--data", dest="data_dir", help="folder with Fashion-MNIST's IDX files")
    p.add_argument("--epochs", type=int, help="training epochs (default: the demo's, see mobilenets.train)")
    p.add_argument("--width-mult", type=_positive_float, help="α of the demo MobileNet")
    p.add_argument("--out-dir", default="runs/demo", help="(default: runs/demo)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the idle cores)")
    p.add_argument("--max-train-samples", type=int, help="train on a class-balanced subset (a quicker look)")
    p.add_argument("--max-test-samples", type=int, help="evaluate on a class-balanced subset")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from mobilenets.models import create_model
    from mobilenets.profile import format_profile, profile
    from mobilenets.train import demo_config, set_cpu_threads, train

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


# --- export -----------------------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser, weights: bool = True) -> None:
    p.add_argument("--width-mult", type=_positive_float, help="width multiplier α (MobileNets only)")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the name's, e.g. 224)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    p.add_argument("--in-chans", type=int, help="input channels (default 3; 1 uses Fashion-MNIST images)")
    p.add_argument("--stem-stride", type=int, help="stride of the first conv (1 for 28-32 px images)")
    p.add_argument(
        "--checkpoint",
        help="model.pt/checkpoint.pt of `mobilenets train` (rebuilds its own model), or a plain state_dict",
    )
    if weights:
        p.add_argument("--weights", help="weights file: ours (.safetensors + card), timm (.pth) or TF-slim (.pb)")
        p.add_argument(
            "--pretrained", action="store_true", help="Google's ImageNet MobileNetV1 1.0 (see `mobilenets predict`)"
        )


def _build_model(args: argparse.Namespace):
    """(model in eval mode, the (mean, std) its weights expect or None) from the shared model options."""
    from mobilenets.export import build_model

    return build_model(
        args.name,
        checkpoint=args.checkpoint,
        weights=getattr(args, "weights", None),
        pretrained=getattr(args, "pretrained", False),
        width_mult=args.width_mult,
        resolution=args.resolution,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        stem_stride=args.stem_stride,
    )


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="fold BN, export to ONNX / ExecuTorch-XNNPACK / OpenVINO / LiteRT (fp32, bf16, int8) and verify",
        epilog="examples:\n"
        "  mobilenets export mobilenet_v1_1.0_224 --pretrained --format onnx -o mobilenet.onnx\n"
        "  mobilenets export --checkpoint runs/demo/model.pt --format onnx --precision int8 -o demo_int8.onnx\n"
        "  mobilenets export mobilenet_v1_1.0_224 --format openvino --precision int8 --calib 300 -o m.xml\n"
        "  mobilenets export mobilenet_v1_0.5_160 --format executorch --precision int8 -o m.pte\n"
        "  mobilenets export mobilenet_v1_1.0_224 --pretrained --format tflite --precision int8 -o m.tflite\n"
        "  mobilenets export mobilenet_v1 --width-mult 0.25 --resolution 28 --in-chans 1 --num-classes 10 \\\n"
        "      --stem-stride 1 --checkpoint fmnist.pt --format onnx --precision int8 -o fmnist_int8.onnx\n\n"
        "The file is checked by its own runtime against PyTorch on real images (photos for 3-channel models,\n"
        "Fashion-MNIST for 1-channel ones); a file that fails is not written. int8 files are safe on every CPU\n"
        "(7-bit weights where activations are u8: no saturation on x86 without VNNI); a file for a CPU feature\n"
        "this machine lacks (bf16) is still written, and the output says which check could not run here.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "name", nargs="?", help="registered model name (see `mobilenets list`); optional with a training --checkpoint"
    )
    _add_model_args(p)
    p.add_argument("--format", default="onnx", help="onnx | executorch | openvino | tflite (default onnx)")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 (OpenVINO) | int8 (default fp32)")
    p.add_argument("-o", "--output", help="output file (.onnx, .pte, .xml or .tflite; default NAME[_PRECISION].EXT)")
    p.add_argument(
        "--int8-weight-bits",
        type=int,
        default=7,
        choices=(7, 8),
        help="ONNX/OpenVINO int8 weights: 7 (default) runs right on every CPU; 8 is only right on CPUs with "
        "VNNI/AMX or Arm, and saturates (wrong answers) on AVX2-only x86",
    )
    p.add_argument("--calib", type=int, default=200, help="real training images to calibrate int8 on (default 200)")
    p.add_argument("--verify-images", type=int, default=32, help="real images to verify on (default 32)")
    p.add_argument("--min-agreement", type=float, help="top-1 agreement required, 0-1 (default .97 fp32, .8 int8)")
    p.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from mobilenets.deploy import export as ex
    from mobilenets.deploy.images import real_images

    ex.check_target(args.format, args.precision, args.int8_weight_bits)
    if args.calib < 1 or args.verify_images < 1:
        raise MobileNetsError("--calib and --verify-images must be >= 1")
    model, stats = _build_model(args)
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    output = args.output or f"{args.name or 'model'}{suffix}{ex.SUFFIXES[args.format]}"
    res = model.resolution
    calib = real_images(args.calib, model.in_chans, res, "train", stats=stats) if args.precision == "int8" else None
    verify = None if args.no_verify else real_images(args.verify_images, model.in_chans, res, "test", stats=stats)
    result = ex.export(
        model,
        output,
        args.format,
        args.precision,
        calib_images=calib,
        verify=not args.no_verify,
        verify_images=verify,
        min_agreement=args.min_agreement,
        weight_bits=args.int8_weight_bits,
        progress=lambda m: print(m, file=sys.stderr),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if result.verification is not None:
        print(result.verification.summary())
    for why in result.skipped:
        print(f"not verified here: {why}")
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {args.format} {args.precision})")
    print(f"runs on: {result.built_for['runs_on']}")
    return 0


# --- bench ------------------------------------------------------------------------------------------


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency (median, p90) on eager / ONNX Runtime / ExecuTorch / OpenVINO / LiteRT; --grid for the "
        "V1/V2/V3 α×ρ grids",
        epilog="examples:\n"
        "  mobilenets bench mobilenet_v1_1.0_224 --runtime onnxruntime openvino --precision fp32 int8 --threads 2\n"
        "  mobilenets bench mobilenet_v1_0.5_160 --runtime eager --batch-size 1 8\n"
        "  mobilenets bench --grid --runtime onnxruntime openvino --precision fp32 int8 --out-dir reports/grid\n"
        "  mobilenets bench --grid --widths 0.25 0.5 --resolutions 128 --runtime eager --out-dir /tmp/g\n"
        "  mobilenets bench --grid --family mobilenet_v1 mobilenet_v3_small --runtime onnxruntime --precision int8\n"
        "  mobilenets bench --grid --runtime litert --precision int8 --out-dir reports/grid --keep-measured\n"
        "--grid without --widths/--resolutions measures each family's widths at its largest resolution and its\n"
        "resolutions at α=1 (the shape of V1 Tables 6-7) plus every variant a paper prints a top-1 for:\n"
        "25 models. A runtime/precision whose export fails for a model is reported in the table, not fatal.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="registered model name (not with --grid)")
    _add_model_args(p, weights=False)
    p.add_argument("--grid", action="store_true", help="the MobileNetV1/V2/V3 grid (see below)")
    p.add_argument(
        "--family",
        nargs="+",
        help="--grid: only these families (default: mobilenet_v1 mobilenet_v2 mobilenet_v3_large mobilenet_v3_small "
        "mobilenet_v3_large_minimal mobilenet_v3_small_minimal; mobilenet_v3 = the four V3 ones)",
    )
    p.add_argument("--widths", type=float, nargs="+", help="--grid: every registered α×ρ with these widths")
    p.add_argument("--resolutions", type=int, nargs="+", help="--grid: every registered α×ρ with these resolutions")
    p.add_argument(
        "--keep-measured",
        action="store_true",
        help="--grid: keep the cells OUT_DIR/grid.json already has (measure only missing and failed ones)",
    )
    p.add_argument(
        "--runtime", nargs="+", default=["eager", "onnxruntime"], help="eager onnxruntime executorch openvino"
    )
    p.add_argument("--precision", nargs="+", default=["fp32"], help="fp32 bf16 int8 (each runtime runs what it can)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's default)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--out-dir", help="--grid: write grid.json, grid.txt and PNG plots here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:

    from mobilenets import bench

    for r in args.runtime:
        if r not in bench.RUNTIMES:
            raise MobileNetsError(f"unknown runtime {r!r}; choose from {', '.join(bench.RUNTIMES)}")
    if args.threads is not None and args.threads < 1:
        raise MobileNetsError(f"--threads must be >= 1, got {args.threads}")
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.grid:
        return _bench_grid(args, bench, say)
    if not args.name:
        raise MobileNetsError("give a model name (e.g. mobilenet_v1_1.0_224) or --grid")
    model, _ = _build_model(args)
    results = bench.bench_model(
        model,
        args.name,
        args.runtime,
        args.precision,
        args.batch_size,
        args.threads,
        args.runs,
        args.warmup,
        skip_unsupported=True,
        progress=say,
    )
    if not results:
        raise MobileNetsError(
            f"none of {', '.join(args.runtime)} runs {', '.join(args.precision)}: "
            "eager fp32/bf16, onnxruntime fp32/int8, executorch fp32/int8 (batch 1), openvino fp32/bf16/int8, "
            "litert fp32/int8 (batch 1)"
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        return 0
    from mobilenets.deploy.cpu import cpu_info

    print(f"CPU: {cpu_info().line()}")
    print(f"{'runtime':<12} {'precision':<9} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8}")
    for r in results:
        if r.latency is None:
            print(f"{r.runtime:<12} {r.precision:<9} {r.batch_size:>5}  skipped: {r.skipped}")
            continue
        img_per_s = r.batch_size / r.latency.median_ms * 1e3
        print(
            f"{r.runtime:<12} {r.precision:<9} {r.batch_size:>5} {r.latency.median_ms:>10.3f} "
            f"{r.latency.p90_ms:>8.3f} {img_per_s:>8.1f}"
        )
    for batch in sorted({r.batch_size for r in results if r.latency is not None}):
        best = min(
            (r for r in results if r.latency is not None and r.batch_size == batch), key=lambda r: r.latency.median_ms
        )
        print(
            f"fastest on this CPU at batch {batch}: {best.runtime} {best.precision} ({best.latency.median_ms:.3f} ms)"
        )
    return 0


def _bench_grid(args: argparse.Namespace, bench, say) -> int:
    from pathlib import Path

    if args.name:
        raise MobileNetsError("--grid measures the grid of registered variants: drop the model name")
    if len(args.batch_size) != 1:
        raise MobileNetsError("--grid takes one --batch-size")
    names = bench.grid_names(args.widths, args.resolutions, args.family)  # bad input fails before any work
    previous = []
    if args.keep_measured:
        if not args.out_dir:
            raise MobileNetsError("--keep-measured reads OUT_DIR/grid.json: give --out-dir")
        old = Path(args.out_dir) / "grid.json"
        if old.exists():
            measured_on = bench.load_grid_cpu(old)
            if measured_on != bench.cpu_info().line():
                raise MobileNetsError(f"{old} was measured on {measured_on or 'an unrecorded CPU'}, not this one")
            previous = bench.load_grid(old)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    say(f"grid: {len(names)} models × {', '.join(args.runtime)} × {', '.join(args.precision)}")
    rows = bench.bench_grid(
        args.widths,
        args.resolutions,
        args.runtime,
        args.precision,
        args.batch_size[0],
        args.threads,
        args.runs,
        args.warmup,
        progress=say,
        families=args.family,
        previous=previous,
    )
    if args.keep_measured:  # rows of the old file outside this grid stay in it
        measured = {r.model for r in rows}
        rows += [r for r in previous if r.model not in measured]
    table = bench.format_grid(rows)
    if args.out_dir:
        bench.save_grid(rows, Path(args.out_dir) / "grid.json")
        bench.atomic_write(Path(args.out_dir) / "grid.txt", (table + "\n").encode())
        for path in bench.plot_grid(rows, args.out_dir):
            say(f"wrote {path}")
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
    else:
        print(table)
    return 0


# --- select -----------------------------------------------------------------------------------------


def _count(text: str) -> float:
    """A count in millions ("1.5" = 1.5M) or with a suffix: 500K, 1.5M, 0.2G."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}
    try:
        if text and text[-1].upper() in scale:
            return float(text[:-1]) * scale[text[-1].upper()]
        return float(text) * 1e6
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 1.5 (millions), 500K or 1.5M, got {text!r}") from None


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="the V1/V2/V3 α×ρ MobileNets that fit a latency / parameter / Mult-Adds budget, most accurate first",
        epilog="examples:\n"
        "  mobilenets select --max-params 1.5            # millions; 1500K and 1.5M also work\n"
        "  mobilenets select --max-madds 200M\n"
        "  mobilenets select --max-latency-ms 2 --runtime onnxruntime/int8 --results reports/grid/grid.json\n"
        "  mobilenets select --max-latency-ms 5 --runtime onnxruntime   # measures the grid first\n"
        "  mobilenets select --max-madds 100M --family mobilenet_v1 mobilenet_v3_small\n"
        "Best first = highest ImageNet top-1: the papers' figure, else (~) interpolated within the family\n"
        "in log Mult-Adds between its published points; variants with neither last, by Mult-Adds.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--max-latency-ms", type=_positive_float, help="median batch-1 latency budget (ms)")
    p.add_argument("--max-params", type=_count, help="parameter budget (millions, or with K/M/G)")
    p.add_argument("--max-madds", type=_count, help="Mult-Adds budget (millions, or with K/M/G)")
    p.add_argument("--runtime", help="runtime or runtime/precision for the latency budget, e.g. onnxruntime/int8")
    p.add_argument("--results", help="grid.json from `mobilenets bench --grid --out-dir` (else measured now)")
    p.add_argument("--family", nargs="+", help="only these families (default: all in the results / the grid)")
    p.add_argument("--threads", type=int, help="threads when measuring now")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_select)


def cmd_select(args: argparse.Namespace) -> int:
    from mobilenets import bench

    if args.max_latency_ms is None and args.max_params is None and args.max_madds is None:
        raise MobileNetsError("give a budget: --max-latency-ms, --max-params or --max-madds")
    families = bench.check_families(args.family) if args.family else None
    if args.results:
        rows = bench.load_grid(args.results)
        if families:
            rows = [r for r in rows if r.family in families]
        measured_on, here = bench.load_grid_cpu(args.results), bench.cpu_info().line()
        if args.max_latency_ms is not None and measured_on != here:
            print(
                f"note: the latencies in {args.results} were measured on {measured_on or 'an unrecorded CPU'}; "
                f"this CPU is {here}: measure here for a budget that holds here (drop --results)",
                file=sys.stderr,
            )
    elif args.max_latency_ms is not None:
        runtime, _, precision = (args.runtime or "onnxruntime").partition("/")
        bench.check_runtime(runtime, precision or "fp32")
        print(f"measuring the grid on {runtime} {precision or 'fp32'} (pass --results to reuse)", file=sys.stderr)
        rows = bench.bench_grid(
            runtimes=[runtime],
            precisions=[precision or "fp32"],
            threads=args.threads,
            runs=20,
            warmup=3,
            progress=lambda m: print(m, file=sys.stderr),
            families=families,
        )
    else:
        rows = bench.grid_cost_rows(families=families)
    chosen = bench.select(rows, args.max_latency_ms, args.max_params, args.max_madds, args.runtime)
    if args.json:
        print(
            json.dumps(
                [{**s.row.to_dict(), "selected_latency_ms": s.latency_ms, "estimated_top1": s.top1} for s in chosen],
                indent=2,
            )
        )
        return 0
    if not chosen:
        print("no variant fits the budget")
        return 1
    width = max(22, *(len(s.row.model) for s in chosen))
    print(f"{'model':<{width}} {'Mult-Adds (M)':>13} {'params (M)':>10} {'top-1 %':>8} {'latency ms':>10}")
    for s in chosen:
        top1 = "—" if s.top1 is None else f"~{s.top1:.1f}" if s.top1_estimated else f"{s.top1:.1f}"
        lat = f"{s.latency_ms:.2f}" if s.latency_ms is not None else "—"
        row = s.row
        print(f"{row.model:<{width}} {row.mult_adds / 1e6:>13.1f} {row.num_params / 1e6:>10.2f} {top1:>8} {lat:>10}")
    if any(s.top1_estimated for s in chosen):
        print("~: no published top-1; interpolated within the family in log Mult-Adds between its published points")
    return 0


# ----------------------------------------------------------------------------------------------------

SUBCOMMANDS = [
    _add_list,
    _add_profile,
    _add_paper_tables,
    _add_train,
    _add_eval,
    _add_demo,
    _add_import_weights,
    _add_predict,
    _add_reproduce,
    _add_export,
    _add_bench,
    _add_select,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="MobileNets (Howard et al., 2017): build any α×ρ variant, count its cost, and more.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MobileNetsError as e:
        print(f"mobilenets: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilenets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
