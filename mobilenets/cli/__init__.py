"""The `mobilenets` command line: a few lines per subcommand, each calling the library.

One module per group of commands, each parser next to its handler; this file wires them.
"""

from __future__ import annotations

import argparse
import sys

from mobilenets.cli import deploy, fit, models, reproduce, training, weights
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
  mobilenets fit fashion-mnist --runtime onnx --precision int8 --max-latency-ms 1 --resolutions 28 -o runs/fit
"""

# The order of `mobilenets --help`.
GROUPS = [models, training, weights, reproduce, deploy, fit]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="MobileNets (Howard et al., 2017): build any α×ρ variant, count its cost, and more.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
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
