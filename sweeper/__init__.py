"""The sweep: an Optuna study of QLoRA trials. Decides what to try next, runs each trial in its
own process, records results, and reports. Never imports peft/bitsandbytes, so never touches CUDA.
From Python: `from sweeper import run_sweep` (sweeper/api.py)."""


def __getattr__(name):
    # Importing the package stays cheap (trial processes import it first): the API loads on use.
    if name in ("run_sweep", "SweepResult", "SweepFailed"):
        from sweeper import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
