"""Argument types shared by several command groups."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def count(text: str) -> float:
    """A count in millions ("1.5" = 1.5M) or with a suffix: 500K, 1.5M, 0.2G."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}
    try:
        if text and text[-1].upper() in scale:
            return float(text[:-1]) * scale[text[-1].upper()]
        return float(text) * 1e6
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 1.5 (millions), 500K or 1.5M, got {text!r}") from None
