"""Checks that need transformers' own names or the model's structure, done before a weight
loads: the model's config builds it on the meta device (no memory, no download of weights). None
imports peft or bitsandbytes, which initialise CUDA: the sweep process runs them itself."""
import functools
import json
from pathlib import Path

from trainers.paths import write_refused
from trainers.settings import ConfigError, ModelSettings, TrainSettings, first_line

# A local folder is a model only with weights in it (config.json alone builds nothing).
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")


def check_output_dir(path: Path, key: str = "output_dir") -> None:
    """Before anything loads, and without creating it: a folder the disk refuses was a
    FileNotFoundError or PermissionError stack trace from inside os.makedirs, after the model had loaded.
    Also cache_dir, where datasets writes its cache: there the error blamed the data file."""
    e = write_refused(path)
    if e is not None:
        raise ConfigError(key, str(path), f"cannot be written: {e.strerror or first_line(e)}")


def check_not_finished(output_dir: Path, resume_from) -> None:
    """One trial alone (python -m trainers) into a folder that holds a finished one overwrote its
    adapter and metrics without a word; a sweep gives every trial a folder of its own."""
    done = [name for name in ("metrics.json", "adapter_model.safetensors") if (output_dir / name).is_file()]
    if done and resume_from is None:
        raise ConfigError("output_dir", str(output_dir), f"holds a finished trial ({done[0]}), which this one would "
                          "overwrite; allowed: a new folder (by default outputs/runs/<time>), or delete it first")


def check_model_exists(model: ModelSettings) -> None:
    """Fail in one line, before any weights load, when the model is neither local nor reachable."""
    from transformers import AutoConfig

    key, value = "model.name_or_path", model.name_or_path
    path = Path(value).expanduser()
    if value.startswith((".", "/", "~")) and not path.exists():
        raise ConfigError(key, value, "no such folder; allowed: a local model folder or a hub model id")
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not (path / "config.json").is_file():  # e.g. a sweep's best/: a LoRA, not a model
        base = _adapter_base(adapter)
        raise ConfigError(key, value, "a LoRA adapter (adapter_config.json), not a base model to adapt; allowed: a "
                          f"base model folder or hub id{f', e.g. the one it was trained on: {base}' if base else ''}")
    from trainers.quiet import hub_retries_hidden

    try:
        with hub_retries_hidden():
            AutoConfig.from_pretrained(value, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(key, value, f"not a local model folder or a reachable hub model ({first_line(e)[:160]})") from None
    if path.is_dir() and not any(next(path.glob(p), None) for p in WEIGHT_FILES):
        raise ConfigError(key, value, "a folder with a config.json but no weights (*.safetensors or *.bin)")


def _adapter_base(adapter: Path) -> str | None:
    try:
        return json.loads(adapter.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


# transformers' enums of optimizer and scheduler names, and the modules that define them. Importing
# those modules imports peft (transformers.trainer_utils does, when peft is installed), and peft
# initialises CUDA: so the names are read from the modules' source. tests/test_errors.py holds
# them to the imported enums.
ENUMS = {"train.optim": ("transformers.training_args", "OptimizerNames"),
         "train.lr_scheduler_type": ("transformers.trainer_utils", "SchedulerType")}


@functools.cache
def enum_names(module: str, enum: str) -> tuple[str, ...]:
    """The string values of a str Enum class, read from its module's source without importing it."""
    import ast
    import importlib.util

    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    body = next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == enum)
    return tuple(node.value.value for node in body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))


# Schedulers that fail without arguments (transformers.optimization.get_scheduler's ValueError or
# TypeError, inside the first trial): each needs one of these. tests/test_errors.py holds the table
# to transformers.
SCHEDULER_NEEDS = {"cosine_with_min_lr": ("min_lr", "min_lr_rate"),
                   "cosine_warmup_with_min_lr": ("min_lr", "min_lr_rate"),
                   "warmup_stable_decay": ("num_decay_steps",)}

# Optimizers transformers takes from a package this project does not install (the Trainer's
# ImportError inside the first trial), by name prefix: the package's module, and its pip name.
# Looked up with importlib.util.find_spec, so nothing is imported. Held to transformers by the same test.
OPTIMIZER_PACKAGES = {"galore_": ("galore_torch", "galore-torch"), "apollo_": ("apollo_torch", "apollo-torch"),
                      "lomo": ("lomo_optim", "lomo-optim"), "adalomo": ("lomo_optim", "lomo-optim"),
                      "schedule_free_": ("schedulefree", "schedulefree"), "grokadamw": ("grokadamw", "grokadamw"),
                      "stable_adamw": ("optimi", "torch-optimi"), "adamw_torch_4bit": ("torchao", "torchao"),
                      "adamw_torch_8bit": ("torchao", "torchao"), "adamw_anyprecision": ("torchdistx", "torchdistx"),
                      "adamw_torch_xla": ("torch_xla", "torch-xla"), "adamw_torch_npu_fused": ("torch_npu", "torch-npu")}


def check_trainer_names(train: TrainSettings) -> None:
    """transformers' own names, asked now rather than inside the first trial, and what the chosen
    optimizer and scheduler need."""
    import importlib.util

    for key, value in (("train.optim", train.optim), ("train.lr_scheduler_type", train.lr_scheduler_type)):
        names = enum_names(*ENUMS[key])
        if value not in names:
            raise ConfigError(key, value, f"allowed: {', '.join(names)}")
    package = next((p for prefix, p in OPTIMIZER_PACKAGES.items() if train.optim.startswith(prefix)), None)
    if package is not None and importlib.util.find_spec(package[0]) is None:
        raise ConfigError("train.optim", train.optim, f"needs the {package[1]} package, which is not installed: "
                          "install it, or choose adamw_torch, adafactor, sgd or one of bitsandbytes' (adamw_8bit, "
                          "paged_adamw_8bit, lion_8bit...)")
    needs = SCHEDULER_NEEDS.get(train.lr_scheduler_type, ())
    given = train.lr_scheduler_kwargs or {}
    if needs and not any(k in given for k in needs):
        example = "{" + needs[-1] + ": " + ("0.1" if "rate" in needs[-1] else "10") + "}"
        raise ConfigError("train.lr_scheduler_type", train.lr_scheduler_type, f"needs {' or '.join(needs)} in "
                          f"train.lr_scheduler_kwargs, e.g. train.lr_scheduler_kwargs='{example}'")


def meta_model(model: ModelSettings):
    """A meta-device copy built from the config alone: every module, no weights, no memory."""
    return _meta(model.name_or_path, model.trust_remote_code)


@functools.lru_cache(maxsize=2)  # the sweep's checks read it more than once
def _meta(name_or_path: str, trust_remote_code: bool):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except ValueError as e:  # T5, BART-style seq2seq, vision or audio models: a screenful of config names
            if "Unrecognized configuration class" not in str(e):
                raise
    arch = ", ".join(config.architectures or []) or config.model_type
    raise ConfigError("model.name_or_path", name_or_path, f"is a {config.model_type} model ({arch}), which "
                      "transformers cannot load as a causal language model (AutoModelForCausalLM); allowed: a "
                      "decoder-only model such as Llama, Qwen, Mistral or GPT-2")


def learned_positions(meta) -> tuple[str, int] | None:
    """(config key, positions) where the model looks positions up in a table (GPT-2's wpe, OPT's
    embed_positions): a row beyond it is an IndexError deep in torch. Rotary and ALiBi models have
    no such table, and their max_position_embeddings is a trained length, not a hard limit."""
    import torch

    table = next((m for m in meta.modules() if isinstance(m, torch.nn.Embedding)
                  and m is not meta.get_input_embeddings() and m.num_embeddings >= 64), None)
    if table is None:
        return None
    config = meta.config
    key = next((k for k in ("n_positions", "max_position_embeddings", "n_ctx") if isinstance(getattr(config, k, None), int)),
               None)
    return (key, getattr(config, key)) if key else ("its position table", table.num_embeddings)


def check_context(model: ModelSettings, max_length: int) -> None:
    """A max_length beyond a learned position table, refused before any weight loads."""
    found = learned_positions(meta_model(model))
    if found is not None and max_length > found[1]:
        key, positions = found
        raise ConfigError("train.max_length", max_length, f"longer than the {positions} positions this model "
                          f"learned ({key}={positions} in its config); allowed: at most {positions}")


def saved_quantized(model: ModelSettings) -> tuple[str, int | None] | None:
    """(method, bits) of a checkpoint saved already quantized (a quantization_config in its config):
    from_pretrained then loads it as it was saved, whatever quant.bits asks."""
    q = getattr(meta_model(model).config, "quantization_config", None)
    if not q:
        return None
    q = q if isinstance(q, dict) else q.to_dict()
    bits = 4 if q.get("load_in_4bit") else 8 if q.get("load_in_8bit") else q.get("bits")
    return str(q.get("quant_method", "unknown")), bits


def check_quantization(model: ModelSettings, bits: int | None) -> None:
    """quant.bits against a checkpoint saved quantized: a bitsandbytes one loads at its own bits (an
    8-bit trial of a 4-bit checkpoint trained 4-bit, recorded as 8-bit; quant.bits=none died in
    from_pretrained); GPTQ, AWQ and the like are not bitsandbytes' to train here."""
    found = saved_quantized(model)
    if found is None:
        return
    method, saved = found
    if method == "bitsandbytes" and bits == saved:
        return
    what = f"{method}{f', {saved}-bit' if saved else ''}"
    allowed = "an unquantized checkpoint of the model"
    allowed = f"{saved} (as saved), or {allowed}" if method == "bitsandbytes" else allowed
    raise ConfigError("quant.bits", "none" if bits is None else bits, f"this model was saved quantized ({what}: the "
                      f"quantization_config in its config.json), which quant.bits cannot change; allowed: {allowed}")


def check_target_modules(options: list, meta) -> list[str]:
    """Each listed target module must match a module of the model, by PEFT's own matching rule
    (PEFT itself refuses only a list that matches nothing, and silently skips a mistyped name);
    `attention` must find attention layers. Notes for a list that covers part of attention, or
    catches a layer outside it."""
    from trainers.targets import ROLES, attention_targets, leaf_names, linear_layers, matches, output_head

    modules = {n: m for n, m in meta.named_modules() if n}
    head = output_head(meta)
    linear = leaf_names(n for n in linear_layers(meta) if n != head)
    notes = []
    for targets in options:
        if targets in ROLES:
            attention_targets(meta)  # refuses a model without attention layers
            continue
        for target in targets:
            matched = [n for n in modules if matches(target, n)]
            if not matched:
                raise ConfigError("lora.target_modules", target, f"matches no module of this model; its linear layers "
                                  f"are: {', '.join(linear)}; or use attention (here: "
                                  f"{', '.join(_attention_leaves(meta))}) or all-linear")
            _check_adaptable(target, {n: modules[n] for n in matched}, linear)
            if head in matched:  # TRL's SFTTrainer raises ValueError on it, after the model has loaded
                raise ConfigError("lora.target_modules", target, f"matches the output head ({head}), which TRL's "
                                  "SFTTrainer does not adapt (its loss reads the head's weight directly, so the "
                                  f"adapter would never train): leave it out; its other linear layers are: "
                                  f"{', '.join(linear)}")
        notes += _partial(targets, meta)
    return notes


def _check_adaptable(target: str, matched: dict, linear: list[str]) -> None:
    """PEFT wraps every module a name matches, and fails on one it cannot (a norm, a whole block)."""
    from trainers.targets import adaptable, leaf_names, linear_layers

    other = {n: m for n, m in matched.items() if not adaptable(m)}
    if not other:
        return
    name, module = next(iter(other.items()))
    inside = leaf_names(n for m in other.values() for n in linear_layers(m))
    hint = f"name the linear layers inside it ({', '.join(inside)})" if inside else \
        f"name linear layers ({', '.join(linear)})"
    raise ConfigError("lora.target_modules", target, f"matches {type(module).__name__} layers ({name}), which LoRA "
                      f"cannot adapt (it adapts linear, embedding and convolution layers): {hint}")


def _attention_leaves(meta) -> list[str]:
    from trainers.targets import attention_targets

    try:
        return [t.rsplit(".", 1)[-1] for t in attention_targets(meta)]
    except ConfigError:
        return ["none found"]


def _partial(targets: list[str], meta) -> list[str]:
    """What an explicit list leaves out of attention, or catches outside it, said once."""
    from trainers.targets import adapted_layers, attention_targets

    try:
        attention = set(adapted_layers(attention_targets(meta), meta))
    except ConfigError:
        return []
    chosen = set(adapted_layers(targets, meta))
    missed = sorted({n.rsplit(".", 1)[-1] for n in attention - chosen})
    outside = sorted({".".join(n.split(".")[-2:]) for n in chosen - attention})
    name = "[" + ", ".join(targets) + "]"
    notes = []
    if missed and chosen & attention:
        notes.append(f"note: lora.target_modules={name} leaves {', '.join(missed)} of attention unadapted "
                     f"(lora.target_modules=attention adapts all of it)")
    if outside:
        notes.append(f"note: lora.target_modules={name} also adapts layers outside attention: {', '.join(outside)}")
    return notes


def check_structure(model: ModelSettings, target_options: list, ranks: list[int] = ()) -> list[str]:
    """Refuse bad target modules; one line per option on what it adapts here and what each rank trains."""
    from trainers.targets import describe

    meta = meta_model(model)
    notes = check_target_modules(target_options, meta)
    return [describe(option, meta, ranks) for option in target_options] + notes
