"""One trial, top to bottom: check inputs, load the (quantized) base model, train LoRA with TRL's
SFTTrainer, save the adapter and metrics. Callbacks (e.g. a sweep's pruning) are handed in."""
import json
import time

from omegaconf import OmegaConf

from trainers.data import check_completions_fit, ensure_embedded_data, load_splits
from trainers.model import build_lora, check_model_exists, compute_dtype, load_base_model
from trainers.settings import TrialSettings
from trainers.tracking import finish_run, start_run


def _eval_printer():
    from transformers import TrainerCallback

    class EvalPrinter(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            print(f"step {state.global_step}/{state.max_steps}  eval_loss {metrics['eval_loss']:.4f}", flush=True)

    return EvalPrinter()


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
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim,
        gradient_checkpointing=t.gradient_checkpointing,
        eval_strategy="steps", eval_steps=t.eval_steps, logging_steps=t.logging_steps,
        # Checkpoints (optimizer state included) only when the config asks for them.
        save_strategy=t.save_strategy, save_steps=t.save_steps,
        use_cpu=not cuda, bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
        include_num_input_tokens_seen=True)


def prepare_inputs(s: TrialSettings):
    """Everything that can be wrong with the inputs, checked before a weight is loaded."""
    from transformers import AutoTokenizer

    if s.model.build == "tiny":
        from trainers.tiny_model import ensure_tiny_model

        ensure_tiny_model(s.model.name_or_path)
    ensure_embedded_data(s.data)
    check_model_exists(s.model)
    tokenizer = AutoTokenizer.from_pretrained(s.model.name_or_path, trust_remote_code=s.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train, evals, fmt = load_splits(s.data, s.cache_dir / "datasets")
    check_completions_fit(train, tokenizer, s.train.max_length, fmt)
    return tokenizer, train, evals


def _final_eval_loss(trainer) -> float:
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if evals and evals[-1]["step"] == trainer.state.global_step:
        return evals[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def run_trial(s: TrialSettings, callbacks=(), extra_config: dict | None = None) -> dict:
    """Train one LoRA adapter; returns the final metrics (also saved as metrics.json)."""
    from trl import SFTTrainer

    start = time.monotonic()
    tokenizer, train, evals = prepare_inputs(s)
    model = load_base_model(s.model, s.quant, s.train.gradient_checkpointing)
    run = start_run(s.tracking, {**s.resolved, **(extra_config or {})}, s.output_dir, s.cache_dir)
    trainer = SFTTrainer(model=model, args=sft_config(s, "wandb" if run else "none"), train_dataset=train,
                         eval_dataset=evals, processing_class=tokenizer, peft_config=build_lora(s.lora),
                         callbacks=[_eval_printer(), *callbacks])
    try:
        result = trainer.train()
        metrics = {
            "eval_loss": _final_eval_loss(trainer), "train_loss": result.training_loss,
            "steps": trainer.state.global_step, "runtime_s": round(time.monotonic() - start, 2),
            "train_runtime_s": round(result.metrics["train_runtime"], 2),
            "train_tokens": int(trainer.state.num_input_tokens_seen),
        }
        import torch

        if torch.cuda.is_available():
            metrics["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except BaseException:
        if run is not None and run.summary.get("state") is None:
            run.summary["state"] = "failed"
        finish_run(run, {})
        raise
    trainer.save_model(str(s.output_dir))
    tokenizer.save_pretrained(str(s.output_dir))
    OmegaConf.save(OmegaConf.create(s.resolved), s.output_dir / "config.yaml")
    (s.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    finish_run(run, {**metrics, "state": "complete"})
    return metrics
