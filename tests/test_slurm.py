"""sweep.launcher=slurm on a real SLURM cluster: two slurmd (n1, n2) and a slurmctld on this host
(tests/slurm/cluster.sh; .ci/run installs Debian's slurm-wlm and munge). An array of two sweep
workers on one PostgreSQL study, one of them requeued mid-trial: the study still ends with exactly
n_trials finished trials, the interrupted trial is failed and retried from its checkpoint, and
trials ran on both nodes. The submitter follows it and writes the report."""
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from conftest import ROOT
from sweeper.recheck import key, planned
from sweeper.settings import sweep_settings
from test_sweep import POSTGRES, load, wait_for

pytestmark = pytest.mark.slow
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="session")
def slurm_conf(tmp_path_factory):
    """The test cluster .ci/run started (QLORA_TEST_SLURM_CONF), else one of our own for the session."""
    if os.environ.get("QLORA_TEST_SLURM_CONF"):
        yield os.environ["QLORA_TEST_SLURM_CONF"]
        return
    if shutil.which("slurmctld") is None or shutil.which("munged") is None or os.geteuid() != 0:
        pytest.skip("needs root and Debian's slurm-wlm and munge (bash .ci/run installs them)")
    folder = tmp_path_factory.mktemp("slurm-cluster")
    script = ROOT / "tests" / "slurm" / "cluster.sh"
    subprocess.run(["bash", str(script), "start", str(folder)], check=True, timeout=120)
    try:
        yield str(folder / "slurm.conf")
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], timeout=60)


def squeue(conf: str) -> dict[str, tuple[str, str]]:
    """Array task id (JOB_TASK) -> (state, node)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %T %N"], env={**os.environ, "SLURM_CONF": conf},
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() + [""] for line in out.splitlines() if line.strip()]
    return {row[0]: (row[1], row[2]) for row in rows}


def test_two_workers_one_requeued_mid_trial(slurm_conf, short_trial, tmp_path):
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    args = short_trial + [
        "train.warmup_steps=0", "train.max_steps=40", "train.eval_steps=10", "tracking.mode=disabled",
        "sweep.pruner=none", f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage={POSTGRES}", f"sweep.study_name={name}",
        "sweep.n_trials=3", "sweep.devices=cpu", "sweep.trials_per_device=1", "sweep.heartbeat_interval=2",
        "sweep.grace_period=6", "sweep.launcher=slurm", "sweep.slurm.workers=2", "sweep.slurm.gpus_per_worker=1",
        "sweep.slurm.cpus_per_worker=1", "sweep.recheck_top=1", "sweep.recheck_seeds=1"]
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    follower = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # A trial with a checkpoint behind it, running in one of the array's tasks: requeue that task.
        def checkpointed_trial():
            try:
                study = load(POSTGRES, name)
            except KeyError:  # not created yet
                return None
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                folder = tmp_path / "sweep" / "trials" / str(t.number)
                if "node" in t.user_attrs and list(folder.glob("checkpoint-*")):
                    return t
            return None

        wait_for(lambda: checkpointed_trial() is not None, timeout=400, every=0.5)
        victim = checkpointed_trial()
        tasks = {node: task for task, (state, node) in squeue(slurm_conf).items() if state == "RUNNING"}
        assert set(tasks) == {"n1", "n2"}, tasks  # one worker per node
        subprocess.run(["scontrol", "requeue", tasks[victim.user_attrs["node"]]], env=env, check=True)
        out, _ = follower.communicate(timeout=600)
    finally:
        if follower.poll() is None:
            follower.kill()
        subprocess.run(["scancel", f"--name=qlora-sweep-{name}"], env=env, timeout=60)  # after a failure
    (tmp_path / "follower.log").write_text(out)  # kept for a failure's post-mortem
    assert follower.returncode == 0, out[-4000:]
    study = load(POSTGRES, name)
    trials = study.get_trials(deepcopy=False)
    searched = [t for t in trials if "recheck_of" not in t.user_attrs]
    assert sum(t.state in FINISHED for t in searched) == 3, [(t.number, t.state) for t in trials]
    # The workers re-checked the top trial and the baseline, each run once, whichever worker queued it.
    s = sweep_settings(args, check_values=False)
    done = [key(t) for t in trials if "recheck_of" in t.user_attrs and t.state == TrialState.COMPLETE]
    assert sorted(done) == sorted(planned(trials, s)) and len(done) in (1, 2), [(t.number, t.user_attrs) for t in trials]
    for t in trials:
        if "recheck_of" in t.user_attrs and t.state == TrialState.FAIL:
            assert t.user_attrs["fail_reason"].startswith("not needed: trial "), t.user_attrs
    assert "re-check (eval_loss over seeds" in out and "the baseline" in out
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    interrupted = study.trials[victim.number]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"] == "interrupted", \
        interrupted.user_attrs
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state in FINISHED and retry.params == interrupted.params
    assert retry.user_attrs["resumed_from_step"] >= 10 and retry.user_attrs["first_step"] > 10  # from its checkpoint
    assert {t.user_attrs["node"] for t in trials if "node" in t.user_attrs} == {"n1", "n2"}
    assert "submitted SLURM job" in out and "Ctrl-C stops following, not the job" in out
    assert f"(retry of trial {victim.number}), resuming from checkpoint-" in out
    assert "best adapter:" in out and (tmp_path / "sweep" / "report" / "index.html").exists()
    (script,) = (tmp_path / "sweep" / "slurm").glob("*.sbatch")
    text = script.read_text()
    for log in (tmp_path / "sweep" / "slurm").glob("worker-*.log"):  # --cpus-per-task=1, on nodes that bind no cores
        assert "slots: cpu x1 (1 thread each)" in log.read_text(), log.read_text()[-2000:]
    assert "#SBATCH --array=0-1" in text and "#SBATCH --requeue" in text and "#SBATCH --gres=gpu:1" in text
    assert "postgresql://" not in text, "the storage URL reaches the tasks through their environment only"
    optuna.delete_study(study_name=name, storage=POSTGRES)


def test_asha_across_two_nodes_continues_from_the_shared_checkpoints(slurm_conf, short_trial, tmp_path):
    """sweep.pruner=asha on the array: a configuration paused by one worker may be continued by
    either, from the checkpoint on the shared file system; each paused one goes on at most once."""
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    args = short_trial + [
        "train.warmup_steps=0", "train.max_steps=20", "train.eval_steps=10", "tracking.mode=disabled",
        "sweep.pruner=asha", "sweep.asha_eta=2", f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage={POSTGRES}",
        f"sweep.study_name={name}", "sweep.n_trials=4", "sweep.devices=cpu", "sweep.trials_per_device=1",
        "sweep.launcher=slurm", "sweep.slurm.workers=2", "sweep.slurm.gpus_per_worker=0",
        "sweep.slurm.cpus_per_worker=1", "sweep.recheck_seeds=0"]
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    try:
        proc = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=600)
    finally:
        subprocess.run(["scancel", f"--name=qlora-sweep-{name}"], env=env, timeout=60)  # after a failure
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    trials = load(POSTGRES, name).get_trials(deepcopy=False)
    # Two workers that ask for the last trial at the same moment: the later one hands its trial back.
    handed_back = {t.number for t in trials if t.user_attrs.get("fail_reason", "").startswith("not needed: ")}
    assert all(trials[n].state == TrialState.FAIL for n in handed_back) and len(handed_back) <= 2, handed_back
    firsts = [t for t in trials if "continued_from" not in t.user_attrs and t.number not in handed_back]
    legs = [t for t in trials if "continued_from" in t.user_attrs and t.state == TrialState.COMPLETE]
    assert len(firsts) == 4 and all(t.user_attrs.get("paused_at") == 10 for t in firsts), \
        [(t.number, t.state, t.user_attrs) for t in trials]
    continued = [t.user_attrs["continued_from"] for t in legs]
    assert len(continued) == len(set(continued)) >= 2  # the top half of the rung, once each
    by_number = {t.number: t for t in trials}
    for leg in legs:
        assert (leg.user_attrs["resumed_from_step"], leg.user_attrs["first_step"]) == (10, 11)
        assert leg.intermediate_values[10] == by_number[leg.user_attrs["continued_from"]].intermediate_values[10]
    assert {t.user_attrs["node"] for t in trials if "node" in t.user_attrs} == {"n1", "n2"}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert "promoted" in (tmp_path / "sweep" / "leaderboard.txt").read_text()
    optuna.delete_study(study_name=name, storage=POSTGRES)


def test_follower_ctrl_c_leaves_the_job_running(slurm_conf, short_trial, tmp_path):
    """Ctrl-C of the submitter stops following only; it says how to cancel the job."""
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    args = short_trial + ["tracking.mode=disabled", f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage={POSTGRES}",
                          f"sweep.study_name={name}", "sweep.n_trials=1", "sweep.devices=cpu",
                          "sweep.trials_per_device=1", "sweep.launcher=slurm", "sweep.slurm.workers=1",
                          "sweep.slurm.gpus_per_worker=0", "train.max_steps=400", "sweep.recheck_seeds=0"]
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    follower = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: (tmp_path / "sweep" / "slurm").exists() and any(
        state == "RUNNING" for state, _ in squeue(slurm_conf).values()), timeout=120)
    follower.send_signal(signal.SIGINT)
    out, _ = follower.communicate(timeout=60)
    assert follower.returncode == 130, out
    (job,) = {task.split("_")[0] for task in squeue(slurm_conf)}
    assert f"stopped following; SLURM job {job} goes on (cancel it with: scancel {job})" in out
    subprocess.run(["scancel", job], env=env, check=True)
    wait_for(lambda: not squeue(slurm_conf), timeout=60)
    time.sleep(1)
    optuna.delete_study(study_name=name, storage=POSTGRES)


def test_follower_says_when_the_job_cannot_start(slurm_conf, short_trial, tmp_path):
    """sweep.slurm.cpus_per_worker beyond the nodes': squeue holds the array pending for PartitionConfig
    forever, and the follower waited in silence; it says why once, and keeps following."""
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    args = short_trial + ["tracking.mode=disabled", f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage={POSTGRES}",
                          f"sweep.study_name={name}", "sweep.n_trials=1", "sweep.launcher=slurm",
                          "sweep.slurm.workers=1", "sweep.slurm.gpus_per_worker=0", "sweep.slurm.cpus_per_worker=4096",
                          "sweep.recheck_seeds=0"]
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    follower = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in follower.stdout:
            lines.append(line)
            if "waits (" in line:
                break
    finally:
        follower.send_signal(signal.SIGINT)
        rest, _ = follower.communicate(timeout=60)
    (job,) = {task.split("_")[0] for task in squeue(slurm_conf)}
    subprocess.run(["scancel", job], env=env, check=True)
    waits = [line for line in lines if "waits (" in line]
    assert waits == [f"SLURM job {job} waits (PartitionConfig): it asks for more than its partition, account or QOS "
                     f"allows, so it will not start; cancel it (scancel {job}) and rerun with other sweep.slurm "
                     "settings\n"], "".join(lines) + rest
    wait_for(lambda: not squeue(slurm_conf), timeout=60)
    optuna.delete_study(study_name=name, storage=POSTGRES)


@pytest.mark.parametrize("override,says", [
    ("sweep.slurm.partition=nosuch", "sweep.slurm.partition='nosuch': sbatch refuses it (error: invalid partition specified: nosuch)"),
    ('sweep.slurm.extra=["--bogus"]', "sweep.slurm.extra=['--bogus']: sbatch refuses it (unrecognized option '--bogus')"),
])
def test_what_sbatch_certainly_refuses_is_said_before_the_study_exists(slurm_conf, short_trial, tmp_path, override,
                                                                       says, capsys):
    """sbatch --test-only on the array's script: a partition the cluster lacks was refused by sbatch
    only after the study and its baseline were created; now in one line, with no study and no job."""
    from sweeper.__main__ import main

    name = f"slurm-{uuid.uuid4().hex[:8]}"
    os.environ["SLURM_CONF"] = slurm_conf
    try:
        code = main(short_trial + ["tracking.mode=disabled", f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage={POSTGRES}",
                                   f"sweep.study_name={name}", "sweep.launcher=slurm", "sweep.slurm.gpus_per_worker=0",
                                   override])
    finally:
        del os.environ["SLURM_CONF"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == [f"error: {says}"], err
    assert name not in optuna.get_all_study_names(POSTGRES) and not squeue(slurm_conf)


def test_a_job_sbatch_refuses_names_what_it_asks(slurm_conf, short_trial, tmp_path, capsys):
    """More GPUs per task than any node has passes sbatch --test-only's certain refusals and is
    refused at submission: the line named the script's file; it names what to change."""
    from sweeper.__main__ import main

    name = f"slurm-{uuid.uuid4().hex[:8]}"
    os.environ["SLURM_CONF"] = slurm_conf
    try:
        code = main(short_trial + ["tracking.mode=disabled", f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage={POSTGRES}",
                                   f"sweep.study_name={name}", "sweep.launcher=slurm", "sweep.slurm.gpus_per_worker=4",
                                   "sweep.recheck_seeds=0"])
    finally:
        del os.environ["SLURM_CONF"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    (script,) = (tmp_path / "sweep" / "slurm").glob("*.sbatch")
    assert code == 2 and err == [
        "error: sweep.slurm='workers=2, gpus_per_worker=4': sbatch refused the job (error: Batch job submission failed: "
        "Requested node configuration is not available); change these and rerun: the study and its trials so far are "
        f"kept (the job's script: {script})"], err
    assert not squeue(slurm_conf)
    optuna.delete_study(study_name=name, storage=POSTGRES)


@pytest.mark.parametrize("reason,never", [("PartitionConfig", True), ("QOSMaxCpuPerJobLimit", True),
                                          ("PartitionDown", False), ("AssocGrpCpuLimit", False), ("Resources", False)])
def test_only_reasons_that_never_clear_are_called_final(reason, never):
    from sweeper.slurm import waiting_line

    line = waiting_line("6", reason)
    assert ("so it will not start; cancel it (scancel 6)" in line) == never, line
    assert reason in line
