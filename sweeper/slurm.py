"""sweep.launcher=slurm: the submitting process (a login node: no GPU needed) has checked the inputs
and created the study with its baseline; here it writes a job array of sweep.slurm.workers tasks
and submits it. Each task runs the same sweep command with the local launcher against the shared
storage, filling its node's GPUs with K slots. SLURM requeues a preempted task (--requeue) and
signals a task nearing its time limit, whose sweep then fails its running trials and has them
retried at once (a task lost with its node: by heartbeat, after sweep.grace_period)."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trainers.settings import ConfigError, first_line

# How the storage URL (it may hold a password) reaches the array tasks: the job's environment,
# which sbatch takes from the submitter's; never the script or a command line.
STORAGE_ENV = "QLORA_SWEEP_STORAGE"


@dataclass(frozen=True)
class SlurmSettings:
    workers: int = 2
    gpus_per_worker: int = 1
    cpus_per_worker: int | None = None
    mem: str | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    extra: tuple[str, ...] = ()
    signal_before_s: int = 120
    follow: bool = True


def _count(raw: dict, key: str, minimum: int, optional: bool = False):
    value = raw.get(key)
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"sweep.slurm.{key}", value, f"a whole number >= {minimum}" + (", or null" if optional else ""))
    return value


def _text(raw: dict, key: str):
    value = raw.get(key)
    if value is not None and (not isinstance(value, (str, int)) or not str(value).strip() or "\n" in str(value)):
        raise ConfigError(f"sweep.slurm.{key}", value, "one word as sbatch takes it, or null")
    return None if value is None else str(value)


# sbatch(1)'s forms: --time minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds (or UNLIMITED); --mem a size with K, M, G or T
# (megabytes without). Said before the study is touched, not by sbatch once it is.
SLURM_FORMS = {
    "time": (re.compile(r"(\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|unlimited|infinite)", re.I),
             'sbatch --time: minutes, "hours:minutes:seconds" or "days-hours[:minutes[:seconds]]", e.g. "04:00:00"'),
    "mem": (re.compile(r"\d+[KMGT]?", re.I), "sbatch --mem: a size in megabytes, or with K, M, G or T, e.g. 64G"),
}


def _form(raw: dict, key: str):
    value = _text(raw, key)
    pattern, allowed = SLURM_FORMS[key]
    if value is not None and not pattern.fullmatch(value.strip()):
        raise ConfigError(f"sweep.slurm.{key}", raw.get(key), allowed)
    return value


def parse_slurm(raw: dict) -> SlurmSettings:
    from dataclasses import fields

    known = sorted(f.name for f in fields(SlurmSettings))
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"sweep.slurm.{unknown[0]}", raw[unknown[0]], f"unknown key; known: {', '.join(known)}")
    extra = raw.get("extra") or []
    if not isinstance(extra, list) or not all(isinstance(e, str) and e.startswith("-") and "\n" not in e for e in extra):
        raise ConfigError("sweep.slurm.extra", extra, 'a list of sbatch options, e.g. ["--constraint=h100"]')
    if not isinstance(raw.get("follow", True), bool):
        raise ConfigError("sweep.slurm.follow", raw.get("follow"), "true or false")
    return SlurmSettings(
        workers=_count(raw, "workers", 1), gpus_per_worker=_count(raw, "gpus_per_worker", 0),
        cpus_per_worker=_count(raw, "cpus_per_worker", 1, optional=True), mem=_form(raw, "mem"),
        partition=_text(raw, "partition"), time=_form(raw, "time"), account=_text(raw, "account"),
        extra=tuple(extra), signal_before_s=_count(raw, "signal_before_s", 1), follow=raw.get("follow", True))


def worker_command(s, python: str) -> list[str]:
    """The sweep each array task runs: the user's overrides (storage left out), this study's folder
    spelt out, trials run here, the report left to the follower."""
    own = ("sweep.launcher", "sweep.final_report", "sweep.dir")
    kept = [o for o in s.public_overrides if o.split("=", 1)[0].lstrip("+~") not in own]
    return [python, "-m", "sweeper", *kept, "sweep.launcher=local", "sweep.final_report=false", f"sweep.dir={s.dir}"]


def sbatch_script(s, python: str, cwd: Path) -> str:
    c = s.slurm
    options = [f"--job-name=qlora-sweep-{s.study_name}", f"--array=0-{c.workers - 1}", "--requeue",
               f"--signal=B:TERM@{c.signal_before_s}", "--open-mode=append",
               f"--output={s.dir / 'slurm' / 'worker-%A_%a.log'}"]
    options += [f"--gres=gpu:{c.gpus_per_worker}"] if c.gpus_per_worker else []
    options += [f"--cpus-per-task={c.cpus_per_worker}"] if c.cpus_per_worker else []
    options += [f"--{key}={value}" for key, value in (("mem", c.mem), ("partition", c.partition), ("time", c.time),
                                                      ("account", c.account)) if value is not None]
    options += list(c.extra)
    return "\n".join([
        "#!/bin/bash",
        f"# qlora-sweep study {s.study_name!r}: {c.workers} sweep workers on one shared study (written by make sweep "
        "sweep.launcher=slurm).",
        *(f"#SBATCH {o}" for o in options),
        f"# The storage URL comes from the job's environment ({STORAGE_ENV}, exported by sbatch), not from this file.",
        f"cd {shlex.quote(str(cwd))}",
        # exec: the sweep is the batch shell, so it gets the time limit's SIGTERM itself
        "exec " + shlex.join(worker_command(s, python)),
        ""])


def require_sbatch() -> None:
    """Asked before the study is created: without sbatch nothing can be submitted."""
    if shutil.which("sbatch") is None:
        raise ConfigError("sweep.launcher", "slurm", "sbatch is not on this machine's PATH: run from a SLURM login "
                          "node, or use sweep.launcher=local")


# What sbatch --test-only says of a request no cluster state makes valid: a name the cluster does
# not know, or an option sbatch cannot read. Its other refusals are not certain: with every node
# down or drained it answers "Requested node configuration is not available" for a job that a real
# submission would queue until they return (measured on the test cluster), so those go on to sbatch.
CERTAIN_REFUSALS = {"invalid partition": "partition", "invalid account": "account", "invalid qos": "extra",
                    "invalid generic resource": "gpus_per_worker", "invalid feature": "extra",
                    "unrecognized option": "extra", "invalid option": "extra"}  # sbatch's words -> the sweep.slurm key


def check_submission(s) -> None:
    """Asked before the study is created: sbatch --test-only on the array's script (from stdin;
    nothing is queued or written), refused in one line where sbatch certainly will refuse it."""
    try:
        proc = subprocess.run(["sbatch", "--test-only", "--export=ALL"], input=sbatch_script(s, sys.executable, Path.cwd()),
                              capture_output=True, text=True, env={**os.environ, STORAGE_ENV: s.storage}, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return  # the real submission will say what is wrong
    if proc.returncode == 0:
        return
    for line in (proc.stderr + proc.stdout).splitlines():
        field = next((f for fragment, f in CERTAIN_REFUSALS.items() if fragment in line.lower()), None)
        if field is not None:
            value = getattr(s.slurm, field)
            raise ConfigError(f"sweep.slurm.{field}", list(value) if isinstance(value, tuple) else value,
                              f"sbatch refuses it ({line.removeprefix('sbatch: ').strip()})")


def submit(s) -> str:
    """Write the array's script into <study>/slurm/ and submit it; the job id."""
    require_sbatch()
    folder = s.dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    script.write_text(sbatch_script(s, sys.executable, Path.cwd()))
    proc = subprocess.run(["sbatch", "--parsable", "--export=ALL", str(script)], capture_output=True, text=True,
                          env={**os.environ, STORAGE_ENV: s.storage}, timeout=120)
    if proc.returncode != 0:
        why = first_line(proc.stderr or proc.stdout)
        c = s.slurm
        asked = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k in ("workers", "gpus_per_worker",
                          "cpus_per_worker", "mem", "partition", "account", "extra") if (v := getattr(c, k)))
        # The file's name told nothing; what the job asks for is what to change.
        raise ConfigError("sweep.slurm", asked, f"sbatch refused the job ({why.removeprefix('sbatch: ')}); change "
                          f"these and rerun: the study and its trials so far are kept (the job's script: {script})")
    return proc.stdout.strip().split(";")[0]


# Reasons squeue gives for a pending job that waiting does not end: it asks for more than its
# partition, account or QOS allows per job (slurm.schedmd.com/job_reason_codes.html). Group and
# per-user limits (AssocGrp*, *PerUser*) and a partition that is down clear by themselves.
NEVER_STARTS = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
                "InvalidQOS"}


def job_status(job_id: str) -> tuple[bool, str | None]:
    """(whether any task of the array is still pending or running, a requeued one being pending;
    squeue's reason while every task is pending, else None)."""
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return True, None  # cannot tell: keep following
    if proc.returncode != 0:  # a job long gone is "Invalid job id"; anything else: cannot tell
        return "invalid job id" not in proc.stderr.lower(), None
    rows = [[part.strip() for part in line.split("|", 1)] + [""] for line in proc.stdout.splitlines() if line.strip()]
    if any(state != "PENDING" for state, reason, *_ in rows):
        return bool(rows), None
    return bool(rows), next((reason for _, reason, *_ in rows if reason not in ("", "None")), None)


def waiting_line(job_id: str, reason: str) -> str:
    """What the follower says while no task of the job runs."""
    if reason in NEVER_STARTS or "PerJob" in reason:  # QOSMaxCpuPerJobLimit, AssocMaxWallDurationPerJobLimit...
        return (f"SLURM job {job_id} waits ({reason}): it asks for more than its partition, account or QOS allows, "
                f"so it will not start; cancel it (scancel {job_id}) and rerun with other sweep.slurm settings")
    return f"SLURM job {job_id}: no task runs yet ({reason}; squeue -j {job_id} says more)"
