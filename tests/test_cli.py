import json
import subprocess
import sys

import pytest

from mobilenets import create_model, profile
from mobilenets.cli import main


@pytest.mark.parametrize("text, value", [("1.5", 1.5e6), ("500K", 5e5), ("1.5m", 1.5e6), ("0.2G", 2e8)])
def test_budget_counts_read_millions_or_a_suffix(text, value):
    """`select` and `fit` read --max-params / --max-mult-adds with one parser (cli.common.count)."""
    from mobilenets.cli.common import count

    assert count(text) == pytest.approx(value)


@pytest.mark.parametrize("argv", [["select", "--max-params", "1x"], ["fit", "digits", "--max-mult-adds", "K"]])
def test_bad_budget_count_is_one_line_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "expected a count like 1.5 (millions), 500K or 1.5M" in capsys.readouterr().err


def test_profile_table(capsys):
    assert main(["profile", "mobilenet_v1_0.75_160", "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "blocks.12.pointwise.conv" in out and "Conv DW 3×3" in out
    expected = profile(create_model("mobilenet_v1_0.75_160"))
    assert f"{expected.mult_adds / 1e6:,.2f} M Mult-Adds" in out


def test_profile_json_overrides(capsys):
    assert main(["profile", "mobilenet_v1", "--width-mult", "0.6", "--resolution", "200", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = profile(create_model("mobilenet_v1", width_mult=0.6, resolution=200))
    assert data["mult_adds"] == expected.mult_adds and data["params"] == expected.params
    assert data["input_size"] == [3, 200, 200] and len(data["layers"]) == 28


def test_list(capsys):
    assert main(["list", "*shallow_0.25*"]) == 0
    assert capsys.readouterr().out.split() == [f"mobilenet_v1_shallow_0.25_{r}" for r in (128, 160, 192, 224)]


@pytest.mark.slow
def test_paper_tables(capsys):
    assert main(["paper-tables"]) == 0
    out = capsys.readouterr().out
    for text in ("Conv dw / s1     3×3×1024 dw", "Shallow MobileNet", "VGG 16", "AlexNet", "SqueezeNet", "1.91"):
        assert text in out
    assert "MobileNet figures match the paper" in out
    # The detection tables after the classification ones (issue 27): Table 13's SSD300 and torchvision's SSDLite.
    detection = out[out.index("\nDetection — ") :]
    assert "SSD300 MobileNet" not in out[: out.index("\nDetection — ")]
    assert "V1 Table 13  SSD300 MobileNet" in detection and "19.3" in detection and "6.820" in detection
    assert "torchvision  ssdlite320_mobilenet_v3_large" in detection and "21.3" in detection
    assert main(["paper-tables", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mobilenet = [c for c in data["comparisons"] if c["table"] in "34567"]
    assert mobilenet and all(c["matches"] for c in mobilenet)
    assert len(data["table1"]) == 30
    ssd300 = data["detection"][0]
    assert (ssd300["source"], ssd300["coco_map"], ssd300["mult_adds_b"]["paper"], ssd300["params_m"]["paper"]) == (
        "V1 Table 13",
        19.3,
        1.2,
        6.8,
    )
    assert abs(ssd300["params_m"]["ratio"] - 1) < 0.01 and ssd300["note"]


BAD_INPUT = [
    (["profile", "mobilenet_v4"], "unknown model 'mobilenet_v4'"),
    (["profile", "mobilenet_v3_medium_1.0_224"], "unknown model 'mobilenet_v3_medium_1.0_224'; did you mean"),
    (["profile", "mobilenet_v3_small", "--width-mult", "0.01"], "rounds to nothing: use width_mult >= 0.0625"),
    (["profile", "densenet121", "--grid"], "--grid needs a MobileNet family"),
    (["profile", "mobilenet_v1", "--width-mult", "-1"], "width_mult must be a finite number > 0"),
    (["profile", "mobilenet_v1", "--resolution", "16"], "resolution 16 is too small"),
    (["profile", "mobilenet_v1", "--in-chans", "0"], "in_chans >= 1"),
    (["list", "resnet*"], "no model matches"),
]


def test_bad_input_exits_2_with_one_line_from_the_command():
    """The command as a user runs it, in a process of its own: exit status 2, one line, no traceback."""
    argv, message = BAD_INPUT[0]
    result = subprocess.run([sys.executable, "-m", "mobilenets", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    _assert_one_line_error(result.stdout, result.stderr, message)


@pytest.mark.parametrize("argv,message", BAD_INPUT)
def test_bad_input_is_one_line_error(argv, message, capsys):
    """Each bad input through the command's main() in this process (a process per case cost ~5 s of imports;
    the test above runs the command itself)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    _assert_one_line_error(captured.out, captured.err, message)


def _assert_one_line_error(out: str, err: str, message: str) -> None:
    """Nothing on stdout; on stderr one line, "mobilenets: error: ..." holding ``message``, and no traceback."""
    assert out == ""
    assert err.startswith("mobilenets: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_profile_shows_the_papers_figures_beside_ours(capsys):
    assert main(["profile", "mobilenet_v3_large_0.75_224"]) == 0
    out = capsys.readouterr().out
    assert "input 3×224×224: 154.56 M Mult-Adds, 3.99 M parameters" in out
    assert "paper (V3 paper, Table 3, MobileNetV3-Large 0.75): 155 M Mult-Adds, 4.0 M parameters" in out
    assert main(["profile", "mobilenet_v2", "--grid"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 + 6 and rows[0].startswith("| α \\ resolution | 224 | 192 | 160 | 128 | 96 |")
    assert rows[4].startswith("| 1.0 | 300.8 |") and rows[4].endswith("| 3.47 (3.50) |")


def test_profile_grid(capsys):
    assert main(["profile", "mobilenet_v1_0.5_160", "--grid"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 6 and rows[2].startswith("| 1.0 | 568.7 | 418.1 | 290.7 | 186.4 |")
    assert rows[4].split(" | ")[3] == f"{profile(create_model('mobilenet_v1_0.5_160')).mult_adds / 1e6:.1f}"
