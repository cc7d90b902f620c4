"""`mobilenets fit`: from a user's images and a budget to a verified file, the model, α, ρ, weights and quantization
chosen by measurement.

One file per step: candidates (the α×ρ grid within the budgets, latency measured here or read from the user's
table, the papers' top-1 as a prior), search (Optuna trials on a subset with a successive-halving pruner, resumable
from its SQLite store), quantize (PTQ, stronger PTQ, then QAT until the file holds), report (fit.md, fit.json,
fit.png); pipeline runs them top to bottom:

    from mobilenets.fit import FitConfig, fit
    result = fit(FitConfig("fashion-mnist", runtime="onnx", precision="int8", max_latency_ms=3, time_budget_s=600))
"""

from mobilenets.fit.candidates import Budget, Candidate, candidate_space, read_latency_table, resolve_runtime
from mobilenets.fit.pipeline import DEFAULT_TIME_BUDGET_S, FitConfig, FitResult, fit
from mobilenets.fit.quantize import Attempt, quantize_until_it_holds
from mobilenets.fit.report import summary

__all__ = [
    "DEFAULT_TIME_BUDGET_S",
    "Attempt",
    "Budget",
    "Candidate",
    "FitConfig",
    "FitResult",
    "candidate_space",
    "fit",
    "quantize_until_it_holds",
    "read_latency_table",
    "resolve_runtime",
    "summary",
]
