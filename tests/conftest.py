"""Fixtures several test modules share."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from numeric import torch_threads
from torch import nn

from mobilenets.data import FASHION_MNIST_STATS
from mobilenets.deploy.images import fashion_mnist, normalize
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n 2``) the workers share the cores: each one's torch and every
    runtime it starts (MOBILENETS_THREADS) and any CLI it spawns (OMP_NUM_THREADS) get its share, since runtimes
    that each take every core spin against one another and run several times slower."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = str(max(1, cores // int(workers)))
        os.environ.setdefault("MOBILENETS_THREADS", share)
        os.environ.setdefault("OMP_NUM_THREADS", share)
        torch.set_num_threads(int(os.environ["MOBILENETS_THREADS"]))


def _train_on_fashion_mnist(name: str, width_mult: float, steps: int, cache_dir: Path):
    """``name`` at 28 px, stem stride 1, trained ``steps`` AdamW steps of 64 Fashion-MNIST images on one thread
    (2 shared cores): (model, 2,000 test images, their labels, 256 held-out calibration images).

    Trained once per test run: the weights go to ``cache_dir`` (shared by the pytest-xdist workers) under a file
    lock, and a worker that finds them there loads them instead of training the same seeded steps again."""
    with torch_threads(1):
        try:
            train_x, train_y = fashion_mnist("train")
            test_x, test_y = fashion_mnist("test")
        except MobileNetsError as e:
            pytest.skip(str(e))
        torch.manual_seed(0)
        model = create_model(name, width_mult=width_mult, resolution=28, num_classes=10, in_chans=1, stem_stride=1)
        test_images = normalize(test_x[:2000], 28, FASHION_MNIST_STATS)
        calib = normalize(train_x[50000:50256], 28, FASHION_MNIST_STATS)  # held out from training steps
        cached = cache_dir / f"fashion_{name}_{width_mult}_{steps}.pt"
        with FileLock(str(cached) + ".lock"):
            if cached.is_file():
                model.load_state_dict(torch.load(cached, weights_only=True))
                return model.eval(), test_images, test_y[:2000], calib
            model = _fit(model, train_x, train_y, steps)
            torch.save(model.state_dict(), str(cached) + ".tmp")
            os.replace(str(cached) + ".tmp", cached)
        return model, test_images, test_y[:2000], calib


def _fit(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, steps: int) -> nn.Module:
    with torch_threads(1):
        model = model.to(memory_format=torch.channels_last)
        batch = 64
        opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        g = torch.Generator().manual_seed(0)
        model.train()
        start = time.time()
        for _ in range(steps):
            idx = torch.randint(0, 50000, (batch,), generator=g)
            x = normalize(train_x[idx], 28, FASHION_MNIST_STATS).contiguous(memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(model(x), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model = model.to(memory_format=torch.contiguous_format).eval()
        print(f"{type(model).__name__} trained in {time.time() - start:.1f}s")
        return model


@pytest.fixture
def one_thread():
    """The test on one intra-op thread (:func:`numeric.torch_threads`); gives 1, the count to pass on."""
    with torch_threads(1):
        yield 1


@pytest.fixture(scope="session")
def _shared_dir(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the workers' own temp folders sit in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def _fashion_trained(_shared_dir):
    """α=0.25 MobileNetV1 trained ~20 s on Fashion-MNIST, once per test run."""
    return _train_on_fashion_mnist("mobilenet_v1", 0.25, 300, _shared_dir)


@pytest.fixture(scope="session")
def _fashion_trained_v3(_shared_dir):
    """α=0.75 MobileNetV3-Small (hard-swish, squeeze-excite with a hard-sigmoid gate, residual adds) trained
    ~30 s on Fashion-MNIST, once per test run: the int8 tests of the ops V1 lacks."""
    return _train_on_fashion_mnist("mobilenet_v3_small", 0.75, 200, _shared_dir)


@pytest.fixture(scope="module")
def fashion_model(_fashion_trained):
    """The session's Fashion-MNIST model, a fresh copy per module (no module sees another's changes)."""
    model, images, labels, calib = _fashion_trained
    return copy.deepcopy(model), images, labels, calib


@pytest.fixture(scope="module")
def fashion_model_v3(_fashion_trained_v3):
    """The session's Fashion-MNIST MobileNetV3-Small, a fresh copy per module."""
    model, images, labels, calib = _fashion_trained_v3
    return copy.deepcopy(model), images, labels, calib
