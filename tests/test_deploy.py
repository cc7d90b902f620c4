"""The deploy package: int8 files that cannot saturate on any CPU (read back from the files themselves), files
built for a target rather than for this machine, and the CPU line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numeric import assert_v1_int8_cannot_saturate, scaled_diff

from mobilenets.deploy import FORMATS, runtime_module
from mobilenets.deploy import bench as deploy_bench
from mobilenets.deploy import export as ex
from mobilenets.deploy.cpu import CpuInfo, cpu_info
from mobilenets.deploy.images import calibrate_bn, real_images
from mobilenets.deploy.verify import compare_outputs, int8_safety
from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model

# A web folder's int8 file is the ONNX writer's, checked here as onnx (tests/test_web.py runs it in the page).
INT8_FORMATS = [f for f in FORMATS if "int8" in ex.FORMAT_PRECISIONS[f] and f != "web"]
# ExecuTorch's and LiteRT's int8 files are read the same way on the pretrained V1 (the same 28 layers) in
# tests/test_export.py and tests/test_litert.py, whose int8 files are made anyway: ~37 s less of make test.
SATURATION_FORMATS = [f for f in INT8_FORMATS if f not in ("executorch", "tflite")]
WEIGHT_BITS_FORMATS = [f for f in ex.WEIGHT_BITS_FORMATS if f != "web"]


@pytest.fixture(scope="module")
def small():
    """α=0.25 MobileNet at 64 px, BN statistics measured on real photos (logits are not ~0)."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width_mult=0.25, resolution=64, num_classes=10)
    model = calibrate_bn(model, real_images(48, 3, 64, split="train", seed=7))
    return model, real_images(64, 3, 64, split="train")


@pytest.fixture
def avx2_only(monkeypatch):
    """Pretend to be an AVX2-only x86 CPU (AMD Zen 3, Intel before Cascade Lake): no VNNI, bf16 or AMX."""
    monkeypatch.setenv("MOBILENETS_CPU_FLAGS", "sse4_2 avx avx2 fma")
    cpu_info.cache_clear()
    yield
    cpu_info.cache_clear()


# ----------------------------------------------------------------------------------------------------
# int8 that cannot saturate, read out of each file


@pytest.mark.parametrize("format", SATURATION_FORMATS)
def test_int8_file_cannot_saturate_on_any_cpu(tmp_path, small, format):
    """The ranges come from the written file, so a VNNI machine fails this test exactly as an AVX2 one would."""
    model, calib = small
    path = tmp_path / f"m{ex.SUFFIXES[format]}"
    result = ex.export(model, path, format, "int8", calib_images=calib, min_agreement=0.0)
    info = assert_v1_int8_cannot_saturate(format, path)
    assert info.items() >= result.built_for.items()  # LiteRT adds its input layout


@pytest.mark.parametrize("format", WEIGHT_BITS_FORMATS)
def test_full_range_weights_are_opt_in_and_refused_without_vnni(tmp_path, small, format, monkeypatch):
    model, calib = small
    path = tmp_path / f"m8{ex.SUFFIXES[format]}"
    result = ex.export(model, path, format, "int8", calib_images=calib, weight_bits=8, verify=False)
    safety = int8_safety(runtime_module(format).int8_ranges(path))
    assert not safety.everywhere and "without VNNI" in safety.detail
    assert "saturates" in result.built_for["runs_on"]
    monkeypatch.setenv("MOBILENETS_CPU_FLAGS", "avx2 fma")
    cpu_info.cache_clear()
    try:
        with pytest.raises(MobileNetsError, match="8-bit weights, which saturate on this CPU without VNNI") as e:
            ex.run_model_file(path, format, calib[:2], "int8")
        assert "\n" not in str(e.value)
        # Exported on a CPU without VNNI: written, but its verification is skipped and says why.
        again = ex.export(
            model, tmp_path / f"n8{ex.SUFFIXES[format]}", format, "int8", calib_images=calib, weight_bits=8
        )
        assert again.verification is None and "without VNNI" in again.skipped[0]
    finally:
        cpu_info.cache_clear()


def test_int8_safety_rules():
    dense = {"name": "w", "min": -100, "max": 90, "activation": "uint8", "depthwise": False}
    assert not int8_safety([dense]).everywhere
    assert int8_safety([{**dense, "depthwise": True}]).everywhere  # depthwise widens to 32 bits everywhere
    assert int8_safety([{**dense, "min": -64, "max": 64}]).everywhere
    assert int8_safety([{**dense, "activation": "int8"}]).everywhere  # signed activations are widened first
    assert not int8_safety([{**dense, "activation": "int8", "min": -128}]).everywhere
    assert not int8_safety([]).everywhere


def test_weight_bits_option_only_where_it_matters(tmp_path, small):
    model, calib = small
    with pytest.raises(MobileNetsError, match="executorch int8 uses signed activations"):
        ex.export(model, tmp_path / "m.pte", "executorch", "int8", calib_images=calib, weight_bits=8)
    with pytest.raises(MobileNetsError, match="must be 7 .* or 8"):
        ex.export(model, tmp_path / "m.onnx", "onnx", "int8", calib_images=calib, weight_bits=6)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# A file is built for a target, not for the machine that builds it


def test_bf16_file_is_written_on_a_cpu_without_bf16(tmp_path, small, avx2_only):
    model, _ = small
    path = tmp_path / "m.xml"
    result = ex.export(model, path, "openvino", "bf16")
    assert path.exists() and path.with_suffix(".bin").exists()
    assert result.verification is None
    assert len(result.skipped) == 1 and "no bf16 math (AVX512_BF16 or AMX)" in result.skipped[0]
    assert runtime_module("openvino").metadata(path)["precision"] == "bf16"
    with pytest.raises(MobileNetsError, match="no bf16 math") as e:
        ex.run_model_file(path, "openvino", real_images(2, 3, 64), "bf16")
    assert "\n" not in str(e.value)
    # The benchmark skips what this CPU cannot run and says why, instead of crashing.
    results = deploy_bench.bench_model(
        model, "m", ["eager", "openvino"], ["fp32", "bf16"], runs=2, warmup=1, skip_unsupported=True, pause=0
    )
    skipped = {(r.runtime, r.precision): r.skipped for r in results if r.latency is None}
    assert set(skipped) == {("eager", "bf16"), ("openvino", "bf16")}
    assert all("AVX512_BF16" in why for why in skipped.values())
    assert all(r.latency.median_ms > 0 for r in results if r.latency is not None)


def test_cli_export_reports_skipped_check(tmp_path, avx2_only, capsys):
    from mobilenets.cli import main

    out = tmp_path / "m.xml"
    rc = main(
        ["export", "mobilenet_v1_0.25_128", "--resolution", "32", "--format", "openvino", "--precision", "bf16"]
        + ["-o", str(out)]
    )
    captured = capsys.readouterr()
    assert rc == 0 and out.exists()
    assert "not verified here" in captured.out and "AVX512_BF16" in captured.out


# ----------------------------------------------------------------------------------------------------
# The CPU line and grid files


def test_cpu_line_names_the_instruction_sets():
    x86 = CpuInfo("AMD EPYC 7B13", "x86_64", frozenset({"avx2", "fma"}))
    assert x86.line() == "AMD EPYC 7B13 (x86_64; AVX2 yes, AVX-512 no, VNNI no, AVX512_BF16 no, AMX no)"
    assert not x86.has("vnni") and not x86.has("bf16")
    spr = CpuInfo("Xeon", "x86_64", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}))
    assert spr.has("vnni") and spr.has("bf16") and "AMX yes" in spr.line()
    arm = CpuInfo("Neoverse-N1", "aarch64", frozenset({"asimd", "asimddp"}))
    assert arm.line().endswith("(aarch64; NEON yes, dotprod yes)") and arm.has("vnni")
    here = cpu_info()
    assert here.model and ("AVX2" in here.line() or "NEON" in here.line())


def test_grid_file_records_the_cpu(tmp_path):
    rows = deploy_bench.bench_grid([0.25], [128], ["eager"], ["fp32"], runs=2, warmup=1)
    path = deploy_bench.save_grid(rows, tmp_path / "grid.json")
    data = json.loads(path.read_text())
    assert data["cpu"]["line"] == cpu_info().line() and data["cpu"]["features"]
    assert deploy_bench.load_grid(path)[0].latency_ms["eager/fp32"] > 0
    assert deploy_bench.load_grid_cpu(path) == cpu_info().line()
    assert deploy_bench.format_grid(rows).startswith("CPU: ")
    # Files written before the CPU was recorded (a bare list) still load.
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data["rows"]))
    assert deploy_bench.load_grid(old)[0].model == rows[0].model and deploy_bench.load_grid_cpu(old) is None


# Each of oneDNN's int8 kernel families on x86, as ONEDNN_MAX_CPU_ISA caps it: on an AMX Xeon the native run is AMX's,
# the VNNI run stands in for an AVX-512 VNNI CPU (AMD Zen 4, Cascade Lake) and the AVX2 one for an AVX2-only CPU.
# A family this CPU lacks runs as the best one it has, so every machine runs the same comparisons.
KERNEL_FAMILIES = {"native": None, "VNNI": "AVX512_CORE_VNNI", "AVX2": "AVX2"}
# max |Δ| from the file's fake-quantized pass, as a fraction of its largest logit, that rounding explains: measured
# 0.5% (V1) and 2.3-2.6% (V3-Small) on every family, against 7.5% and 19% for AVX2's saturated sums of an 8-bit
# file (benchmarks/openvino_int8_isa.py, reports/openvino-isa).
KERNEL_RTOL = 0.05


@pytest.mark.slow
def test_openvino_int8_kernels_compute_the_files_arithmetic(tmp_path, fashion_model, fashion_model_v3):
    """Every int8 kernel family computes our 7-bit files as the files themselves say: within ``KERNEL_RTOL`` of
    their fake-quantized pass (each FakeQuantize as its float formula, openvino.write_fake_quant_pass), keeping
    their clear decisions. Judged on models trained on Fashion-MNIST (V1 α 0.25; V3-Small α 0.75 with hard-swish,
    squeeze-excite and residual adds), whose logits spread over several units: the families differ from one
    another by rounding (AMX's V3 logits differ from VNNI's by ~1% of their range), not in accuracy.

    The 8-bit file (V3) shows the test can fail: AVX2 kernels add u8×s8 pairs in 16 bits, which saturates, while
    VNNI and AMX accumulate in 32 bits."""
    openvino = runtime_module("openvino")
    files, references = {}, {}
    for key, (model, images, _, calib) in (("V1", fashion_model), ("V3", fashion_model_v3)):
        for bits in (7, 8) if key == "V3" else (7,):
            path = files[key, bits] = tmp_path / f"{key}_{bits}.xml"
            ex.export(model, path, "openvino", "int8", calib_images=calib, weight_bits=bits, verify=False)
            fake_quant = openvino.write_fake_quant_pass(path, tmp_path / f"fq_{key}_{bits}.xml")
            references[key, bits] = openvino.run(fake_quant, images[:256])
    images = fashion_model[1][:256]  # the same 256 test images for both models (tests/conftest.py)
    assert torch.equal(images, fashion_model_v3[1][:256])
    for family, isa in KERNEL_FAMILIES.items():
        for (key, bits), logits in zip(files, openvino.run_files_on_kernels(list(files.values()), images, isa)):
            reference = references[key, bits]
            assert np.abs(reference).max() > 3  # logits with a real spread, not rounding noise
            check = compare_outputs(torch.from_numpy(reference), logits, family, "int8")
            if bits == 8 and (family == "AVX2" or not cpu_info().has("vnni")):  # saturated sums
                assert scaled_diff(logits, reference) > 2 * KERNEL_RTOL, (key, bits, family)
            else:
                assert scaled_diff(logits, reference) <= KERNEL_RTOL, (key, bits, family)
                assert check.clear_images > 100 and check.clear_agreement >= 0.99, (key, family, check.summary())


def test_runtime_threads_default_comes_from_the_environment(monkeypatch):
    from mobilenets.deploy.cpu import THREADS_ENV, runtime_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert runtime_threads(None) is None and runtime_threads(3) == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    assert runtime_threads(None) == 1 and runtime_threads(2) == 2  # --threads wins
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(MobileNetsError, match="MOBILENETS_THREADS='two' is not a thread count"):
        runtime_threads(None)


POOL_SCRIPT = """
import pathlib, warnings, torch
from mobilenets.deploy import executorch
from mobilenets.models import create_model
import executorch.extension.pybindings.portable_lib as portable
model = create_model("mobilenet_v1", width_mult=0.25, resolution=64, num_classes=5).eval()
path = pathlib.Path(PATH)
executorch.write(model, path)
x = torch.rand(1, 3, 64, 64)
first = executorch.method(path, 2)
assert portable._threadpool_get_thread_count() == 2
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    second = executorch.method(path, 1)
assert [str(w.message)[:52] for w in caught] == ["ExecuTorch's thread pool stays at 2 threads, not 1: "], caught
assert portable._threadpool_get_thread_count() == 2
a, b = first.execute([x])[0], second.execute([x])[0]
torch.testing.assert_close(a, b, rtol=0, atol=0)
torch.testing.assert_close(a, model(x).detach(), rtol=1e-4, atol=1e-4)
del first, second
with warnings.catch_warnings():
    warnings.simplefilter("error")
    executorch.method(path, 1)  # nothing holds the pool now: resized, no warning
assert portable._threadpool_get_thread_count() == 1
print("ok")
"""


def test_executorch_thread_pool_is_not_resized_under_a_loaded_method(tmp_path):
    """ExecuTorch has one thread pool per process and each loaded method's XNNPACK runtime keeps a pointer to it:
    `executorch.method` resizes it only while no method it loaded is alive (resizing frees the old pool) and warns
    when it cannot; both methods then run on the one pool and give the same logits. In a fresh process, so that no
    other test's method holds the pool."""
    import subprocess
    import sys

    pytest.importorskip("executorch.extension.pybindings.portable_lib")
    script = POOL_SCRIPT.replace("PATH", repr(str(tmp_path / "m.pte")))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
