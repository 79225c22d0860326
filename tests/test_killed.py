"""Telling the kernel's out-of-memory kill of a trial from any other SIGKILL, by evidence
(sweeper/killed.py): the kernel log's record for its pid, its cgroup's OOM count, its peak memory."""
import pytest

from sweeper import killed
from sweeper.killed import OOM_LINE, KillWitness

# As Linux prints them (a cgroup limit, the global killer, and the summary line of newer kernels).
DMESG = """[ 812.4] Memory cgroup out of memory: Killed process 4242 (python) total-vm:9124kB, anon-rss:812kB
[ 913.1] Out of memory: Killed process 5151 (python) total-vm:1024kB
[ 913.2] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,task=python,pid=6161,uid=0
[ 920.0] python[7171]: segfault at 0 ip 0000 sp 0000 error 4"""


def test_the_kernel_log_names_the_pids_its_oom_killer_ended():
    assert {int(p) for p in OOM_LINE.findall(DMESG)} == {4242, 5151, 6161}


@pytest.fixture
def cgroup(tmp_path, monkeypatch):
    """A memory cgroup folder whose oom_kill count the test sets (cgroup v2's memory.events)."""
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    monkeypatch.setattr(killed, "_memory_cgroup", lambda pid="self": tmp_path)
    return events


def test_a_kill_the_kernel_log_records_is_out_of_memory(cgroup, monkeypatch):
    monkeypatch.setattr(killed, "kernel_oom_pids", lambda: {4242})
    assert KillWitness(4242).verdict() == (True, "the kernel log records its OOM kill (pid 4242)")
    oom, why = KillWitness(4243).verdict()  # the log is readable and says nothing of this pid
    assert not oom and why == "no out-of-memory record for pid 4243"


def test_a_rising_cgroup_oom_count_is_out_of_memory(cgroup, monkeypatch):
    monkeypatch.setattr(killed, "kernel_oom_pids", lambda: None)  # a container that cannot read the kernel log
    witness = KillWitness(99)
    cgroup.write_text("oom 2\noom_kill 2\n")
    assert witness.verdict() == (True, "its memory cgroup counted 1 OOM kill(s) while it ran")


def test_with_no_kernel_record_the_peak_against_the_limit_decides(monkeypatch):
    monkeypatch.setattr(killed, "kernel_oom_pids", lambda: None)
    monkeypatch.setattr(killed, "_memory_cgroup", lambda pid="self": None)
    witness = KillWitness(99, memory_limit=4 * 2**30)
    witness.peak = int(0.8 * 2**30)  # 0.8 GiB of 4: an operator's kill -9, not memory
    oom, why = witness.verdict()
    assert not oom and "0.80 GiB, was 20% of the 4.0 GiB" in why
    witness.peak = int(3.9 * 2**30)
    assert witness.verdict()[0]
