"""Starts one trial's process and watches it: heartbeats for the study while it lives, progress
for the live view, its stall and time limits, and its outcome (result.json, or its exception line
on failure). One spare process imports the training stack ahead of the next trial, hiding ~8 s of
imports per trial. Trial folders keep Trainer checkpoints until the trial ends, for its retry."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.settings import SweepSettings
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
    """Fresh interpreters for one slot's trials (never forked from the sweep: no inherited state, and
    a crash, an OOM or leaked GPU memory ends with the trial), one always waiting with imports done,
    started with the slot's device in its environment."""

    def __init__(self, log: Path, env: dict):
        self.log = log  # what a spare prints before it has a trial
        self.env = {**os.environ, **env}
        self.spare: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        with self.log.open("a") as out:
            return subprocess.Popen([sys.executable, "-m", "sweeper.worker", str(os.getpid())], stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT, text=True, env=self.env)

    def start_spare(self) -> None:
        """Start the waiting process now (its imports overlap whatever the sweep does meanwhile)."""
        if self.spare is None or self.spare.poll() is not None:
            self.spare = self._start()

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


def exit_reason(returncode: int, log: Path) -> str:
    if returncode == -signal.SIGKILL:  # not us (we kill only stalled trials, and say so): the kernel
        return ("out of memory (host): killed by SIGKILL, not by the sweep: most likely the kernel's "
                "out-of-memory killer")
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit {returncode}: {failure_line(log)}"


class RunningTrial:
    """One trial's process, polled by the sweep loop: its heartbeats, its progress for the view,
    its stall and time limits, and its outcome once it ends."""

    def __init__(self, s: SweepSettings, storage, trial, trial_dir: Path, proc: subprocess.Popen, slot):
        self.s, self.storage, self.trial, self.trial_dir, self.proc, self.slot = s, storage, trial, trial_dir, proc, slot
        self.watch = ProgressWatch(proc.pid, trial_dir / "progress.json", s.stall_timeout, s.trial_timeout)
        self.started = time.monotonic()
        self.last_beat = 0.0
        self.slots_at_launch = slot.device.slots if slot is not None else 1  # K when its share was set

    @property
    def number(self) -> int:
        return self.trial.number

    def poll(self) -> Outcome | None:
        """None while the trial runs; its Outcome once it has ended (or was stopped for a limit)."""
        if time.monotonic() - self.last_beat >= self.s.heartbeat_interval:
            self.storage.record_heartbeat(self.trial._trial_id)
            self.last_beat = time.monotonic()
        if self.proc.poll() is None:
            stopped = self.watch.verdict()
            if stopped is None:
                return None
            self.kill()
            return Outcome("failed", None, _last_step(self.trial_dir), stopped)
        result_path = self.trial_dir / "result.json"
        if self.proc.returncode == 0 and result_path.exists():
            r = json.loads(result_path.read_text())
            return Outcome(r["state"], r["value"], r["steps"], r.get("reason", ""), facts=r.get("facts", {}))
        return Outcome("failed", None, _last_step(self.trial_dir), exit_reason(self.proc.returncode,
                                                                               self.trial_dir / "trial.log"))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def launch(s: SweepSettings, storage, trial, values: dict, overrides: list[str], processes: TrialProcesses,
           keep_spare: bool, slot, memory_share: dict | None) -> RunningTrial:
    """Hand the trial to the slot's waiting process. memory_share caps what the trial process may
    take ({"gpu_fraction": f} or, for tests on CPU, {"host_bytes": n}), so a wrong estimate costs
    that trial, not its neighbours."""
    trial_dir = s.dir / "trials" / str(trial.number)
    job = {"trial_id": trial._trial_id, "trial_dir": str(trial_dir), "sweep_overrides": s.public_overrides,
           "trial_overrides": overrides, "values": values, "memory_share": memory_share,
           "threads": slot.device.threads if slot is not None else None}
    proc = hand_off(processes, keep_spare, job, s.storage)
    return RunningTrial(s, storage, trial, trial_dir, proc, slot)


def hand_off(processes: TrialProcesses, keep_spare: bool, job: dict, storage_url: str) -> subprocess.Popen:
    """Give a job (written to its trial folder as job.json) to the slot's waiting process."""
    trial_dir = Path(job["trial_dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "progress.json"):
        (trial_dir / stale).unlink(missing_ok=True)
    (trial_dir / "job.json").write_text(json.dumps(job, indent=2))
    (trial_dir / "trial.log").write_text("")  # the worker redirects its output here once it has the job
    proc = processes.take(keep_spare)
    # The storage URL may hold a password: it travels by pipe, never in a file or argv.
    proc.stdin.write(json.dumps({"job": str(trial_dir / "job.json"), "storage": storage_url}) + "\n")
    proc.stdin.close()
    return proc


def _last_step(trial_dir: Path) -> int:
    try:
        return int(json.loads((trial_dir / "progress.json").read_text()).get("step", 0))
    except (OSError, ValueError):
        return 0
