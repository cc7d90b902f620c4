"""`mobilenets import-weights` and `predict`: weights from other sources, classifying images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobilenets.errors import MobileNetsError

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
        "  mobilenets import-weights ssdlite320_mobilenet_v3_large_coco-a79551df.pth -o ssdlite_coco.pt   # detector\n"
        "the source (TF-slim, timm, torchvision), the family, α and the classes are read from the file;\n"
        "timm's tf_* ports have the same tensors as timm's own models but TF padding and BN ε 1e-3: the timm\n"
        "model name comes from --timm-model, else the file's path, else timm's own model is assumed.\n"
        "writes OUT.safetensors (model card in its header) and OUT.json (the same card, for people);\n"
        "a torchvision SSDLite detector is written as a model.pt that predict, eval, export and --init read",
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

    if Path(args.src).suffix.lower() in (".pth", ".pt") and Path(args.src).is_file():
        from mobilenets.detection.weights import import_torchvision_ssdlite, is_torchvision_ssdlite
        from mobilenets.weights.cards import read_torch_file, state_dict_from

        state = state_dict_from(read_torch_file(args.src), args.src)
        if is_torchvision_ssdlite(state):
            meta = import_torchvision_ssdlite(state, args.output, args.src)
            kw = meta["model_kwargs"]
            print(
                f"{args.src} → {args.output}: {meta['model']} (reduced tail {kw['reduced_tail']}), "
                f"{kw['num_classes']} classes incl. background, {kw['size'][0]}×{kw['size'][1]} input; "
                f"mobilenets predict IMAGES --checkpoint {args.output}"
            )
            return 0
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
        help="classify image files (top-k classes), or detect objects with a trained detector (boxes, PNGs)",
        epilog="examples:\n  mobilenets predict                      # the bundled demo photos\n"
        "  mobilenets predict cat.jpg photos/ --topk 3\n"
        "  mobilenets predict cat.png --weights mnv1.safetensors --json\n"
        "  mobilenets predict photos/ --checkpoint runs/pets/model.pt   # a `mobilenets train` run: its classes\n"
        "  mobilenets predict street.jpg --checkpoint runs/ssdlite/model.pt --score-thresh 0.5   # a detector:\n"
        "      boxes, labels and scores, and street.png with the boxes drawn in runs/ssdlite/predictions/\n"
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
    p.add_argument(
        "--score-thresh",
        type=float,
        default=0.3,
        help="detectors: show detections scoring at least this (default 0.3)",
    )
    p.add_argument(
        "--draw-dir",
        help="detectors: where the PNGs with the boxes drawn go (default: predictions/ beside the checkpoint)",
    )
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from mobilenets.predict import bundled_images, checkpoint_model, format_predictions, predict_images
    from mobilenets.weights import load_weights, pretrained_model
    from mobilenets.weights.checkpoint import load_checkpoint

    if args.weights and args.checkpoint:
        raise MobileNetsError("give one source of weights: --weights FILE or --checkpoint FILE")
    if args.checkpoint:
        if args.model:
            raise MobileNetsError("--model is for --weights; a --checkpoint rebuilds its own model")
        meta = load_checkpoint(args.checkpoint).get("meta") if Path(args.checkpoint).is_file() else None
        if isinstance(meta, dict) and meta.get("task") == "detection":
            return _predict_detections(args)
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


def _predict_detections(args: argparse.Namespace) -> int:
    from mobilenets.detection.predict import detect_images, format_detections
    from mobilenets.predict import bundled_images
    from mobilenets.weights.checkpoint import load_model

    if args.model:
        raise MobileNetsError("--model is for --weights; a --checkpoint rebuilds its own model")
    model, meta = load_model(args.checkpoint)
    draw_dir = args.draw_dir or Path(args.checkpoint).parent / "predictions"
    results = detect_images(
        model, meta["classes"], args.images or bundled_images(), score_thresh=args.score_thresh, draw_dir=draw_dir
    )
    if args.json:
        print(json.dumps({"model": meta["model"], "results": [r.to_dict() for r in results]}, indent=2))
    else:
        print(format_detections(results))
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"mobilenets: error: {r.path}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's subcommands (in `mobilenets --help` order)."""
    _add_import_weights(sub)
    _add_predict(sub)
