"""What a trial cost: training seconds, the tokens trained in this process and their rate, peak
memory (on a GPU as PyTorch reserved it, which is less than the driver sees by the CUDA context;
on the CPU the process's peak resident memory), the step it stopped at of how many, and the
tokens/s after the first WARM_STEPS steps (warm_tokens_per_s: evals included, as in train_s)."""
import time

from trainers.phases import mark

WARM_STEPS = 10


def peak_memory_gib() -> dict:
    import resource

    import torch

    if torch.cuda.is_available():
        return {"peak_memory_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3), "peak_memory_of": "gpu"}
    return {"peak_memory_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "peak_memory_of": "host rss"}


def cost_meter():
    from transformers import TrainerCallback

    class CostMeter(TrainerCallback):
        def __init__(self):
            self.started = self.tokens_at_start = None
            self.last = {"train_s": 0.0, "train_tokens": 0, "stopped_at_step": 0, "max_steps": 0}

        def on_train_begin(self, args, state, control, **kwargs):
            mark("train_begin")
            self.started, self.tokens_at_start = time.monotonic(), state.num_input_tokens_seen
            self.first_step, self.warm = state.global_step, None
            self.last.update(stopped_at_step=state.global_step, max_steps=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            self.last.update(train_s=round(now - self.started, 2), stopped_at_step=state.global_step,
                             train_tokens=int(state.num_input_tokens_seen - self.tokens_at_start))
            if state.global_step - self.first_step == WARM_STEPS:
                self.warm = (now, state.num_input_tokens_seen)
            elif self.warm is not None:  # steady speed: the first steps (compilation, allocator, caches) left out
                self.last["warm_tokens_per_s"] = round((state.num_input_tokens_seen - self.warm[1]) / (now - self.warm[0]), 1)

        def on_train_end(self, args, state, control, **kwargs):
            mark("train_end")

        def summary(self) -> dict:
            rate = self.last["train_tokens"] / self.last["train_s"] if self.last["train_s"] else 0.0
            return {**self.last, "tokens_per_s": round(rate, 1), **peak_memory_gib()}

    return CostMeter()
