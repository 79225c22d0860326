"""The winner, ready to take away: a README (model card) in outputs/<study>/best/ with the base
model, the values, the metrics, what it cost, the command that reproduces it and the line that
loads it. It replaces the template PEFT writes beside every adapter."""
from pathlib import Path

from optuna.trial import FrozenTrial

from sweeper.settings import SweepSettings

COST_KEYS = (("wall_s", "trial wall time, s"), ("train_s", "training time, s"), ("train_tokens", "training tokens"),
             ("tokens_per_s", "training tokens / s"), ("peak_memory_gib", "peak memory, GiB"),
             ("stopped_at_step", "steps"))


def model_card(best: FrozenTrial, values: dict, s: SweepSettings, n_finished: int, rerun: str, folder: Path,
               recheck: list[str] | None = None) -> str:
    """recheck: the re-check's lines (sweeper/results/seeds.py), when the winner was crowned by its mean."""
    a = best.user_attrs
    seed = a.get("seed", s.trial.train.seed)
    how = (f"the best mean over seeds of the configurations re-checked after {n_finished} finished trials of the\n"
           f"Optuna study `{s.study_name}` (storage `{s.storage_shown}`), found by qlora-sweep; this adapter is its "
           f"best seed ({seed})") if recheck else (
        f"the best of {n_finished} finished trials of the\nOptuna study `{s.study_name}` (storage "
        f"`{s.storage_shown}`), found by qlora-sweep")
    checked = "" if not recheck else ("\n## Seed noise\n\nThe best configurations and the baseline were trained "
                                      "again on more seeds before this one was crowned:\n\n```\n"
                                      + "\n".join(recheck) + "\n```\n")
    bits = s.trial.quant.bits if "quant_bits" not in values else values["quant_bits"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in values.items())
    metrics = "".join(f"| {k} | {a[k]} |\n" for k in ("eval_loss", "price_mae", "price_within_20")
                      if k in a and k != s.objective)
    cost = "\n".join(f"| {label} | {a[key]} |" for key, label in COST_KEYS if key in a)
    quantized = "" if bits is None else (
        f"\nIt was trained on a {bits}-bit base model. To use the same memory at inference, pass the same\n"
        "quantization: `AutoPeftModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig("
        + ("load_in_4bit=True, bnb_4bit_quant_type='nf4'" if bits == 4 else "load_in_8bit=True") + "))`.\n")
    return f"""# {s.study_name}: best trial {best.number}

A LoRA adapter for `{s.trial.model.name_or_path}`, {how}.

## Load it

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{folder}")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```
{quantized}
## Values

| parameter | value |
|---|---|
{rows}

## Metrics

| metric | value |
|---|---|
| {s.objective} (what the sweep minimised) | {best.value:.4f} |
{metrics}| data | `{s.trial.data.name_or_path}` |
{checked}
## What it cost

| | |
|---|---|
{cost}

## Reproduce it

```bash
{rerun}
```
"""
