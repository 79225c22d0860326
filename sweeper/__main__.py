"""`python -m sweeper [hydra overrides]` (what `make sweep` runs): validate everything, open the
study, keep every slot of every device busy with trial processes until it holds sweep.n_trials
finished ones, report. With sweep.launcher=slurm: submit a job array whose tasks each do that on
their node, and follow the study from here."""
import os
import shlex
import signal
import sys
import threading
import warnings

from trainers.settings import ConfigError

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130
EXIT_STORAGE = 1  # as repeated trial failures: the sweep could not go on


def prepare(s):
    """Every check that can refuse the sweep, before the study is opened or changed; returns the
    settings the trials get (offline tracking when the W&B server does not answer)."""
    from dataclasses import replace

    from sweeper.checks import check_before_study
    from trainers import quiet
    from trainers.tracking import fallback_note

    quiet.install()
    for line in check_before_study(s):  # what the target modules adapt on this model, said once
        print(line, flush=True)
    note = fallback_note(s.trial.tracking)
    if note is None:
        return s
    print(note, flush=True)  # once here, and every trial is told: none waits ~90 s for wandb.init to fail
    return replace(s, overrides=[*s.overrides, "tracking.mode=offline"],
                   trial=replace(s.trial, tracking=replace(s.trial.tracking, mode="offline")))


def study_line(s, finished: int) -> str:
    """The study's tally as the sweep starts; a rerun with a smaller sweep.n_trials printed '8/2'."""
    if finished > s.n_trials:
        return (f"study {s.study_name!r}: {finished} trials finished, more than sweep.n_trials={s.n_trials}: none "
                f"to add; storage {s.storage_shown}")
    return f"study {s.study_name!r}: {finished}/{s.n_trials} trials finished; storage {s.storage_shown}"


def start_executor(devices):
    """The local executor, its first device's first trial process started at once, before the
    checks, so its ~8 s of imports overlap them (it is the memory probe's, or the first trial's)."""
    from sweeper.local import LocalExecutor

    executor = LocalExecutor(devices)
    executor.warm(devices[0])
    return executor


def plan_devices(s, study, view, devices, executor):
    """K on each device and, with per_device_train_batch_size=auto, the per-device batch (measured;
    see sweeper/packing and sweeper/probe)."""
    from sweeper.probe import plan_device
    from sweeper.slots import cpu_threads

    batch_auto = s.trial.train.per_device_train_batch_size == "auto"
    for d in devices:
        if s.trials_per_device != "auto":
            d.slots = s.trials_per_device
        if batch_auto:
            d.effective = s.trial.train.effective_batch_size
        measurable = d.name == "cpu" or d.memory_bytes is not None  # the CPU, or a GPU the driver lists
        if measurable and (s.trials_per_device == "auto" or batch_auto):
            plan_device(s, study, d, view, len(devices), cpu_threads(1), executor)
        elif batch_auto:  # nothing to measure on: the whole effective batch at once
            d.batch = s.trial.train.effective_batch_size
        if d.name == "cpu":
            d.threads = cpu_threads(d.slots)
    return devices


def run_sweep(s, devices, executor) -> int:
    import optuna

    from sweeper.loop import SweepLoop
    from sweeper.results.report import final_report, warm_imports
    from sweeper.search.strategy import describe
    from sweeper.study import NODE_CONNECTIONS, build_storage, counts, open_study, serve_trials, storage_problem
    from sweeper.view import LiveView

    # We drive ask/tell ourselves and send heartbeats from the launcher, which optuna calls
    # "experimental" and warns about on every ask.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO lines ("A new study created...") are ours to say
    storage = build_storage(s, connections=NODE_CONNECTIONS)
    study = open_study(s, storage)
    view = LiveView(s.n_trials, quiet=s.quiet)
    view.note(study_line(s, counts(study)["finished"]))
    args = f" ARGS={shlex.quote(shlex.join(s.overrides_shown))}" if s.overrides else ""
    view.note(describe(s))
    view.note(f"watch it in optuna-dashboard (http://127.0.0.1:{s.dashboard_port}/): make dashboard{args}")
    s.dir.mkdir(parents=True, exist_ok=True)
    executor.log_dir = s.dir  # the spares it starts from now on print there
    executor.stall_timeout, executor.trial_timeout = s.stall_timeout, s.trial_timeout
    plan_devices(s, study, view, devices, executor)
    threads = {d.label: f" ({d.threads} thread{'s' if d.threads > 1 else ''} each)" if d.threads else "" for d in devices}
    view.note("slots: " + ", ".join(f"{d.label} x{d.slots}{threads[d.label]}" for d in devices))
    if s.trial.train.per_device_train_batch_size == "auto":
        view.note("per-device batch (auto): " + ", ".join(
            f"{d.label} {d.batch} x {d.accumulation} accumulation" for d in devices)
            + f" = {s.trial.train.effective_batch_size} rows per step")
    # The final report's imports, on a thread once the last trial has started.
    warm = threading.Thread(target=warm_imports, name="warm-imports", daemon=True)
    loop = SweepLoop(s, study, storage, executor, view, after_last_start=warm.start, node=node_name(),
                     trials_storage=serve_trials(study))
    try:
        code = loop.run()
        if code == 0 and s.recheck_seeds:
            code = recheck(s, study, loop, view)
    except KeyboardInterrupt:
        loop.stop_all("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:
        problem = storage_problem(e, s)
        if problem is None:
            raise
        loop.stop_all("stopped: the study storage failed")
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_STORAGE
    finally:
        if warm.ident is not None:
            warm.join()  # no exit in the middle of an import
    if code:
        return code
    if s.final_report:
        print(final_report(study, s))
    return 0


def recheck(s, study, loop, view) -> int:
    """The re-check after the search (sweeper/recheck.py): its runs queued once, then run in the
    same slots until none is left."""
    from sweeper.recheck import configurations, enqueue_missing, planned

    queued = enqueue_missing(study, s)
    trials = study.get_trials(deepcopy=False)
    chosen = configurations(trials, s)
    if not chosen:
        return 0
    names = ", ".join(f"trial {t.number}" for t in chosen)
    view.note(f"re-check: {names} again on {s.recheck_seeds} more seed(s) each, {len(planned(trials, s))} runs "
              f"({len(queued)} queued now), uncounted by sweep.n_trials; the winner is the best mean "
              f"(sweep.recheck_seeds=0 turns it off)")
    view.n_trials = len(planned(trials, s))
    loop.recheck, loop.waiting_said = True, False
    return loop.run()


def node_name() -> str:
    """The machine trials run on, as the cluster names it (a SLURM task's node) or its host name."""
    import socket

    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def storage_from_environment(argv: list[str]) -> list[str]:
    """A SLURM array task gets the storage URL (it may hold a password) through the job's
    environment, never its script or command line (sweeper/slurm)."""
    from sweeper.settings import is_storage_override
    from sweeper.slurm import STORAGE_ENV

    url = os.environ.get(STORAGE_ENV)
    if url and not any(is_storage_override(o) for o in argv):
        return [*argv, f"sweep.storage={url}"]
    return argv


def run_on_slurm(s) -> int:
    """Create the study and its baseline here, once (Optuna's schema creation races when several
    processes meet a fresh PostgreSQL database), submit the array, then follow it."""
    import optuna

    from sweeper.follow import follow
    from sweeper.slurm import check_submission, submit
    from sweeper.study import build_storage, counts, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_submission(s)  # before the study and its baseline exist
    study = open_study(s, build_storage(s))
    print(study_line(s, counts(study)["finished"]), flush=True)
    job = submit(s)
    study.set_user_attr("slurm_jobs", [*study.user_attrs.get("slurm_jobs", []), job])
    print(f"submitted SLURM job {job}: {s.slurm.workers} sweep workers; their logs: "
          f"{s.dir / 'slurm'}/worker-{job}_*.log", flush=True)
    if not s.slurm.follow:
        print(f"follow it with: make follow ARGS=\"<the same ARGS>\"; cancel it with: scancel {job}")
        return 0
    print(f"following the study here: Ctrl-C stops following, not the job (cancel it with: scancel {job}; "
          f"follow again with: make follow ARGS=\"<the same ARGS>\")", flush=True)
    try:
        return follow(s, study, job)
    except KeyboardInterrupt:
        print(f"stopped following; SLURM job {job} goes on (cancel it with: scancel {job})", file=sys.stderr)
        return EXIT_INTERRUPTED


def hub_offline_note(trial) -> None:
    from trainers.offline import offline_if_hub_unreachable

    note = offline_if_hub_unreachable([trial.model.name_or_path, trial.data.name_or_path])
    if note:
        print(note, flush=True)


def _interrupt(signum, frame):
    from sweeper import loop

    if loop.LOOP_RUNNING.is_set():
        loop.STOP.set()  # the loop stops at its next safe point
    else:
        raise KeyboardInterrupt


def sweep(argv: list[str]):
    """The sweep the overrides describe, run or continued (or, with sweep.launcher=slurm, submitted
    and followed): (exit code, its settings). Bad input raises ConfigError before any study is
    touched."""
    from sweeper.settings import sweep_settings
    from sweeper.slots import find_devices

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    executor = None
    argv = storage_from_environment(argv)
    try:
        # Enough of the config to know the launcher and devices, so the first trial process starts
        # importing before the ~0.6 s of composing a trial config for every choice and range end.
        early = sweep_settings(argv, check_values=False)
        hub_offline_note(early.trial)  # before any trial process starts: they inherit it
        if early.launcher == "slurm":  # trials run in the array's tasks, none here
            from sweeper.slurm import require_sbatch

            require_sbatch()  # before the study and its baseline are created
            s = prepare(sweep_settings(argv))
            return run_on_slurm(s), s
        devices = find_devices(early.devices)
        executor = start_executor(devices)
        s = prepare(sweep_settings(argv))
        return run_sweep(s, devices, executor), s
    finally:
        if executor is not None:
            executor.close()


def main(argv: list[str]) -> int:
    from trainers.config import answer_flags

    answered = answer_flags(argv, "python -m sweeper")
    if answered is not None:
        return answered
    for signum in (signal.SIGTERM, signal.SIGINT):  # `kill` ends a sweep as cleanly as Ctrl-C
        signal.signal(signum, _interrupt)
    try:
        return sweep(argv)[0]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # Ctrl-C or kill outside the trial loop (it stops itself): at start, the memory probe, the report
        print("interrupted while no trial was running: the study keeps everything it holds; rerun the same command "
              "to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


def cli() -> None:
    """The qlora-sweep command (an installed package's `python -m sweeper`)."""
    from trainers.exit import exit_now

    exit_now(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
