"""Before the study is touched: the trial job's checks, for every value the search space can
produce (none imports peft, so this process never initialises CUDA)."""
from sweeper.settings import SweepSettings
from trainers.preflight import check_structure, check_trainer_names
from trainers.settings import ConfigError


def _labelled(s: SweepSettings) -> list[tuple[str | None, object, object]]:
    """The base trial job, then one per space value; the label names the search key to blame."""
    return [(None, None, s.trial), *s.candidates]


def _blame(label: str | None, value, e: ConfigError) -> ConfigError:
    return e if label is None else ConfigError(label, value, f"sets {e.key}={e.value!r}: {e.allowed}")


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
        except ConfigError as e:
            raise _blame(label, value, e) from None
        if t.lora.target_modules not in options:
            options.append(t.lora.target_modules)
    prepare_inputs(s.trial, check_modules=False)
    return check_structure(s.trial.model, options, sorted({t.lora.r for _, _, t in _labelled(s)}))
