"""The sweep's one validated, typed object: study, sampler, pruner, space, and the trial job's
own settings, all checked before the study is opened or a trial starts."""
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sweeper.slots import parse_devices, parse_trials_per_device
from sweeper.slurm import SlurmSettings, parse_slurm
from sweeper.search.space import Param, candidate_values, check_enqueued, grid, parse_space
from sweeper.search.strategy import PRUNERS, SAMPLERS
from trainers.config import compose_config
from trainers.settings import ConfigError, TrialSettings, first_line, trial_settings

LAUNCHERS = ("local", "slurm")
# Pruning compares eval losses at equal steps: these keys change what a step means.
STEP_MEANING = ("train.eval_steps", "train.max_steps", "train.num_train_epochs", "train.per_device_train_batch_size",
                "train.gradient_accumulation_steps", "train.max_length")
# Keys that may change between runs of one study without making its trials incomparable.
NOT_FINGERPRINTED = ("tracking", "output_dir", "cache_dir", "resume_from_checkpoint",
                     "train.save_strategy", "train.save_steps", "train.save_total_limit",  # saving changes no result
                     "data.metric", "data.metric_rows")  # judged after training; the objective is fingerprinted


def hide_password(url: str) -> str:
    """A storage URL as it may be shown or written anywhere: sqlalchemy's rendering, password as ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL sqlalchemy parses: still never show user:secret@
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def is_storage_override(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") == "sweep.storage"


@dataclass(frozen=True)
class SweepSettings:
    study_name: str
    storage: str
    dir: Path
    n_trials: int
    sampler: str
    pruner: str
    startup_trials: int | None   # trials of the start design; None: sized to n_trials (sweeper/search/strategy.py)
    seed: int
    max_failures: int
    heartbeat_interval: int
    grace_period: int
    checkpoints: bool             # a Trainer checkpoint at every eval, so a retried trial resumes
    stall_timeout: int | None     # seconds without progress before a trial process is killed
    trial_timeout: int | None     # seconds a trial may run in all
    devices: object               # "auto", "cpu", or a list of GPU ids
    trials_per_device: object     # K, or "auto": sized from a measured peak
    debug_device_memory_mb: int | None  # tests: a pretend device size, enforced on host memory
    dashboard_port: int           # make dashboard serves the storage on 127.0.0.1 at this port
    quiet: bool                   # the live view says trial ends only, not starts and evals
    final_report: bool            # write the report when the study is done
    launcher: str                 # local (trials here) or slurm (array tasks, each a sweep on its node)
    slurm: SlurmSettings
    objective: str                # what the study minimises: eval_loss, or a task metric (price_mae)
    enqueue: list[dict]
    recheck_top: int              # the best configurations trained again on more seeds before crowning
    recheck_seeds: int            # more seeds each of them and the baseline gets (0: no re-check)
    asha_min_step: int | None     # sweep.pruner=asha: the first rung (None: train.eval_steps)
    asha_eta: int                 # the share of a rung that goes on: 1/eta
    space: list[Param]
    trial: TrialSettings          # the trial job before the space's values are applied
    overrides: list[str]          # the user's Hydra overrides, handed to every trial process
    fingerprint: dict             # flattened search space + fixed trial config
    candidates: list = ()         # (search key, value, trial job) per choice and range end (checked sweeps only)

    @property
    def storage_shown(self) -> str:
        return hide_password(self.storage)

    @property
    def public_overrides(self) -> list[str]:
        """The user's overrides minus the storage URL (it may hold a password): what a trial
        process is handed in its job file; the URL itself reaches it through a pipe."""
        return [o for o in self.overrides if not is_storage_override(o)]

    @property
    def overrides_shown(self) -> list[str]:
        """The user's overrides as they may be printed: a storage password as ***."""
        return [f"sweep.storage={hide_password(o.split('=', 1)[1])}" if is_storage_override(o) else o
                for o in self.overrides]

    @property
    def fingerprint_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:16]


# A study name is one folder under sweep.output_root, its W&B group and part of every trial's
# output_dir override: characters that travel in a Hydra override and in a path unchanged.
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


# Every key conf/sweep/default.yaml has: a key outside them (a typo, +sweep.n_trails=20) would
# otherwise be composed and silently ignored, as the trial's own sections refuse theirs.
SWEEP_KEYS = ("study_name", "output_root", "dir", "storage", "objective", "n_trials", "sampler", "pruner",
              "startup_trials", "seed", "max_failures", "heartbeat_interval", "grace_period", "checkpoints",
              "stall_timeout", "trial_timeout", "devices", "trials_per_device", "debug_device_memory_mb",
              "dashboard_port", "enqueue", "recheck_top", "recheck_seeds",
              "asha_min_step", "asha_eta", "quiet", "final_report", "launcher", "slurm")


def _known(raw: dict, known: tuple, section: str) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}", raw[unknown[0]], f"unknown key; known: {', '.join(sorted(known))}")


def _study_name(name) -> None:
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        raise ConfigError("sweep.study_name", name, "one folder name under sweep.output_root: 1-128 ASCII letters, "
                          "digits, '_', '.' and '-', not starting with '.' or '-' (no '/', '..' or spaces)")


def _int(raw: dict, key: str, minimum: int, maximum: int | None = None) -> int:
    value = raw.get(key)
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        raise ConfigError(f"sweep.{key}", value, f"a whole number >= {minimum}" if maximum is None else
                          f"a whole number from {minimum} to {maximum}")
    return value


def sqlite_file(url: str) -> str | None:
    """The file a SQLite storage URL names ('' or ':memory:' for an in-memory database), or None for
    another database."""
    if not url.startswith("sqlite:"):
        return None
    return url.removeprefix("sqlite:///").split("?", 1)[0] if url.startswith("sqlite:///") else ""


def _check_sqlite_file(storage: str) -> None:
    """SQLite URLs that cannot hold a study, refused before sqlalchemy's messages about them (an
    in-memory one failed on the pool's max_overflow; a folder was "unable to open database file")."""
    path = sqlite_file(storage)
    if path is None:
        return
    if path in ("", ":memory:"):
        raise ConfigError("sweep.storage", storage, "an in-memory database, which the trial processes cannot "
                          "see and which ends with the sweep; allowed: a file, sqlite:///path/to/study.db")
    if Path(path).expanduser().is_dir():
        raise ConfigError("sweep.storage", storage, f"{path} is a folder; allowed: a file, e.g. "
                          f"sqlite:///{path.rstrip('/')}/study.db")


def _seed(value) -> int:
    """null means 0; otherwise what numpy's generators take (Optuna's QMC sampler seeds one with it)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ConfigError("sweep.seed", value, f"a whole number from 0 to {2**32 - 1}")
    return value


def _objective(value, trial: TrialSettings) -> str:
    from trainers.metrics import OBJECTIVES

    allowed = ["eval_loss", *OBJECTIVES.get(trial.data.metric, ())]
    if value not in allowed:
        hint = "" if trial.data.metric else " (a task metric needs data.metric, e.g. data.metric=price)"
        raise ConfigError("sweep.objective", value, f"allowed: {', '.join(allowed)}{hint}")
    return value


def _optional_int(raw: dict, key: str, minimum: int) -> int | None:
    return None if raw.get(key) is None else _int(raw, key, minimum)


_ABSENT = object()


def _with_value(cfg, overrides: list[str], target: str, value):
    """The composed config with one key set to a candidate value: a copy of the sweep's own
    composition with the key replaced (Hydra composes in ~0.25 s, and a space has ~9 candidates),
    or, where the key is not one the config holds, Hydra's own composition and its error."""
    if OmegaConf.select(cfg, target, throw_on_missing=False, default=_ABSENT) is not _ABSENT:
        out = cfg.copy()
        with open_dict(out):
            OmegaConf.update(out, target, value, merge=False)
        return out
    text = "null" if value is None else str(value)
    return compose_config(overrides + [f"{target}={text}"])


def _check_candidates(space: list[Param], overrides: list[str], cfg) -> list[tuple[str, object, TrialSettings]]:
    """Each choice and range end must pass the trial job's own checks, so a bad rank or bits
    value is refused now rather than failing inside trial 7. Returns (search key, value, trial settings)."""
    candidates = []
    for p in space:
        for value in candidate_values(p):
            if p.target == "quant.bits" and value not in (4, 8):
                raise ConfigError(f"search.{p.name}", value, "a QLoRA sweep quantizes: allowed bits 4, 8")
            try:
                candidates.append((f"search.{p.name}", value, trial_settings(_with_value(cfg, overrides, p.target, value))))
            except ConfigError as e:
                raise ConfigError(f"search.{p.name}", value, f"sets {e.key}: {e.allowed}") from None
    return candidates


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def fingerprint(raw_space: dict, trial: TrialSettings, space: list[Param]) -> dict:
    targets = {p.target for p in space}
    fixed = {k: v for k, v in _flatten("", trial.resolved, {}).items()
             if k.split(".")[0] not in NOT_FINGERPRINTED and k not in NOT_FINGERPRINTED and k not in targets}
    return {**_flatten("search", raw_space, {}), **fixed}


def _resolved(cfg, group: str) -> dict:
    try:
        return OmegaConf.to_container(cfg[group], resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or group
        raise ConfigError(key if key.startswith(group) else f"{group}.{key}", "${...}", first_line(e)) from None


def sweep_settings(overrides: list[str], check_values: bool = True) -> SweepSettings:
    """check_values=False skips composing a trial config per choice and range end (~0.6 s): for a
    trial process, whose sweep already checked the same overrides, and for the sweep's first look
    at its devices, which starts the first trial process before the checks."""
    cfg = compose_config(overrides)
    trial = trial_settings(cfg)  # first: the sweep's keys may be set relative to the trial's
    raw = _resolved(cfg, "sweep")
    raw_space = _resolved(cfg, "search")
    _known(raw, SWEEP_KEYS, "sweep")
    _study_name(raw.get("study_name"))
    for key in ("output_root", "dir"):  # an empty root made sweep.dir '/<study>': a folder at the filesystem's root
        value = raw.get(key)
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not text.strip() or text != text.strip():
            raise ConfigError(f"sweep.{key}", value, "a folder path (e.g. outputs), not empty and without leading or "
                              "trailing spaces")
    if raw.get("sampler") not in SAMPLERS:
        raise ConfigError("sweep.sampler", raw.get("sampler"), f"allowed: {', '.join(SAMPLERS)}")
    if raw.get("pruner") not in PRUNERS:
        raise ConfigError("sweep.pruner", raw.get("pruner"), f"allowed: {', '.join(PRUNERS)}")
    n_trials = _int(raw, "n_trials", 1)
    heartbeat = _int(raw, "heartbeat_interval", 1)
    grace = _int(raw, "grace_period", heartbeat + 1)
    startup = _optional_int(raw, "startup_trials", 0)

    space = parse_space(raw_space)
    if raw["pruner"] != "none":
        for p in space:
            if p.target in STEP_MEANING:
                raise ConfigError(f"search.{p.name}", p.target, f"varies what a step means, so sweep.pruner="
                                  f"{raw['pruner']} would compare unlike losses; allowed with sweep.pruner=none")
    if raw["sampler"] == "grid":
        points = 1
        for values in grid(space).values():
            points *= len(values)
        if n_trials > points:
            raise ConfigError("sweep.n_trials", n_trials, f"the grid has {points} points; allowed: at most {points}")
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list):
        raise ConfigError("sweep.enqueue", enqueue, "a list of {parameter: value} mappings")
    enqueue = [check_enqueued(e, space, f"sweep.enqueue[{i}]") for i, e in enumerate(enqueue)]
    candidates = _check_candidates(space, overrides, cfg) if check_values else []
    for key in ("checkpoints", "final_report", "quiet"):
        if not isinstance(raw.get(key), bool):
            raise ConfigError(f"sweep.{key}", raw.get(key), "true or false")
    if raw.get("launcher") not in LAUNCHERS:
        raise ConfigError("sweep.launcher", raw.get("launcher"), f"allowed: {', '.join(LAUNCHERS)}")

    objective = _objective(raw.get("objective"), trial)
    sweep_dir = Path(str(raw["dir"])).resolve()  # a folder named 7 arrives as an int
    storage = raw.get("storage") or f"sqlite:///{sweep_dir / 'study.db'}"
    if raw["launcher"] == "slurm" and storage.startswith("sqlite"):
        raise ConfigError("sweep.storage", hide_password(storage), "sweep.launcher=slurm needs a database server "
                          "every node reaches, e.g. postgresql://user@host/db (SQLite is a file on one machine)")
    _check_sqlite_file(storage)
    s = SweepSettings(
        study_name=raw["study_name"], storage=storage, dir=sweep_dir, n_trials=n_trials, sampler=raw["sampler"],
        pruner=raw["pruner"], startup_trials=startup, seed=_seed(raw.get("seed")),
        max_failures=_int(raw, "max_failures", 1), heartbeat_interval=heartbeat, grace_period=grace,
        checkpoints=raw["checkpoints"], stall_timeout=_optional_int(raw, "stall_timeout", 1),
        trial_timeout=_optional_int(raw, "trial_timeout", 1), devices=parse_devices(raw.get("devices")),
        trials_per_device=parse_trials_per_device(raw.get("trials_per_device")),
        debug_device_memory_mb=_optional_int(raw, "debug_device_memory_mb", 1),
        dashboard_port=_int(raw, "dashboard_port", 1, 65535), final_report=raw["final_report"], quiet=raw["quiet"],
        launcher=raw["launcher"],
        slurm=parse_slurm(raw.get("slurm") or {}), objective=objective, enqueue=enqueue,
        recheck_top=_int(raw, "recheck_top", 1), recheck_seeds=_int(raw, "recheck_seeds", 0),
        asha_min_step=_optional_int(raw, "asha_min_step", 1), asha_eta=_int(raw, "asha_eta", 2), space=space, trial=trial,
        overrides=list(overrides), candidates=candidates,
        fingerprint={**fingerprint(raw_space, trial, space),
                     # mixing objectives in one study would rank unlike values; eval_loss studies predate the key
                     **({"sweep.objective": objective} if objective != "eval_loss" else {})})
    if s.pruner == "asha":
        from sweeper.search.asha import check

        check(s)
    return s
