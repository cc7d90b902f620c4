"""The GPU benchmark scripts' structure, run tiny on the CPU (their real runs need a GPU: see README)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
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


def test_gpu_train_goals_set_our_rows_against_the_anchor_and_this_runs_timm():
    script = load_script("gpu_train")
    anchor = script.ANCHORS[("mobilenet_v1", "1.0-224")]
    rows = [
        dict(config="1.0-224", impl="timm", compiled=True, train_img_per_s=10_000.0, infer_img_per_s=50_000.0),
        dict(config="1.0-224", impl="ours", compiled=True, train_img_per_s=18_000.0, infer_img_per_s=60_000.0),
    ]
    goals = {g["metric"]: g for g in script.goals("mobilenet_v1", rows)}
    train, infer = goals["train_img_per_s"], goals["infer_img_per_s"]
    assert train["vs_anchor"] == round(18_000 / anchor["train_img_per_s"], 3) and train["vs_timm_compiled"] == 1.8
    assert train["met"] is (18_000 >= 1.5 * anchor["train_img_per_s"]) is True
    assert infer["vs_timm_compiled"] == 1.2 and infer["met"] is False  # 60k < 1.5 × 52,466
    # No anchor for V3-Large: the goal falls back on this run's timm compiled row.
    v3 = script.goals("mobilenet_v3_large", rows)
    assert [g["vs_anchor"] for g in v3] == [None, None] and [g["met"] for g in v3] == [True, False]
    assert "goal met" in script.format_goal(train) and "1.56× the H100 anchor" in script.format_goal(train)


def run_gpu_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}  # this interpreter, not gpu_check.sh's pick
    cmd = ["bash", str(BENCHMARKS / "gpu_check.sh"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gpu_check_dry_run_takes_every_step_on_the_cpu(tmp_path):
    """The GPU check's rehearsal (~35 s): every step tiny on the CPU, the files the GPU run will write."""
    import timm
    import torch

    script = load_script("gpu_check")
    out = tmp_path / "out"
    proc = run_gpu_check(out, "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert summary["status"] == "ok" and summary["dry_run"] is True and list(steps) == script.STEP_NAMES
    for s in summary["steps"]:
        assert s["status"] == "ok" and 0 < s["seconds"] <= s["cap_s"], s
    env = summary["environment"]
    assert env["torch"] == torch.__version__ and env["timm"] == timm.__version__
    assert Path(env["mobilenets"]) == BENCHMARKS.parent / "mobilenets"
    # The device tool brings back 8 files at most, none in subfolders deeper than 2.
    names = ["cuda_tests.xml", "fashion_mnist.json", "gpu_check.log", "mobilenet_v1.json", "mobilenet_v3_large.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "summary.json", "summary.md"])

    listed = steps["cuda_tests"]["result"]["selected"]
    assert "tests/test_train.py::test_a_gpu_step_never_waits_for_the_gpu" in listed
    assert "tests/test_jpeg_pipeline.py::test_cuda_matches_cpu" in listed
    assert not any("test_benchmarks_gpu" in t for t in listed)  # tests that run anywhere are not selected
    assert 'name="gpu"' in (out / "cuda_tests.xml").read_text()
    for name, impls in (("mobilenet_v1", ["timm", "ours", "ours-engine"]), ("mobilenet_v3_large", ["timm", "ours"])):
        saved = json.loads((out / f"{name}.json").read_text())
        assert saved["environment"] == env and saved["rows"] == steps[name]["result"]["rows"]
        assert [r["impl"] for r in saved["rows"]] == impls and all(r["train_img_per_s"] > 0 for r in saved["rows"])
        assert len({r["num_params"] for r in saved["rows"]}) == 1  # timm's network is ours: same parameter count
    fm = json.loads((out / "fashion_mnist.json").read_text())
    assert fm["environment"] == env and fm["config"]["device"] == "cpu" and fm["config"]["width_mult"] == 1.0
    assert [h["epoch"] for h in fm["history"]] == [1] and fm["target"] == 0.94 and fm["goals"][0]["goal"] == 20
    md = (out / "summary.md").read_text()
    assert all(f"| {name} | ok |" in md for name in script.STEP_NAMES) and torch.__version__ in md
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {name} (cap" in log for name in script.STEP_NAMES)


def test_gpu_check_stops_at_once_without_cuda_or_at_a_steps_cap(tmp_path, capsys):
    import torch

    script = load_script("gpu_check")
    # A step past its cap is stopped, and a failed environment stops the check: one line, exit code 2.
    assert script.main(["--dry-run", "--out", str(tmp_path / "cap"), "--cap", "environment=1"]) == 2
    assert capsys.readouterr().err.strip() == "gpu_check: error: stopped at its 1 s cap; (no output)"
    summary = json.loads((tmp_path / "cap" / "summary.json").read_text())
    assert summary["status"] == "stopped" and [s["status"] for s in summary["steps"]] == ["timeout"]
    if not torch.cuda.is_available():
        assert script.main(["--out", str(tmp_path / "cpu")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gpu_check: error: CUDA is not available") and err.count("\n") == 1
        assert sorted(p.name for p in (tmp_path / "cpu").iterdir()) == ["gpu_check.log", "summary.json", "summary.md"]
    with pytest.raises(SystemExit):
        script.main(["--only", "mobilenet_v2"])
    assert "unknown --only mobilenet_v2" in capsys.readouterr().err


def test_gpu_check_gpu_steps_read_their_results_on_the_cpu(tmp_path):
    """What the dry run leaves out: the CUDA tests run (here all skip, which is no pass) and the GPU recipe."""
    import torch

    script = load_script("gpu_check")
    cmd = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--step", "cuda_tests", "--work", str(tmp_path)]
    proc = subprocess.run(cmd, env=script.step_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "cuda_tests.json").read_text())
    r = record["result"]
    assert r["ran"] and r["tests"] == len(r["selected"]) >= 3
    if not torch.cuda.is_available():
        assert r["skipped"] == r["tests"] and record["status"] == "failed" and record["message"].startswith("0 passed")
    env = dict(gpu="NVIDIA H100 80GB HBM3", driver="580.159.04", cuda="13.0", torch="2.11.0+cu130", timm="1.0.20")
    xml = script.junit_with_environment(tmp_path / "cuda_tests.xml", env)
    assert '<property name="gpu" value="NVIDIA H100 80GB HBM3" />' in xml and 'name="driver" value="580.159.04"' in xml
    cfg = script.fashion_mnist_config(script.parse_args([]), tmp_path, tmp_path / "run").resolved()
    assert (cfg.device, cfg.amp, cfg.channels_last, cfg.gpu_data) == ("cuda", "bf16", True, True)
    assert (cfg.width_mult, cfg.resolution, cfg.stem_stride, cfg.batch_size, cfg.epochs) == (1.0, 28, 1, 512, 16)


def test_gpu_check_names_the_missing_dataset_and_its_synthetic_stand_in(tmp_path, monkeypatch):
    from mobilenets import data as D

    script = load_script("gpu_check")
    monkeypatch.delenv("MOBILENETS_FASHION_MNIST", raising=False)
    found, tried = script.fashion_mnist_dir(str(tmp_path / "none"))
    assert found is None and tried == [tmp_path / "none"]
    message = script.missing_data_message(tried)
    assert str(tmp_path / "none") in message and "carry" in message and "--fashion-mnist DIR" in message
    folder = script.write_synthetic_idx(tmp_path / "idx", train=20, test=10)
    assert script.fashion_mnist_dir(str(folder))[0] == folder
    # Without --fashion-mnist: $MOBILENETS_FASHION_MNIST, Debian's folder, then the carried .fashion-mnist/.
    monkeypatch.setattr(script, "FASHION_MNIST_SYSTEM", tmp_path / "not-installed")
    monkeypatch.setattr(script, "FASHION_MNIST_CARRIED", folder)
    assert script.fashion_mnist_dir() == (folder, [tmp_path / "not-installed", folder])
    train = D.load_fashion_mnist("train", folder)  # the engine's own IDX reader
    assert train.images.shape == (20, 1, 28, 28) and train.labels.tolist() == [i % 10 for i in range(20)]


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
