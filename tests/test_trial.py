"""Real tiny trials: 4-bit, 8-bit and unquantized train, save an adapter that loads and generates,
and log to one offline W&B run whose files we read back."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from trainers.config import compose_config
from trainers.settings import trial_settings
from wandb_files import offline_runs, read_offline_run

pytestmark = pytest.mark.slow


def load_and_generate(adapter_dir, base_dir, bits):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.model import build_quantization, compute_dtype
    from trainers.settings import QuantSettings

    quant = build_quantization(QuantSettings(bits=bits, double_quant=True), compute_dtype())
    base = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quant, device_map={"": "cpu"})
    model = PeftModel.from_pretrained(base, adapter_dir)
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    prompt = "How much does this cost to the nearest dollar?\n\nTitle: Nordex compact laptop\n\nPrice is $"
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("bits", [4, 8, None])
def test_trial_trains_saves_and_tracks(bits, short_trial, tiny_model, tmp_path, capsys):
    from trainers.sft import run_trial

    settings = trial_settings(compose_config(
        short_trial + [f"quant.bits={bits or 'none'}", "tracking.group=g1", "tracking.run_name=r1"]))
    metrics = run_trial(settings)

    out = tmp_path / "run"
    assert metrics["steps"] == 20
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # data=synthetic_prices names the price metric: generated answers on the 16 held-out rows, judged
    assert metrics["metric_rows"] == 16 and metrics["price_mae"] >= 0 and 0 <= metrics["price_within_20"] <= 1
    assert (out / "adapter_model.safetensors").exists() and (out / "config.yaml").exists()
    assert not list(out.glob("checkpoint-*")), "no silent optimizer checkpoints"
    printed = capsys.readouterr().out
    assert "step 10/20  eval_loss" in printed and "step 20/20  eval_loss" in printed

    completion = load_and_generate(out, tiny_model, bits)
    assert completion.strip() != ""

    (run_dir,) = offline_runs(out)
    run = read_offline_run(run_dir)
    assert (run.group, run.name, run.project) == ("g1", "r1", "qlora-sweep")
    assert run.config["quant"]["bits"] == (bits or "none") and run.config["lora"]["r"] == 8
    evals = [h["eval/loss"] for h in run.history if "eval/loss" in h]
    assert len(evals) == 2 and evals[-1] == pytest.approx(metrics["eval_loss"])
    assert evals[1] < evals[0], "LoRA on the pretrained tiny model learns the price format"
    assert run.summary["state"] == "complete"
    assert run.summary["eval/loss"] == pytest.approx(metrics["eval_loss"]) and "eval_loss" not in run.summary


@pytest.mark.parametrize("shape", ["messages", "prompt_completion"])
def test_chat_rows_train_with_chat_template(shape, short_trial, tmp_path):
    """messages, and TRL's conversational prompt/completion (both lists of turns; they were refused
    as 'not text'), rendered by the tokenizer's chat template."""
    from trainers.sft import run_trial

    turns = [[{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"{2 * i}"}]
             for i in range(60)]
    rows = [{"messages": t} if shape == "messages" else {"prompt": t[:1], "completion": t[1:]} for t in turns]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = trial_settings(compose_config(short_trial + [
        f"data.format={shape}", "data.build=null", "data.metric=null", f"data.name_or_path={path}", "data.eval_size=8",
        "tracking.mode=disabled", "train.max_steps=10"]))
    metrics = run_trial(settings)
    assert metrics["steps"] == 10 and metrics["eval_loss"] > 0


def test_cli_trains_the_tiny_model_and_prints_losses(short_trial, tmp_path, capsys):
    """`python -m trainers quant.bits=4`, as a user types it (with a short schedule)."""
    proc = subprocess.run([sys.executable, "-m", "trainers", "quant.bits=4", *short_trial],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step 20/20  eval_loss" in proc.stdout
    assert "eval_loss" in proc.stdout.splitlines()[-1]
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()
    assert proc.stderr.count("MatMul8bitLt") <= 1

    # The same command again would overwrite the finished adapter: refused before anything loads.
    from trainers.__main__ import main

    finished = (tmp_path / "run" / "metrics.json").read_text()
    assert main(["quant.bits=4", *short_trial]) == 2
    assert capsys.readouterr().err.startswith(f"error: output_dir='{tmp_path / 'run'}': holds a finished trial (metrics.json)")
    assert (tmp_path / "run" / "metrics.json").read_text() == finished


def test_a_checkpoint_folder_is_complete_or_absent(short_trial, tmp_path, monkeypatch):
    """Killed while saving its second checkpoint (here: the save raises half way, after the adapter
    and optimizer are written), a trial leaves checkpoint-10 whole and no checkpoint-20 folder: a
    retry that resumes from the newest checkpoint-N it sees resumes from a complete one."""
    import transformers

    from trainers.sft import STAGING, run_trial

    saved_rng = transformers.Trainer._save_rng_state

    def dies_at_step_20(self, output_dir):
        if self.state.global_step == 20:
            raise KeyboardInterrupt("killed while saving")
        saved_rng(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", dies_at_step_20)
    settings = trial_settings(compose_config(short_trial + ["tracking.mode=disabled", "train.save_strategy=steps",
                                                            "train.save_steps=10"]))
    with pytest.raises(KeyboardInterrupt):
        run_trial(settings)
    out = tmp_path / "run"
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-10"]
    assert {"trainer_state.json", "optimizer.pt", "rng_state.pth"} <= {f.name for f in (out / "checkpoint-10").iterdir()}
    partial = {f.name for f in (out / STAGING / "checkpoint-20").iterdir()}
    assert "optimizer.pt" in partial and "trainer_state.json" not in partial

    # Ctrl-C's line says where to resume. Resumed in the same folder, checkpoint-10 is rotated away
    # (save_total_limit=1) before the end, where reading its step lost the finished adapter and metrics.
    from trainers.__main__ import interrupted_line

    assert interrupted_line(out) == ("the trial stopped; resume it with the same overrides and "
                                     f"resume_from_checkpoint={out / 'checkpoint-10'}")
    monkeypatch.undo()
    metrics = run_trial(trial_settings(compose_config(short_trial + [
        "tracking.mode=disabled", "train.save_strategy=steps", "train.save_steps=10", "train.save_total_limit=1",
        f"resume_from_checkpoint={out / 'checkpoint-10'}"])))
    assert metrics["resumed_from_step"] == 10 and metrics["steps"] == 20
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-20"] and (out / "adapter_model.safetensors").exists()

    # Killed after its last eval, a trial leaves checkpoint-20: resumed from it, nothing is trained
    # again and it ends with that eval's loss (through train(), transformers trained a 21st step).
    again = run_trial(trial_settings(compose_config(short_trial + [
        "tracking.mode=disabled", "train.save_strategy=steps", "train.save_steps=10", "train.save_total_limit=1",
        f"output_dir={tmp_path / 'again'}", f"resume_from_checkpoint={out / 'checkpoint-20'}"])))
    assert (again["resumed_from_step"], again["steps"], again["stopped_at_step"], again["train_tokens"]) == (20, 20, 20, 0)
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-6)
    assert (tmp_path / "again" / "adapter_model.safetensors").exists()

    # A checkpoint this run cannot continue is refused in one line (not torch's size mismatch).
    from trainers.settings import ConfigError

    for changed, said in [("lora.r=16", "trained with lora.r=8; this run has lora.r=16;"),
                          ("train.max_steps=10", "is at step 20, past train.max_steps=10")]:
        with pytest.raises(ConfigError, match=said.replace(".", r"\.")):
            run_trial(trial_settings(compose_config(short_trial + [
                "tracking.mode=disabled", f"output_dir={tmp_path / changed.split('=')[0]}", changed,
                f"resume_from_checkpoint={out / 'checkpoint-20'}"])))


def test_checkpoints_are_published_whole_and_rotated(tmp_path):
    from trainers.sft import STAGING, publish_checkpoint

    def staged(step):
        folder = tmp_path / STAGING / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(str(step))
        return folder

    for step in (10, 20, 30):
        publish_checkpoint(staged(step), tmp_path, keep=2)
    assert sorted(c.name for c in tmp_path.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]
    assert not (tmp_path / STAGING).exists()
    (tmp_path / "checkpoint-30" / "stale").write_text("from before a resume at 20")
    publish_checkpoint(staged(30), tmp_path, keep=None)  # resumed from 20, saved again at 30
    assert sorted(f.name for f in (tmp_path / "checkpoint-30").iterdir()) == ["trainer_state.json"]


def test_wandb_server_lost_mid_run_neither_stops_nor_fails_the_trial(short_trial, tmp_path, monkeypatch, capsys):
    """Online against a W&B server that goes away after the first eval: training goes on, the trial
    completes with its adapter, every eval is in the run's file on disk, and the run's close gives
    up after tracking.finish_timeout_s (wandb alone retried for over 5 minutes, measured)."""
    from transformers import TrainerCallback

    from trainers.sft import run_trial
    from wandb_server import FakeWandbServer

    import wandb

    server = FakeWandbServer()
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", server.url)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    # wandb reads the environment once per process; an earlier test's runs set it up offline
    # (a sweep's trial is a process of its own, so this is the test's concern only).
    wandb.teardown()

    class LoseTheServer(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):
            if state.global_step == 10:
                server.stop()

    settings = trial_settings(compose_config(
        [a for a in short_trial if not a.startswith("tracking.mode=")]
        + ["tracking.mode=online", "tracking.finish_timeout_s=3", "tracking.run_name=r1", "data.metric=null"]))
    try:
        metrics = run_trial(settings, callbacks=[LoseTheServer()])
    finally:
        wandb.teardown()  # the next test's runs read their own environment

    out = tmp_path / "run"
    assert server.runs and server.streamed > 0, "the run went online before the server was lost"
    assert metrics["steps"] == 20 and (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "metrics.json").read_text()) == metrics
    printed = capsys.readouterr().out
    (said,) = [line for line in printed.splitlines() if line.startswith("W&B: the server did not take")]
    (run_dir,) = (out / "wandb").glob("run-*")  # an online run's folder, uploadable later
    assert said.endswith(f"within tracking.finish_timeout_s=3 s; the trial goes on, and the run is kept on disk: "
                         f"upload it with wandb sync {run_dir}")
    run = read_offline_run(run_dir)
    assert run.config["tracking"]["mode"] == "online" and run.name == "r1"
    assert [h["train/global_step"] for h in run.history if "eval/loss" in h] == [10, 20]  # the second after the loss
