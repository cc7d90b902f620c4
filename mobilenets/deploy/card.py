"""The model card beside a file whose format has no free-form metadata field (ExecuTorch's .pte, ncnn's .param,
MNN's .mnn): ``<file>.json``, written by the format's ``set_metadata`` and read by its ``metadata``. It travels with
the file (the format's ``companions``), so ``export``'s staged move writes both or neither."""

from __future__ import annotations

import json
from pathlib import Path


def path_for(path: str | Path) -> Path:
    """``model.pte`` → ``model.pte.json``."""
    return Path(str(path) + ".json")


def write(path: str | Path, card: dict) -> None:
    path_for(path).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def read(path: str | Path) -> dict | None:
    """The card beside ``path``, or None where the file has none (written by another tool)."""
    card = path_for(path)
    return json.loads(card.read_text()) if card.is_file() else None


def runtime_options(path: str | Path, precision: str, options: dict[str, dict]) -> dict:
    """The runtime options ``path`` is run with: its card's (those it was verified under), else ``options``'s entry
    for ``precision`` (fp32's for an unknown one)."""
    info = read(path) or {}
    return info.get("runtime_options") or options.get(precision, options["fp32"])
