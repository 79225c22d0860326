"""Imports bitsandbytes with its import-time torch.compile calls deferred to each kernel's first call,
which saves every trial process about 1.5 s of CPU (measured below)."""
import functools
import logging
import sys


def _deferred(compile_):
    """torch.compile, but called on the wrapped function's first call rather than now."""

    def deferred(model=None, **options):
        if model is None:  # used as @torch.compile(...)
            return lambda fn: deferred(fn, **options)
        compiled = None

        @functools.wraps(model)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = compile_(model, **options)
            return compiled(*args, **kwargs)

        return call

    return deferred


def import_bitsandbytes():
    """bitsandbytes 0.50 wraps four fallback kernels (backends/default/ops.py) in torch.compile when it
    is imported. torch.compile itself compiles nothing until the first call, but it builds inductor's
    backend at once: 1.5-2 s of CPU per process (2 cores, 2026-12-04: the trial stack's imports in
    5.4-5.5 s instead of 6.9-7.4 s), for kernels that the CPU and CUDA backends call only on fallback
    paths. Deferred, such a kernel is compiled when first called, as it would have been; a compile
    error there still falls back to the plain kernel (bitsandbytes' own wrapper catches it at the
    call). Call before anything imports peft or trl, which import bitsandbytes."""
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    import torch

    compile_ = torch.compile
    torch.compile = _deferred(compile_)
    # On a CPU with AVX512-BF16 bitsandbytes asks the `kernels` package for a hub kernel at import.
    # Without a reachable hub that fails (kernels 0.19 cannot verify the publisher; offline it says
    # it skips the check, then finds nothing cached), bitsandbytes falls back to its own kernel, and
    # both log it in every trial process ("... pip install kernels", which is installed): warnings
    # with nothing for the user to do, so not shown during the import.
    quieted = [logging.getLogger(name) for name in ("bitsandbytes.backends.cpu.ops", "kernels")]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    finally:
        torch.compile = compile_
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)
    return bitsandbytes
