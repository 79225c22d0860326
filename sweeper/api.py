"""The sweep from Python (a notebook, a script): `run_sweep(overrides)` runs or continues the same
sweep `make sweep ARGS="..."` does, printing the same live view, and returns what it found.

    from sweeper import run_sweep
    result = run_sweep(["sweep.study_name=lr-study", "sweep.n_trials=20"])
    result.best_values, result.best_adapter, result.report
"""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepResult:
    study_name: str
    storage: str                    # as it may be shown: a password as ***
    finished: int                   # complete + pruned trials the study holds
    best_trial: int | None          # None until a trial completes
    best_value: float | None        # the objective (sweep.objective) of the best trial
    best_values: dict               # its searched and tied values
    best_adapter: Path | None       # its adapter folder (also <study>/best)
    report: Path | None             # <study>/report/index.html


class SweepFailed(RuntimeError):
    """The sweep stopped before the study held sweep.n_trials finished trials (repeated failures,
    or the SLURM job's tasks all ended); what it said is above, the study keeps what it did."""


def run_sweep(overrides: list[str] | None = None) -> SweepResult:
    """Run or continue the sweep; bad input raises trainers.settings.ConfigError (nothing touched),
    Ctrl-C raises KeyboardInterrupt once the running trials are failed and queued to run again."""
    from sweeper.__main__ import EXIT_INTERRUPTED, sweep

    code, s = sweep(list(overrides or []))
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt(f"study {s.study_name!r}: interrupted; run it again to continue")
    if code != 0:
        raise SweepFailed(f"study {s.study_name!r}: the sweep stopped (exit {code}); run it again to continue")
    return result_of(s)


def result_of(s) -> SweepResult:
    import optuna
    from optuna.trial import TrialState

    from sweeper.recheck import search_trials
    from sweeper.results.seeds import crowned
    from sweeper.results.trials import trial_values

    study = optuna.load_study(study_name=s.study_name, storage=s.storage)
    trials = study.get_trials(deepcopy=False)
    best, _ = crowned(trials, s)
    report = s.dir / "report" / "index.html"
    return SweepResult(
        study_name=s.study_name, storage=s.storage_shown,
        finished=sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in search_trials(trials)),
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_values=trial_values(best, s) if best else {},
        best_adapter=Path(best.user_attrs["output_dir"]) if best and "output_dir" in best.user_attrs else None,
        report=report if report.exists() else None)
