"""Tells a stalled trial process from a slow one. While it trains, progress is a training step or
an eval batch (the worker counts them in progress.json). Before training starts and after it ends
(imports, a model download, loading and quantizing weights, saving), there are no steps to count,
so progress is the process using CPU or moving bytes (/proc/<pid>/stat and /proc/<pid>/io): a slow
download reads from its socket, loading burns CPU, while a hung data loader or a deadlock
waiting on a collective does neither, or spins without a step."""
import json
import time
from pathlib import Path


def _activity(pid: int) -> tuple:
    """CPU ticks and bytes read and written so far by the process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        cpu = None
    try:
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        moved = int(io["rchar"]) + int(io["wchar"])
    except (OSError, KeyError, ValueError):
        moved = None
    return cpu, moved


class ProgressWatch:
    def __init__(self, pid: int, progress_path: Path, stall_timeout: int | None, trial_timeout: int | None):
        self.pid, self.progress_path = pid, progress_path
        self.stall_timeout, self.trial_timeout = stall_timeout, trial_timeout
        self.started = self.last_progress = time.monotonic()
        self.seen: tuple | None = None
        self.phase = "starting"

    def _progress_mark(self) -> tuple:
        try:
            p = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            p = {}
        self.phase = p.get("phase", "starting")
        if self.phase == "training":
            return ("training", p.get("ticks"))
        return (self.phase, _activity(self.pid))

    def verdict(self) -> str | None:
        """None while the trial may go on; else why it must be stopped ('stalled ...', 'timed out ...')."""
        now = time.monotonic()
        if self.trial_timeout is not None and now - self.started > self.trial_timeout:
            return f"timed out: still running after sweep.trial_timeout={self.trial_timeout} s"
        mark = self._progress_mark()
        if mark != self.seen:
            self.seen, self.last_progress = mark, now
        elif self.stall_timeout is not None and now - self.last_progress > self.stall_timeout:
            what = "no training step or eval batch" if self.phase == "training" else f"no CPU or I/O while {self.phase}"
            return f"stalled: {what} for sweep.stall_timeout={self.stall_timeout} s"
        return None
