"""Evaluation: top-1/top-5, loss, per-class accuracy and the confusion matrix, of a model or a saved run."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets import data as D
from mobilenets.errors import MobileNetsError
from mobilenets.training.distributed import Dist, _autocast, _unwrap, all_reduce, resolve_device
from mobilenets.weights.checkpoint import load_model


@dataclass
class EvalResult:
    """Top-1/top-5 accuracy (fractions), mean loss, per-class accuracy and the confusion matrix."""

    top1: float
    top5: float
    loss: float
    num_samples: int
    classes: list[str]
    per_class_acc: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: D.Dataset,
    *,
    resolution: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    amp: str = "off",
    channels_last: bool = False,
    num_workers: int = 0,
    dist_info: Dist | None = None,
    data_pipeline: str = "pil",
) -> EvalResult:
    """Top-1/top-5, loss, per-class accuracy and confusion matrix of ``model`` on ``dataset``.

    Under torchrun each rank evaluates every world_size-th image and the counts are summed.
    ``data_pipeline`` "jpeg" decodes ImageFolder files with :mod:`mobilenets.jpeg_pipeline` on ``device``.
    """
    dist_info = dist_info or Dist()
    device = torch.device(device)
    resolution = resolution or getattr(model, "resolution", None) or 224
    in_chans = getattr(_unwrap(model), "in_chans", 3)
    was_training = model.training
    model.eval()
    n_cls = dataset.num_classes
    # Counts stay on the device until the end: no host synchronization per batch.
    confusion = torch.zeros(n_cls * n_cls, dtype=torch.float64, device=device)
    top5_hits = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    k = min(5, n_cls)
    mine = torch.arange(dist_info.rank, len(dataset), dist_info.world_size)
    for x, y in _eval_batches(dataset, mine, batch_size, num_workers, data_pipeline, device):
        x = D.prepare_batch(x.to(device), dataset.mean, dataset.std, resolution, in_chans, channels_last=channels_last)
        y = y.to(device)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        topk = logits.topk(k, dim=1).indices
        top5_hits += (topk == y[:, None]).any(1).sum().double()
        confusion.index_add_(0, y * n_cls + topk[:, 0], torch.ones(len(y), dtype=torch.float64, device=device))
    packed = all_reduce(torch.cat([confusion, top5_hits[None], loss_sum[None]]), dist_info).cpu()
    confusion = packed[: n_cls * n_cls].view(n_cls, n_cls)
    top5_hits, loss_sum = packed[-2], packed[-1]
    model.train(was_training)
    total = float(confusion.sum())
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return EvalResult(
        top1=float(confusion.diag().sum()) / max(total, 1),
        top5=float(top5_hits) / max(total, 1),
        loss=float(loss_sum) / max(total, 1),
        num_samples=int(total),
        classes=list(dataset.classes),
        per_class_acc=per_class,
        confusion=confusion.long().tolist(),
    )


def _eval_batches(
    dataset: D.Dataset,
    indices: torch.Tensor,
    batch_size: int,
    num_workers: int,
    data_pipeline: str = "pil",
    device: torch.device | str = "cpu",
):
    if isinstance(dataset, D.ArrayDataset):
        indices = indices.to(dataset.images.device)  # once: slicing it per batch copies nothing
        for i in range(0, len(indices), batch_size):
            idx = indices[i : i + batch_size]
            yield dataset.images[idx], dataset.labels[idx]
        return
    batches = [indices[i : i + batch_size].tolist() for i in range(0, len(indices), batch_size)]
    if data_pipeline == "jpeg":
        from mobilenets.data.jpeg import JpegLoader

        loader = JpegLoader(
            dataset, batches, resolution=dataset.image_size, device=device, output="uint8", threads=num_workers or 4
        )
        for x, y, _bad in loader:
            if len(y):
                yield x, y
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=D.collate_skip_bad
    )
    for x, y, _bad in loader:
        if len(y):
            yield x, y


def evaluate_file(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> EvalResult:
    """Evaluate a model.pt / checkpoint.pt written by :func:`train` on a split of a dataset.

    The dataset defaults to the one the model was trained on; its classes must match the model's.
    """
    model, meta = load_model(path)
    dev = resolve_device(device)
    ds = D.load_dataset(
        dataset or meta["dataset"],
        split,
        data_dir=data_dir,
        max_samples=max_samples,
        image_size=meta["resolution"],
        in_chans=meta["in_chans"],
    )
    if list(ds.classes) != list(meta["classes"]):
        raise MobileNetsError(
            f"the dataset's {len(ds.classes)} classes ({', '.join(ds.classes[:3])}, ...) are not the "
            f"{len(meta['classes'])} the model was trained on ({', '.join(meta['classes'][:3])}, ...)"
        )
    # Normalize with the statistics the model was trained with, whatever the dataset's defaults.
    ds.mean, ds.std = tuple(meta["mean"]), tuple(meta["std"])
    return evaluate(model.to(dev), ds, resolution=meta["resolution"], batch_size=batch_size, device=dev)
