"""`python -m sweeper [hydra overrides]` (what `make sweep` runs): validate everything, open the
study, keep every slot of every device busy with trial processes until it holds sweep.n_trials
finished ones, report."""
import os
import signal
import sys
import warnings

from trainers.settings import ConfigError

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def prepare(overrides: list[str]):
    """Every check that can refuse the sweep, before the study is opened or changed."""
    from sweeper.checks import check_before_study
    from sweeper.settings import sweep_settings
    from trainers import quiet

    s = sweep_settings(overrides)
    quiet.install()
    for line in check_before_study(s):  # what the target modules adapt on this model, said once
        print(line, flush=True)
    return s


def devices_for(s, study, view):
    """The devices this sweep fills, K on each and, with per_device_train_batch_size=auto, the
    per-device batch (measured; see sweeper/packing and sweeper/probe)."""
    from sweeper.probe import plan_device
    from sweeper.slots import cpu_threads, find_devices

    devices = find_devices(s.devices)
    batch_auto = s.trial.train.per_device_train_batch_size == "auto"
    for d in devices:
        if s.trials_per_device != "auto":
            d.slots = s.trials_per_device
        if batch_auto:
            d.effective = s.trial.train.effective_batch_size
        measurable = d.name == "cpu" or d.memory_bytes is not None  # the CPU, or a GPU the driver lists
        if measurable and (s.trials_per_device == "auto" or batch_auto):
            plan_device(s, study, d, view, len(devices), cpu_threads(1))
        elif batch_auto:  # nothing to measure on: the whole effective batch at once
            d.batch = s.trial.train.effective_batch_size
        if d.name == "cpu":
            d.threads = cpu_threads(d.slots)
    return devices


def run_sweep(s) -> int:
    import optuna

    from sweeper.loop import SweepLoop
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
    view.note(f"study {s.study_name!r}: {counts(study)['finished']}/{s.n_trials} trials finished; "
              f"storage {s.storage_shown}")
    devices = devices_for(s, study, view)
    view.note("slots: " + ", ".join(f"{d.label} x{d.slots}" + (f" ({d.threads} threads each)" if d.threads else "")
                                    for d in devices))
    if s.trial.train.per_device_train_batch_size == "auto":
        view.note("per-device batch (auto): " + ", ".join(
            f"{d.label} {d.batch} x {d.accumulation} accumulation" for d in devices)
            + f" = {s.trial.train.effective_batch_size} rows per step")
    loop = SweepLoop(s, study, storage, devices, view)
    try:
        code = loop.run()
    except KeyboardInterrupt:
        loop.stop_all("interrupted")
        return EXIT_INTERRUPTED
    finally:
        loop.close()
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
    try:
        s = prepare(argv)
        return run_sweep(s)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
