"""Where trial jobs run: the seam between the loop's policy (what to try, when, what to record)
and the machinery that starts a job, watches it and reads its outcome. Today there is one
implementation, sweeper.local (processes on this machine's devices, a warm spare per slot); a
cluster engine that runs single trials (a Kubernetes Indexed Job, Ray) would be a second. Many
machines on SLURM reuse the local one: each array task is a whole sweep process (sweeper.slurm)."""
from typing import Protocol

from sweeper.job import Job, Outcome
from sweeper.slots import Device, Slot


class Handle(Protocol):
    """One submitted job."""

    def poll(self) -> Outcome | None:
        """None while the job runs; its Outcome once it has ended, or was stopped for a limit."""

    def progress(self) -> dict | None:
        """The trial's progress.json: phase, step, max_steps, eval_loss."""

    def kill(self) -> None:
        """Stop it now (its Outcome is then of no interest)."""


class Executor(Protocol):
    def capacity(self) -> list[Slot]:
        """Every slot trials may run in now: K per device (K may fall after an out-of-memory failure)."""

    def submit(self, job: Job, slot: Slot, storage_url: str, keep_spare: bool) -> Handle:
        """Run the job in the slot. The storage URL may hold a password: it must reach the trial
        without being written to a file or a command line. keep_spare: more trials will follow
        in this slot, so have their start-up done before they are needed."""

    def set_slots(self, device: Device, k: int) -> None:
        """From now on K trials side by side on the device."""

    def device_memory(self, handles: list[Handle]) -> list[int]:
        """Each job's memory on its device now, as the driver sees it (0 where unknown)."""

    def close(self) -> None:
        """Stop what waits for jobs that will not come."""
