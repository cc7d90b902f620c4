"""The GPU benchmark scripts' structure, run tiny on the CPU (their real runs need a GPU: see README)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_train_smoke_run_writes_the_comparison(tmp_path):
    script = load_script("gpu_train")
    result = script.main(["--smoke", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [(r["config"], r["impl"]) for r in rows] == [
        (label, impl) for label, _, _ in script.SMOKE_CONFIGS for impl in script.IMPLS
    ]
    for r in rows:
        assert r["train_img_per_s"] > 0 and r["compiled"] is False and r["train_peak_mib"] is None
        assert (r["infer_img_per_s"] is None) == (r["impl"] == "ours-engine")
    # timm's MobileNetV1 builder and ours are the same network: equal parameter counts at both widths.
    for label, _, _ in script.SMOKE_CONFIGS:
        counts = {r["impl"]: r["num_params"] for r in rows if r["config"] == label}
        assert counts["timm"] == counts["ours"] == counts["ours-engine"]
    assert len(result["ratios"]) == 2 * len(script.SMOKE_CONFIGS)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["machine"]["timm"]
    md = (tmp_path / "results.md").read_text()
    assert result["machine"]["cpu"] in md and f"timm {saved['machine']['timm']}" in md
    assert md.count("\n| 0.25-32 |") == 3


def test_gpu_train_refuses_a_missing_gpu_and_unknown_impls():
    script = load_script("gpu_train")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            script.main(["--device", "cuda"])
    with pytest.raises(SystemExit, match="unknown --impls"):
        script.main(["--smoke", "--impls", "timm,theirs"])
    with pytest.raises(SystemExit, match="unknown --configs 2.0-224"):
        script.main(["--configs", "1.0-224,2.0-224"])


def test_jpeg_pipeline_benchmark_compares_both_loaders(tmp_path):
    script = load_script("jpeg_pipeline")
    out = tmp_path / "report"
    args = ["--device", "cpu", "--workers", "1", "--images", "24", "--batch-size", "8", "--epochs", "1"]
    result = script.main([*args, "--resolution", "64", "--data", str(tmp_path / "jpegs"), "--out", str(out)])
    assert [r["pipeline"] for r in result["rows"]] == ["PIL DataLoader", "jpeg pipeline"]
    for r in result["rows"]:
        assert r["img_per_s"] > 0 and r["images_timed"] == 16  # 3 batches of 8, the first not timed
    assert len(list((tmp_path / "jpegs").rglob("*.jpg"))) == 24
    md = (out / "results.md").read_text()
    assert "torchvision" in md and "| jpeg pipeline | cpu | 1 |" in md
    assert json.loads((out / "results.json").read_text())["ratio"] == result["ratio"]
