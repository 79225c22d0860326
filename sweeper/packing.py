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


def host_memory_available() -> int:
    """MemAvailable: what the kernel can give without swapping."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def slots_for(device_memory: int | None, peaks: dict | None, cores: int, devices: int) -> int:
    """K for one device: what its memory fits, and what host memory fits across all `devices`
    (every trial process loads through host RAM); on the CPU, also one core per trial at least
    (measured: two 1-thread trials side by side beat one 2-thread trial 1.36x; README)."""
    if not peaks:
        return 1
    host = fits(host_memory_available(), peaks["peak_rss_bytes"]) // devices
    if device_memory is None:  # the CPU
        return max(1, min(cores, host))
    return max(1, min(fits(device_memory, peaks["peak_bytes"]), host))


def gpu_fraction(memory_bytes: int, slots: int) -> float:
    """The PyTorch allocator's cap for one of K trial processes: its even share, less the memory
    outside the allocator (its CUDA context, and one waiting spare per slot)."""
    share = memory_bytes / slots - CUDA_CONTEXT - SPARE
    return max(0.05, min(1.0, share / memory_bytes))


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def peaks_at(batch: int, low: tuple[int, dict], high: tuple[int, dict]) -> dict:
    """Peaks at a per-device batch, on the line through two measured batches: with the weights,
    optimizer state and contexts fixed, what grows with the batch is activations, linearly."""
    (b0, p0), (b1, p1) = low, high
    if b1 == b0:
        return p0
    return {k: int(p0[k] + (batch - b0) * (p1[k] - p0[k]) / (b1 - b0)) for k in ("peak_bytes", "peak_rss_bytes")}


def choose_batch(effective: int, low: tuple[int, dict], high: tuple[int, dict], slots_of, fixed_slots=None):
    """(per-device batch, K) for train.per_device_train_batch_size=auto: among the batches that
    divide the effective batch (so accumulation makes up the rest and every trial's step means the
    same), the one that keeps the most rows in flight on the device (K x batch, K as slots_of gives
    it), the larger batch on a tie. Why rows in flight
    (docs/gpu.md): on an H200 four times the rows from a bigger batch gave 2.1x the tokens/s and
    three times the rows from trials side by side 2.3x, so a row buys about the same either way;
    on a tie the bigger batch wins, as fewer processes hold fewer copies of the weights. With K
    fixed by the config: the largest batch whose peak fits K times. Never above the largest batch
    measured to run."""
    candidates = [b for b in divisors(effective) if b <= high[0]]
    if fixed_slots is not None:
        fitting = [b for b in candidates if slots_of(peaks_at(b, low, high)) >= fixed_slots]
        return max(fitting, default=candidates[0]), fixed_slots
    plans = [(b, slots_of(peaks_at(b, low, high))) for b in candidates]
    return max(plans, key=lambda bk: (bk[0] * bk[1], bk[0]))
