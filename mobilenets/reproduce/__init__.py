"""Reproduce the paper's comparisons (Tables 4–9, Figures 4–5, and the SqueezeNet paper's bypass comparison, its
Table 6) on a real dataset, with one shared recipe.

    from mobilenets.reproduce import reproduce, write_report
    result = reproduce("fashion-mnist", preset="quick", out_dir="reports/quick-fashion-mnist")
    write_report(result)

One file per step, in the order they run: presets (how big a reproduction is), plan (which cells each paper
table needs), cache (the per-run records on disk), run (the runner), claims (the five claims judged from the
numbers) and report (report.md, the PNG plots and results.json from what :func:`reproduce` returns).

A *cell* is one model at one input size (e.g. 0.75 MobileNet at 48 px); a *run* is one cell trained with
one seed. Tables share cells (1.0 MobileNet at the top resolution appears in Tables 4, 6, 7, 8 and the
grid) and each cell is trained once. Every finished run is written to ``out_dir/cells/`` as one JSON file
named by a hash of everything that determines its numbers, so a re-run reuses it and an interrupted
reproduction resumes with the first unfinished run (which itself resumes from the engine's checkpoint).
"""

from mobilenets.reproduce.cache import (
    CACHE_VERSION,
    CellResult,
    config_hash,
    dataset_id,
    load_cached,
    run_config,
    run_name,
)
from mobilenets.reproduce.claims import (
    AGREES,
    DISAGREES,
    INCONCLUSIVE,
    MIN_TOLERANCE_PTS,
    NEAR_PTS,
    NOT_RUN,
    PARTLY,
    Claim,
    assess_claims,
    fewer,
    loglinear_fit,
    noise,
    tolerance,
)
from mobilenets.reproduce.plan import ALT_RECIPES, BYPASS_FAMILIES, FAMILIES, Cell, Row, Table, plan, plan_cells
from mobilenets.reproduce.presets import ALL_TABLES, PRESETS, Preset, get_preset
from mobilenets.reproduce.report import write_report
from mobilenets.reproduce.run import Reproduction, default_command, hardware, reproduce

__all__ = [
    "AGREES",
    "ALL_TABLES",
    "ALT_RECIPES",
    "BYPASS_FAMILIES",
    "CACHE_VERSION",
    "DISAGREES",
    "FAMILIES",
    "INCONCLUSIVE",
    "MIN_TOLERANCE_PTS",
    "NEAR_PTS",
    "NOT_RUN",
    "PARTLY",
    "PRESETS",
    "Cell",
    "CellResult",
    "Claim",
    "Preset",
    "Reproduction",
    "Row",
    "Table",
    "assess_claims",
    "config_hash",
    "dataset_id",
    "default_command",
    "fewer",
    "get_preset",
    "hardware",
    "load_cached",
    "loglinear_fit",
    "noise",
    "plan",
    "plan_cells",
    "reproduce",
    "run_config",
    "run_name",
    "tolerance",
    "write_report",
]
