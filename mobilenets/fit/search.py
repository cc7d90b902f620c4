"""The search under a time budget, with Optuna: one trial per shortlisted candidate (queued best prior first), each a
short fine-tune on a subset in rungs of one epoch, reported after every rung to a successive-halving pruner
(Jamieson & Talwalkar; Li et al.'s ASHA), which stops the trials that fall behind the others at the same rung.

The study lives in an Optuna storage: by default SQLite in the out-dir (``search.db``), so a killed ``fit`` resumes
where it stopped: the finished trials are kept, the one that was running is queued again and its training resumes
from its own checkpoint. Any RDB URL Optuna takes (``postgresql://…``, ``mysql://…``) spreads one search over
several machines: each runs ``fit`` with the same ``--storage`` and ``--study``, takes the next queued candidate, and
a machine that dies has its trial failed by the heartbeat and queued again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mobilenets.errors import MobileNetsError

STUDY_NAME = "fit"
PARAM = "candidate"
# Successive halving: a trial keeps going past rung k only while it is in the best 1/REDUCTION_FACTOR of the trials
# that reached rung k.
REDUCTION_FACTOR = 3
# Shared storages: a worker that has not beaten its heart for GRACE_S seconds is dead; its trial is queued again.
HEARTBEAT_S, GRACE_S = 30, 120


class OutOfTime(Exception):
    """Raised by a rung's trainer when the search's time is spent before the rung could run."""


@dataclass
class TrialRecord:
    """One candidate's trial as the report shows it."""

    candidate: str
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, WAITING
    rungs: int = 0  # epochs of the subset done
    heldout_acc: list[float] = field(default_factory=list)  # after each rung (fraction)
    seconds: float = 0.0
    note: str = ""

    @property
    def last_acc(self) -> float | None:
        return self.heldout_acc[-1] if self.heldout_acc else None


def open_study(storage: str | None, db_path, study_name: str = STUDY_NAME):
    """The study in ``storage`` (an Optuna RDB URL), or in SQLite at ``db_path``; created on first use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    local = storage is None
    url = storage or f"sqlite:///{db_path}"
    try:
        store = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=None if local else HEARTBEAT_S,
            grace_period=None if local else GRACE_S,
            failed_trial_callback=None if local else optuna.storages.RetryFailedTrialCallback(max_retry=2),
        )
    except Exception as e:  # noqa: BLE001 — a bad URL or an unreachable database is the user's to fix
        raise MobileNetsError(f"cannot open the search storage {url}: {str(e).splitlines()[0]}") from None
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=store,
        direction="maximize",
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed=0),  # never used: every trial is a queued candidate
        load_if_exists=True,
    )
    return study, local


def queue_candidates(study, names: list[str], local: bool) -> None:
    """Queue the candidates no trial has taken yet, in order. In local storage a trial still RUNNING is one a killed
    fit left: it is failed and its candidate queued again (shared storages leave that to the heartbeat)."""
    from optuna.trial import TrialState

    if local:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    taken = {
        t.params.get(PARAM, t.system_attrs.get("fixed_params", {}).get(PARAM))
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)
        )
    }
    for name in names:
        if name not in taken:
            study.enqueue_trial({PARAM: name})


def run_search(
    study,
    names: list[str],
    train_rung: Callable[[str, int], float],
    rungs: int,
    time_left: Callable[[], float],
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> None:
    """Run the queued trials until none is left or the search's time is spent.

    ``train_rung(name, k)`` trains candidate ``name`` to the end of rung ``k`` (1-based) and returns its held-out
    top-1; it raises :class:`OutOfTime` when ``time_left()`` cannot hold the rung. ``on_trial`` sees each finished
    trial (a test's way to stop after one).
    """
    import optuna
    from optuna.trial import TrialState

    def objective(trial) -> float:
        name = trial.suggest_categorical(PARAM, names)
        acc = None
        for k in range(1, rungs + 1):
            try:
                acc = train_rung(name, k)
            except OutOfTime:
                trial.set_user_attr("stopped", f"out of search time after {k - 1} epoch(s)")
                if acc is None:
                    raise optuna.TrialPruned("out of search time before its first epoch") from None
                break
            trial.report(acc, k)
            if trial.should_prune():
                trial.set_user_attr("stopped", f"pruned after epoch {k}: behind the others there")
                raise optuna.TrialPruned(f"pruned at rung {k}")
        return acc

    while time_left() > 0 and study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.optimize(objective, n_trials=1, catch=(MobileNetsError,))
        if on_trial:
            on_trial(trial_records(study)[-1])


def trial_records(study) -> list[TrialRecord]:
    """Every trial of the study, oldest first (a candidate queued again after a kill appears twice)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        name = t.params.get(PARAM, t.system_attrs.get("fixed_params", {}).get(PARAM, "?"))
        accs = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0.0
        note = t.user_attrs.get("stopped", "")
        if t.state.name == "FAIL":
            note = note or t.system_attrs.get("fail_reason", "stopped (killed or failed); queued again")
        out.append(TrialRecord(name, t.number, t.state.name, len(accs), accs, round(seconds, 1), note))
    return out


def ranking(records: list[TrialRecord]) -> list[TrialRecord]:
    """The candidates best first: those that went furthest (most rungs), then by held-out top-1 at their last rung;
    one record per candidate (its latest)."""
    latest: dict[str, TrialRecord] = {}
    for r in records:
        if r.rungs:
            latest[r.candidate] = r
    return sorted(latest.values(), key=lambda r: (-r.rungs, -(r.last_acc or 0.0)))
