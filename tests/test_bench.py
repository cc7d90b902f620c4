"""Bench: latency statistics, every runtime runs, the grid table and plots, and `select` keeps only what fits.

No timed assertions beyond lower bounds a sleep guarantees: speed comparisons live in benchmarks/.
"""

from __future__ import annotations

import json
import time

import pytest

from mobilenets.cli import main
from mobilenets.deploy import bench
from mobilenets.deploy.detection import DETECTION_FORMATS
from mobilenets.detection import create_detector, list_detectors
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model
from mobilenets.models.mobilenet_v1 import BLOCKS


def test_time_calls_statistics():
    lat = bench.time_calls(lambda: time.sleep(0.002), runs=15, warmup=2)
    assert lat.runs == 15 and lat.warmup == 2
    assert 2.0 <= lat.min_ms <= lat.median_ms <= lat.p90_ms
    with pytest.raises(MobileNetsError, match="runs must be >= 1"):
        bench.time_calls(lambda: None, runs=0)


@pytest.mark.slow
def test_bench_model_every_runtime():
    model = create_model("mobilenet_v1_0.25_128", resolution=32)
    kw = dict(threads=1, runs=3, warmup=1, skip_unsupported=True)
    results = bench.bench_model(model, "tiny", bench.RUNTIMES, ("fp32",), (1, 4), **kw)
    # int8 files are slow to build (ExecuTorch's is covered by test_export); two runtimes here.
    results += bench.bench_model(model, "tiny", ("eager", "onnxruntime", "openvino"), ("int8",), (2,), **kw)
    got = {(r.runtime, r.precision, r.batch_size) for r in results}
    assert got == {
        ("eager", "fp32", 1),
        ("eager", "fp32", 4),
        ("onnxruntime", "fp32", 1),
        ("onnxruntime", "fp32", 4),
        ("executorch", "fp32", 1),
        ("litert", "fp32", 1),
        ("openvino", "fp32", 1),
        ("openvino", "fp32", 4),
        ("web", "fp32", 1),
        ("web", "fp32", 4),
        ("ncnn", "fp32", 1),
        ("mnn", "fp32", 1),
        ("onnxruntime", "int8", 2),
        ("openvino", "int8", 2),
    }
    assert all(0 < r.latency.median_ms <= r.latency.p90_ms and r.latency.runs == 3 for r in results)


def test_bench_errors():
    model = create_model("mobilenet_v1_0.25_128", resolution=32)
    with pytest.raises(MobileNetsError, match="unknown runtime 'tflite'"):
        bench.bench_model(model, runtimes=["tflite"])
    with pytest.raises(MobileNetsError, match="eager does not run int8"):
        bench.bench_model(model, runtimes=["eager"], precisions=["int8"])
    with pytest.raises(MobileNetsError, match="width 0.3 is not on the registered grid"):
        bench.bench_grid(widths=[0.3])


# ----------------------------------------------------------------------------------------------------
# select


V1_WIDTHS = (1.0, 0.75, 0.5, 0.25)


def test_grid_costs_match_profiler_and_paper():
    rows = bench.grid_cost_rows(V1_WIDTHS, families=["mobilenet_v1"])
    assert len(rows) == 16
    by_name = {r.model: r for r in rows}
    # Independent check: the paper's Table 6/7 Mult-Adds (millions) for five grid models.
    for name, madds in [("mobilenet_v1_1.0_224", 569), ("mobilenet_v1_0.75_224", 325), ("mobilenet_v1_1.0_128", 186)]:
        assert abs(by_name[name].mult_adds / 1e6 - madds) < 1
    assert by_name["mobilenet_v1_1.0_224"].top1 == 70.6
    assert by_name["mobilenet_v1_0.5_160"].top1 == 60.2


def paper_costs(name: str) -> tuple[int, int]:
    """Independent reference: the paper's cost formulas (Eqs. 1-5, FC) over Table 1's layers, unfolded BN
    counted as 2 parameters per channel, as ``profile`` counts parameters."""
    alpha, res = float(name.split("_")[2]), int(name.split("_")[3])
    size, c = -(-res // 2), round(32 * alpha)
    params, madds = 27 * c + 2 * c, 27 * c * size * size
    for out, stride in BLOCKS:
        out, size = round(out * alpha), -(-size // stride)
        params += 9 * c + 2 * c + c * out + 2 * out
        madds += 9 * c * size * size + c * out * size * size
        c = out
    return params + c * 1000 + 1000, madds + c * 1000


def test_paper_costs_reference_matches_profile():
    for name in ("mobilenet_v1_1.0_224", "mobilenet_v1_0.5_160", "mobilenet_v1_0.25_128"):
        row = next(r for r in bench.grid_cost_rows(V1_WIDTHS, families=["mobilenet_v1"]) if r.model == name)
        assert (row.num_params, row.mult_adds) == paper_costs(name)


@pytest.mark.parametrize("max_params,max_madds", [(1.5e6, None), (None, 150e6), (3e6, 200e6), (None, 10e6)])
def test_select_returns_only_what_fits(max_params, max_madds):
    rows = bench.grid_cost_rows(V1_WIDTHS, families=["mobilenet_v1"])
    chosen = bench.select(rows, max_params=max_params, max_madds=max_madds)
    names = {s.row.model for s in chosen}
    for name in bench.grid_names(V1_WIDTHS, families=["mobilenet_v1"]):
        params, madds = paper_costs(name)
        fits = (max_params is None or params <= max_params) and (max_madds is None or madds <= max_madds)
        assert (name in names) == fits, name
    assert [s.row.mult_adds for s in chosen] == sorted((s.row.mult_adds for s in chosen), reverse=True)


def test_select_by_latency():
    rows = bench.grid_cost_rows([1.0], families=["mobilenet_v1"])  # α=1.0 at 224/192/160/128
    for row, ms in zip(rows, (8.0, 6.0, 4.0, 3.0)):
        row.latency_ms = {"onnxruntime/fp32": ms, "onnxruntime/int8": ms / 3, "eager/fp32": ms * 2}
    picked = bench.select(rows, max_latency_ms=5.0, runtime="onnxruntime/fp32")
    assert [s.row.resolution for s in picked] == [160, 128]
    picked = bench.select(rows, max_latency_ms=5.0, runtime="onnxruntime")  # fastest precision
    assert [s.row.resolution for s in picked] == [224, 192, 160, 128] and picked[0].latency_ms == 8.0 / 3
    assert bench.select(rows, max_latency_ms=5.0, runtime="eager") == []
    with pytest.raises(MobileNetsError, match="no latency measured for openvino"):
        bench.select(rows, max_latency_ms=5.0, runtime="openvino")
    with pytest.raises(MobileNetsError, match="give a budget"):
        bench.select(rows)
    with pytest.raises(MobileNetsError, match="unknown runtime 'tvm'"):
        bench.select(rows, max_params=1e6, runtime="tvm")


# ----------------------------------------------------------------------------------------------------
# V1, V2 and V3 in one grid


def test_grid_names_per_family():
    names = bench.grid_names()
    assert {bench.family_of(n) for n in names} == set(bench.GRID_FAMILIES)
    assert len(names) == len(set(names)) <= 35  # small enough to bench
    assert set(bench.known_top1()) <= set(names)  # every variant with a published top-1
    # The V1 column at 224 and row at α=1 (Tables 6-7), and the V3 papers' published points with their sources.
    assert {"mobilenet_v1_0.25_224", "mobilenet_v1_1.0_128", "mobilenet_v2_0.35_224", "mobilenet_v2_1.0_128"} <= set(
        names
    )
    assert bench.known_top1()["mobilenet_v3_small_minimal_1.0_224"] == (61.9, "V3 paper Table 3")
    assert bench.known_top1()["mobilenet_v2_1.4_224"] == (74.7, "V2 paper Table 4")
    assert bench.known_top1()["mobilenet_v1_1.0_160"] == (67.2, "V1 paper Table 7")

    restricted = bench.grid_names(families=["mobilenet_v1", "mobilenet_v3_small"])
    assert restricted == [n for n in names if bench.family_of(n) in ("mobilenet_v1", "mobilenet_v3_small")]
    v3 = bench.grid_names(families=["mobilenet_v3"])  # the alias: the four V3 families
    assert {bench.family_of(n) for n in v3} == {f for f in bench.GRID_FAMILIES if f.startswith("mobilenet_v3_")}
    # --widths/--resolutions: every registered α×ρ of the families that have them.
    assert bench.grid_names([0.75], [128]) == [
        "mobilenet_v1_0.75_128",
        "mobilenet_v2_0.75_128",
        "mobilenet_v3_large_0.75_128",
        "mobilenet_v3_small_0.75_128",
        "mobilenet_v3_large_minimal_0.75_128",
        "mobilenet_v3_small_minimal_0.75_128",
    ]
    assert bench.grid_names(resolutions=[96], families=["mobilenet_v2"])[0] == "mobilenet_v2_1.4_96"
    with pytest.raises(MobileNetsError, match="resolution 96 is not on the registered grid of mobilenet_v1"):
        bench.grid_names(resolutions=[96], families=["mobilenet_v1"])
    with pytest.raises(MobileNetsError, match="unknown family 'mobilenet_v5'"):
        bench.grid_names(families=["mobilenet_v5"])


FOUR_GENERATIONS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "mobilenet_v4"]


def test_published_only_is_the_four_generations_papers_points(capsys):
    """The Pareto run's rows (issue 29): every MobileNet a paper prints a top-1 for, V4's five sizes at their paper
    resolutions among them, and nothing else; --list prints them with their top-1 and times nothing."""
    names = bench.grid_names(families=FOUR_GENERATIONS, published_only=True)
    known = bench.known_top1()
    assert names == [n for n in bench.grid_names(families=FOUR_GENERATIONS) if n in known]
    assert set(names) == {n for n in known if n.startswith("mobilenet_")}
    # The V4 paper's ImageNet top-1 (issue 29's list).
    assert {n: known[n][0] for n in names if n.startswith("mobilenet_v4")} == {
        "mobilenet_v4_conv_small_1.0_224": 73.8,
        "mobilenet_v4_conv_medium_1.0_256": 79.9,
        "mobilenet_v4_conv_large_1.0_384": 82.9,
        "mobilenet_v4_hybrid_medium_1.0_256": 80.7,
        "mobilenet_v4_hybrid_large_1.0_384": 83.4,
    }
    assert (
        "mobilenet_v2_0.35_224" in bench.grid_names(families=["mobilenet_v2"]) and "mobilenet_v2_0.35_224" not in names
    )
    argv = ["bench", "--grid", "--family", *FOUR_GENERATIONS, "--published-only", "--list"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == names and out[-1] == f"{len(names)} models"
    assert "mobilenet_v4_hybrid_medium_1.0_256 top-1 80.7% (V4 paper)" in [" ".join(line.split()) for line in out]
    # Detectors: the α 1 rows at the papers' input sizes.
    assert bench.grid_names(families=["ssdlite320_mobilenet_v3_large"], published_only=True) == [
        "ssdlite320_mobilenet_v3_large_1.0_320"
    ]


def fake_grid() -> list[bench.GridRow]:
    """Four rows of two generations with made-up latencies (ms): no timing is asserted anywhere."""
    names = ["mobilenet_v1_1.0_224", "mobilenet_v1_0.5_160", "mobilenet_v3_small_1.0_224", "mobilenet_v3_large_1.0_224"]
    rows = [r for r in bench.grid_cost_rows([1.0, 0.5], [224, 160]) if r.model in names]
    for row, ms in zip(sorted(rows, key=lambda r: names.index(r.model)), (10.0, 2.0, 3.0, 8.0)):
        row.latency_ms = {"onnxruntime/int8": ms}
    return rows


def test_select_across_families_from_saved_grid(tmp_path, capsys):
    bench.save_grid(fake_grid(), tmp_path / "grid.json")
    argv = [
        "select",
        "--max-latency-ms",
        "5",
        "--runtime",
        "onnxruntime/int8",
        "--results",
        str(tmp_path / "grid.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    # V3-Small (67.4%, 56M Mult-Adds) beats V1 0.5-160 (60.2%, 77M): best means most accurate, not most Mult-Adds.
    assert [line.split()[0] for line in out[1:]] == ["mobilenet_v3_small_1.0_224", "mobilenet_v1_0.5_160"]
    assert main(argv[:2] + ["9"] + argv[3:] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model"] == "mobilenet_v3_large_1.0_224"
    assert main(argv + ["--family", "mobilenet_v1"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["mobilenet_v1_0.5_160"]


def test_select_estimates_top1_within_family():
    rows = bench.grid_cost_rows([1.0], [224, 160], families=["mobilenet_v1", "mobilenet_v2"])
    by_name = {s.row.model: s for s in bench.select(rows, max_params=1e9)}
    v1_160, v2_160 = by_name["mobilenet_v1_1.0_160"], by_name["mobilenet_v2_1.0_160"]
    assert v1_160.top1 == 67.2 and not v1_160.top1_estimated
    # V2 1.0-160 has fewer Mult-Adds than V2's published points (1.0 and 1.4 at 224): no extrapolated guess.
    assert v2_160.top1 is None and list(by_name)[-1] == "mobilenet_v2_1.0_160"
    picked = bench.select(bench.grid_cost_rows([0.75], [160], families=["mobilenet_v1"]), max_params=1e9)
    # Between 0.5-224 (149.5M, 63.7%) and 1.0-128 (186.4M, 64.4%) in log Mult-Adds.
    assert picked[0].top1_estimated and 63.7 < picked[0].top1 < 64.4


def test_squeezenet_and_xception_join_the_grid_and_select(capsys):
    """The seed networks without an α×ρ grid: one row per registered model at its own size, with the papers'
    top-1 (SqueezeNet paper Table 6 for the bypasses, Xception paper Table 1), ranked beside the MobileNets."""
    squeeze = ["squeezenet1_0", "squeezenet1_0_simple_bypass", "squeezenet1_0_complex_bypass", "squeezenet1_1"]
    assert bench.grid_names(families=["squeezenet"]) == squeeze
    assert bench.grid_names(resolutions=[299]) == ["xception"]  # the one 299-px model of any family
    assert bench.grid_names([0.75], [224], families=["squeezenet", "mobilenet_v1"]) == ["mobilenet_v1_0.75_224"]
    assert {bench.family_of(n) for n in squeeze} == {"squeezenet"} and bench.family_of("xception") == "xception"
    known = bench.known_top1()
    assert known["squeezenet1_0"] == (57.5, "V1 paper Table 9")
    assert known["squeezenet1_0_simple_bypass"] == (60.4, "SqueezeNet paper Table 6")
    assert known["xception"] == (79.0, "Xception paper Table 1")
    rows = {r.model: r for r in bench.grid_cost_rows(families=["squeezenet", "xception"])}
    assert (rows["xception"].resolution, rows["xception"].width_mult, rows["xception"].num_params) == (
        299,
        1.0,
        22_855_952,
    )
    assert rows["squeezenet1_0_complex_bypass"].mult_adds > rows["squeezenet1_0_simple_bypass"].mult_adds
    # Within 1.3M parameters: the simple bypass (60.4%) before plain SqueezeNet (57.5%) and the 0.25 MobileNets
    # (which beat both on Mult-Adds, not on top-1); SqueezeNet 1.1 has no published top-1 and comes last.
    assert main(["select", "--max-params", "1.3", "--family", "squeezenet", "mobilenet_v1", "--json"]) == 0
    picked = [s["model"] for s in json.loads(capsys.readouterr().out)]
    assert picked[:3] == ["squeezenet1_0_simple_bypass", "squeezenet1_0", "mobilenet_v1_0.25_224"]
    assert picked[-1] == "squeezenet1_1" and "squeezenet1_0_complex_bypass" not in picked  # 1.59M parameters


def test_pareto_front():
    rows = fake_grid()
    front = bench.pareto_front(rows, "onnxruntime/int8")
    # V1 1.0-224 (10 ms, 70.6%) loses to V3-Large (8 ms, 75.2%); the other three each beat it on one axis.
    assert [r.model for r in front] == [
        "mobilenet_v1_0.5_160",
        "mobilenet_v3_small_1.0_224",
        "mobilenet_v3_large_1.0_224",
    ]
    by_madds = bench.pareto_front(rows, "onnxruntime/int8", by="mult_adds")
    assert [r.model for r in by_madds] == ["mobilenet_v1_0.5_160", "mobilenet_v3_large_1.0_224", "mobilenet_v1_1.0_224"]
    assert "Pareto front" in bench.format_grid(rows)


def test_grid_reports_a_failed_export_and_keeps_measured_cells(monkeypatch):
    def broken(*_args, **_kw):
        raise RuntimeError("quantizer: unsupported op hardswish\nlong traceback")

    monkeypatch.setattr(bench.grid, "bench_model", broken)  # what bench_grid calls
    kw = dict(runtimes=["onnxruntime"], precisions=["fp32", "int8"], families=["mobilenet_v3_small"])
    rows = bench.bench_grid([0.75], [128], **kw)
    assert rows[0].failed == {
        "onnxruntime/fp32": "RuntimeError: quantizer: unsupported op hardswish",
        "onnxruntime/int8": "RuntimeError: quantizer: unsupported op hardswish",
    }
    table = bench.format_grid(rows)
    assert "failed" in table.splitlines()[2] and "failed mobilenet_v3_small_0.75_128 onnxruntime/int8" in table
    rows[0].latency_ms = {"onnxruntime/fp32": 1.5, "onnxruntime/int8": 1.0}
    again = bench.bench_grid([0.75], [128], previous=rows, **kw)  # nothing left to measure: broken is not called
    assert again[0].latency_ms == rows[0].latency_ms and not again[0].failed


# ----------------------------------------------------------------------------------------------------
# CLI: bench --grid → table, grid.json, PNGs; select reads them


@pytest.mark.slow
def test_cli_grid_and_select(tmp_path, capsys):
    argv = ["bench", "--grid", "--family", "mobilenet_v1", "--widths", "0.25", "0.5", "--resolutions", "128"]
    argv += ["--runtime", "eager", "onnxruntime"]
    argv += ["--threads", "1", "--runs", "3", "--warmup", "1", "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "mobilenet_v1_0.25_128" in table and "onnxruntime/fp32 ms" in table and "top-1 %" in table
    data = json.loads((tmp_path / "grid.json").read_text())
    assert "VNNI" in data["cpu"]["line"] or "NEON" in data["cpu"]["line"]  # the CPU it was measured on
    rows = data["rows"]
    assert [r["model"] for r in rows] == ["mobilenet_v1_0.5_128", "mobilenet_v1_0.25_128"]  # registry order
    assert set(rows[0]["latency_ms"]) == {"eager/fp32", "onnxruntime/fp32"}
    assert (tmp_path / "grid.txt").read_text().strip() == table.strip()
    for png in (
        "accuracy_vs_mult_adds.png",
        "accuracy_vs_params.png",
        "latency_vs_mult_adds.png",
        "latency_vs_top1.png",
    ):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    budget = max(r["latency_ms"]["onnxruntime/fp32"] for r in rows) * 10
    assert (
        main(
            [
                "select",
                "--max-latency-ms",
                str(budget),
                "--runtime",
                "onnxruntime",
                "--results",
                str(tmp_path / "grid.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("mobilenet_v1_0.5_128") and out[2].startswith("mobilenet_v1_0.25_128")


def test_cli_select_by_params(capsys):
    assert main(["select", "--max-params", "1.5M", "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    assert chosen and all(c["num_params"] <= 1.5e6 for c in chosen)
    # α 0.5 and 0.25 MobileNets and SqueezeNet (α 1, 1.25M parameters) are the variants that small.
    assert {c["width_mult"] for c in chosen} == {1.0, 0.5, 0.25}
    assert {c["model"] for c in chosen if c["width_mult"] == 1.0} == {
        "squeezenet1_0",
        "squeezenet1_0_simple_bypass",
        "squeezenet1_1",
    }


@pytest.mark.parametrize(
    "argv,message",
    [
        (["bench", "mobilenet_v1_0.25_128", "--runtime", "tflite"], "unknown runtime 'tflite'"),
        (["bench", "--grid", "--widths", "0.3"], "width 0.3 is not on the registered grid"),
        (["bench", "--grid", "--family", "mobilenet_v9"], "unknown family 'mobilenet_v9'; choose from mobilenet_v1"),
        (["bench", "--grid", "--family", "mobilenet_v3_small", "--widths", "0.5"], "not on the registered grid"),
        (["bench", "--grid", "--keep-measured"], "--keep-measured reads OUT_DIR/grid.json"),
        (["select", "--max-params", "2", "--family", "resnet50"], "unknown family 'resnet50'"),
        (["bench"], "give a model name"),
        (["select"], "give a budget"),
        (["select", "--max-latency-ms", "3", "--results", "/nonexistent/grid.json"], "no such results file"),
        (["bench", "--grid", "--family", "ssd500"], "unknown family 'ssd500'; choose from mobilenet_v1"),
        (["bench", "--grid", "--family", "detectors", "--resolutions", "16"], "_1.0_16: input size 16x16 is too small"),
        (["bench", "--published-only"], "--list and --published-only choose rows of the grid: add --grid"),
        (
            [
                "bench",
                "--grid",
                "--family",
                "mobilenet_v2",
                "--widths",
                "0.35",
                "--resolutions",
                "128",
                "--published-only",
            ],
            "no paper prints an accuracy for any variant of mobilenet_v2 on this grid",
        ),
    ],
)
def test_cli_bench_select_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------------------------
# Detectors: rows of their own, timed from image to boxes, ranked by the papers' COCO mAP (issue 27)

LARGE = "ssdlite320_mobilenet_v3_large"
# The runtimes no detector file is written for yet (issue 28 adds them one by one): skipped for detectors.
NO_DETECTOR_FILE = [r for r in bench.RUNTIMES if r != "eager" and bench.FORMAT_OF[r] not in DETECTION_FORMATS]


def test_detector_grid_rows_carry_exact_costs_and_the_papers_map():
    names = bench.grid_names(families=["detectors"])
    assert len(names) == len(set(names)) == 5 * len(list_detectors())
    assert {bench.family_of(n) for n in names} == set(list_detectors())
    # Each detector's widths at its own size, then its sizes at α 1; any α and size on request.
    assert bench.grid_names(families=[LARGE]) == [
        f"{LARGE}_1.0_320",
        f"{LARGE}_0.75_320",
        f"{LARGE}_0.5_320",
        f"{LARGE}_1.0_256",
        f"{LARGE}_1.0_192",
    ]
    assert bench.grid_names([0.25], [128], families=["ssd300_mobilenet_v1"]) == ["ssd300_mobilenet_v1_0.25_128"]
    assert not any(bench.family_of(n) in list_detectors() for n in bench.grid_names())  # on request only
    rows = {r.model: r for r in bench.grid_cost_rows(families=["detectors"])}
    # COCO mAP as printed (V1 Table 13, V2 Table 6, torchvision's card, V3 Table 6's reduced tail), only for the
    # model a figure describes: α 1 at the detector's own size. No other row gets one.
    assert {n: (r.coco_map, r.coco_map_source) for n, r in rows.items() if r.coco_map is not None} == {
        "ssd300_mobilenet_v1_1.0_300": (19.3, "V1 Table 13"),
        "ssdlite320_mobilenet_v1_1.0_320": (22.2, "V2 Table 6, TF's anchor layout"),
        "ssdlite320_mobilenet_v2_1.0_320": (22.1, "V2 Table 6, TF's anchor layout"),
        f"{LARGE}_1.0_320": (21.3, "torchvision"),
        "ssdlite320_mobilenet_v3_small_1.0_320": (16.1, "V3 Table 6, TF's anchor layout"),
    }
    large = rows[f"{LARGE}_1.0_320"]
    assert (large.task, large.top1, large.width_mult, large.resolution) == ("detection", None, 1.0, 320)
    # torchvision's model card: 3,440,060 parameters, 0.583 "GFLOPS" (multiply-adds).
    assert large.num_params == 3_440_060 and round(large.mult_adds / 1e9, 3) == 0.583
    assert rows[f"{LARGE}_0.5_320"].mult_adds < rows[f"{LARGE}_0.75_320"].mult_adds < large.mult_adds


def test_detector_grid_times_image_to_boxes_and_skips_runtimes_without_a_detector_file():
    runtimes = ["eager", "onnxruntime", *NO_DETECTOR_FILE[:1]]
    rows = bench.bench_grid([0.25], [128], runtimes, runs=2, warmup=1, families=["ssdlite320_mobilenet_v3_small"])
    (row,) = rows
    assert row.model == "ssdlite320_mobilenet_v3_small_0.25_128" and not row.failed and row.coco_map is None
    assert set(row.latency_ms) == {"eager/fp32", "onnxruntime/fp32"} and min(row.latency_ms.values()) > 0
    for runtime in NO_DETECTOR_FILE[:1]:
        assert f"no {runtime} file of a detector yet" in row.skipped[f"{runtime}/fp32"]
    lines = bench.format_grid(rows).splitlines()
    header = next(line for line in lines if line.startswith("detector"))
    assert "COCO mAP" in header and "onnxruntime/fp32 ms" in header and "top-1" not in bench.format_grid(rows)
    # What is timed: an image in, final detections out (resize, network, box decoding and NMS), on both paths.
    model = create_detector("ssdlite320_mobilenet_v3_small", width_mult=0.25, size=(96, 128))
    (eager,) = bench.make_runner(model, "eager")()
    from_file = bench.make_runner(model, "onnxruntime")()
    for detections in (eager, from_file):
        assert set(detections) == {"boxes", "labels", "scores"} and detections["boxes"].shape[1] == 4
    for runtime in NO_DETECTOR_FILE[:1]:
        with pytest.raises(MobileNetsError, match=f"no {runtime} file of a detector yet"):
            bench.make_runner(model, runtime)
    with pytest.raises(MobileNetsError, match="a detector file takes one image"):
        bench.make_runner(model, "onnxruntime", batch_size=2)


def test_select_ranks_detectors_by_the_papers_map_after_the_classifiers():
    rows = bench.grid_cost_rows([1.0], families=["mobilenet_v3_small", "detectors"])
    for row in rows:  # made-up latencies, proportional to Mult-Adds: 90 ms is 900M
        row.latency_ms = {"eager/fp32": row.mult_adds / 1e7}
    picked = bench.select(rows, max_latency_ms=90, runtime="eager")
    kinds = [s.is_detector for s in picked]
    assert kinds == sorted(kinds) and any(kinds) and not all(kinds)  # classifiers first, each kind its own ranking
    detectors = [s for s in picked if s.is_detector]
    # Within 900M Mult-Adds: V2 (22.1) before V3-Large (21.3) and V3-Small (16.1); SSD300 (1237M) and SSDLite V1
    # (1381M) at 320 do not fit; the variants no paper gives a mAP for follow, most Mult-Adds first.
    assert [(s.row.model, s.accuracy) for s in detectors[:3]] == [
        ("ssdlite320_mobilenet_v2_1.0_320", 22.1),
        (f"{LARGE}_1.0_320", 21.3),
        ("ssdlite320_mobilenet_v3_small_1.0_320", 16.1),
    ]
    rest = detectors[3:]
    assert rest and all(s.accuracy is None and not s.top1_estimated for s in rest)
    assert [s.row.mult_adds for s in rest] == sorted((s.row.mult_adds for s in rest), reverse=True)
    assert all(s.row.mult_adds <= 900e6 for s in detectors)
    classifiers = [s.accuracy for s in picked if not s.is_detector]
    published = [a for a in classifiers if a is not None]
    assert published and classifiers[: len(published)] == sorted(published, reverse=True)  # by the papers' top-1


def test_cli_bench_and_select_detectors(tmp_path, capsys):
    argv = ["bench", "--grid", "--family", "ssdlite320_mobilenet_v3_small", "--widths", "0.25", "--resolutions", "128"]
    argv += ["--runtime", "eager", "--runs", "2", "--warmup", "1", "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "ssdlite320_mobilenet_v3_small_0.25_128" in table and "COCO mAP" in table
    (row,) = json.loads((tmp_path / "grid.json").read_text())["rows"]
    assert row["task"] == "detection" and set(row["latency_ms"]) == {"eager/fp32"}
    for png in ("detectors_latency_vs_mult_adds.png", "detectors_latency_vs_coco_map.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "accuracy_vs_mult_adds.png").exists()  # the classifiers' plots: none in this grid
    budget = str(row["latency_ms"]["eager/fp32"] * 10)
    assert (
        main(["select", "--max-latency-ms", budget, "--runtime", "eager", "--results", str(tmp_path / "grid.json")])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "detector" and out[1].split()[0] == "ssdlite320_mobilenet_v3_small_0.25_128"
    assert out[1].split()[3] == "—"  # no paper gives a mAP at α 0.25, 128 px

    argv = ["bench", "ssdlite320_mobilenet_v3_small", "--width-mult", "0.25", "--resolution", "128"]
    assert main([*argv, "--runtime", "eager", *NO_DETECTOR_FILE[:1], "--runs", "2", "--warmup", "1", "--json"]) == 0
    eager, *skipped = json.loads(capsys.readouterr().out)
    assert eager["latency"]["median_ms"] > 0 and all("file of a detector yet" in r["skipped"] for r in skipped)


def test_cli_select_detectors_by_cost(capsys):
    assert main(["select", "--max-madds", "600M", "--family", "mobilenet_v3_small", "detectors"]) == 0
    classifiers, detectors = capsys.readouterr().out.split("\n\n")
    assert classifiers.split()[:1] == ["model"] and "top-1 %" in classifiers.splitlines()[0]
    lines = detectors.splitlines()
    assert lines[0].split()[0] == "detector" and "COCO mAP" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == [f"{LARGE}_1.0_320", "ssdlite320_mobilenet_v3_small_1.0_320"]
    assert [line.split()[3] for line in lines[1:4]] == ["21.3", "16.1", "—"]
