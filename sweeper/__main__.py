"""`python -m sweeper [hydra overrides]` (what `make sweep` runs): validate everything, open the
study, run trials one process each until it holds sweep.n_trials finished ones, report."""
import os
import signal
import sys
import time
import warnings

from trainers.settings import ConfigError

EXIT_BAD_INPUT, EXIT_FAILURES, EXIT_INTERRUPTED = 2, 1, 130


def prepare(overrides: list[str]):
    """Every check that can refuse the sweep, before the study is opened or changed."""
    from sweeper.checks import check_before_study
    from sweeper.settings import sweep_settings
    from trainers import quiet

    s = sweep_settings(overrides)
    quiet.install()
    check_before_study(s)
    return s


def tell(study, trial, outcome) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("steps", outcome.steps)
    for key, value in outcome.facts.items():
        if value is not None:
            trial.set_user_attr(key, value)
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    elif outcome.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("fail_reason", outcome.reason[-500:])
        study.tell(trial, state=TrialState.FAIL)


def run_one(s, study, storage, view, processes, tally: dict):
    """Ask for a trial, run it in a process, tell the study its outcome."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    from sweeper.launch import remove_checkpoints, resume_point, run_trial_process, trial_overrides
    from sweeper.space import suggest, to_overrides

    trial = study.ask()
    values = suggest(trial, s.space)
    value_overrides = to_overrides(values, s.space)
    trial_dir = s.dir / "trials" / str(trial.number)
    trial.set_user_attr("value_overrides", value_overrides)
    trial.set_user_attr("output_dir", str(trial_dir))
    # A retry of a killed or interrupted trial continues from the newest checkpoint of its series.
    predecessors = [s.dir / "trials" / str(n) for n in Retry.retry_history(storage.get_trial(trial._trial_id))]
    resume_from = resume_point(predecessors) if s.checkpoints else None
    view.start(trial.number, values, tally, Retry.retried_trial_number(storage.get_trial(trial._trial_id)),
               resume_from)
    start = time.monotonic()
    try:
        outcome = run_trial_process(s, storage, trial, values,
                                    trial_overrides(s, trial.number, value_overrides, resume_from),
                                    view, processes, keep_spare=tally["finished"] + 1 < s.n_trials)
    except KeyboardInterrupt:
        import optuna

        trial.set_user_attr("fail_reason", "interrupted")
        frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        Retry(max_retry=s.max_failures, inherit_intermediate_values=True)(study, frozen)  # runs first next time
        view.note(f"\ninterrupted: trial {trial.number} will run again; rerun the same command to continue")
        raise
    tell(study, trial, outcome)
    remove_checkpoints([trial_dir, *predecessors])  # the series has ended: no retry will need them
    return trial, outcome, time.monotonic() - start


def run_sweep(s) -> int:
    import optuna

    from sweeper.launch import TrialProcesses
    from sweeper.report import final_report
    from sweeper.study import build_storage, counts, open_study
    from sweeper.view import LiveView

    # We drive ask/tell ourselves and send heartbeats from the launcher, which optuna calls
    # "experimental" and warns about on every ask.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    storage = build_storage(s)
    study = open_study(s, storage)
    view = LiveView(s.n_trials)
    view.note(f"study {s.study_name!r}: {counts(study)['finished']}/{s.n_trials} trials finished; storage {s.storage_shown}")
    processes = TrialProcesses(s)
    failures = 0
    try:
        while True:
            optuna.storages.fail_stale_trials(study)  # a dead sweep's RUNNING trials: failed, then retried
            c = counts(study)
            if c["finished"] >= s.n_trials:
                break
            if c["finished"] + c["running"] >= s.n_trials:  # another worker holds the rest: wait for it
                time.sleep(s.heartbeat_interval)
                continue
            trial, outcome, seconds = run_one(s, study, storage, view, processes, c)
            view.end(trial.number, outcome.state, outcome.value, outcome.steps, seconds, counts(study), outcome.reason)
            failures = failures + 1 if outcome.state == "failed" else 0
            if failures >= s.max_failures:
                print(f"error: {failures} trials failed in a row (sweep.max_failures={s.max_failures}); last: "
                      f"{outcome.reason}; log: {s.dir / 'trials' / str(trial.number) / 'trial.log'}", file=sys.stderr)
                return EXIT_FAILURES
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        processes.close()
    print(final_report(study, s))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a sweep as cleanly as Ctrl-C
    try:
        s = prepare(argv)
        return run_sweep(s)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
