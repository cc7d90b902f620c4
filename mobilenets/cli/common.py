"""Argument types shared by several command groups."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
