"""The stall rule on real processes: before training, CPU or I/O is progress (a slow load or
download goes on); during training only steps and eval batches are (a spinning deadlock ends)."""
import json
import subprocess
import sys
import time

import pytest

from sweeper.watch import ProgressWatch

BUSY = "while True: pass"                       # loading, quantizing: CPU all the time
READING = "import os, time\nfd = os.open('/dev/zero', os.O_RDONLY)\nwhile True: os.read(fd, 4096); time.sleep(0.05)"
IDLE = "import time; time.sleep(60)"            # a hung data loader: nothing at all


def watch_for(code: str, progress: dict | None, tmp_path, seconds=2.5, stall=1):
    path = tmp_path / "progress.json"
    if progress is not None:
        path.write_text(json.dumps(progress))
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        watch = ProgressWatch(proc.pid, path, stall_timeout=stall, trial_timeout=None)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            verdict = watch.verdict()
            if verdict:
                return verdict
            time.sleep(0.1)
        return None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("code", [BUSY, READING])
def test_loading_with_cpu_or_io_is_progress(code, tmp_path):
    assert watch_for(code, {"phase": "loading", "ticks": 0}, tmp_path) is None


def test_loading_with_nothing_happening_is_a_stall(tmp_path):
    verdict = watch_for(IDLE, {"phase": "loading", "ticks": 0}, tmp_path)
    assert verdict == "stalled: no CPU or I/O while loading for sweep.stall_timeout=1 s"


def test_training_without_steps_is_a_stall_even_when_spinning(tmp_path):
    verdict = watch_for(BUSY, {"phase": "training", "ticks": 7}, tmp_path)
    assert verdict == "stalled: no training step or eval batch for sweep.stall_timeout=1 s"


def test_trial_timeout(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        watch = ProgressWatch(proc.pid, tmp_path / "progress.json", stall_timeout=None, trial_timeout=1)
        assert watch.verdict() is None
        time.sleep(1.2)
        assert watch.verdict() == "timed out: still running after sweep.trial_timeout=1 s"
    finally:
        proc.kill()
        proc.wait()
