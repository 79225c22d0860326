"""One trial job in its own process (own CUDA context, freed on exit). run_job(job, storage) does
the work: re-attaches to the study's trial, runs the trainers job with a callback that reports eval
loss and prunes, writes result.json. `python -m sweeper.worker PARENT_PID` is the local executor's
transport around it: a spare that imports the training stack while the previous trial still
trains, dies with its sweep, reads {job path, storage URL} from stdin and sends its output to the
trial's log."""
import ctypes
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from sweeper.job import Job, write_result
from trainers.phases import mark

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """A SIGKILLed sweep must not leave its trial training on: the kernel kills us with it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return  # not Linux: the heartbeat's grace period still catches the orphan's trial
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class Progress:
    """progress.json, read by the sweep's live view and stall watch: the phase, the step, the last
    eval loss, and a tick per training step or eval batch (eval of a big model takes minutes)."""

    def __init__(self, path: Path):
        self.path = path
        self.state = {"phase": "loading", "step": 0, "max_steps": 0, "eval_loss": None, "ticks": 0}
        self.last_write = 0.0
        self.write(force=True)

    def update(self, force: bool = False, **changes) -> None:
        self.state.update(changes)
        self.write(force)

    def tick(self) -> None:
        self.state["ticks"] += 1
        self.write()

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_write > 1.0:
            self.last_write = now
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            tmp.replace(self.path)


class Paused(Exception):
    """sweep.pruner=asha: the trial reached its rung and its checkpoint there is saved."""


def trial_callback(trial, progress: Progress, meter=None, pause_at: int | None = None):
    """Reports each eval loss to the study and stops training when the pruner says so, or when
    the loss is NaN/inf (pruned rather than failed, so TPE learns to avoid those values); with
    pause_at, stops once that step's checkpoint is saved. trial=None (a memory probe): progress only."""
    import optuna
    from transformers import TrainerCallback

    class ReportAndPrune(TrainerCallback):
        def __init__(self):
            self.step = 0
            self.first_step = None  # the first step this process trained: 21 after resuming at 20
            self.eval_loss = None

        def on_train_begin(self, args, state, control, **kwargs):
            progress.update(force=True, phase="training", step=state.global_step, max_steps=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            self.step = state.global_step
            if self.first_step is None:
                self.first_step = state.global_step
            progress.update(step=state.global_step, ticks=progress.state["ticks"] + 1)

        def on_prediction_step(self, args, state, control, **kwargs):
            progress.tick()

        def on_save(self, args, state, control, **kwargs):
            if pause_at is not None and state.global_step >= pause_at:
                import wandb

                if wandb.run is not None:
                    from trainers.tracking import wandb_names

                    cost = meter.summary() if meter is not None else {}
                    wandb.run.summary.update(wandb_names({"state": "paused", "paused_at_step": state.global_step,
                                                          "eval_loss": self.eval_loss, **cost}))
                raise Paused(f"paused at step {state.global_step} (eval_loss {self.eval_loss:.4f}), its checkpoint "
                             "kept for a continuation")

        def on_train_end(self, args, state, control, **kwargs):
            progress.update(force=True, phase="saving")

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            loss, self.step = float(metrics["eval_loss"]), state.global_step
            self.eval_loss = loss
            progress.update(force=True, step=state.global_step, eval_loss=loss)
            if trial is None:
                return
            if math.isfinite(loss):
                trial.report(loss, self.step)
            # Not at the last step: a trial that trained all its steps is complete, whatever the
            # pruner makes of its final loss (a retry that resumed near its end was reported pruned).
            last = 0 < state.max_steps <= state.global_step
            if not math.isfinite(loss) or (not last and trial.should_prune()):
                import wandb

                if wandb.run is not None:
                    cost = meter.summary() if meter is not None else {}
                    from trainers.tracking import wandb_names

                    wandb.run.summary.update(wandb_names({"state": "pruned", "pruned_at_step": self.step,
                                                          "eval_loss": loss, **cost}))
                raise optuna.TrialPruned(f"pruned at step {self.step} (eval_loss {loss:.4f})")

    return ReportAndPrune()


def yield_a_core(threads: int, seconds: float):
    """A callback that trains on one thread fewer until `seconds` have passed, then on `threads`.
    The slot's next spare imports the stack (one core, busy) beside the trial's first seconds;
    torch's threads wait for each other at every op, so one of them sharing a core with the import
    stalls them all: 70 steps of the demo model trained in 22 s on 2 threads, 10 s on 1 (2 cores,
    2026-12-04). `seconds`: how long this process's own imports took, as a spare, on this machine."""
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(threads - 1)
    until = time.monotonic() + seconds

    class YieldACore(TrainerCallback):
        done = False

        def on_step_end(self, args, state, control, **kwargs):
            if not self.done and time.monotonic() >= until:
                torch.set_num_threads(threads)
                self.done = True

    return YieldACore()


def cap_memory(share: dict | None) -> None:
    """This trial's share of its device, enforced here so a wrong estimate costs this trial only:
    PyTorch's allocator cap on a GPU; for tests on CPU, an address-space limit above what this
    process (imports done) already maps."""
    if not share:
        return
    if "gpu_fraction" in share:
        import torch

        if torch.cuda.is_available():  # a torch without CUDA trains on the CPU: nothing to cap there
            torch.cuda.set_per_process_memory_fraction(share["gpu_fraction"])
    if "host_bytes" in share:
        import resource

        status = Path("/proc/self/status").read_text()
        mapped = int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mapped + share["host_bytes"], resource.RLIM_INFINITY))


def probe(settings, progress: Progress, trial_dir: Path) -> dict:
    """A memory probe (sweeper.probe): train a few steps, then say this process's own peaks."""
    import resource

    import torch

    from trainers.sft import run_trial

    metrics = run_trial(settings, [trial_callback(None, progress)])
    facts = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():  # PyTorch's view, for comparison with the driver's (sampled by the sweep)
        facts["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return {"state": "complete", "value": metrics["eval_loss"], "steps": metrics["steps"], "facts": facts}


def preload() -> None:
    """The imports that cost ~8 s per trial on 2 CPU cores (peft pulls in bitsandbytes), done
    while the spare waits. Importing them here initialises CUDA, as it must in a trial process."""
    # First, while few modules are loaded: wandb.init imports its launch inputs, whose pydantic
    # models read their docstrings through inspect, which walks every loaded module. After the
    # stack that made wandb.init take 1.50 s, with this first 0.31 s (2 cores, 2026-12-04).
    try:
        import wandb.sdk.launch.inputs.internal  # noqa: F401  (wandb 0.31's path; a later one may move it)
    except ImportError:
        pass
    from trainers.bnb_import import import_bitsandbytes

    import_bitsandbytes()  # before peft and trl import it their way
    import optuna
    import peft  # noqa: F401
    import wandb  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import sweeper.settings  # noqa: F401
    import trainers.sft  # noqa: F401
    from trainers.config import compose_config

    compose_config([])  # Hydra's first compose in a process costs ~0.1 s more than the next
    # The trial opens the study through its sweep process's gRPC proxy (sweeper.study.serve_trials).
    import grpc  # noqa: F401
    optuna.storages.GrpcStorageProxy  # noqa: B018  (optuna imports the client module on first use)


def redirect_output(log: Path) -> None:
    """From here on the trial's prints, warnings and tracebacks go to its own log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def disk_problem(e: BaseException) -> str | None:
    """'could not write: <path>: the disk is full' for a write the disk refused, anywhere in the
    exception's chain (the Trainer saving a checkpoint or the adapter wraps nothing, safetensors may)."""
    from sweeper.disk import describe_error

    while e is not None:
        if isinstance(e, OSError) and (said := describe_error(e)):
            return f"could not write: {said}"
        e = e.__cause__ or e.__context__
    return None


def run_job(job: Job, storage_url: str, preloaded_s: float = 0.0) -> dict:
    """Run one trial job (or memory probe) in this process and write its result.json; returns it.
    storage_url: the study's storage, or its sweep process's proxy (grpc://host:port). An exception
    other than the trial's own out of memory propagates: the trial failed."""
    import optuna

    from sweeper.settings import sweep_settings
    from sweeper.search.strategy import build_pruner
    from sweeper.study import trial_storage
    from trainers import quiet
    from trainers.config import compose_config
    from trainers.settings import trial_settings

    progress = Progress(job.trial_dir / "progress.json")
    settings = trial_settings(compose_config(job.sweep_overrides + job.trial_overrides))
    quiet.install()
    from trainers.sft import out_of_memory, run_trial

    if job.trial_id is None:
        result = probe(settings, progress, job.trial_dir)
        write_result(job.trial_dir, result)
        return result
    s = sweep_settings(job.sweep_overrides, check_values=False)
    pruner = build_pruner(s) if job.prune else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=s.study_name, storage=trial_storage(storage_url), pruner=pruner)
    trial = optuna.trial.Trial(study, job.trial_id)

    cap_memory(job.memory_share)
    if job.threads:  # a spare started before the slot's K was known imported torch with every core
        import torch

        torch.set_num_threads(job.threads)
    from trainers.cost import cost_meter

    meter = cost_meter()
    callback = trial_callback(trial, progress, meter, job.pause_at)
    callbacks = [callback]
    if job.threads and job.threads > 1 and job.spare_follows:
        callbacks.append(yield_a_core(job.threads, preloaded_s))  # the next spare's imports take about as long
    # As this process sees it: the device the sweep gave its slot.
    facts = {"resumed_from_step": 0, "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}
    if settings.resume_from_checkpoint is not None:
        facts["resumed_from_step"] = int(settings.resume_from_checkpoint.name.rsplit("-", 1)[1])
    mark("configured")
    try:
        metrics = run_trial(settings, callbacks, extra_config={"trial": {"number": trial.number, **job.values}},
                            meter=meter)
        result = {"state": "complete", "value": metrics[s.objective], "steps": metrics["steps"]}
        facts.update({k: metrics[k] for k in ("eval_loss", "price_mae", "price_within_20") if k in metrics})
    except optuna.TrialPruned as e:
        print(e, flush=True)
        result = {"state": "pruned", "value": callback.eval_loss, "steps": callback.step}
    except Paused as e:
        print(e, flush=True)
        result = {"state": "paused", "value": callback.eval_loss, "steps": callback.step}
    except Exception as e:  # out of memory or a full disk is said as such; anything else: a crash
        reason = out_of_memory(e) or disk_problem(e)
        if reason is None:
            raise
        traceback.print_exc()
        result = {"state": "failed", "value": None, "steps": callback.step, "reason": reason}
    facts["first_step"] = callback.first_step
    facts.update(meter.summary())  # what it cost, complete, pruned or out of memory alike
    result = {**result, "facts": facts}
    write_result(job.trial_dir, result)
    return result


def main(parent_pid: int) -> int:
    die_with_parent(parent_pid)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    started = time.monotonic()
    preload()
    preloaded_s = time.monotonic() - started
    line = sys.stdin.readline().strip()
    if not line:  # the sweep ended without needing this spare
        return 0
    mark("job_received")
    handed = json.loads(line)  # {"job": path, "storage": url}: the URL may hold a password, so no file has it
    job = Job.read(Path(handed["job"]))
    redirect_output(job.trial_dir / "trial.log")
    run_job(job, handed["storage"], preloaded_s)
    # Everything is saved, W&B finished: skip the interpreter's teardown (~1.5 s of freeing a
    # trained model's objects), which the sweep would otherwise wait for before the next trial.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
