"""Starts one trial's process and watches it: heartbeats for the study while it lives, progress
for the live view, its stall and time limits, and its outcome (result.json, or its exception line
on failure). One spare process imports the training stack ahead of the next trial, hiding ~8 s of
imports per trial. Trial folders keep Trainer checkpoints until the trial ends, for its retry."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.settings import SweepSettings
from sweeper.view import LiveView
from sweeper.watch import ProgressWatch


@dataclass
class Outcome:
    state: str              # complete | pruned | failed
    value: float | None
    steps: int
    reason: str = ""
    facts: dict = field(default_factory=dict)  # e.g. resumed_from_step, first_step: user attrs of the trial


def trial_overrides(s: SweepSettings, number: int, values_overrides: list[str], resume_from: Path | None) -> list[str]:
    trial_dir = s.dir / "trials" / str(number)
    out = values_overrides + [f"output_dir={trial_dir}", f"tracking.group={s.study_name}",
                              f"tracking.run_name=trial-{number}", "tracking.job_type=trial"]
    if s.checkpoints:  # one per eval: a killed trial loses at most one eval interval
        out += ["train.save_strategy=steps", "train.save_steps=${train.eval_steps}"]
    if resume_from is not None:
        out.append(f"resume_from_checkpoint={resume_from}")
    return out


def last_checkpoint(trial_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint in a trial folder (trainer_state.json is written last)."""
    done = [c for c in trial_dir.glob("checkpoint-*") if (c / "trainer_state.json").is_file()]
    return max(done, key=lambda c: int(c.name.rsplit("-", 1)[1]), default=None)


def resume_point(trial_dirs: list[Path]) -> Path | None:
    """Where a retry starts: the newest checkpoint along its predecessors, most recent first (a
    retry killed before its own first checkpoint still has its predecessor's)."""
    for trial_dir in reversed(trial_dirs):
        checkpoint = last_checkpoint(trial_dir)
        if checkpoint is not None:
            return checkpoint
    return None


def remove_checkpoints(trial_dirs: list[Path]) -> None:
    """A finished trial keeps its adapter, not the optimizer states it was trained through."""
    for trial_dir in trial_dirs:
        for checkpoint in trial_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)


def failure_line(log: Path) -> str:
    """The exception line of a failed trial's traceback (else its last line), cut to 300 chars."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", line)]
    line = (errors or lines or ["no output"])[-1]
    return line if len(line) <= 300 else line[:297] + "..."


class TrialProcesses:
    """Fresh interpreters for trials (never forked from the sweep: no inherited state, and a crash,
    an OOM or leaked GPU memory ends with the trial), one always waiting with imports done."""

    def __init__(self, s: SweepSettings):
        self.log = s.dir / "spare.log"  # what a spare prints before it has a trial
        self.spare: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        with self.log.open("a") as out:
            return subprocess.Popen([sys.executable, "-m", "sweeper.worker", str(os.getpid())], stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT, text=True)

    def take(self, keep_spare: bool) -> subprocess.Popen:
        proc = self.spare if self.spare is not None and self.spare.poll() is None else self._start()
        self.spare = self._start() if keep_spare else None
        return proc

    def close(self) -> None:
        if self.spare is not None:
            self.spare.kill()
            self.spare.stdin.close()
            self.spare.wait()
            self.spare = None


def run_trial_process(s: SweepSettings, storage, trial, values: dict, overrides: list[str], view: LiveView,
                      processes: TrialProcesses, keep_spare: bool) -> Outcome:
    """Hand the trial to a waiting process and watch it until it ends."""
    trial_dir = s.dir / "trials" / str(trial.number)
    trial_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "progress.json"):
        (trial_dir / stale).unlink(missing_ok=True)
    job = {"trial_id": trial._trial_id, "trial_dir": str(trial_dir), "sweep_overrides": s.public_overrides,
           "trial_overrides": overrides, "values": values}
    (trial_dir / "job.json").write_text(json.dumps(job, indent=2))
    log = trial_dir / "trial.log"
    log.write_text("")  # the worker redirects its output here once it has the job
    proc = processes.take(keep_spare)
    # The storage URL may hold a password: it travels by pipe, never in a file or argv.
    proc.stdin.write(json.dumps({"job": str(trial_dir / "job.json"), "storage": s.storage}) + "\n")
    proc.stdin.close()
    watch = ProgressWatch(proc.pid, trial_dir / "progress.json", s.stall_timeout, s.trial_timeout)
    stopped = None
    try:
        last_beat = 0.0
        while proc.poll() is None:
            if time.monotonic() - last_beat >= s.heartbeat_interval:
                storage.record_heartbeat(trial._trial_id)
                last_beat = time.monotonic()
            view.progress(trial_dir / "progress.json")
            stopped = watch.verdict()
            if stopped:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.25)
    except BaseException:  # Ctrl-C or a kill of the sweep: take the trial down with us
        proc.kill()
        proc.wait()
        raise
    result_path = trial_dir / "result.json"
    if stopped:
        return Outcome("failed", None, _last_step(trial_dir), stopped)
    if proc.returncode == 0 and result_path.exists():
        r = json.loads(result_path.read_text())
        return Outcome(r["state"], r["value"], r["steps"], facts=r.get("facts", {}))
    return Outcome("failed", None, _last_step(trial_dir), f"exit {proc.returncode}: {failure_line(log)}")


def _last_step(trial_dir: Path) -> int:
    try:
        return int(json.loads((trial_dir / "progress.json").read_text()).get("step", 0))
    except (OSError, ValueError):
        return 0
