"""Trials side by side, for real on this machine's CPU: two slots overlap and never idle while
trials remain, the study ends with exactly n_trials, a kill -9 with two trials running fails and
retries both, GPU ids reach the trial processes, out of memory costs one trial and lowers K, and
the storage holds up under contention."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import TrialState

from conftest import ROOT
from storage_stress import stress
from sweeper.study import counts
from test_sweep import POSTGRES, load, sweep, wait_for, worker_of
from wandb_files import offline_runs, read_offline_run

pytestmark = pytest.mark.slow
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture
def sweep_args(short_trial, tmp_path):
    return short_trial + ["train.warmup_steps=0", f"sweep.dir={tmp_path / 'sweep'}",
                          f"sweep.storage=sqlite:///{tmp_path / 'study.db'}", "sweep.study_name=t",
                          "sweep.recheck_seeds=0"]


def running_counts(trials) -> list[tuple[int, int]]:
    """(+1 for a start or -1 for an end, trials running after it), in time order."""
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    counts, running = [], 0
    for _, change in events:
        running += change
        counts.append((change, running))
    return counts


def test_two_cpu_slots_run_trials_side_by_side(sweep_args, tmp_path):
    """Also the per-device batch left to the sweep: measured at 1 and 8 rows, then 8 x 1 on the CPU
    (memory is not what binds here; test_packing.py has the cases where it is). And the whole sweep
    (checks, memory probe, trials, report, W&B summary run) leaves peft, bitsandbytes and trl
    unimported in the sweep process: on a GPU box importing them creates a CUDA context there
    (docs/gpu.md); transformers.trainer_utils imports peft, so this guards the trainer-name check too."""
    args = sweep_args + ["sweep.n_trials=5", "sweep.trials_per_device=2", "tracking.mode=offline",
                         "train.per_device_train_batch_size=auto", "train.effective_batch_size=8"]
    code = (f"import sys; from sweeper.__main__ import main; code = main({args!r}); "
            "print(code, sorted(m for m in ('peft', 'bitsandbytes', 'trl') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "0 []"
    assert "slots: cpu x2 (1 thread each)" in proc.stdout
    assert "at per-device batch 1, 8 (" in proc.stdout
    assert "per-device batch (auto): cpu 8 x 1 accumulation = 8 rows per step" in proc.stdout
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state in FINISHED for t in study.trials] == [True] * 5  # exactly n_trials, none extra
    assert max(c for _, c in running_counts(study.trials)) == 2, "trials overlapped"
    # No slot idles while trials remain: each slot's next trial starts as its previous one ends, not
    # when the other slot's does (a barrier would make the gap as long as the other trial's rest).
    shortest = min((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
    for slot in ("cpu.0", "cpu.1"):
        mine = sorted((t for t in study.trials if t.user_attrs["device"] == slot), key=lambda t: t.datetime_start)
        gaps = [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(mine, mine[1:])]
        assert gaps and all(0 <= g < shortest / 4 for g in gaps), (slot, gaps, shortest)
    assert {t.user_attrs["device"] for t in study.trials} == {"cpu.0", "cpu.1"}
    assert all(t.user_attrs["visible_devices"] == "" for t in study.trials)  # the CPU slots hide every GPU
    starts = sorted(t.datetime_start for t in study.trials)
    assert starts[1] < min(t.datetime_complete for t in study.trials)
    peaks = list(study.user_attrs["memory_peaks"].values())
    assert len(peaks) == 2 and all(p["peak_rss_bytes"] > 2**27 for p in peaks)  # batch 1 and 8, each measured once
    # The probe pads to the data's longest row (demo rows: prompts ~60 tokens), not to max_length=128.
    for log in (tmp_path / "sweep" / "probe").glob("*/trial.log"):
        padded = int(re.search(r"every batch padded to (\d+) tokens", log.read_text()).group(1))
        assert 60 < padded < 128, padded
    batch = ["train.per_device_train_batch_size=8", "train.gradient_accumulation_steps=1"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in study.trials:
        assert t.user_attrs["batch_overrides"] == batch
        job = json.loads((tmp_path / "sweep" / "trials" / str(t.number) / "job.json").read_text())
        assert job["trial_overrides"][-2:] == batch
    for t in complete:  # what the trial process trained with, as it saved it beside its adapter
        train = yaml.safe_load((tmp_path / "sweep" / "trials" / str(t.number) / "config.yaml").read_text())["train"]
        assert (train["per_device_train_batch_size"], train["gradient_accumulation_steps"]) == (8, 1)
    board = (tmp_path / "sweep" / "leaderboard.txt").read_text()
    rerun = next(line for line in board.splitlines() if line.startswith("rerun it alone"))
    assert "train.per_device_train_batch_size=8 train.gradient_accumulation_steps=1" in rerun


def test_asha_on_two_slots_continues_the_top_of_each_rung_once(sweep_args, tmp_path):
    """sweep.pruner=asha with K=2: four configurations pause at step 10 side by side; the top half
    at that rung (eta 2; all four in, so ceil(4 / 2)) goes on from its checkpoint to step 20, each
    once however the two slots race for it, and no step is trained twice."""
    args = sweep_args + ["sweep.pruner=asha", "sweep.asha_eta=2", "sweep.n_trials=4", "sweep.trials_per_device=2",
                         "train.max_steps=20", "train.eval_steps=10", "tracking.mode=disabled"]
    proc = sweep(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    firsts = [t for t in study.trials if "continued_from" not in t.user_attrs]
    legs = [t for t in study.trials if "continued_from" in t.user_attrs]
    assert len(firsts) == 4 and all(t.state == TrialState.PRUNED and t.user_attrs["paused_at"] == 10 for t in firsts)
    assert all(t.state == TrialState.COMPLETE for t in legs)
    continued = [t.user_attrs["continued_from"] for t in legs]
    assert len(continued) == len(set(continued)) and 2 <= len(continued) <= 3  # once each; 3 if one went on early
    top = sorted(firsts, key=lambda t: t.intermediate_values[10])[:2]
    assert {t.number for t in top} <= set(continued)
    for leg in legs:
        paused = study.trials[leg.user_attrs["continued_from"]]
        assert (leg.user_attrs["resumed_from_step"], leg.user_attrs["first_step"]) == (10, 11)
        assert leg.intermediate_values[10] == paused.intermediate_values[10] and set(leg.intermediate_values) == {10, 20}
    assert max(c for _, c in running_counts(study.trials)) == 2, "trials overlapped"
    assert counts(study)["finished"] == 4


def test_kill_with_two_trials_running_retries_both(sweep_args, tmp_path):
    args = sweep_args + ["sweep.n_trials=2", "sweep.trials_per_device=2", "tracking.mode=disabled",
                         "sweep.heartbeat_interval=1", "sweep.grace_period=3"]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    trials = tmp_path / "sweep" / "trials"
    # Trial 0 (on the process started before the checks) is frozen as it starts training, so it is
    # still running when the second slot's process, which starts importing later, begins trial 1.
    wait_for(lambda: (trials / "0" / "progress.json").exists()
             and json.loads((trials / "0" / "progress.json").read_text())["phase"] == "training", every=0.02)
    os.kill(worker_of(proc.pid, trials / "0"), signal.SIGSTOP)
    wait_for(lambda: (trials / "1" / "progress.json").exists())
    os.kill(proc.pid, signal.SIGKILL)  # a stopped worker dies with its sweep too (PR_SET_PDEATHSIG)
    proc.wait()
    assert [t.state for t in load(url).trials] == [TrialState.RUNNING] * 2
    time.sleep(1)
    workers = subprocess.run(["pgrep", "-f", f"sweeper.worker {proc.pid}"], capture_output=True, text=True).stdout
    assert workers.strip() == "", "the trial processes died with their sweep (PR_SET_PDEATHSIG)"

    resumed = sweep(args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    study = load(url)
    assert [t.state for t in study.trials[:2]] == [TrialState.FAIL] * 2
    for killed in study.trials[:2]:  # Optuna leaves the reason empty; a lost trial says why
        assert killed.user_attrs["fail_reason"].startswith("lost: its heartbeat stopped for more than "
                                                          "sweep.grace_period=3 s (its sweep process on node ")
    retries = {Retry.retried_trial_number(t): t for t in study.trials[2:]}
    assert set(retries) == {0, 1} and all(retries[n].params == study.trials[n].params for n in (0, 1))
    assert all("fail_reason" not in t.user_attrs for t in retries.values())  # not inherited from the lost one
    assert sum(t.state in FINISHED for t in study.trials) == 2 == len(study.trials) - 2  # each retried once
    assert "(retry of trial 0)" in resumed.stdout and "(retry of trial 1)" in resumed.stdout

    again = sweep(args)  # already complete: nothing more runs
    assert again.returncode == 0 and len(load(url).trials) == len(study.trials)
    assert "2/2 trials finished" in again.stdout


def test_ctrl_c_during_the_memory_probe_says_so_in_one_line(sweep_args, tmp_path):
    """Interrupted before any trial runs (here while the hungriest trial's memory is measured): one
    line, no stack trace, and the study keeps its queued baseline for the rerun."""
    args = sweep_args + ["sweep.n_trials=2", "tracking.mode=disabled"]
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "sweep" / "probe").exists(), every=0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "interrupted while no trial was running: the study keeps everything it holds; rerun the same command to continue")
    assert [t.state for t in load(f"sqlite:///{tmp_path / 'study.db'}").trials] == [TrialState.WAITING]


def test_gpu_ids_reach_the_trial_processes(sweep_args, tmp_path):
    """sweep.devices=[3, 5]: one slot each, started with CUDA_VISIBLE_DEVICES=3 and =5. This machine
    has no GPU: a stand-in nvidia-smi on PATH lists GPUs 3 and 5 (so the ids are accepted), and the
    trials train on the CPU; what matters is what each process was given. With sweep.pruner=asha:
    the two configurations pause at step 2, one on each device, and the better one goes on from its
    checkpoint on whichever device is free."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\ncase \"$*\" in *query-gpu*) "
                                        "printf '3, 81559, Stand-in\\n5, 81559, Stand-in\\n';; esac\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = sweep(sweep_args + ["sweep.n_trials=2", "sweep.devices=[3,5]", "sweep.trials_per_device=1",
                               "tracking.mode=disabled", "train.max_steps=4", "train.eval_steps=2",
                               "sweep.pruner=asha", "sweep.asha_eta=2"], env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "slots: gpu3 x1, gpu5 x1" in proc.stdout
    trials = load(f"sqlite:///{tmp_path / 'study.db'}").trials
    seen = {t.user_attrs["device"]: t.user_attrs["visible_devices"] for t in trials}
    assert seen == {"gpu3": "3", "gpu5": "5"}
    firsts, (leg,) = trials[:2], trials[2:]
    assert sorted(t.user_attrs["device"] for t in firsts) == ["gpu3", "gpu5"]
    assert all(t.state == TrialState.PRUNED and t.user_attrs["paused_at"] == 2 for t in firsts)
    best = min(firsts, key=lambda t: t.intermediate_values[2])
    assert leg.state == TrialState.COMPLETE and leg.user_attrs["continued_from"] == best.number
    assert (leg.user_attrs["resumed_from_step"], leg.user_attrs["first_step"]) == (2, 3)
    # Without the stand-in the driver lists nothing: a GPU id that is not there is refused before
    # the study is touched, where it used to train on the CPU under a GPU's name.
    refused = sweep(sweep_args + ["sweep.devices=[0]", "sweep.study_name=t2"])
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: sweep.devices=[0]: no GPU 0 on this machine (the driver lists: none); allowed: auto, cpu, or ids "
        "the driver lists"]


def test_out_of_memory_costs_one_trial_and_lowers_k(sweep_args, tmp_path):
    """sweep.debug_device_memory_mb pretends the device has that much memory and enforces each
    trial's share as a host memory limit: two side by side do not fit, one alone does."""
    args = sweep_args + ["sweep.n_trials=2", "sweep.trials_per_device=2", "sweep.debug_device_memory_mb=800",
                         "tracking.mode=offline", "sweep.pruner=none"]
    proc = sweep(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cpu: out of memory with 2 trials side by side; now 1" in proc.stdout
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    oom = [t for t in study.trials if t.state == TrialState.FAIL]
    assert oom and all(t.user_attrs["fail_reason"].startswith("out of memory") for t in oom)
    reruns = [t for t in study.trials if t.user_attrs.get("retry_of") is not None]
    assert sorted(t.user_attrs["retry_of"] for t in reruns) == sorted(t.number for t in oom)
    assert all(t.state == TrialState.COMPLETE and t.params == study.trials[t.user_attrs["retry_of"]].params
               for t in reruns)
    assert sum(t.state in FINISHED for t in study.trials) == 2
    board = (tmp_path / "sweep" / "leaderboard.txt").read_text()
    assert "— out of memory" in board
    run = read_offline_run(offline_runs(tmp_path / "sweep" / "trials" / str(oom[0].number))[0])
    assert run.summary["state"] == "failed" and run.summary["fail_reason"].startswith("out of memory")


@pytest.mark.parametrize("url", ["sqlite", POSTGRES])
def test_storage_under_contention(url, tmp_path):
    url = f"sqlite:///{tmp_path / 'stress.db'}" if url == "sqlite" else url
    result = stress(url, processes=8, trials=4, steps=25)
    assert result["errors"] == [], result
    assert result["exit_codes"] == [0] * 8 and result["finished"] == result["trials"] == 32
    assert result["complete_reports_intact"], result


def test_a_trial_asked_past_the_budget_is_handed_back(tmp_path):
    """Two sweep processes count, both see one trial to go, both ask: the later ask must not run.
    Here the other process's trial is a real RUNNING trial in the same storage."""
    from sweeper.local import LocalExecutor
    from sweeper.loop import SweepLoop
    from sweeper.settings import sweep_settings
    from sweeper.slots import Device, Slot
    from sweeper.study import build_storage, open_study
    from sweeper.view import LiveView

    s = sweep_settings([f"sweep.dir={tmp_path}", "sweep.n_trials=2", "sweep.study_name=race",
                        f"sweep.storage=sqlite:///{tmp_path / 'race.db'}"], check_values=False)
    storage = build_storage(s)
    study = open_study(s, storage)  # enqueues the baseline: the queued trial the race must not lose
    elsewhere = optuna.load_study(study_name="race", storage=s.storage)
    elsewhere.tell(elsewhere.ask(), 1.0)   # one finished elsewhere (it takes the queued baseline)
    study.enqueue_trial({"lora_r": 8, "lora_dropout": 0.1, "quant_bits": 4})
    elsewhere.ask()                         # ...and the last one running there, from the queue
    study.enqueue_trial({"lora_r": 16, "lora_dropout": 0.1, "quant_bits": 4})
    executor = LocalExecutor([Device("cpu", None)])
    loop = SweepLoop(s, study, storage, executor, LiveView(2))
    loop._start(Slot(Device("cpu", None), 0), {"finished": 0, "running": 0})  # counted before the others
    executor.close()
    assert loop.running == {}, "nothing launched"
    trials = study.get_trials(deepcopy=False)
    handed_back = trials[2]  # the queued r=16 trial this loop asked for
    assert handed_back.state == TrialState.FAIL and handed_back.user_attrs["fail_reason"].startswith("not needed")
    (queued,) = [t for t in trials if t.state == TrialState.WAITING]
    assert queued.number == 3 and queued.system_attrs["fixed_params"] == {"lora_r": 16, "lora_dropout": 0.1, "quant_bits": 4}
