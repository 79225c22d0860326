"""Checks that need transformers' own names or the model's structure, done before a weight
loads: the model's config builds it on the meta device (no memory, no download of weights).
`python -m trainers.preflight JOB_JSON` runs the structure check for a sweep, whose process must
not import peft (it initialises CUDA): one JSON line out."""
import json
import sys
from pathlib import Path

from trainers.settings import ConfigError, ModelSettings, TrainSettings, first_line

# A local folder is a model only with weights in it (config.json alone builds nothing).
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")


def check_model_exists(model: ModelSettings) -> None:
    """Fail in one line, before any weights load, when the model is neither local nor reachable."""
    from transformers import AutoConfig

    key, value = "model.name_or_path", model.name_or_path
    path = Path(value).expanduser()
    if value.startswith((".", "/", "~")) and not path.exists():
        raise ConfigError(key, value, "no such folder; allowed: a local model folder or a hub model id")
    try:
        AutoConfig.from_pretrained(value, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(key, value, f"not a local model folder or a reachable hub model ({first_line(e)[:160]})") from None
    if path.is_dir() and not any(next(path.glob(p), None) for p in WEIGHT_FILES):
        raise ConfigError(key, value, "a folder with a config.json but no weights (*.safetensors or *.bin)")


def check_trainer_names(train: TrainSettings) -> None:
    """transformers' own enums, asked now rather than inside the first trial."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    for key, value, names in (("train.optim", train.optim, OptimizerNames),
                              ("train.lr_scheduler_type", train.lr_scheduler_type, SchedulerType)):
        if value not in {n.value for n in names}:
            raise ConfigError(key, value, f"allowed: {', '.join(n.value for n in names)}")


def module_names(model: ModelSettings) -> dict[str, str]:
    """Every module's dotted name and class, from a meta-device copy built from the config alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, trust_remote_code=model.trust_remote_code)
    return {name: type(m).__name__ for name, m in meta.named_modules() if name}


def check_target_modules(options: list, names: dict[str, str]) -> None:
    """Each listed target module must match a module of the model, by PEFT's own matching rule
    (PEFT itself refuses only a list that matches nothing, and silently skips a mistyped name)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    linear = sorted({n.rsplit(".", 1)[-1] for n, kind in names.items() if kind in ("Linear", "Conv1D")})
    for targets in options:
        if targets == "all-linear":  # PEFT's own definition: every linear layer but the output head
            continue
        for target in targets:
            config = LoraConfig(target_modules=[target])
            if not any(check_target_module_exists(config, n) for n in names):
                raise ConfigError("lora.target_modules", target, f"matches no module of this model; "
                                  f"its linear layers are: {', '.join(linear)}")


def check_structure(model: ModelSettings, target_options: list) -> None:
    check_target_modules(target_options, module_names(model))


def main(job: dict) -> int:
    try:
        check_structure(ModelSettings(**job["model"]), job["target_modules"])
    except ConfigError as e:
        print(json.dumps({"key": e.key, "value": e.value, "allowed": e.allowed}))
        return 2
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
