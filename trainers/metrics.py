"""Task metrics, computed after training by generating on held-out rows (data.metric). `price`
judges a price predictor as the seed course does: the number generated after the prompt (which
ends in 'Price is $') against the true price: mean absolute error, and the share within 20%."""
import re

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
# Objectives a sweep may minimise per metric. Minimised, like the eval loss the pruner sees, so
# the study's direction serves both.
OBJECTIVES = {"price": ("price_mae",)}


def parse_price(text: str) -> float | None:
    """The first number in generated text ('1,299.00 dollars' -> 1299.0); None when there is none."""
    match = NUMBER.search(text)
    return float(match.group().replace(",", "")) if match else None


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch: int = 16) -> list[str]:
    """Greedy completions of each prompt (left-padded batches, so every prompt ends where generation starts)."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    model.eval()
    out = []
    try:
        for i in range(0, len(prompts), batch):
            ids = tokenizer(prompts[i:i + batch], return_tensors="pt", padding=True).to(model.device)
            with torch.no_grad():
                tokens = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(tokens[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def price_metrics(model, tokenizer, rows) -> dict:
    """rows: prompt/completion rows whose completion holds the true price. A generation with no
    number counts as a miss, with the whole true price as its error."""
    rows = [r for r in rows if parse_price(r["completion"]) is not None]
    prompts = [r["prompt"] for r in rows]
    truths = [parse_price(r["completion"]) for r in rows]
    predictions = [parse_price(text) for text in generate(model, tokenizer, prompts, max_new_tokens=8)]
    errors, within = [], 0
    for truth, guess in zip(truths, predictions):
        error = abs(truth) if guess is None else abs(guess - truth)
        errors.append(error)
        within += guess is not None and error <= 0.2 * abs(truth)
    return {"price_mae": round(sum(errors) / len(errors), 4), "price_within_20": round(within / len(errors), 4),
            "price_unparsed": sum(g is None for g in predictions), "metric_rows": len(errors)}


METRICS = {"price": price_metrics}
