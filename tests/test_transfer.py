"""benchmarks/transfer_fashion_mnist.py: the plan's fairness, the report from known records, and a --quick run."""

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from numeric import torch_threads

from mobilenets.training import TrainConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_fashion_mnist.py"


@pytest.fixture(scope="module")
def tf():
    spec = importlib.util.spec_from_file_location("transfer_fashion_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_each_comparison_changes_one_thing(tf):
    arms = {a.key: a for a in tf.arms(tf.PLANS["full"])}
    ft, probe, scratch = arms["finetune"].config, arms["probe"].config, arms["scratch"].config
    # (a): the same images, input size, steps and seed; only the start (and the recipe it needs) differ.
    shared = ("model", "width_mult", "resolution", "max_train_samples", "epochs", "batch_size", "seed", "stem_stride")
    assert {k: ft[k] for k in shared} == {k: probe[k] for k in shared} == {k: scratch[k] for k in shared}
    assert ft["max_train_samples"] == 1000 and ft["max_test_samples"] is None and 64 <= ft["resolution"] <= 96
    assert {k: v for k, v in probe.items() if k != "freeze"} == ft and probe["freeze"] is True
    assert ft["init"] == "pretrained" and ft["preset"] == "finetune" and "init" not in scratch
    # (b): the teacher sees every training image; each seed's students differ only by the teacher.
    assert arms["teacher"].config["max_train_samples"] is None and arms["teacher"].config["width_mult"] == 1.0
    for seed in (0, 1):
        alone, distilled = arms[f"alone-s{seed}"].config, arms[f"distilled-s{seed}"].config
        extra = {k: distilled[k] for k in distilled.keys() - alone.keys()}
        assert {k: v for k, v in distilled.items() if k not in extra} == alone
        assert extra == {"teacher": "teacher", "distill_weight": 0.5, "distill_temperature": 4.0}
        assert alone["seed"] == seed and alone["width_mult"] == 0.25 and alone["max_train_samples"] is None
    # Every run is a valid TrainConfig.
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for arm in arms.values():
        assert set(arm.config) <= known, set(arm.config) - known


def test_plan_overrides(tf):
    plan = tf.override_plan(tf.PLANS["full"], ["student_epochs=1", "test_samples=2000", "teacher_train_samples=none"])
    assert (plan.student_epochs, plan.test_samples, plan.teacher_train_samples) == (1, 2000, None)
    assert plan.description.endswith("changed: student_epochs=1, test_samples=2000, teacher_train_samples=None")
    assert tf.PLANS["full"].student_epochs == 2  # the preset itself is untouched
    for bad, msg in (("student_epoch=1", "FIELD one of"), ("seeds=two", "not a valid seeds"), ("seeds", "FIELD=VALUE")):
        with pytest.raises(tf.MobileNetsError, match=msg):
            tf.override_plan(tf.PLANS["full"], [bad])


def test_a_retuned_preset_retrains_its_runs(tf, monkeypatch):
    from mobilenets.training.config import PRESETS

    arm = next(a for a in tf.arms(tf.PLANS["full"]) if a.key == "finetune")
    scratch = next(a for a in tf.arms(tf.PLANS["full"]) if a.key == "scratch")
    before = tf.config_hash(tf.run_record_config(arm, {})), tf.config_hash(tf.run_record_config(scratch, {}))
    monkeypatch.setitem(PRESETS, "finetune", {**PRESETS["finetune"], "lr_per_256": 0.123})
    after = tf.config_hash(tf.run_record_config(arm, {})), tf.config_hash(tf.run_record_config(scratch, {}))
    assert after[0] != before[0]  # the fine-tuned run's cell no longer matches: it is trained again
    assert after[1] == before[1]  # scratch uses another preset: its cell still counts


def _record(tf, arm, top1: float, steps: int = 313) -> dict:
    cfg = {"cache_version": tf.CACHE_VERSION, **arm.config}
    return {
        "name": f"{arm.key}-0123456789abcdef",
        "key": arm.key,
        "experiment": arm.experiment,
        "role": arm.role,
        "label": arm.label,
        "config": cfg,
        "train_config": {"lr": 0.05, "backbone_lr_scale": 0.1 if cfg.get("init") else 1.0, **cfg},
        "result": {
            "test_acc": top1 / 100,
            "test_top5": 0.99,
            "test_loss": 0.5,
            "train_time_s": 100.0 + steps / 10,
            "wall_time_s": 123.0,
            "epochs": cfg["epochs"],
            "steps": steps,
        },
    }


ACCS = {"finetune": 84.0, "probe": 78.5, "scratch": 77.25, "teacher": 90.0}


@pytest.mark.parametrize(
    "alone, distilled, verdict",
    [
        # gain 1.8; s.d. 0.707 and 0.424 -> pooled 0.583, noise 1.17; paired +2.0, +1.6: beyond.
        ((80.0, 81.0), (82.0, 82.6), "a gain beyond the seeds' noise"),
        # gain 0.5 with paired +2.0 and -1.0: within, and the goal of +0.5 is met on the mean alone.
        ((80.0, 83.0), (82.0, 82.0), "within the seeds' noise"),
    ],
)
def test_report_from_known_records(tf, tmp_path, alone, distilled, verdict):
    plan = tf.PLANS["full"]
    records = []
    for arm in tf.arms(plan):
        if arm.role in ACCS:
            top1 = ACCS[arm.role]
        else:
            top1 = (alone if arm.role == "alone" else distilled)[arm.config["seed"]]
        records.append(_record(tf, arm, top1, steps=938 if arm.experiment == "distill" else 313))
    res = tf.build_results(records, plan, "python benchmarks/transfer_fashion_mnist.py --out X", 11, 1234.0)
    paths = tf.write_report(res, tmp_path)

    saved = json.loads(paths["json"].read_text())
    gain = sum(distilled) / 2 - sum(alone) / 2
    assert saved["finetune"]["finetune_minus_scratch_pts"] == pytest.approx(84.0 - 77.25)
    assert saved["finetune"]["goal_met"] is True
    assert saved["distill"]["gain_pts"] == pytest.approx(gain)
    assert saved["distill"]["paired_diffs_pts"] == pytest.approx([d - a for a, d in zip(alone, distilled)])
    sd = [math.sqrt(((x - y) ** 2) / 2) for x, y in (alone, distilled)]
    assert saved["distill"]["noise_pts"] == pytest.approx(max(0.5, 2 * math.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2)))
    assert saved["distill"]["verdict"] == verdict and saved["distill"]["goal_met"] is (gain >= 0.5)

    report = paths["report"].read_text()
    assert "python benchmarks/transfer_fashion_mnist.py --out X" in report
    assert "Fine-tuned − scratch: **+6.75 points** (goal ≥ +5: met)" in report
    assert "Fine-tuned − linear probe: **+5.50 points**" in report
    assert f"Distilled − alone: **{gain:+.2f} points**" in report and f"**{verdict}**" in report
    assert "all 10,000 test images" in report and "§4.7" in report and "FaceNet" in report
    # Every run states its input size, steps, epochs and times.
    # Mult-Adds of 1-channel, 10-class networks (the profiler's count, tested against the paper in test_profile).
    assert report.count("| 103.0 | 96 px | 313 | 10 | 32 | 131 / 123 |") == 3
    assert report.count("| 45.8 | 64 px | 938 |") == 1  # the teacher
    assert report.count("| 3.2 | 64 px | 938 |") == 2  # the students, alone and with the teacher
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json", "transfer.png"]


def test_quick_run_end_to_end(tf, tmp_path):
    from mobilenets.data import load_dataset
    from mobilenets.weights import find_pretrained_graph

    if find_pretrained_graph() is None:
        pytest.skip("the pretrained ImageNet graph is not installed (make install: nudity==0.2.3)")
    try:
        load_dataset("fashion-mnist", "test", max_samples=10)
    except Exception as e:  # noqa: BLE001 - any reason the data is missing
        pytest.skip(f"Fashion-MNIST not available: {e}")

    out = tmp_path / "report"
    with torch_threads(1):
        assert tf.main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["runs"] == 8 and res["trained_runs"] == 8
    rows = res["finetune"]["rows"]
    assert len({(r["resolution"], r["steps"], r["epochs"]) for r in rows}) == 1 and rows[0]["steps"] >= 1
    assert [r["init"] for r in rows] == ["pretrained", "pretrained", "random"] and rows[1]["freeze"]
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("distilled-*.json")]
    teacher_run = res["distill"]["teacher"]["run"]
    assert len(records) == 2 and all(r["train_config"]["teacher"].endswith(teacher_run) for r in records)
    assert all(0 <= r["top1"] <= 100 for r in rows)
    # A second invocation trains nothing: every run comes from cells/.
    assert tf.main(["--quick", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["trained_runs"] == 0
    # A student to retrain whose teacher's weights were deleted: a clear error before any training.
    (out / "runs" / teacher_run / "model.pt").unlink()
    next((out / "cells").glob("distilled-s1-*.json")).unlink()
    with pytest.raises(tf.MobileNetsError, match="teacher's weights .* are gone"):
        tf.main(["--quick", "--out", str(out)])


# --- benchmarks/finetune_sweep.py: the preset's learning rates, chosen without the test set ---------------

SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_sweep.py"


@pytest.fixture(scope="module")
def sweep(tf):
    spec = importlib.util.spec_from_file_location("finetune_sweep", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweep_tunes_the_transfer_arm_on_images_it_never_trains_or_tests_on(sweep, tf):
    from mobilenets import data as D

    base = sweep.base_config(quick=False)
    assert base == next(a for a in tf.arms(tf.PLANS["full"]) if a.key == "finetune").config
    val = sweep.validation_split(base, 2000)
    train = D.load_dataset("fashion-mnist", "train", max_samples=base["max_train_samples"], seed=base["seed"])
    assert len(val) == 2000 and val.split == "val" and torch.bincount(val.labels).tolist() == [200] * 10
    as_rows = lambda images: {bytes(img.numpy()) for img in images}  # noqa: E731
    assert not as_rows(val.images) & as_rows(train.images)  # no training image is scored


def test_sweep_quick_run_reports_the_best_point_and_reuses_its_cells(sweep, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["--quick", "--out", str(out), "--threads", "1", "--lrs", "0.1,0.4", "--scales", "1"]
    assert sweep.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["trained_runs"] == 2 and len(res["rows"]) == 2 and res["val_samples"] == 200
    best = max(res["rows"], key=lambda r: r["val_top1"])
    assert res["best"] == best["name"] and 0.1 < best["val_top1"] <= 1  # 10 classes: above chance
    report = (out / "report.md").read_text()
    assert f"**{100 * best['val_top1']:.2f}**" in report and "never on the test set" in report
    assert (out / "sweep.png").stat().st_size > 5000
    assert sweep.main(argv) == 0  # cached: nothing retrains
    assert json.loads((out / "results.json").read_text())["trained_runs"] == 0
    with pytest.raises(sweep.MobileNetsError, match="comma-separated numbers"):
        sweep.main(["--quick", "--out", str(out), "--lrs", "fast"])
