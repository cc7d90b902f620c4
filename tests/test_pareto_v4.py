"""benchmarks/pareto_v4.py: is V4 Conv-S/M on the Pareto front, from a hand-made grid.json whose answer is known."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pareto_v4.py"
CONV_S, CONV_M = "mobilenet_v4_conv_small_1.0_224", "mobilenet_v4_conv_medium_1.0_256"


@pytest.fixture(scope="module")
def pareto():
    spec = importlib.util.spec_from_file_location("pareto_v4", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _row(model: str, top1: float | None, **latency_ms: float) -> dict:
    """A grid.json row as `bench --grid` writes it; the costs do not enter the answer."""
    return {
        "model": model,
        "width_mult": 1.0,
        "resolution": int(model.rsplit("_", 1)[1]),
        "mult_adds": 1,
        "num_params": 1,
        "top1": top1,
        "latency_ms": {k.replace("__", "/"): v for k, v in latency_ms.items()},
    }


def grid(tmp_path: Path) -> Path:
    """Made-up latencies. onnxruntime/int8: V3-Large (75.2%) is faster than Conv-S (73.8%), so it dominates it;
    Conv-M is the most accurate, on the front. openvino/int8: Conv-S is the fastest, on the front; Conv-M
    (79.9%) loses to Hybrid-M (80.7%) by 5% of speed (narrow) and to Conv-L only on accuracy, which is no
    domination. eager/fp32: Conv-M's export failed."""
    rows = [
        _row("mobilenet_v1_0.5_160", 60.2, onnxruntime__int8=0.5, openvino__int8=0.9, eager__fp32=1.0),
        _row("mobilenet_v3_large_1.0_224", 75.2, onnxruntime__int8=2.0, openvino__int8=3.0, eager__fp32=9.0),
        _row("mobilenet_v2_0.35_224", None, onnxruntime__int8=0.1, openvino__int8=0.1, eager__fp32=0.1),
        _row(CONV_S, 73.8, onnxruntime__int8=2.5, openvino__int8=0.8, eager__fp32=5.0),
        _row(CONV_M, 79.9, onnxruntime__int8=6.0, openvino__int8=4.0),
        _row("mobilenet_v4_hybrid_medium_1.0_256", 80.7, onnxruntime__int8=7.0, openvino__int8=3.8),
        _row("mobilenet_v4_conv_large_1.0_384", 82.9, onnxruntime__int8=20.0, openvino__int8=3.9),
    ]
    rows[4]["failed"] = {"eager/fp32": "RuntimeError: out of memory"}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"cpu": {"line": "Test CPU (x86_64)"}, "rows": rows}))
    return path


def test_dominated_and_undominated_models_get_the_right_answer(pareto, tmp_path):
    from mobilenets.deploy.bench import load_grid

    cells = pareto.judge_all(load_grid(grid(tmp_path)))
    by = {(c.key, c.model): c for cs in cells.values() for c in cs}
    conv_s = by["onnxruntime/int8", CONV_S]
    assert not conv_s.on_front and [r.model for r in conv_s.dominated_by] == ["mobilenet_v3_large_1.0_224"]
    assert by["onnxruntime/int8", CONV_M].on_front and by["openvino/int8", CONV_S].on_front
    conv_m = by["openvino/int8", CONV_M]  # Conv-L (3.9 ms, 82.9%) dominates it too; Hybrid-M is the faster one
    assert [r.model for r in conv_m.dominated_by] == [
        "mobilenet_v4_hybrid_medium_1.0_256",
        "mobilenet_v4_conv_large_1.0_384",
    ]
    assert by["eager/fp32", CONV_S].on_front and not by["eager/fp32", CONV_M].measured
    assert by["eager/fp32", CONV_M].missing == "RuntimeError: out of memory"


def test_the_answer_file_names_the_dominators_with_their_figures(pareto, tmp_path, capsys):
    out = tmp_path / "answer.md"
    assert pareto.main(["--grid", str(grid(tmp_path)), "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out and "CPU: Test CPU (x86_64)" in text
    table = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "dominated (2.50 ms) by mobilenet_v3_large_1.0_224: 2.00 ms, 75.2% (20% faster)" in table["onnxruntime/int8"]
    assert "(5% faster — narrow), and 1 more" in table["openvino/int8"]
    assert "not measured: RuntimeError: out of memory" in table["eager/fp32"]
    # Conv-S on 2 of 3 fronts, Conv-M on 1 of 2: not each on most fronts.
    assert "holds only in part on this CPU: 3 of 5 cells on the front" in text
    assert "- V4 Conv-S: on the front in 2 of 3 runtime/precision cells (eager/fp32, openvino/int8); off it in " in text
    assert "beaten most often by mobilenet_v4_hybrid_medium_1.0_256 (in 1 of them); every dominator less " in text
    assert "**This grid has no timed mobilenet_v2 rows**" in text  # its only V2 row has no published top-1
    # A row without a published top-1 is on no front, however fast.
    assert "mobilenet_v2_0.35_224" not in text


def test_the_verdict_when_both_are_on_every_front(pareto, tmp_path):
    from mobilenets.deploy.bench import load_grid

    rows = [r for r in load_grid(grid(tmp_path)) if r.model in (CONV_S, CONV_M, "mobilenet_v1_0.5_160")]
    text = "\n".join(pareto.verdict(pareto.judge_all(rows)))
    assert "holds on this CPU: both models are on every front measured" in text
