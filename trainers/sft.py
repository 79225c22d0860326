"""One trial, top to bottom: check inputs, load the (quantized) base model, train LoRA with TRL's
SFTTrainer, save the adapter and metrics. Callbacks (e.g. a sweep's pruning) are handed in."""
import json
import os
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from trainers.bnb_import import import_bitsandbytes
from trainers.data import check_completions_fit, ensure_embedded_data, is_chat, load_splits
from trainers.model import build_lora, compute_dtype, load_base_model
from trainers.phases import mark, take as take_marks
from trainers.preflight import (check_context, check_model_exists, check_output_dir, check_quantization,
                                check_structure, check_trainer_names)
from trainers.settings import ConfigError, ModelSettings, TrialSettings, first_line
from trainers.targets import resolve
from trainers.tracking import finish_run, start_run


def _eval_printer():
    from transformers import TrainerCallback

    class EvalPrinter(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            print(f"step {state.global_step}/{state.max_steps}  eval_loss {metrics['eval_loss']:.4f}", flush=True)

    return EvalPrinter()


STAGING = ".checkpoint-staging"  # not matched by checkpoint-*: a checkpoint is written here, then renamed


def publish_checkpoint(staged: Path, output_dir: Path, keep: int | None) -> Path:
    """Move a fully written checkpoint into output_dir in one rename, so a checkpoint-N folder
    there is always complete (a process killed while saving leaves only the staging folder);
    then keep the newest `keep` of them, as the Trainer's own save_total_limit would."""
    final = output_dir / staged.name
    if final.exists():  # saved again at the same step, after resuming from an earlier checkpoint
        shutil.rmtree(final)
    os.replace(staged, final)
    staged.parent.rmdir()
    if keep:
        done = sorted(output_dir.glob("checkpoint-*"), key=lambda c: int(c.name.rsplit("-", 1)[1]))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _trainer_class():
    from trl import SFTTrainer

    class ResumableSFTTrainer(SFTTrainer):
        """Checkpoints a retry can trust, resumed at the precision they were trained at.

        The Trainer writes checkpoint-N file by file (adapter, optimizer, scheduler, RNG, state):
        killed meanwhile, it leaves a folder that looks like a checkpoint and is not one. Here it
        writes into a staging folder and the finished checkpoint is renamed into place.

        On resume, PEFT's load_adapter upcasts the adapter to fp32 while TRL trains a QLoRA adapter
        in bf16 (measured: peft 0.21, trl 1.16), so the resumed trial would train at another precision
        than the run it continues. Restore each trainable weight's dtype before the optimizer exists.

        Resumed from a checkpoint already at its last step, transformers 5.24 trains one step past
        max_steps before it looks at it (its epoch loop checks only after a step), so a retry of a
        trial killed after its last eval ended at step N+1 with another loss. Such a run ends here
        with that checkpoint's adapter and its last eval run again (the same weights and rows)."""

        staging = False

        def _get_output_dir(self, trial):
            out = super()._get_output_dir(trial)
            return os.path.join(out, STAGING) if self.staging else out

        def _save_checkpoint(self, model, trial):
            self.staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.staging = False
            out = Path(self._get_output_dir(trial))
            publish_checkpoint(out / STAGING / f"checkpoint-{self.state.global_step}", out, self.args.save_total_limit)

        def train(self, resume_from_checkpoint=None, **kwargs):
            if resume_from_checkpoint and _at_last_step(Path(resume_from_checkpoint), self.args.max_steps):
                return self._finish_from(resume_from_checkpoint)
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

        def _finish_from(self, checkpoint: str):
            from transformers import TrainerState
            from transformers.trainer_utils import TrainOutput

            self._load_from_checkpoint(checkpoint)
            self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
            # A run of no steps to the callbacks (the cost meter counts the steps from here: none).
            self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
            self.evaluate()
            self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
            losses = [h["loss"] for h in self.state.log_history if "loss" in h]
            return TrainOutput(self.state.global_step, sum(losses) / len(losses) if losses else float("nan"),
                               {"train_runtime": 0.0})

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            dtypes = {n: p.dtype for n, p in self.model.named_parameters() if p.requires_grad}
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            for n, p in self.model.named_parameters():
                if n in dtypes and p.dtype != dtypes[n]:
                    p.data = p.data.to(dtypes[n])

    return ResumableSFTTrainer


def sft_config(s: TrialSettings, report_to: str):
    import torch
    from trl import SFTConfig

    t = s.train
    cuda = torch.cuda.is_available()
    dtype = compute_dtype()
    return SFTConfig(
        output_dir=str(s.output_dir), run_name=s.tracking.run_name, report_to=report_to, seed=t.seed,
        max_steps=t.max_steps, num_train_epochs=t.num_train_epochs, max_length=t.max_length,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        lr_scheduler_kwargs=t.lr_scheduler_kwargs or {}, warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim,
        gradient_checkpointing=t.gradient_checkpointing,
        eval_strategy="steps", eval_steps=t.eval_steps, logging_steps=t.logging_steps,
        # Checkpoints (optimizer state included) only when the config asks for them.
        save_strategy=t.save_strategy, save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        use_cpu=not cuda, bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
        include_num_input_tokens_seen=True,
        # Only when asked: TRL's own default pads each batch to its own longest row.
        **({"pad_to_multiple_of": t.pad_to_multiple_of} if isinstance(t.pad_to_multiple_of, int) else {}))


def longest_row(*datasets) -> int:
    """Tokens in the longest row of these tokenized (and truncated) datasets, read from Arrow's
    list lengths: a Python list of every row's ids would not fit a large dataset. Through the
    arrow format, not the dataset's table: after TRL's filter that table still holds dropped rows."""
    import pyarrow.compute as pc

    return max(pc.max(pc.list_value_length(ds.with_format("arrow")["input_ids"])).as_py() or 0 for ds in datasets)


def pad_to_longest_row(trainer) -> int:
    """train.pad_to_multiple_of=longest (the sweep's memory probe): every batch, train and eval,
    padded to the longest row of this trial's data after truncation to max_length: the longest batch
    these data can make, so the probe's peak bounds a real trial's (its batches pad to their own
    longest row) without assuming rows reach max_length (on short rows that overstated the peak 2x,
    docs/gpu.md)."""
    length = longest_row(trainer.train_dataset, trainer.eval_dataset)
    trainer.data_collator.pad_to_multiple_of = length
    print(f"train.pad_to_multiple_of=longest: every batch padded to {length} tokens", flush=True)
    return length


def ensure_model(model: ModelSettings) -> None:
    """The demo model is built on first use at its own location only; anything else must
    already be a model (a folder with config and weights, or a reachable hub id)."""
    from trainers.tiny_model import ensure_tiny_model, is_default_location

    if model.build == "tiny" and is_default_location(model.name_or_path):
        ensure_tiny_model(model.name_or_path)
    check_model_exists(model)


def load_tokenizer(model: ModelSettings):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    except Exception as e:  # transformers' errors here vary (OSError, ValueError, TypeError...)
        raise ConfigError("model.name_or_path", model.name_or_path, f"has no usable tokenizer ({first_line(e)[:160]})") from None


def prepare_inputs(s: TrialSettings, check_modules: bool = True):
    """Everything that can be wrong with the inputs, checked before a weight is loaded.
    check_modules=False leaves the target-module check (it imports peft) to the caller."""
    check_output_dir(s.cache_dir, "cache_dir")
    ensure_model(s.model)
    check_trainer_names(s.train)
    if 0 < s.train.max_steps <= s.train.warmup_steps:  # a quick smoke run may mean it: said, not refused
        print(f"note: train.warmup_steps={s.train.warmup_steps} >= train.max_steps={s.train.max_steps}: the learning "
              f"rate rises for the whole run and never reaches train.learning_rate", flush=True)
    check_context(s.model, s.train.max_length)  # from the model's config: before the data loads
    check_quantization(s.model, s.quant.bits)
    if check_modules:
        for line in check_structure(s.model, [s.lora.target_modules], [s.lora.r]):
            print(line, flush=True)
    ensure_embedded_data(s.data)
    tokenizer = load_tokenizer(s.model)
    if tokenizer.pad_token is None:  # GPT-2, Llama-3 base: batches need one; the loss never sees it
        tokenizer.pad_token = tokenizer.eos_token
    train, evals, fmt = load_splits(s.data, s.cache_dir / "datasets")
    if is_chat(train, fmt) and not tokenizer.chat_template:
        shown = fmt if fmt == "messages" else "prompt_completion as chat turns"
        raise ConfigError("data.format", shown, f"needs a chat template, and the tokenizer of {s.model.name_or_path} "
                          "has none (base models often lack one): use text prompt/completion or text rows, or a chat "
                          "model")
    note = check_completions_fit(train, tokenizer, s.train.max_length, fmt)
    if note:
        print(note, flush=True)
    return tokenizer, train, evals


def adapted_modules(model) -> list[str]:
    """The layers carrying a LoRA adapter, by their path inside one block (self_attn.q_proj,
    attn.c_attn), each once."""
    names = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    return list(dict.fromkeys(".".join(n.split(".")[-2:]) for n in names))


def _final_eval_loss(trainer) -> float:
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if evals and evals[-1]["step"] == trainer.state.global_step:
        return evals[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def out_of_memory(error: BaseException) -> str | None:
    """'out of memory: ...' when the error is the device (or, capped, the host) running out."""
    import torch

    text = first_line(error)
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
            isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)):
        return f"out of memory: {text[:200]}"
    return None


def _checkpoint_step(checkpoint) -> int:
    if checkpoint is None:
        return 0
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def _adapter_shape(config: dict) -> dict:
    """What decides an adapter's weights and their scale: rank, alpha, the modules it adapts."""
    modules = config.get("target_modules")
    return {"lora.r": config.get("r"), "lora.alpha": config.get("lora_alpha"),
            "lora.target_modules": sorted(modules) if isinstance(modules, (list, set, tuple)) else modules}


def _said(shape: dict, keys: list[str]) -> str:
    """Modules by their kind (q_proj, ...), as lora.target_modules names them, not by their paths."""
    return ", ".join(f"{k}={','.join(sorted({m.rsplit('.', 1)[-1] for m in shape[k]}))}" if isinstance(shape[k], list)
                     else f"{k}={shape[k]}" for k in keys)


def _at_last_step(checkpoint: Path, max_steps: int) -> bool:
    """A checkpoint at the run's last step, as a trial killed after its last eval leaves it."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state["global_step"] >= (max_steps if max_steps > 0 else state.get("max_steps", 0)) > 0


def check_resumable(trainer, checkpoint: Path, max_steps: int) -> None:
    """Refuse in one line a checkpoint this run cannot continue (through train(): torch's size
    mismatch or the optimizer's ValueError, deep inside)."""
    saved = checkpoint / "adapter_config.json"
    if saved.is_file():
        theirs = _adapter_shape(json.loads(saved.read_text()))
        ours = _adapter_shape(trainer.model.peft_config["default"].to_dict())
        differ = [k for k in ours if theirs[k] != ours[k]]
        if differ:
            raise ConfigError("resume_from_checkpoint", str(checkpoint), f"its adapter was trained with "
                              f"{_said(theirs, differ)}; this run has {_said(ours, differ)}; allowed: the run's own values")
    step = _checkpoint_step(checkpoint)
    if 0 < max_steps < step:
        raise ConfigError("resume_from_checkpoint", str(checkpoint), f"is at step {step}, past "
                          f"train.max_steps={max_steps}; allowed: a checkpoint at or before it")


def run_trial(s: TrialSettings, callbacks=(), extra_config: dict | None = None, meter=None) -> dict:
    """Train one LoRA adapter; returns the final metrics and its cost (also saved as metrics.json).
    meter: a trainers.cost meter the caller keeps, to read what a trial cost when it stops early."""
    from trainers.cost import cost_meter

    if s.train.per_device_train_batch_size == "auto":
        raise ConfigError("train.per_device_train_batch_size", "auto",
                          "decided by a sweep, which measures memory (make sweep); one trial needs a whole number")
    start = time.monotonic()
    check_output_dir(s.output_dir)
    import_bitsandbytes()  # the cost meter's TrainerCallback imports peft, which imports it the slow way
    meter = meter or cost_meter()
    tokenizer, train, evals = prepare_inputs(s)
    mark("data_loaded")
    model = load_base_model(s.model, s.quant, s.train.gradient_checkpointing)
    mark("model_loaded")
    run = start_run(s.tracking, {**s.resolved, **(extra_config or {})}, s.output_dir, s.cache_dir)
    mark("wandb_started")
    trainer = _trainer_class()(model=model, args=sft_config(s, "wandb" if run else "none"), train_dataset=train,
                         eval_dataset=evals, processing_class=tokenizer,
                         peft_config=build_lora(s.lora, resolve(s.lora.target_modules, model)),
                         callbacks=[_eval_printer(), meter, *callbacks])
    if s.train.pad_to_multiple_of == "longest":
        pad_to_longest_row(trainer)
    mark("trainer_built")
    adapted = adapted_modules(trainer.model)
    if run is not None:  # what was adapted, as PEFT did it: W&B compares trials by it
        run.config.update({"adapted_modules": adapted}, allow_val_change=True)
    resume = str(s.resume_from_checkpoint) if s.resume_from_checkpoint else None
    # Read now: resumed in its own output_dir, the checkpoint may be rotated away (save_total_limit)
    # before the end, where reading it lost the finished trial's adapter and metrics.
    resumed_from = _checkpoint_step(s.resume_from_checkpoint)
    if resume:
        print(f"resuming from {resume}", flush=True)
    try:
        if resume:
            check_resumable(trainer, s.resume_from_checkpoint, s.train.max_steps)
        result = trainer.train(resume_from_checkpoint=resume)
        metrics = {
            "eval_loss": _final_eval_loss(trainer), "train_loss": result.training_loss,
            "steps": trainer.state.global_step, "runtime_s": round(time.monotonic() - start, 2),
            "train_runtime_s": round(result.metrics["train_runtime"], 2),
            "resumed_from_step": resumed_from, "adapted_modules": adapted,
            "attn_implementation": model.config._attn_implementation,
            **meter.summary(),  # train_s, train_tokens (trained in this process), tokens_per_s, peak memory
        }
        if s.data.metric is not None:  # e.g. price: generate on held-out rows, judge the answers
            from trainers.metrics import METRICS

            rows = evals.select(range(min(s.data.metric_rows, len(evals))))
            metrics.update(METRICS[s.data.metric](trainer.model, tokenizer, rows))
            mark("metric_done")
    except BaseException as e:
        if run is not None and run.summary.get("state") is None:
            run.summary["state"] = "failed"
            run.summary["fail_reason"] = out_of_memory(e) or first_line(e)[:300]
        finish_run(run, {})
        raise
    trainer.save_model(str(s.output_dir))
    tokenizer.save_pretrained(str(s.output_dir))
    OmegaConf.save(OmegaConf.create(s.resolved), s.output_dir / "config.yaml")
    mark("saved")
    finish_run(run, {**metrics, "state": "complete"})
    mark("wandb_finished")
    metrics["phase_marks"] = take_marks()
    (s.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
