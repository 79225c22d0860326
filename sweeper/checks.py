"""Before the study is touched: the trial job's checks, for every value the search space can
produce. The target-module check needs peft, which initialises CUDA on import, so it runs in a
short process that sees no GPU, while this one checks the data."""
import json
import os
import subprocess
import sys

from sweeper.settings import SweepSettings
from trainers.preflight import check_trainer_names
from trainers.settings import ConfigError


def _labelled(s: SweepSettings) -> list[tuple[str | None, object, object]]:
    """The base trial job, then one per space value; the label names the search key to blame."""
    return [(None, None, s.trial), *s.candidates]


def _start_structure_check(s: SweepSettings) -> subprocess.Popen:
    options = []
    for _, _, t in _labelled(s):
        if t.lora.target_modules not in options:
            options.append(t.lora.target_modules)
    ranks = sorted({t.lora.r for _, _, t in _labelled(s)})
    job = {"model": vars(s.trial.model), "target_modules": options, "ranks": ranks}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # it reads a config, never a GPU
    return subprocess.Popen([sys.executable, "-m", "trainers.preflight", json.dumps(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish_structure_check(proc: subprocess.Popen, model_name: str) -> list[str]:
    out, err = proc.communicate()
    lines = out.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if answer is None:  # the checker itself broke: say so in one line rather than skip the check
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise ConfigError("model.name_or_path", model_name, f"its structure could not be read ({last[:160]})")
    if "key" in answer:
        raise ConfigError(answer["key"], answer["value"], answer["allowed"])
    return answer["lines"]


def _blame(label: str | None, value, e: ConfigError) -> ConfigError:
    return e if label is None else ConfigError(label, value, f"sets {e.key}={e.value!r}: {e.allowed}")


def check_before_study(s: SweepSettings) -> list[str]:
    """Model, data, max_length, optimizer and scheduler names, and target modules, for the base
    config and every choice and range end of the space; builds the tiny default once. Returns
    what each target_modules choice adapts on this model, to be said before the study starts."""
    from trainers.sft import ensure_model, prepare_inputs

    ensure_model(s.trial.model)
    structure = _start_structure_check(s)
    try:
        for label, value, t in _labelled(s):
            try:
                check_trainer_names(t.train)
            except ConfigError as e:
                raise _blame(label, value, e) from None
        prepare_inputs(s.trial, check_modules=False)
    except BaseException:
        structure.kill()
        structure.communicate()
        raise
    return _finish_structure_check(structure, s.trial.model.name_or_path)
