"""The one validated, typed object a trial runs from. Built from Hydra's composed config;
nothing below this module reads the raw config. Pure Python: no torch, no GPU libraries."""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

DATA_FORMATS = ("auto", "prompt_completion", "text", "messages")
TRACKING_MODES = ("online", "offline", "disabled")
METRIC_NAMES = ("price",)  # trainers.metrics.METRICS


class ConfigError(ValueError):
    """Bad user input: one line naming the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


def first_line(error: BaseException) -> str:
    """A library exception in one line: its message's first line, or its type's name."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@dataclass(frozen=True)
class ModelSettings:
    name_or_path: str
    build: str | None
    trust_remote_code: bool


@dataclass(frozen=True)
class DataSettings:
    name_or_path: str
    build: str | None
    config_name: str | None
    format: str
    columns: dict
    train_split: str
    eval_split: str | None
    eval_size: int
    max_train_samples: int | None
    seed: int
    response_template: str | None  # split a `text` column here into prompt and completion
    metric: str | None             # a task metric computed after training (trainers.metrics), or null
    metric_rows: int               # held-out rows it generates on


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int
    num_train_epochs: float
    per_device_train_batch_size: int | str  # or "auto": a sweep decides it per device (sweeper/packing)
    per_device_eval_batch_size: int
    gradient_accumulation_steps: int
    effective_batch_size: int | None  # rows per optimizer step; null: per-device batch x accumulation
    learning_rate: float
    lr_scheduler_type: str
    lr_scheduler_kwargs: dict | None  # what some schedulers need: min_lr_rate, num_decay_steps...
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    eval_steps: int
    logging_steps: int
    max_length: int
    pad_to_multiple_of: int | str | None  # or "longest": every batch as long as the data's longest row
    optim: str
    gradient_checkpointing: bool
    save_strategy: str
    save_steps: int
    save_total_limit: int | None
    seed: int


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: list[str] | str  # "attention" | "all-linear" | names
    bias: str


@dataclass(frozen=True)
class QuantSettings:
    bits: int | None  # 4, 8, or None for no quantization
    double_quant: bool


@dataclass(frozen=True)
class TrackingSettings:
    mode: str
    project: str
    entity: str | None
    group: str | None
    run_name: str | None
    job_type: str
    finish_timeout_s: float  # how long a run's last upload may take before the trial moves on


@dataclass(frozen=True)
class TrialSettings:
    model: ModelSettings
    data: DataSettings
    train: TrainSettings
    lora: LoraSettings
    quant: QuantSettings
    tracking: TrackingSettings
    output_dir: Path
    cache_dir: Path
    resume_from_checkpoint: Path | None  # a Trainer checkpoint folder: adapter, optimizer, RNG, data position
    resolved: dict  # the composed config, resolved, as saved beside the adapter


def _section(cfg: DictConfig, name: str, cls):
    """Build one dataclass from cfg[name], naming a missing or unknown key in the error."""
    raw = cfg.get(name)
    if raw is None:
        raise ConfigError(name, None, "missing config group")
    fields = cls.__dataclass_fields__
    values = OmegaConf.to_container(raw, resolve=True)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", values[unknown[0]], f"unknown key; known: {', '.join(fields)}")
    missing = sorted(set(fields) - set(values))
    if missing:
        raise ConfigError(f"{name}.{missing[0]}", None, "required key is missing")
    unset = [k for k, v in values.items() if v == "???"]  # OmegaConf's mandatory value, left unset
    if unset:  # it was read as the name '???' (a hub dataset that could not be reached)
        raise ConfigError(f"{name}.{unset[0]}", "???", f"must be set: the chosen {name} preset leaves it to you "
                          f"(add {name}.{unset[0]}=...)")
    return values


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


KIND_NAMES = {int: "a whole number", float: "a number"}


def _flag(value: Any, key: str) -> bool:
    """A true/false setting: a string like 'maybe' would be truthy and pass silently."""
    _check(isinstance(value, bool), key, value, "true or false")
    return value


def _number(values: dict, section: str, key: str, kind: type, minimum: float, strict: bool = True):
    value = values[key]
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{key}", value, f"must be {KIND_NAMES[kind]}") from None
    ok = (number > minimum if strict else number >= minimum) and math.isfinite(number)  # inf: a NaN later
    if kind is int and isinstance(value, float) and not value.is_integer():
        ok = False  # int(2.5) would silently become 2
    _check(ok and not isinstance(value, bool), f"{section}.{key}", value,
           f"must be {KIND_NAMES[kind]} {'>' if strict else '>='} {minimum}")
    return number


def parse_bits(value: Any, key: str = "quant.bits") -> int | None:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    _check(str(value) in ("4", "8"), key, value, "allowed: 4, 8 or none")
    return int(value)


def _lora(cfg: DictConfig) -> LoraSettings:
    v = _section(cfg, "lora", LoraSettings)
    r = _number(v, "lora", "r", int, 0)
    _check(float(v["r"]) == r, "lora.r", v["r"], "must be a whole number > 0")
    alpha = _number(v, "lora", "alpha", float, 0)
    dropout = _number(v, "lora", "dropout", float, 0, strict=False)
    _check(dropout < 1, "lora.dropout", v["dropout"], "allowed: 0 <= dropout < 1")
    modules = v["target_modules"]  # a role is resolved on the model itself (trainers.targets)
    _check(modules in ("attention", "all-linear") or (isinstance(modules, list) and modules
                                                      and all(isinstance(m, str) for m in modules)),
           "lora.target_modules", modules, "attention, all-linear, or a list of module names")
    _check(v["bias"] in ("none", "all", "lora_only"), "lora.bias", v["bias"], "allowed: none, all, lora_only")
    return LoraSettings(r=r, alpha=alpha, dropout=dropout, target_modules=modules, bias=v["bias"])


def _train(cfg: DictConfig) -> TrainSettings:
    v = _section(cfg, "train", TrainSettings)
    _flag(v["gradient_checkpointing"], "train.gradient_checkpointing")
    ints = ["per_device_eval_batch_size", "gradient_accumulation_steps", "eval_steps", "logging_steps",
            "max_length", "save_steps"]
    for key in ints:
        v[key] = _number(v, "train", key, int, 0)
    _batch(v)
    v["max_steps"] = _number(v, "train", "max_steps", int, -1, strict=False) if v["max_steps"] is not None else -1
    # 0 means what -1 and null mean, train.num_train_epochs: transformers' Trainer would take
    # max_steps=0 literally and stop after a single step, reported as a complete trial.
    v["max_steps"] = v["max_steps"] if v["max_steps"] > 0 else -1
    v["warmup_steps"] = _number(v, "train", "warmup_steps", int, 0, strict=False)
    v["learning_rate"] = _number(v, "train", "learning_rate", float, 0)
    v["weight_decay"] = _number(v, "train", "weight_decay", float, 0, strict=False)
    v["max_grad_norm"] = _number(v, "train", "max_grad_norm", float, 0, strict=False)
    v["num_train_epochs"] = _number(v, "train", "num_train_epochs", float, 0)
    # numpy seeds below 2**32; the re-check runs seed + 1, + 2, ...: a 31-bit seed leaves them room.
    v["seed"] = _number(v, "train", "seed", int, 0, strict=False)
    _check(v["seed"] < 2**31, "train.seed", v["seed"], "must be a whole number >= 0 and below 2**31")
    _check(v["save_strategy"] in ("no", "steps", "epoch"), "train.save_strategy", v["save_strategy"],
           "allowed: no, steps, epoch")
    if v["pad_to_multiple_of"] not in (None, "longest"):
        value = v["pad_to_multiple_of"]
        _check(not isinstance(value, str) or value.strip().isdigit(), "train.pad_to_multiple_of", value,
               "must be a whole number > 0, longest or null")
        v["pad_to_multiple_of"] = _number(v, "train", "pad_to_multiple_of", int, 0)
    if v["save_total_limit"] is not None:
        v["save_total_limit"] = _number(v, "train", "save_total_limit", int, 0)
    kwargs = v["lr_scheduler_kwargs"]
    _check(kwargs is None or isinstance(kwargs, dict) and all(
        isinstance(x, (int, float, str, bool)) for x in kwargs.values()), "train.lr_scheduler_kwargs", kwargs,
        "a mapping of the scheduler's arguments to numbers or names, e.g. {min_lr_rate: 0.1}, or null")
    return TrainSettings(**v)


def _batch(v: dict) -> None:
    """Rows per optimizer step are what make trials' steps comparable; with a per-device batch of
    `auto` the sweep picks the per-device batch and accumulation that give effective_batch_size."""
    if v["effective_batch_size"] is not None:
        v["effective_batch_size"] = _number(v, "train", "effective_batch_size", int, 0)
    if v["per_device_train_batch_size"] == "auto":
        _check(v["effective_batch_size"] is not None, "train.effective_batch_size", None,
               "needed with train.per_device_train_batch_size=auto: the rows per optimizer step to keep, e.g. 16")
        return
    try:
        b = v["per_device_train_batch_size"] = _number(v, "train", "per_device_train_batch_size", int, 0)
    except ConfigError as e:
        raise ConfigError(e.key, e.value, "must be a whole number > 0, or auto (in a sweep)") from None
    e, accumulation = v["effective_batch_size"], v["gradient_accumulation_steps"]
    _check(e in (None, b * accumulation), "train.effective_batch_size", e,
           f"must equal per_device_train_batch_size x gradient_accumulation_steps = {b} x {accumulation}, or be null")


def _data(cfg: DictConfig) -> DataSettings:
    v = _section(cfg, "data", DataSettings)
    _check(isinstance(v["name_or_path"], str) and v["name_or_path"] != "", "data.name_or_path",
           v["name_or_path"], "a hub dataset id, a local folder, or a .jsonl/.json/.csv/.parquet file")
    _check(v["format"] in DATA_FORMATS, "data.format", v["format"], f"allowed: {', '.join(DATA_FORMATS)}")
    _check(v["build"] in (None, "synthetic_prices", "synthetic_tiers"), "data.build", v["build"],
           "allowed: synthetic_prices, synthetic_tiers or null")
    for key, optional, allowed in (("train_split", False, "a split name, e.g. train"),
                                   ("eval_split", True, "a split name, or null"),
                                   ("config_name", True, "the dataset's configuration name, or null")):
        _check((optional and v[key] is None) or (isinstance(v[key], str) and v[key] != ""), f"data.{key}", v[key], allowed)
    # The eval loss is what the sweep ranks by: measured on rows the trial trains on, it rewards memorising them.
    _check(v["eval_split"] != v["train_split"], "data.eval_split", v["eval_split"], "the split the trials train on "
           "(data.train_split), so the eval loss would reward memorising it; allowed: another split, or null (hold "
           "out data.eval_size rows of the train split)")
    v["seed"] = _number(v, "data", "seed", int, 0, strict=False)
    _check(v["seed"] < 2**32, "data.seed", v["seed"], "must be a whole number from 0 to 2**32 - 1 (numpy's seeds)")
    v["eval_size"] = _number(v, "data", "eval_size", int, 0)
    if v["max_train_samples"] is not None:
        v["max_train_samples"] = _number(v, "data", "max_train_samples", int, 0)
    columns = v["columns"] or {}  # null: the dataset already uses the format's names
    _check(isinstance(columns, dict) and all(isinstance(k, str) and isinstance(c, str) and c for k, c in columns.items()),
           "data.columns", v["columns"], "a mapping from the format's names to the dataset's columns, e.g. "
           "{prompt: question}, or null")
    v["columns"] = dict(columns)
    _check(v["metric"] in (None, *METRIC_NAMES), "data.metric", v["metric"], f"allowed: {', '.join(METRIC_NAMES)} or null")
    v["metric_rows"] = _number(v, "data", "metric_rows", int, 0)
    _check(v["response_template"] is None or (isinstance(v["response_template"], str) and v["response_template"]),
           "data.response_template", v["response_template"], "the text before each answer, e.g. 'Price is $', or null")
    return DataSettings(**v)


WANDB_FORBIDDEN = "/\\#?%:"


def _tracking(cfg: DictConfig) -> TrackingSettings:
    v = _section(cfg, "tracking", TrackingSettings)
    _check(v["mode"] in TRACKING_MODES, "tracking.mode", v["mode"], f"allowed: {', '.join(TRACKING_MODES)}")
    v["finish_timeout_s"] = _number(v, "tracking", "finish_timeout_s", float, 0)
    # W&B's own rule for a project name (wandb_settings.validate_project), checked before any
    # trial starts rather than raised from wandb.init inside the first one.
    for key in ("project", "entity"):
        name = v[key]
        if key == "entity" and name is None:
            continue
        _check(isinstance(name, str) and 0 < len(name) <= 128 and not set(name) & set(WANDB_FORBIDDEN),
               f"tracking.{key}", name, f"allowed: a name of 1 to 128 characters without any of {WANDB_FORBIDDEN}"
               + (" (or null: your W&B default)" if key == "entity" else ""))
    return TrackingSettings(**v)


# The composed config's top level: conf/config.yaml's groups and keys.
TOP_LEVEL = ("model", "data", "train", "lora", "quant", "tracking", "sweep", "search", "output_dir",
             "resume_from_checkpoint", "cache_dir")


def trial_settings(cfg: DictConfig) -> TrialSettings:
    """Validate the composed config into TrialSettings; raises ConfigError on the first bad key."""
    unknown = [k for k in cfg if k not in TOP_LEVEL]
    if unknown:  # `+foo=1` or `+learning_rate=1e-4` would be set, and read by nothing
        raise ConfigError(str(unknown[0]), cfg[unknown[0]], f"unknown key; known: {', '.join(TOP_LEVEL)}")
    model = ModelSettings(**_section(cfg, "model", ModelSettings))
    _flag(model.trust_remote_code, "model.trust_remote_code")
    _check(isinstance(model.name_or_path, str) and model.name_or_path != "", "model.name_or_path",
           model.name_or_path, "a hub model id or a local model folder")
    _check(model.build in (None, "tiny"), "model.build", model.build, "allowed: tiny or null")
    q = _section(cfg, "quant", QuantSettings)
    quant = QuantSettings(bits=parse_bits(q["bits"]), double_quant=_flag(q["double_quant"], "quant.double_quant"))
    trial_keys = {"model", "data", "train", "lora", "quant", "tracking", "output_dir", "cache_dir"}
    # Only the trial's own keys: the sweep's (search ranges relative to train.learning_rate, say)
    # are resolved and checked by the sweep.
    resolved = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg if k in trial_keys}
    return TrialSettings(
        model=model, data=_data(cfg), train=_train(cfg), lora=_lora(cfg), quant=quant,
        tracking=_tracking(cfg), output_dir=Path(cfg.output_dir), cache_dir=Path(cfg.cache_dir),
        resume_from_checkpoint=_checkpoint(cfg.get("resume_from_checkpoint")), resolved=resolved)


def _checkpoint(value) -> Path | None:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    _check((path / "trainer_state.json").is_file(), "resume_from_checkpoint", value,
           "a Trainer checkpoint folder (output_dir/checkpoint-<step>, with trainer_state.json) or null")
    return path
