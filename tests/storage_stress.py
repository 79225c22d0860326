"""Storage under contention: P processes report eval losses, ask the pruner and send heartbeats
as fast as they can on one study, through the storage the sweep builds. Counts errors (SQLite's
'database is locked') and reports that did not land. `python tests/storage_stress.py URL [P]`."""
import multiprocessing as mp
import sys
import time
import uuid


def _work(url: str, name: str, trials: int, steps: int, errors) -> None:
    import warnings

    import optuna

    from sweeper.settings import sweep_settings
    from sweeper.study import build_storage

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = sweep_settings([f"sweep.storage={url}", f"sweep.study_name={name}"], check_values=False)
    study = optuna.load_study(study_name=name, storage=build_storage(s),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for _ in range(trials):
        try:
            trial = study.ask()
            for step in range(steps):
                trial.report(1.0 / (step + 1) + trial.number * 1e-3, step)
                study._storage.record_heartbeat(trial._trial_id)
                if trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                study.tell(trial, 1.0 / steps)
        except Exception as e:  # what the stress is looking for
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")


def stress(url: str, processes: int = 8, trials: int = 6, steps: int = 30) -> dict:
    """Run the stress; returns errors, reports made vs stored, trials and seconds."""
    import optuna

    from sweeper.settings import sweep_settings
    from sweeper.study import build_storage

    name = f"stress-{uuid.uuid4().hex[:8]}"
    s = sweep_settings([f"sweep.storage={url}", f"sweep.study_name={name}"], check_values=False)
    optuna.create_study(study_name=name, storage=build_storage(s))
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        errors = manager.list()
        start = time.monotonic()
        procs = [ctx.Process(target=_work, args=(url, name, trials, steps, errors)) for _ in range(processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        seconds = time.monotonic() - start
        errors = list(errors)
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.trials if t.state.is_finished()]
    expected = sum(len(t.intermediate_values) for t in done if t.state == optuna.trial.TrialState.COMPLETE) \
        == sum(1 for t in done if t.state == optuna.trial.TrialState.COMPLETE) * steps
    result = {"errors": errors, "trials": len(study.trials), "finished": len(done),
              "complete_reports_intact": expected, "exit_codes": [p.exitcode for p in procs],
              "seconds": round(seconds, 1)}
    optuna.delete_study(study_name=name, storage=url)
    return result


if __name__ == "__main__":
    print(stress(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8))
