"""Why a trial process died of SIGKILL, by evidence: the kernel's out-of-memory record for its pid
(the kernel log, where this machine lets us read it), its cgroup's out-of-memory kill count rising
while it ran, or, with neither readable, its peak memory against what it had. A SIGKILL with no
such evidence (an operator's kill -9, a scheduler's, a neighbour's OOM that took the wrong
process) is a crash to retry, not a configuration that does not fit."""
import os
import re
import subprocess
from pathlib import Path

# What Linux prints when its OOM killer ends a process: "Out of memory: Killed process 1234 (python)",
# "Memory cgroup out of memory: Killed process 1234 ...", "oom-kill:...,task=python,pid=1234,...".
OOM_LINE = re.compile(r"(?:Killed process|oom-kill:.*?\bpid=)\s*(\d+)\b")


def kernel_oom_pids() -> set[int] | None:
    """Pids the kernel log says the OOM killer ended, or None where the log cannot be read."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return {int(pid) for pid in OOM_LINE.findall(out.stdout)}


def _memory_cgroup(pid: int | str = "self") -> Path | None:
    """This process's memory cgroup folder: v2's unified one, or v1's memory controller."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            if (folder / "memory.events").exists():
                return folder
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if folder.exists():
                return folder
    return None


def cgroup_oom_kills(folder: Path | None) -> int | None:
    """The OOM kills counted in a memory cgroup so far, or None where unreadable."""
    if folder is None:
        return None
    for name in ("memory.events", "memory.oom_control"):
        try:
            for line in (folder / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident memory so far (VmHWM), read while it lives."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class KillWitness:
    """Watches one trial process: the cgroup's OOM count when it started, its peak memory while it
    runs; asked, after a SIGKILL, whether the kernel's OOM killer did it."""

    def __init__(self, pid: int, memory_limit: int | None = None):
        self.pid = pid
        self.cgroup = _memory_cgroup(pid) or _memory_cgroup()
        self.kills_at_start = cgroup_oom_kills(self.cgroup)
        self.limit = memory_limit or host_memory_bytes()
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, peak_rss_bytes(self.pid) or 0)

    def verdict(self) -> tuple[bool, str]:
        """(out of memory?, the evidence, said for the trial's fail reason)."""
        pids = kernel_oom_pids()
        if pids is not None and self.pid in pids:
            return True, f"the kernel log records its OOM kill (pid {self.pid})"
        kills = cgroup_oom_kills(self.cgroup)
        if self.kills_at_start is not None and kills is not None and kills > self.kills_at_start:
            return True, f"its memory cgroup counted {kills - self.kills_at_start} OOM kill(s) while it ran"
        if pids is not None or kills is not None:
            return False, f"no out-of-memory record for pid {self.pid}"
        share = self.peak / self.limit if self.limit else 0.0
        if share >= 0.8:  # no kernel record to read: its peak filled what it had
            return True, f"its peak memory, {self.peak / 2**30:.2f} GiB, reached {share:.0%} of the {self.limit / 2**30:.1f} GiB it had"
        return False, (f"its peak memory, {self.peak / 2**30:.2f} GiB, was {share:.0%} of the {self.limit / 2**30:.1f} GiB "
                       "it had (the kernel log is not readable here)")
