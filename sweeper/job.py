"""A trial job as it travels, whatever runs it: job.json into the trial's folder, progress.json
while it runs, result.json out, trial.log beside them, and the Trainer checkpoints a retry resumes
from. The folder is the whole contract between the sweep and a trial process."""
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainers.sft import STAGING


# The reason a trial process killed from outside the sweep, not for memory, fails with: the loop
# runs its values again from its checkpoint (sweeper/killed.py tells the two kinds of SIGKILL apart).
KILLED = "killed from outside"


@dataclass
class Job:
    trial_dir: Path
    sweep_overrides: list[str]      # the user's overrides, storage URL left out (it may hold a password)
    trial_overrides: list[str]      # this trial's values, output folder, tracking names, resume point
    values: dict                    # searched and tied values, for the trial's W&B config
    trial_id: int | None = None     # the study's trial to report to; None: a memory probe
    memory_share: dict | None = None  # {"gpu_fraction": f} or, tests on CPU, {"host_bytes": n}
    threads: int | None = None      # torch threads, on a CPU slot
    prune: bool = True              # False: a re-check run, trained to its end whatever its losses
    pause_at: int | None = None     # sweep.pruner=asha: stop once this step's checkpoint is saved (a rung)
    spare_follows: bool = False     # a new spare imports the stack beside this trial, on its slot's cores

    def write(self) -> Path:
        """Lay the job into its trial folder (stale outputs of an earlier attempt removed); returns job.json."""
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("result.json", "progress.json"):
            (self.trial_dir / stale).unlink(missing_ok=True)
        path = self.trial_dir / "job.json"
        path.write_text(json.dumps({**asdict(self), "trial_dir": str(self.trial_dir)}, indent=2))
        (self.trial_dir / "trial.log").write_text("")  # the trial process writes here once it has the job
        return path

    @classmethod
    def read(cls, path: Path) -> "Job":
        raw = json.loads(Path(path).read_text())
        return cls(**{**raw, "trial_dir": Path(raw["trial_dir"])})


@dataclass
class Outcome:
    state: str              # complete | pruned | failed
    value: float | None
    steps: int
    reason: str = ""
    facts: dict = field(default_factory=dict)  # e.g. resumed_from_step, first_step: user attrs of the trial


def write_result(trial_dir: Path, result: dict) -> None:
    """Whole or absent (a rename): a half-written result on a full disk is never read as complete."""
    tmp = trial_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(trial_dir / "result.json")


def read_result(trial_dir: Path) -> Outcome | None:
    """What the trial process said of itself, if it got that far."""
    try:
        r = json.loads((trial_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return Outcome(r["state"], r["value"], r["steps"], r.get("reason", ""), facts=r.get("facts", {}))


def read_progress(trial_dir: Path) -> dict | None:
    try:
        return json.loads((trial_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None


def last_step(trial_dir: Path) -> int:
    return int((read_progress(trial_dir) or {}).get("step", 0))


def failure_line(log: Path) -> str:
    """The exception line of a failed trial's traceback (else its last line), cut to 300 chars."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", line)]
    line = (errors or lines or ["no output"])[-1]
    return line if len(line) <= 300 else line[:297] + "..."


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / "trials" / str(number)


def readable(checkpoint: Path) -> bool:
    """Whole as far as can be told without loading it: its trainer state parses and its adapter
    weights are there (trainer_state.json is written last, and trainers.sft renames a checkpoint
    into place only once it is whole; a disk or a hand may still damage it later)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(w.stat().st_size > 0 for w in checkpoint.glob("*.safetensors"))


def last_checkpoint(folder: Path) -> Path | None:
    """The newest readable Trainer checkpoint in a trial folder."""
    done = [c for c in folder.glob("checkpoint-*") if c.name.rsplit("-", 1)[1].isdigit() and readable(c)]
    return max(done, key=lambda c: int(c.name.rsplit("-", 1)[1]), default=None)


def resume_point(trial_dirs: list[Path]) -> Path | None:
    """Where a retry starts: the newest checkpoint along its predecessors, most recent first (a
    retry killed before its own first checkpoint still has its predecessor's)."""
    for folder in reversed(trial_dirs):
        checkpoint = last_checkpoint(folder)
        if checkpoint is not None:
            return checkpoint
    return None


def remove_checkpoints(trial_dirs: list[Path]) -> None:
    """A finished trial keeps its adapter, not the optimizer states it was trained through (nor a
    checkpoint its killed predecessor was still writing)."""
    for folder in trial_dirs:
        for checkpoint in [*folder.glob("checkpoint-*"), folder / STAGING]:
            shutil.rmtree(checkpoint, ignore_errors=True)
