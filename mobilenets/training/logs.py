"""What a run leaves behind besides weights: metrics CSVs, curve and confusion plots, TensorBoard events."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from mobilenets.io import atomic_path, atomic_write_text
from mobilenets.training.evaluate import EvalResult


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and test, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax2.plot(epochs, [100 * h["test_acc"] for h in history], "o-", label="test top-1")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_detection_curves(history: list[dict], path: Path, title: str = "") -> None:
    """A detector's run as one PNG: the training loss (total, box regression, classification) and the test mAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "total"), ("train_box_loss", "box regression"), ("train_cls_loss", "class")):
        ax1.plot(epochs, [h[key] for h in history], "o-", label=label)
    ax1.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax2.plot(epochs, [100 * h["test_map"] for h in history], "o-", label="mAP@[.5:.95]")
    ax2.plot(epochs, [100 * h["test_map50"] for h in history], "o-", label="mAP@.5")
    ax2.set(xlabel="epoch", ylabel="COCO mAP (%)", title="test mAP (pycocotools)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_confusion(result: EvalResult, path: Path, title: str = "") -> None:
    """The confusion matrix (rows: true class, columns: predicted), row-normalized, counts printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(result.confusion, dtype=np.float64)
    n = len(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5, min(0.55 * n + 2, 30))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
        ax.set_xticks(range(n), result.classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), result.classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title or f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%")
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


class _NullWriter:
    def add_scalar(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboard(out_dir: Path, purge_step: int, enabled: bool):
    if not enabled:
        return _NullWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
        return _NullWriter()
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step or None)
