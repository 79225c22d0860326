"""The sweep for real: `make sweep` end to end, pruning (on PostgreSQL), pruner=none, and a
SIGKILLed sweep resumed to exactly n_trials. Real Optuna, real trial processes, W&B offline."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from optuna_dashboard import get_note

from conftest import ROOT
from sweeper.results.seeds import crowned
from sweeper.settings import sweep_settings
from sweeper.study import counts
from wandb_files import offline_runs, read_offline_run

pytestmark = pytest.mark.slow
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
GOOD = "{lora_r: 8, lora_alpha: 16, lora_dropout: 0.1, quant_bits: 4, learning_rate: 0.004}"
# wider than the default's decade either side of the preset: room for a diverging and a crawling rate
LR_SPACE = ["~search.learning_rate",
            "+search.learning_rate={type: float, low: 1e-6, high: 3.0, log: true, target: train.learning_rate}"]


@pytest.fixture
def sweep_args(short_trial, tmp_path):
    """A short sweep of short trials, one at a time (trials side by side: test_slots.py), writing
    only under tmp_path."""
    return short_trial + ["train.warmup_steps=0", f"sweep.dir={tmp_path / 'sweep'}",
                          f"sweep.storage=sqlite:///{tmp_path / 'study.db'}", "sweep.study_name=t",
                          "sweep.trials_per_device=1", "sweep.recheck_seeds=0"]


def sweep(args, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def load(storage, name="t"):
    return optuna.load_study(study_name=name, storage=storage)


def test_make_sweep_end_to_end(sweep_args, tmp_path):
    """As a user runs it: trials_per_device=auto measures the hungriest trial once, then fills
    this 2-core machine's slots; the best configuration and the baseline are re-checked on one
    more seed before crowning."""
    args = [a for a in sweep_args if a not in ("sweep.trials_per_device=1", "sweep.recheck_seeds=0")] + \
        ["sweep.n_trials=3", "sweep.recheck_top=1", "sweep.recheck_seeds=1"]
    proc = subprocess.run(["make", "--no-print-directory", "sweep", f"ARGS={' '.join(args)}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    searched = [t for t in study.trials if "recheck_of" not in t.user_attrs]
    finished = [t for t in searched if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 == len(searched) == counts(study)["finished"]
    top = min((t for t in searched if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    rechecks = [t for t in study.trials if "recheck_of" in t.user_attrs]
    assert sorted((t.user_attrs["recheck_of"], t.user_attrs["seed"]) for t in rechecks) == sorted({(top.number, 43),
                                                                                                (0, 43)})
    for t in rechecks:  # the same values on train.seed + 1, trained to the end, not counted
        assert t.state == TrialState.COMPLETE and t.params == study.trials[t.user_attrs["recheck_of"]].params
        assert "train.seed=43" in t.user_attrs["value_overrides"] and t.user_attrs["steps"] == 20
    baseline = study.trials[0]  # the seed course's recipe, enqueued to run first
    assert baseline.params == {"lora_r": 32, "lora_dropout": 0.1, "quant_bits": 4, "learning_rate": 2e-3}
    assert baseline.user_attrs["lora_alpha"] == 64
    for t in study.trials:
        assert set(t.params) == {"lora_r", "lora_dropout", "quant_bits", "learning_rate"}
        assert t.params["lora_r"] in (8, 16, 32) and 0.05 <= t.params["lora_dropout"] <= 0.2
        assert 2e-4 <= t.params["learning_rate"] <= 2e-2  # a decade either side of the preset's 2e-3
        assert t.params["quant_bits"] in (4, 8) and t.user_attrs["lora_alpha"] == 2 * t.params["lora_r"]

    said = [line for line in proc.stdout.splitlines() if line.startswith("target ")]  # before the study, once
    assert said == ["target attention -> q_proj, k_proj, v_proj, o_proj (4 x 2 layers); r=8: 14.3K trainable; "
                    "r=16: 28.7K trainable; r=32: 57.3K trainable"]
    runs = {read_offline_run(d).name: read_offline_run(d) for d in offline_runs(tmp_path / "sweep" / "trials")}
    assert sorted(runs) == [f"t/trial-{t.number}" for t in study.trials]
    for t in study.trials:
        run = runs[f"t/trial-{t.number}"]
        recheck = "recheck_of" in t.user_attrs
        assert (run.group, run.job_type) == ("t", "recheck" if recheck else "trial")
        assert run.config["train"]["seed"] == (43 if recheck else 42)
        assert run.config["trial"].get("recheck_of") == t.user_attrs.get("recheck_of")
        assert run.config["trial"]["lora_r"] == t.params["lora_r"] and run.config["lora"]["r"] == t.params["lora_r"]
        assert run.config["lora"]["target_modules"] == "attention"
        assert run.config["adapted_modules"] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                 "self_attn.o_proj"]
        assert run.summary["state"] == t.state.name.lower() and run.tags == [t.state.name.lower()]
        last = t.value if t.state == TrialState.COMPLETE else t.intermediate_values[max(t.intermediate_values)]
        assert run.summary["eval/loss"] == pytest.approx(last) and "eval_loss" not in run.summary  # one name
        assert run.config["tracking"]["mode"] == "offline"  # what happened, not what was asked (online)

    for t in study.trials:  # what each trial cost, on the trial, in its W&B summary, on the leaderboard
        a = t.user_attrs
        assert a["wall_s"] > a["train_s"] > 0 and a["train_tokens"] > 0 and a["tokens_per_s"] > 0
        assert a["peak_memory_gib"] > 0.1 and a["peak_memory_of"] == "host rss" and a["max_steps"] == 20
        assert a["stopped_at_step"] == a["steps"]
        assert runs[f"t/trial-{t.number}"].summary["train_tokens"] == a["train_tokens"]
    board = (tmp_path / "sweep" / "leaderboard.txt").read_text()
    assert "tok/s  peak GiB" in board and "cost: 3 trials" in board and "pruning saved" in board
    assert f"re-check cost: {len(rechecks)} runs" in board and f"(re-check of trial 0, seed 43)" in board
    assert "re-check (eval_loss over seeds, best mean first among those with every seed):" in board
    assert "beats the baseline by" in board or "no configuration beats the baseline beyond the seed noise" in board
    report = tmp_path / "sweep" / "report"
    assert (report / "index.html").exists() and (report / "curves.png").exists() and (report / "leaderboard.csv").exists()
    assert "report: importances: left out: fANOVA compares trials at one eval step, which needs at least 5" in proc.stdout

    out = proc.stdout
    assert "measuring the hungriest trial's peak memory on cpu" in out and "slots: cpu x2 (1 thread each)" in out
    (measured,) = [line for line in out.splitlines() if line.startswith("measured: ")]
    assert measured.endswith("GiB (host memory, peak RSS)"), measured  # on the CPU the host figure, once
    assert "W&B run saved offline" not in out  # the report's one wandb sync line names the summary run too
    (peak,) = study.user_attrs["memory_peaks"].values()
    assert peak["peak_rss_bytes"] > 100 * 2**20
    assert "trial 0 [cpu.0] ▸ lora_r=32 lora_alpha=64 lora_dropout=0.1 quant_bits=4" in out
    assert "step 10/20  eval_loss" in out and "to go 0" in out
    assert "rerun it alone: python -m trainers" in out and (tmp_path / "sweep" / "leaderboard.txt").exists()
    assert f"wandb sync {tmp_path / 'sweep' / 'trials'}/*/wandb/offline-run-* {tmp_path / 'sweep' / 'summary'}" in out
    (summary_dir,) = offline_runs(tmp_path / "sweep" / "summary")
    summary_id = summary_dir.name.split("-")[-1]  # offline-run-<time>-summary-<the study's hash>
    summary_run = read_offline_run(summary_dir)
    assert (summary_run.job_type, summary_run.group, summary_run.name) == ("sweep-summary", "t", "t/summary")
    best, checked = crowned(study.trials, sweep_settings(args, check_values=False))
    assert best.value == min(c.best_run().value for c in checked.configurations if c is checked.winner)
    assert summary_run.summary["best_trial_run"] == f"t/trial-{best.number}"
    assert summary_run.summary["recheck_winner"] == checked.winner.trial.number
    logged = {k: v for h in summary_run.history for k, v in h.items()}  # nested keys joined with "/"
    assert logged["leaderboard/_type"] == "table-file" and logged["leaderboard/nrows"] == len(study.trials)
    assert logged["recheck/_type"] == "table-file" and logged["recheck/nrows"] == len(checked.configurations)
    assert logged["plots/curves/_type"] == "image-file"  # 3 trials: too few for the plots at a common step
    assert (tmp_path / "sweep" / "best" / "adapter_model.safetensors").exists()
    assert os.path.realpath(tmp_path / "sweep" / "best") == str(tmp_path / "sweep" / "trials" / str(best.number))
    card = (tmp_path / "sweep" / "best" / "README.md").read_text()
    assert card.startswith(f"# t: best trial {best.number}") and f"| eval_loss (what the sweep minimised) | {best.value:.4f} |" in card
    assert "AutoPeftModelForCausalLM.from_pretrained(" in card and "python -m trainers" in card
    assert "## Seed noise" in card and checked.sentence() in card
    assert get_note(study).startswith("## Re-check before crowning")  # optuna-dashboard's study note
    from peft import AutoPeftModelForCausalLM  # the card's one line, as a user runs it
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "sweep" / "best"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "sweep" / "best"))
    ids = tokenizer("How much does this cost to the nearest dollar?\n\nTitle: Nordex laptop\n\nPrice is $",
                    return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert tokenizer.decode(generated, skip_special_tokens=True).strip() != ""
    again = sweep(args)  # the study is complete; the measured peak is read from it, not measured again
    assert again.returncode == 0 and "measuring" not in again.stdout and "slots: cpu x2" in again.stdout
    assert len(load(f"sqlite:///{tmp_path / 'study.db'}").trials) == len(study.trials)  # nothing re-checked twice
    (rewritten,) = offline_runs(tmp_path / "sweep" / "summary")  # its report updated the one summary run
    assert rewritten.name.split("-", 3)[3] == summary_dir.name.split("-", 3)[3] == f"summary-{summary_id}"


def test_diverging_trial_is_pruned_on_postgres_whose_password_is_never_shown(sweep_args, tmp_path, postgres_password):
    """A diverging trial stops at its first eval; and the storage URL's password appears in no output
    and no file the sweep writes (job files, leaderboard, W&B runs), yet the trials reach the study."""
    name = f"prune-{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres:{postgres_password}@127.0.0.1:5432/test"
    enqueue = f"sweep.enqueue=[{GOOD},{GOOD[:-1]}, lora_dropout: 0.15}}," \
              "{lora_r: 8, lora_alpha: 16, lora_dropout: 0.1, quant_bits: 4, learning_rate: 3.0}]"
    enqueue = enqueue.replace("lora_dropout: 0.1, quant_bits: 4, learning_rate: 0.004, lora_dropout: 0.15",
                              "lora_dropout: 0.15, quant_bits: 4, learning_rate: 0.004")
    args = sweep_args + [f"sweep.storage={url}", f"sweep.study_name={name}", "sweep.n_trials=3",
                         "sweep.startup_trials=2", "train.eval_steps=5", *LR_SPACE, enqueue]
    proc = sweep(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert postgres_password not in proc.stdout + proc.stderr
    assert "storage postgresql://postgres:***@127.0.0.1:5432/test" in proc.stdout
    written = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file()]
    assert any(p.name == "job.json" for p in written) and any(p.name == "leaderboard.txt" for p in written)
    assert [p for p in written if postgres_password.encode() in p.read_bytes()] == []
    # The next trial's spare imports beside trials 0 and 1, which yield it a core meanwhile; none follows the last.
    jobs = [json.loads((tmp_path / "sweep" / "trials" / str(n) / "job.json").read_text()) for n in range(3)]
    cores = len(os.sched_getaffinity(0))
    assert [(j["threads"], j["spare_follows"]) for j in jobs] == [(cores, True), (cores, True), (cores, False)]
    study = load(url, name)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED], proc.stdout
    bad = study.trials[2]
    assert bad.params["learning_rate"] == 3.0
    stopped_at = max(bad.intermediate_values) if bad.intermediate_values else bad.user_attrs["steps"]
    assert bad.user_attrs["steps"] == stopped_at < 20
    trial_dir = tmp_path / "sweep" / "trials" / "2"
    assert json.loads((trial_dir / "progress.json").read_text())["step"] == stopped_at  # training really stopped
    assert not (trial_dir / "adapter_model.safetensors").exists()
    (run_dir,) = offline_runs(trial_dir)
    run = read_offline_run(run_dir)
    assert run.summary["state"] == "pruned" and run.summary["pruned_at_step"] == stopped_at
    assert "eval/loss" in run.summary and "eval_loss" not in run.summary  # one name (its value may be inf: diverged)
    assert max(h.get("train/global_step", 0) for h in run.history) == stopped_at
    optuna.delete_study(study_name=name, storage=url)


def wait_for(predicate, timeout=300, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError("timed out")


def corrupted_copy(model_dir, tmp_path):
    """A model whose weights file is cut short (a broken download): its config and file list pass
    every check before the study, and loading it fails inside each trial."""
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    return broken


def test_consecutive_failures_stop_the_sweep(sweep_args, tiny_model, tmp_path):
    """Trials that fail inside (unreadable weights): the sweep stops after max_failures, it does not loop."""
    broken = corrupted_copy(tiny_model, tmp_path)
    proc = sweep(sweep_args + ["sweep.n_trials=5", "sweep.max_failures=2", f"model.name_or_path={broken}"])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: 2 trials failed in a row (sweep.max_failures=2)") and "trial.log" in line
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert study.trials[1].user_attrs["fail_reason"].startswith("exit 1:")


def test_interrupted_sweep_reruns_the_trial(sweep_args, tmp_path):
    """Ctrl-C (or `kill`, SIGTERM) fails the running trial and enqueues its values to run first; in
    the re-check too, whose rerun neither repeats nor forgets a run."""
    args = [a for a in sweep_args if a != "sweep.recheck_seeds=0"] + \
        ["sweep.n_trials=1", "tracking.mode=disabled", "sweep.recheck_seeds=1"]
    url = f"sqlite:///{tmp_path / 'study.db'}"

    def interrupted_at(trial: int) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: (tmp_path / "sweep" / "trials" / str(trial) / "progress.json").exists())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130 and f"interrupted: trial {trial} will run again" in out, out[-3000:]
        return out

    interrupted_at(0)  # once in 3 CI runs: 1
    first, retry = load(url).trials
    assert first.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params

    interrupted_at(2)  # the retry completes; the baseline's re-check (seed 43) is interrupted
    trials = load(url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert [(t.user_attrs.get("recheck_of"), t.user_attrs.get("seed")) for t in trials] == \
        [(None, None), (None, None), (1, 43), (1, 43)]

    resumed = sweep(args)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    trials = load(url).trials
    assert len(trials) == 4 and trials[1].params == first.params and trials[3].state == TrialState.COMPLETE
    assert trials[3].params == first.params and "(re-check of trial 1, seed 43)" in resumed.stdout
    assert "trial 1 (baseline): mean" in resumed.stdout


def worker_of(sweep_pid: int, trial_dir) -> int:
    """The trial process of a sweep that writes into trial_dir (its stdout is that trial's log)."""
    pids = subprocess.run(["pgrep", "-f", f"sweeper.worker {sweep_pid}"], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/fd/1") == str(trial_dir / "trial.log"):
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no worker writes {trial_dir}")


def test_asha_continues_the_best_paused_trial_from_its_checkpoint_through_a_kill(sweep_args, tmp_path):
    """sweep.pruner=asha, rungs at 10 and 30: three configurations pause at step 10 (their checkpoints
    kept, their processes gone); the best is continued from its checkpoint, not from step 0. kill -9
    the sweep while that continuation trains (the moment its checkpoint-20 folder appears, which is
    only once the checkpoint is whole): the rerun's retry trains from step 21 and ends with exactly
    the eval losses of one uninterrupted run of its values. This is also the resume test of a plain
    retry: a retry after a kill takes the same path, whatever the trial it repeats."""
    args = sweep_args + ["sweep.pruner=asha", "sweep.asha_eta=3", "sweep.n_trials=3", "train.max_steps=30", "train.eval_steps=10",
                         "tracking.mode=disabled", "sweep.heartbeat_interval=1", "sweep.grace_period=3"]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    trials_dir = tmp_path / "sweep" / "trials"
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (trials_dir / "3" / "checkpoint-20").exists(), timeout=400, every=0.02)
    worker = worker_of(proc.pid, trials_dir / "3")
    os.kill(worker, signal.SIGSTOP)  # frozen before its last step
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    assert "asha: each configuration pauses at steps 10 and the best 1/3 at each go on" in out, out[-3000:]
    assert "trial 0 paused eval_loss" in out and "(continues trial " in out, out[-3000:]

    resumed = sweep(args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "(retry of trial 3), resuming from checkpoint-20" in resumed.stdout, resumed.stdout[-3000:]
    study = load(url)
    paused, killed, retry = study.trials[:3], study.trials[3], study.trials[4]
    assert [t.state for t in paused] == [TrialState.PRUNED] * 3 and all(t.user_attrs["paused_at"] == 10 for t in paused)
    best = min(paused, key=lambda t: t.intermediate_values[10])  # the top third of three at rung 10
    assert killed.state == TrialState.FAIL and killed.user_attrs["continued_from"] == best.number
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["continued_from"] == best.number
    assert retry.user_attrs["resumed_from_step"] == 20 and retry.user_attrs["first_step"] == 21  # no step twice
    assert len(study.trials) == 5 and counts(study)["finished"] == 3 and counts(study)["paused"] == 3
    assert not list((trials_dir / str(best.number)).glob("checkpoint-*")) and not list(trials_dir.glob("[34]/checkpoint-*"))
    assert all(list((trials_dir / str(t.number)).glob("checkpoint-10")) for t in paused if t is not best)
    board = (tmp_path / "sweep" / "leaderboard.txt").read_text()
    assert f"{best.number:>5}  promoted" in board and f"(continues trial {best.number})" in board
    # Never trained: the two configurations left at step 10, 20 steps each. Recorded as trained: 10 by each
    # paused trial and 10 by the retry (the killed continuation's steps 11-20 died with it, unrecorded).
    assert "pausing at rungs (asha) saved 40 steps (50% of running every configuration to its end)" in board
    left = ",".join(str(t.number) for t in paused if t is not best)
    assert f"asha: 2 paused configurations never continued keep their checkpoints (" in board
    assert f"trials/{{{left}}}/checkpoint-*), so that a longer study (sweep.n_trials raised" in board

    values = {**best.params, "lora_alpha": best.user_attrs["lora_alpha"]}
    clean = [a for a in args if not a.startswith(("sweep.dir=", "sweep.storage=", "sweep.pruner=", "sweep.n_trials="))]
    reference = sweep(clean + [f"sweep.dir={tmp_path / 'ref'}", f"sweep.storage=sqlite:///{tmp_path / 'ref.db'}",
                               "sweep.pruner=none", "sweep.n_trials=1", "sweep.enqueue=[{" + ", ".join(f"{k}: {v!r}" for k, v in values.items()) + "}]"])
    assert reference.returncode == 0, reference.stdout[-3000:]
    (uninterrupted,) = load(f"sqlite:///{tmp_path / 'ref.db'}").trials
    assert uninterrupted.params == retry.params
    assert retry.intermediate_values == uninterrupted.intermediate_values  # 10 its paused trial's, 20 its own
    assert retry.value == uninterrupted.value  # exactly: CPU training is deterministic, pause and resume included


def test_a_trial_killed_from_outside_runs_again_from_its_checkpoint(sweep_args, tmp_path):
    """kill -9 of the trial process (an operator, a scheduler; not the sweep, not for memory): the
    baseline trial fails as killed, not as out of memory, and its values run again in the same
    sweep from the checkpoint it left, so the baseline is not lost."""
    args = sweep_args + ["sweep.n_trials=1", "train.max_steps=40", "train.eval_steps=10", "tracking.mode=disabled"]
    trial0 = tmp_path / "sweep" / "trials" / "0"
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (trial0 / "checkpoint-20").exists(), every=0.02)
    os.kill(worker_of(proc.pid, trial0), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    killed, retry = load(f"sqlite:///{tmp_path / 'study.db'}").trials
    assert killed.state == TrialState.FAIL
    reason = killed.user_attrs["fail_reason"]
    assert reason.startswith("killed from outside: SIGKILL, not by the sweep, and not for memory (") and "memory" in reason
    assert "out of memory" not in reason and "not retried" not in out
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params  # the baseline's values
    assert retry.user_attrs["resumed_from_step"] >= 20 and retry.user_attrs["first_step"] > 20
    assert retry.user_attrs["steps"] == 40 and ", resuming from checkpoint-" in out
    assert not list(trial0.glob("checkpoint-*")) and not list(trial0.parent.glob("1/checkpoint-*"))  # done: removed
    assert "was killed from outside the sweep: its values run again" in out


def test_wandb_online_without_a_route_to_its_server_saves_offline_and_says_so_once(sweep_args, tmp_path):
    """Logged in (an API key) but the server does not answer: said once, before the study, and the
    trials log offline at once, where each used to wait ~95 s for wandb.init and then fail."""
    with socket.socket() as probe:  # a port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(WANDB_API_KEY="k" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{port}")
    args = [a for a in sweep_args if not a.startswith("tracking.mode=")] + ["tracking.mode=online", "sweep.n_trials=1"]
    proc = sweep(args, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if "did not answer" in line]
    assert said == [f"W&B: http://127.0.0.1:{port} did not answer within 5 s (Connection refused): runs are saved "
                    "offline (upload them later with wandb sync; tracking.mode=offline skips this check)"]
    assert proc.stdout.index(said[0]) < proc.stdout.index("study 't'")  # before the study is touched
    (trial,) = load(f"sqlite:///{tmp_path / 'study.db'}").trials
    assert trial.state == TrialState.COMPLETE
    assert list((tmp_path / "sweep" / "trials" / "0").glob("wandb/offline-run-*"))


def test_stalled_trial_is_killed_and_the_sweep_goes_on(sweep_args, tmp_path):
    args = sweep_args + ["sweep.n_trials=1", "sweep.stall_timeout=3", "tracking.mode=disabled"]
    trial0 = tmp_path / "sweep" / "trials" / "0"
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (trial0 / "progress.json").exists()
             and json.loads((trial0 / "progress.json").read_text())["phase"] == "training", every=0.1)
    os.kill(worker_of(proc.pid, trial0), signal.SIGSTOP)  # a hang: no step, no CPU, no I/O
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    first, second = load(f"sqlite:///{tmp_path / 'study.db'}").trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "stalled: no training step or eval batch for sweep.stall_timeout=3 s"
    assert second.state == TrialState.COMPLETE and "trial 0 failed" in out and "stalled" in out


def test_trial_past_its_time_limit_fails_as_timed_out(sweep_args, tmp_path):
    proc = sweep(sweep_args + ["sweep.n_trials=1", "sweep.max_failures=1", "sweep.trial_timeout=2",
                               "tracking.mode=disabled"])
    assert proc.returncode == 1
    (trial,) = load(f"sqlite:///{tmp_path / 'study.db'}").trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "timed out: still running after sweep.trial_timeout=2 s"


def psql(sql: str) -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def postgres_password():
    """A password on the postgres role for the test, the role's own (none, here: trust auth) restored after."""
    before = psql("SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = 'postgres'")
    secret = f"pw-{uuid.uuid4().hex[:12]}"
    psql(f"ALTER ROLE postgres PASSWORD '{secret}'")
    try:
        yield secret
    finally:
        psql(f"ALTER ROLE postgres PASSWORD '{before}'" if before else "ALTER ROLE postgres PASSWORD NULL")


def test_task_metric_as_the_objective_and_pruner_none(sweep_args, tmp_path):
    """sweep.objective=price_mae: the study ranks trials by the price error of what they generate on
    held-out rows; trials still report eval losses. And sweep.pruner=none prunes nothing: a crawling
    trial that the percentile pruner would cut after a one-trial start trains to its end."""
    slow = "{lora_r: 8, lora_alpha: 16, lora_dropout: 0.1, quant_bits: 4, learning_rate: 1e-6}"
    proc = sweep(sweep_args + ["sweep.n_trials=2", "sweep.objective=price_mae", "tracking.mode=disabled",
                               "sweep.pruner=none", "sweep.startup_trials=1", "train.eval_steps=5", *LR_SPACE,
                               f"sweep.enqueue=[{GOOD},{slow}]"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    lagging = study.trials[1]
    assert lagging.user_attrs["steps"] == 20 and lagging.user_attrs["eval_loss"] > study.trials[0].user_attrs["eval_loss"]
    assert lagging.intermediate_values[5] > study.trials[0].intermediate_values[5]  # what the percentile pruner cuts
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all(t.value == t.user_attrs["price_mae"] and t.user_attrs["eval_loss"] > 0
                            and 0 <= t.user_attrs["price_within_20"] <= 1 for t in complete)
    assert all(t.intermediate_values for t in study.trials)  # eval losses, for the pruner
    board = (tmp_path / "sweep" / "leaderboard.txt").read_text()
    assert "eval_loss   price_mae" in board and f"best: trial {study.best_trial.number}, price_mae" in board
    assert "sweep.objective=eval_loss" not in proc.stdout
