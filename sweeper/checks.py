"""Before the study is touched: the trial job's checks, for every value the search space can
produce (none imports peft, so this process never initialises CUDA)."""
from pathlib import Path

from sweeper.settings import SweepSettings, sqlite_file
from trainers.preflight import check_context, check_quantization, check_structure, check_trainer_names
from trainers.settings import ConfigError


def _labelled(s: SweepSettings) -> list[tuple[str | None, object, object]]:
    """The base trial job, then one per space value; the label names the search key to blame."""
    return [(None, None, s.trial), *s.candidates]


def _blame(label: str | None, value, e: ConfigError) -> ConfigError:
    return e if label is None else ConfigError(label, value, f"sets {e.key}={e.value!r}: {e.allowed}")


def trial_bytes(s: SweepSettings) -> int:
    """About what one trial writes at its largest: the adapter of the hungriest rank and target
    modules in fp32, and each kept checkpoint's adapter and Adam moments; plus logs, tokenizer and
    W&B files."""
    from trainers.preflight import meta_model
    from trainers.targets import adapted_layers, lora_parameters

    meta = meta_model(s.trial.model)
    params = max(lora_parameters(adapted_layers(t.lora.target_modules, meta), t.lora.r) for _, _, t in _labelled(s))
    kept = (s.trial.train.save_total_limit or 2) if s.checkpoints else 0
    return params * 4 * (1 + 3 * kept) + 16 * 2**20


def check_disk(s: SweepSettings) -> None:
    """The study's folder and a SQLite study file writable, with room for one trial, before the study opens."""
    from sweeper.disk import check_room, check_sqlite, check_writable

    check_writable(s.dir, "sweep.dir", str(s.dir))
    if path := sqlite_file(s.storage):
        check_sqlite(Path(path), s.storage_shown)
    check_room(s.dir, trial_bytes(s), "sweep.dir", str(s.dir))


def check_before_study(s: SweepSettings) -> list[str]:
    """Model, data, max_length, optimizer and scheduler names, and target modules, for the base
    config and every choice and range end of the space; builds the tiny default once. Returns
    what each target_modules choice adapts on this model, to be said before the study starts."""
    from trainers.sft import ensure_model, prepare_inputs

    ensure_model(s.trial.model)
    options = []
    for label, value, t in _labelled(s):
        try:
            check_trainer_names(t.train)
            check_context(t.model, t.train.max_length)  # a searched max_length too
            check_quantization(t.model, t.quant.bits)  # and quant.bits
        except ConfigError as e:
            raise _blame(label, value, e) from None
        if t.lora.target_modules not in options:
            options.append(t.lora.target_modules)
    prepare_inputs(s.trial, check_modules=False)
    lines = check_structure(s.trial.model, options, sorted({t.lora.r for _, _, t in _labelled(s)}))
    if s.launcher == "local":  # a SLURM submitter writes no trial here; its workers check their own
        check_disk(s)
    return lines
