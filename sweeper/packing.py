"""How many trials fit side by side on a device, and each one's share of its memory. Measured
costs, not guesses: a CUDA context is ~0.5 GiB outside PyTorch's allocator (STACK.md), and a
waiting spare, which has imported bitsandbytes and so holds a context, ~0.6 GiB (docs/gpu.md)."""
GIB = 2**30
CUDA_CONTEXT = int(0.5 * GIB)
SPARE = int(0.6 * GIB)
# Over the measured peak of the hungriest configuration: the probe runs a few steps, and a long
# run's allocator fragments its cache further (PyTorch's caching allocator rounds blocks up and
# does not always reuse freed ones); 15% covers what we have seen, and an error costs one trial.
MARGIN = 0.15


def fits(memory_bytes: int, peak_bytes: int) -> int:
    """K: trials whose measured peak (as the driver sees it, context included) fit on the device
    together with one waiting spare each."""
    per_trial = int(peak_bytes * (1 + MARGIN)) + SPARE
    return max(1, memory_bytes // per_trial)


def gpu_fraction(memory_bytes: int, slots: int) -> float:
    """The PyTorch allocator's cap for one of K trial processes: its even share, less the memory
    outside the allocator (its CUDA context, and one waiting spare per slot)."""
    share = memory_bytes / slots - CUDA_CONTEXT - SPARE
    return max(0.05, min(1.0, share / memory_bytes))
