"""One QLoRA trial the way a person runs it by hand: a plain script calling TRL's SFTTrainer
directly, one process per trial (the baseline of bench/overhead.py and bench/gpu_check.py). It
uses nothing of this project; it writes its phase marks and result to OUT/hand_run.json.
python bench/hand_run.py --model DIR --data FILE.jsonl --out DIR --r 16 --alpha 32 --dropout 0.1 --bits 4 ..."""
import argparse
import json
import time

import torch
import wandb
from datasets import load_dataset
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
from trl import SFTConfig, SFTTrainer

MARKS = [("imported", time.time())]  # the launcher's clock gives the process start


def mark(name: str) -> None:
    MARKS.append((name, time.time()))


class Marks(TrainerCallback):
    """Training begins and ends; tokens/s after the first 10 steps, as the sweep's trials count it."""

    def on_train_begin(self, args, state, control, **kwargs):
        mark("train_begin")
        self.first, self.warm, self.warm_rate = state.global_step, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step - self.first == 10:
            self.warm = (time.monotonic(), state.num_input_tokens_seen)
        elif self.warm is not None:
            self.warm_rate = (state.num_input_tokens_seen - self.warm[1]) / (time.monotonic() - self.warm[0])

    def on_train_end(self, args, state, control, **kwargs):
        mark("train_end")


def main():
    ap = argparse.ArgumentParser()
    for name, kind in [("model", str), ("data", str), ("out", str), ("r", int), ("alpha", float), ("dropout", float),
                       ("bits", int), ("steps", int), ("eval_steps", int), ("lr", float), ("batch", int),
                       ("accumulation", int), ("eval_batch", int), ("max_length", int), ("warmup", int),
                       ("eval_size", int), ("optim", str), ("scheduler", str), ("max_grad_norm", float),
                       ("project", str), ("name", str)]:
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, required=name in ("model", "data", "out"),
                        default={"r": 16, "alpha": 32, "dropout": 0.1, "bits": 4, "steps": 100, "eval_steps": 50,
                                 "lr": 2e-3, "batch": 16, "accumulation": 1, "eval_batch": 32, "max_length": 128,
                                 "warmup": 5, "eval_size": 64, "optim": "adamw_torch", "scheduler": "cosine",
                                 "max_grad_norm": 1.0, "project": "qlora-sweep-bench", "name": "hand-run"}.get(name))
    ap.add_argument("--gradient-checkpointing", action="store_true")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32

    data = load_dataset("json", data_files=a.data, split="train")
    split = data.train_test_split(test_size=a.eval_size, seed=42)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    mark("data_loaded")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype) if a.bits == 4 else BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(a.model, quantization_config=quant, dtype=dtype,
                                                 device_map={"": "cuda" if cuda else "cpu"})
    for module in model.modules():  # bitsandbytes 0.50's AVX512-BF16 CPU path drops LoRA gradients (STACK.md)
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.gradient_checkpointing)
    mark("model_loaded")
    run = wandb.init(project=a.project, name=a.name, dir=a.out, config=vars(a))
    mark("wandb_started")
    args = SFTConfig(output_dir=a.out, max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type=a.scheduler,
                     warmup_steps=a.warmup, per_device_train_batch_size=a.batch,
                     gradient_accumulation_steps=a.accumulation, per_device_eval_batch_size=a.eval_batch,
                     max_length=a.max_length, optim=a.optim, max_grad_norm=a.max_grad_norm, weight_decay=0.0,
                     gradient_checkpointing=a.gradient_checkpointing, eval_strategy="steps", eval_steps=a.eval_steps,
                     logging_steps=a.eval_steps, save_strategy="no", report_to="wandb", seed=42, use_cpu=not cuda,
                     bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
                     include_num_input_tokens_seen=True)
    lora = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    marks = Marks()
    trainer = SFTTrainer(model=model, args=args, train_dataset=split["train"], eval_dataset=split["test"],
                         processing_class=tokenizer, peft_config=lora, callbacks=[marks])
    mark("trainer_built")
    trainer.train()
    eval_loss = next(h["eval_loss"] for h in reversed(trainer.state.log_history) if "eval_loss" in h)
    trainer.save_model(a.out)
    mark("saved")
    run.finish()
    mark("wandb_finished")
    peak = torch.cuda.max_memory_reserved() if cuda else None
    with open(f"{a.out}/hand_run.json", "w") as f:
        json.dump({"marks": MARKS, "eval_loss": eval_loss, "steps": trainer.state.global_step,
                   "train_tokens": int(trainer.state.num_input_tokens_seen), "warm_tokens_per_s": marks.warm_rate,
                   "peak_gpu_reserved_bytes": peak}, f, indent=2)
    print(f"eval_loss {eval_loss:.4f} after {trainer.state.global_step} steps")


if __name__ == "__main__":
    main()
