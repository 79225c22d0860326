"""`python -m sweeper [hydra overrides]` (what `make sweep` runs): validate everything, open the
study, keep every slot of every device busy with trial processes until it holds sweep.n_trials
finished ones, report."""
import os
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from trainers.settings import ConfigError

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def prepare(s) -> None:
    """Every check that can refuse the sweep, before the study is opened or changed."""
    from sweeper.checks import check_before_study
    from trainers import quiet

    quiet.install()
    for line in check_before_study(s):  # what the target modules adapt on this model, said once
        print(line, flush=True)


def _early_log() -> Path:
    return Path(tempfile.gettempdir()) / f"qlora-sweep-spare-{os.getpid()}.log"


def first_spare(devices):
    """The first device's first trial process, started before the checks so its ~8 s of imports
    overlap them (it is the memory probe's, or the first trial's). Its log is a temporary file
    until the study's folder may be written: a refused sweep writes nothing there."""
    from sweeper.launch import TrialProcesses
    from sweeper.slots import slot_env

    processes = TrialProcesses(_early_log(), slot_env(devices[0]))
    processes.start_spare()
    return processes


def plan_devices(s, study, view, devices, first):
    """K on each device and, with per_device_train_batch_size=auto, the per-device batch (measured;
    see sweeper/packing and sweeper/probe). The first device's probe runs on the waiting `first`."""
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
            plan_device(s, study, d, view, len(devices), cpu_threads(1), first if d is devices[0] else None)
        elif batch_auto:  # nothing to measure on: the whole effective batch at once
            d.batch = s.trial.train.effective_batch_size
        if d.name == "cpu":
            d.threads = cpu_threads(d.slots)
    return devices


def run_sweep(s, devices, first) -> int:
    import optuna

    from sweeper.loop import SweepLoop
    from sweeper.report import final_report, warm_imports
    from sweeper.study import build_storage, counts, open_study
    from sweeper.view import LiveView

    # We drive ask/tell ourselves and send heartbeats from the launcher, which optuna calls
    # "experimental" and warns about on every ask.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    storage = build_storage(s)
    study = open_study(s, storage)
    view = LiveView(s.n_trials)
    view.note(f"study {s.study_name!r}: {counts(study)['finished']}/{s.n_trials} trials finished; "
              f"storage {s.storage_shown}")
    s.dir.mkdir(parents=True, exist_ok=True)
    first.log = s.dir / f"spare-{devices[0].label}.log"  # the processes it starts from now on
    plan_devices(s, study, view, devices, first)
    view.note("slots: " + ", ".join(f"{d.label} x{d.slots}" + (f" ({d.threads} threads each)" if d.threads else "")
                                    for d in devices))
    if s.trial.train.per_device_train_batch_size == "auto":
        view.note("per-device batch (auto): " + ", ".join(
            f"{d.label} {d.batch} x {d.accumulation} accumulation" for d in devices)
            + f" = {s.trial.train.effective_batch_size} rows per step")
    # The final report's imports, on a thread once the last trial has started.
    warm = threading.Thread(target=warm_imports, name="warm-imports", daemon=True)
    loop = SweepLoop(s, study, storage, devices, view, first, after_last_start=warm.start)
    try:
        code = loop.run()
    except KeyboardInterrupt:
        loop.stop_all("interrupted")
        return EXIT_INTERRUPTED
    finally:
        loop.close()
        if warm.ident is not None:
            warm.join()  # no exit in the middle of an import
    if code:
        return code
    print(final_report(study, s))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from trainers.config import hydra_cli, wants_hydra_cli

    if wants_hydra_cli(argv):
        return hydra_cli(argv, "python -m sweeper")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a sweep as cleanly as Ctrl-C
    from sweeper.settings import sweep_settings
    from sweeper.slots import find_devices

    first = None
    try:
        # Enough of the config to know the devices, so the first trial process starts importing
        # before the ~0.6 s of composing a trial config for every choice and range end.
        devices = find_devices(sweep_settings(argv, check_values=False).devices)
        first = first_spare(devices)
        s = sweep_settings(argv)
        prepare(s)
        return run_sweep(s, devices, first)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if first is not None:
            first.close()
            _early_log().unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
