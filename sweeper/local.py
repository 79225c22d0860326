"""The local executor: trial jobs as fresh processes on this machine, K slots per device, each
slot keeping one spare process that has imported the training stack (~8 s per trial hidden) and
waits for its job. A trial process is never forked from the sweep: no inherited state, and a
crash, an OOM or leaked GPU memory ends with the trial."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from sweeper.job import KILLED, Job, Outcome, failure_line, last_step, read_progress, read_result
from sweeper.disk import state_of
from sweeper.killed import KillWitness
from sweeper.slots import Device, Slot, gpu_used_bytes, slot_env
from sweeper.watch import ProgressWatch


class TrialProcesses:
    """One slot's trial processes: one always waiting with imports done, started with the slot's
    device in its environment."""

    def __init__(self, slot: Slot, log_dir):
        self.slot, self.log_dir = slot, log_dir
        self.spare: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        # What a spare prints before it has a trial; its trial's output goes to the trial's log.
        with (self.log_dir() / f"spare-{self.slot.label}.log").open("a") as out:
            return subprocess.Popen([sys.executable, "-m", "sweeper.worker", str(os.getpid())], stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, **slot_env(self.slot.device)})

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


def exit_reason(returncode: int, log: Path, witness: KillWitness | None = None) -> str:
    if returncode == -signal.SIGKILL:  # not us: we kill only stalled trials, and say so
        oom, evidence = witness.verdict() if witness is not None else (False, "no record was kept")
        if oom:
            return f"out of memory (host): the kernel's out-of-memory killer ended it ({evidence})"
        return f"{KILLED}: SIGKILL, not by the sweep, and not for memory ({evidence})"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    full = state_of(log.parent)
    if full is not None:  # it could not even write its result: the disk says why
        return f"could not write: {log.parent} is on a disk that is {full} (exit {returncode}: {failure_line(log)})"
    return f"exit {returncode}: {failure_line(log)}"


class LocalHandle:
    def __init__(self, proc: subprocess.Popen, job: Job, stall_timeout: int | None, trial_timeout: int | None):
        self.proc, self.trial_dir = proc, job.trial_dir
        self.watch = ProgressWatch(proc.pid, job.trial_dir / "progress.json", stall_timeout, trial_timeout)
        self.witness = KillWitness(proc.pid, (job.memory_share or {}).get("host_bytes"))

    def poll(self) -> Outcome | None:
        self.witness.sample()
        if self.proc.poll() is None:
            stopped = self.watch.verdict()
            if stopped is None:
                return None
            self.kill()
            return Outcome("failed", None, last_step(self.trial_dir), stopped)
        result = read_result(self.trial_dir) if self.proc.returncode == 0 else None
        if result is not None:
            return result
        return Outcome("failed", None, last_step(self.trial_dir),
                       exit_reason(self.proc.returncode, self.trial_dir / "trial.log", self.witness))

    def progress(self) -> dict | None:
        return read_progress(self.trial_dir)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class LocalExecutor:
    """Slots on this machine's devices. Spares print to spare-<slot>.log in log_dir once the study's
    folder may be written (a refused sweep writes nothing there), to a temporary file before."""

    def __init__(self, devices: list[Device], stall_timeout: int | None = None, trial_timeout: int | None = None):
        self.devices, self.stall_timeout, self.trial_timeout = devices, stall_timeout, trial_timeout
        self.pools: dict[tuple[str, int], TrialProcesses] = {}
        self.log_dir: Path | None = None
        self._early = Path(tempfile.mkdtemp(prefix="qlora-sweep-spares-"))

    def _log_dir(self) -> Path:
        return self.log_dir or self._early

    def _pool(self, slot: Slot) -> TrialProcesses:
        key = (slot.device.name, slot.index)
        if key not in self.pools:
            self.pools[key] = TrialProcesses(slot, self._log_dir)
        return self.pools[key]

    def warm(self, device: Device) -> None:
        """Start the device's first trial process now: its imports overlap the sweep's checks."""
        self._pool(Slot(device, 0)).start_spare()

    def capacity(self) -> list[Slot]:
        return [Slot(d, i) for d in self.devices for i in range(d.slots)]

    def submit(self, job: Job, slot: Slot, storage_url: str, keep_spare: bool) -> LocalHandle:
        job_path = job.write()
        proc = self._pool(slot).take(keep_spare)
        # The storage URL may hold a password: it travels by pipe, never in a file or argv.
        proc.stdin.write(json.dumps({"job": str(job_path), "storage": storage_url}) + "\n")
        proc.stdin.close()
        return LocalHandle(proc, job, self.stall_timeout, self.trial_timeout)

    def set_slots(self, device: Device, k: int) -> None:
        for index in range(k, device.slots):
            stale = self.pools.pop((device.name, index), None)
            if stale is not None:
                stale.close()
        device.slots = k

    def device_memory(self, handles: list[LocalHandle]) -> list[int]:
        used = gpu_used_bytes()
        return [used.get(h.proc.pid, 0) for h in handles]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        shutil.rmtree(self._early, ignore_errors=True)
