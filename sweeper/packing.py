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
