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


def _start_structure_check(s: SweepSettings) -> subprocess.Popen:
    options = []
    for t in (s.trial, *s.candidates):
        if t.lora.target_modules not in options:
            options.append(t.lora.target_modules)
    job = {"model": vars(s.trial.model), "target_modules": options}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # it reads a config, never a GPU
    proc = subprocess.Popen([sys.executable, "-m", "trainers.preflight"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    return proc


def _finish_structure_check(proc: subprocess.Popen, model_name: str) -> None:
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait()
    lines = out.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if answer is None:  # the checker itself broke: say so in one line rather than skip the check
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise ConfigError("model.name_or_path", model_name, f"its structure could not be read ({last[:160]})")
    if "key" in answer:
        raise ConfigError(answer["key"], answer["value"], answer["allowed"])


def check_before_study(s: SweepSettings) -> None:
    """Model, data, max_length, optimizer and scheduler names, and target modules, for the base
    config and every choice and range end of the space; builds the tiny default once."""
    from trainers.sft import ensure_model, prepare_inputs

    ensure_model(s.trial.model)
    structure = _start_structure_check(s)
    try:
        for t in (s.trial, *s.candidates):
            check_trainer_names(t.train)
        prepare_inputs(s.trial, check_modules=False)
    except BaseException:
        structure.kill()
        structure.wait()
        raise
    _finish_structure_check(structure, s.trial.model.name_or_path)
