"""`mobilenets reproduce`: the plan, the per-run cache and resume, the claims' arithmetic, and the report."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from mobilenets import cli, paper
from mobilenets import reproduce as R
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.profile import profile
from mobilenets.reproduce import run as reproduce_run
from mobilenets.reproduce import write_report

# ----------------------------------------------------------------------------------------------------
# The plan


def test_quick_plan_covers_every_comparison_once():
    tables = R.plan(R.get_preset("quick"))
    assert [t.id for t in tables] == ["4", "5", "6", "7", "grid", "8-9", "bypass"]
    cells = R.plan_cells(tables)
    # 16 grid cells + Conv + Shallow MobileNet + SqueezeNet 1.1 (two recipes) + DenseNet-121 + Xception + SqueezeNet
    # 1.0 without, with simple and with complex bypass, each trained once.
    assert len(cells) == 25 == len({c.key for c in cells})
    grid = next(t for t in tables if t.id == "grid")
    assert {(r.cell.width_mult, r.cell.resolution) for r in grid.rows} == {
        (a, s) for a in (1.0, 0.75, 0.5, 0.25) for s in (56, 48, 40, 32)
    }
    # The paper's rows by position: 160 px is the third resolution, 40 px here.
    t7 = next(t for t in tables if t.id == "7")
    assert [(r.cell.resolution, r.paper.label, r.paper.top1) for r in t7.rows] == [
        (56, "1.0 MobileNet-224", "70.6"),
        (48, "1.0 MobileNet-192", "69.1"),
        (40, "1.0 MobileNet-160", "67.2"),
        (32, "1.0 MobileNet-128", "64.4"),
    ]
    t89 = next(t for t in tables if t.id == "8-9")
    assert [r.cell.key for r in t89.rows] == [
        "mobilenet-a1.0-r56",
        "mobilenet-a0.5-r40",
        "squeezenet-r56",
        "squeezenet-r56-adamw",
        "densenet-r56",
        "xception-r56",
    ]
    assert [r.paper.label if r.paper else None for r in t89.rows] == [
        "1.0 MobileNet-224",
        "0.50 MobileNet-160",
        "SqueezeNet",
        "SqueezeNet",
        None,
        "Xception (299)",
    ]
    bypass = next(t for t in tables if t.id == "bypass")
    assert [(r.cell.model, r.cell.recipe, r.paper.top1) for r in bypass.rows] == [
        ("squeezenet1_0", "adamw", "57.5"),
        ("squeezenet1_0_simple_bypass", "adamw", "60.4"),
        ("squeezenet1_0_complex_bypass", "adamw", "58.8"),
    ]
    # Every non-MobileNet sees the same input size as the top MobileNet, and every cell builds.
    assert {c.resolution for c in cells if not c.is_mobilenet} == {56}
    for cell in cells:
        if cell.family != "densenet":  # DenseNet-121 takes seconds to build; its min size is 32 < 56
            assert create_model(cell.model, **cell.model_kwargs()).min_resolution <= cell.resolution


def test_full_preset_uses_upsampled_sizes_and_two_seeds():
    full = R.get_preset("full")
    assert full.resolutions == (112, 96, 80, 64) and full.stem_stride == 2 and full.seeds >= 2
    cells = R.plan_cells(R.plan(full))
    assert len(cells) == 25
    for cell in cells:  # every cell builds at its size with the paper's stride-2 stem (DenseNet: min 32 px)
        if cell.family != "densenet":
            model = create_model(cell.model, in_chans=1, num_classes=10, **cell.model_kwargs())
            assert model.min_resolution <= cell.resolution
            if cell.is_mobilenet:
                assert model.cfg.stem_stride == 2
    # The ρ ratios are the paper's (224/192/160/128).
    assert [r / full.resolutions[0] for r in full.resolutions] == pytest.approx([1, 192 / 224, 160 / 224, 128 / 224])


def test_cache_key_depends_on_what_changes_the_numbers_only():
    preset = R.get_preset("tiny")
    cell = R.Cell("mobilenet", 32, 0.25, 1)
    base = R.run_config(cell, 0, preset, "digits")
    assert R.config_hash(base) == R.config_hash(R.run_config(cell, 0, R.get_preset("tiny"), "DIGITS"))
    fashion = R.config_hash(R.run_config(cell, 0, preset, "fashion-mnist"))
    assert fashion == R.config_hash(R.run_config(cell, 0, preset, "Fashion_MNIST"))
    variants = [
        R.run_config(cell, 1, preset, "digits"),
        R.run_config(R.Cell("mobilenet", 32, 0.5, 1), 0, preset, "digits"),
        R.run_config(cell, 0, preset, "fashion-mnist"),
        R.run_config(cell, 0, R.Preset(**{**preset.__dict__, "epochs": 2}), "digits"),
    ]
    hashes = {R.config_hash(v) for v in variants} | {R.config_hash(base)}
    assert len(hashes) == 5


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(MobileNetsError, match="unknown preset 'huge'; choose one of tiny, quick, full"):
        R.reproduce("digits", preset="huge", out_dir=tmp_path)
    with pytest.raises(MobileNetsError, match="--seeds must be at least 1"):
        R.reproduce("digits", preset="tiny", out_dir=tmp_path, seeds=0)
    with pytest.raises(MobileNetsError):
        R.reproduce(str(tmp_path / "no-such-folder"), preset="tiny", out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "cells").exists()  # failed before any training
    assert cli.main(["reproduce", "--preset", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# The claims' arithmetic, on made-up results


def fake(cell: R.Cell, acc: float, mult_adds: int, params: int = 1_000_000, accs: list[float] | None = None):
    runs = [
        {
            "name": f"{cell.key}-s{i}",
            "config": {"seed": i},
            "result": {"test_acc": a / 100, "test_top5": 1.0, "train_time_s": 1.0},
        }
        for i, a in enumerate(accs or [acc])
    ]
    return R.CellResult(cell, runs, mult_adds, params, params)


def test_loglinear_fit_matches_numpy():
    madds = [569e6, 325e6, 149e6, 41e6]
    accs = [70.6, 68.4, 63.7, 50.6]  # paper Table 6
    slope, r2 = R.loglinear_fit(madds, accs)
    ref_slope, ref_intercept = np.polyfit(np.log10(madds), accs, 1)
    ref_r2 = np.corrcoef(np.log10(madds), accs)[0, 1] ** 2
    assert slope == pytest.approx(ref_slope) and r2 == pytest.approx(ref_r2)
    assert R.loglinear_fit([1e6, 1e7], [50, 60]) == pytest.approx((10.0, 1.0))


def test_claim_verdicts_follow_the_numbers():
    tables = R.plan(R.get_preset("quick"))
    cells = R.plan_cells(tables)
    base = {c.key: fake(c, 90.0, 100_000_000) for c in cells}
    # Table 4: separable 1 point worse at 8.7× fewer Mult-Adds → agrees; 5 points worse → disagrees.
    base["conv-a1.0-r56"] = fake(R.Cell("conv", 56, 1.0, 1), 91.0, 870_000_000, 8_000_000)
    base["mobilenet-a1.0-r56"] = fake(R.Cell("mobilenet", 56, 1.0, 1), 90.0, 100_000_000, 1_000_000)
    claims = R.assess_claims(tables, base)
    assert claims[0].verdict == R.AGREES and "8.7× fewer Mult-Adds" in claims[0].ours
    base["mobilenet-a1.0-r56"] = fake(R.Cell("mobilenet", 56, 1.0, 1), 86.0, 100_000_000)
    assert R.assess_claims(tables, base)[0].verdict == R.DISAGREES

    # Table 6: a monotone fall with α agrees; the smallest α best disagrees; a flat sweep is inconclusive.
    for alpha, acc in zip((1.0, 0.75, 0.5, 0.25), (90, 89, 87, 80)):
        key = f"mobilenet-a{alpha}-r56"
        base[key] = fake(R.Cell("mobilenet", 56, alpha, 1), acc, int(alpha**2 * 1e8))
    assert R.assess_claims(tables, base)[2].verdict == R.AGREES
    for alpha, acc in zip((1.0, 0.75, 0.5, 0.25), (80, 85, 87, 90)):
        base[f"mobilenet-a{alpha}-r56"] = fake(R.Cell("mobilenet", 56, alpha, 1), acc, int(alpha**2 * 1e8))
    assert R.assess_claims(tables, base)[2].verdict == R.DISAGREES
    for alpha in (1.0, 0.75, 0.5, 0.25):
        base[f"mobilenet-a{alpha}-r56"] = fake(R.Cell("mobilenet", 56, alpha, 1), 88.0, int(alpha**2 * 1e8))
    assert R.assess_claims(tables, base)[2].verdict == R.INCONCLUSIVE

    # Table 5: thinner 2 points better → agrees; 0.2 points (within the 0.5 floor) → inconclusive.
    base["shallow-a1.0-r56"] = fake(R.Cell("shallow", 56, 1.0, 1), 86.0, 60_000_000)
    base["mobilenet-a0.75-r56"] = fake(R.Cell("mobilenet", 56, 0.75, 1), 88.0, 56_000_000)
    assert R.assess_claims(tables, base)[1].verdict == R.AGREES
    base["shallow-a1.0-r56"] = fake(R.Cell("shallow", 56, 1.0, 1), 87.8, 60_000_000)
    assert R.assess_claims(tables, base)[1].verdict == R.INCONCLUSIVE

    # SqueezeNet Table 6: simple bypass 2 points above both → agrees; above vanilla only → partly; below → disagrees.
    def bypass(vanilla, simple, complex_):
        for family, acc, params in zip(
            R.BYPASS_FAMILIES, (vanilla, simple, complex_), (1_248_424, 1_248_424, 1_589_672)
        ):
            cell = R.Cell(family, 56, recipe="adamw")
            base[cell.key] = fake(cell, acc, 50_000_000, params)
        return R.assess_claims(tables, base)[5]

    claim = bypass(80.0, 82.0, 80.5)
    assert claim.verdict == R.AGREES and "simple bypass 82.00% (+2.00)" in claim.ours and "1.3× fewer" in claim.ours
    assert bypass(80.0, 82.0, 81.9).verdict == R.PARTLY
    assert bypass(80.0, 78.0, 79.0).verdict == R.DISAGREES
    assert bypass(80.0, 80.1, 80.2).verdict == R.INCONCLUSIVE


def test_seed_spread_sets_the_tie_threshold():
    cell = R.Cell("mobilenet", 32, 0.25, 1)
    r = fake(cell, 0, 1, accs=[80.0, 82.0])
    assert r.acc == 81.0 and r.acc_sd == pytest.approx(math.sqrt(2))
    assert R.tolerance({"a": r}) == pytest.approx(2 * math.sqrt(2))
    assert R.tolerance({"a": fake(cell, 80.0, 1)}) == R.MIN_TOLERANCE_PTS


# ----------------------------------------------------------------------------------------------------
# End to end: the tiny preset, interrupted after one run and resumed


@pytest.mark.slow
def test_tiny_preset_resumes_from_cache_and_writes_a_report(tmp_path, monkeypatch, capsys, one_thread):
    # one_thread (conftest): the runs train as `--threads 1` does, and the suite's own setting is restored after.
    out = tmp_path / "rep"
    run = dict(preset="tiny", out_dir=out, progress=False, threads=one_thread)

    class Stop(Exception):
        pass

    def stop_after_first(record):
        raise Stop(record["name"])

    with pytest.raises(Stop) as stopped:
        R.reproduce("digits", on_run_done=stop_after_first, **run)
    first = out / "cells" / f"{stopped.value.args[0]}.json"
    assert [p.name for p in (out / "cells").glob("*.json")] == [first.name]
    first_bytes = first.read_bytes()

    calls = []
    real_train = reproduce_run.train

    def counting_train(cfg):
        calls.append((cfg.model, cfg.width_mult, cfg.resolution, cfg.seed))
        return real_train(cfg)

    monkeypatch.setattr(reproduce_run, "train", counting_train)
    rep = R.reproduce("digits", **run)
    # The first cell (Conv MobileNet, Table 4's first row) was not retrained; only the second was.
    assert calls == [("mobilenet_v1", 0.25, 32, 0)]
    assert first.read_bytes() == first_bytes
    assert (rep.trained_runs, rep.cached_runs) == (1, 1)

    # A damaged cache file is not trusted: that run alone is retrained.
    first.write_text('{"config": {"half": ')
    calls.clear()
    rep = R.reproduce("digits", **run)
    assert calls == [("mobilenet_v1_conv", 0.25, 32, 0)]
    calls.clear()
    rep = R.reproduce("digits", **run)
    assert calls == [] and rep.cached_runs == 2

    paths = write_report(rep)
    text = paths["report"].read_text()
    results = json.loads(paths["json"].read_text())

    # Mult-Adds and parameters in the report and the JSON are the profiler's counts of the models trained.
    for family, model in (("conv", "mobilenet_v1_conv"), ("mobilenet", "mobilenet_v1")):
        prof = profile(create_model(model, width_mult=0.25, resolution=32, stem_stride=1, in_chans=1, num_classes=10))
        label = R.Cell(family, 32, 0.25, 1).label
        row = next(line for line in text.splitlines() if line.startswith("| ") and f"→ {label} |" in line)
        cols = [c.strip() for c in row.strip("|").split("|")]
        assert cols[4] == f"{prof.mult_adds / 1e6:.2f}" and cols[6] == f"{prof.params / 1e6:.3f}"
        cell = next(c for c in results["cells"] if c["label"] == label)
        assert (cell["mult_adds"], cell["params"], cell["paper_params"]) == (
            prof.mult_adds,
            prof.params,
            prof.paper_params,
        )
        # Accuracy is what the engine measured and saved next to the run.
        engine = json.loads((out / "runs" / cell["runs"][0] / "result.json").read_text())
        assert cell["top1_mean"] == pytest.approx(100 * engine["test_acc"])
        assert f"| {cell['top1_mean']:.2f} |" in row
        # The paper's figures sit beside ours.
        paper_row = next(r for r in paper.ROWS if r.table == "4" and row.startswith(f"| {r.label} →"))
        assert cols[1] == paper_row.top1 and cols[3] == paper_row.mult_adds and cols[5] == paper_row.params

    assert "mobilenets reproduce --dataset digits --preset tiny" in text
    assert re.search(r"\| Hardware \| .+ cores", text)
    assert "### Table 4" in text and "### Table 5" not in text
    verdicts = {c["id"]: c["verdict"] for c in results["claims"]}
    assert verdicts[1] in (R.AGREES, R.PARTLY, R.DISAGREES) and all(verdicts[i] == R.NOT_RUN for i in (2, 3, 4, 5, 6))
    for name in ("accuracy_vs_mult_adds", "accuracy_vs_params"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[name].stat().st_size > 5000
        assert f"({paths[name].name})" in text
    assert "grid" not in paths  # the tiny preset has no α×ρ grid

    # The CLI is the same library call: everything cached, it rewrites the report and prints the verdicts.
    calls.clear()
    assert cli.main(["reproduce", "--dataset", "digits", "--preset", "tiny", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert calls == [] and f"claim 1: {verdicts[1]}" in printed and "0 run(s) trained, 2 reused" in printed
    assert "mobilenets reproduce --dataset digits --preset tiny --out" in paths["report"].read_text()
    assert not list(out.glob("**/*.tmp*"))  # every write was atomic


def test_full_report_layout_on_made_up_numbers(tmp_path):
    """Every table, claim and plot of the quick preset renders; costs come from each cell's record."""
    preset = R.get_preset("quick")
    tables = R.plan(preset)
    cells = R.plan_cells(tables)
    results = {}
    for i, c in enumerate(cells):
        madds = int((c.width_mult or 1.5) ** 2 * c.resolution**2 * 1e4) + i  # distinct, α²ρ²-like
        results[c.key] = fake(c, 70 + 20 * (c.width_mult or 1) * c.resolution / 56, madds, 1_000_000 + i)
    rep = R.Reproduction(
        preset=preset,
        dataset="fashion-mnist",
        out_dir=tmp_path,
        command="mobilenets reproduce --preset quick",
        tables=tables,
        cells=results,
        claims=R.assess_claims(tables, results),
        hardware=R.hardware(),
        dataset_info={
            "name": "fashion-mnist",
            "train_size": 60000,
            "train_used": 2500,
            "test_size": 10000,
            "test_used": 1000,
            "num_classes": 10,
            "in_chans": 1,
            "image_size": 28,
        },
        recipe={},
        started="now",
        wall_time_s=1.0,
        trained_runs=0,
        cached_runs=25,
    )
    paths = write_report(rep)
    text = paths["report"].read_text()
    for heading in ("### Table 4", "### Table 5", "### Table 6", "### Table 7", "### Figures 4–5", "### Tables 8–9"):
        assert heading in text
    assert "28×28 images **upsampled**" in text and "2,500 of 60,000 training images" in text
    assert [c.verdict for c in rep.claims].count(R.NOT_RUN) == 0
    for name in ("accuracy_vs_mult_adds", "accuracy_vs_params", "grid"):
        assert paths[name].read_bytes()[:4] == b"\x89PNG"
    # The grid row of α = 0.5 lists its four cells' Mult-Adds in resolution order.
    row = next(line for line in text.splitlines() if line.startswith("| α = 0.5 |"))
    for s in (56, 48, 40, 32):
        assert f"{results[f'mobilenet-a0.5-r{s}'].mult_adds / 1e6:.2f}M" in row
    saved = json.loads(paths["json"].read_text())
    assert len(saved["cells"]) == 25 and {t["id"] for t in saved["tables"]} == set(R.ALL_TABLES)
    assert "### SqueezeNet paper Table 6 — bypass connections" in text


def test_one_seed_noise_is_the_grid_residual_around_an_additive_fit():
    tables = R.plan(R.get_preset("quick"))
    grid = next(t for t in tables if t.id == "grid")
    rng = np.random.default_rng(0)
    effects_a = {a: 10 * a for a in (1.0, 0.75, 0.5, 0.25)}
    effects_s = {s: s / 8 for s in (56, 48, 40, 32)}
    bumps = rng.normal(0, 1.5, len(grid.rows))
    results = {
        row.cell.key: fake(row.cell, 60 + effects_a[row.cell.width_mult] + effects_s[row.cell.resolution] + b, 1)
        for row, b in zip(grid.rows, bumps)
    }
    # Reference: least squares on one-hot α and ρ columns; residual s.d. with (4-1)(4-1) = 9 degrees of freedom.
    design = np.array(
        [
            [1.0]
            + [row.cell.width_mult == a for a in (0.75, 0.5, 0.25)]
            + [row.cell.resolution == s for s in (48, 40, 32)]
            for row in grid.rows
        ],
        dtype=float,
    )
    y = np.array([results[row.cell.key].acc for row in grid.rows])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    ref_sd = math.sqrt((residual**2).sum() / 9)
    tol, how = R.noise(results, tables)
    assert tol == pytest.approx(max(R.MIN_TOLERANCE_PTS, 2 * ref_sd)) and "additive fit" in how
    # An exactly additive grid has no residual: the floor applies.
    exact = {
        row.cell.key: fake(row.cell, 60 + effects_a[row.cell.width_mult] + effects_s[row.cell.resolution], 1)
        for row in grid.rows
    }
    assert R.tolerance(exact, tables) == R.MIN_TOLERANCE_PTS
