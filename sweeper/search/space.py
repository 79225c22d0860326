"""The search space as data: conf/search/*.yaml entries become `trial.suggest_*` calls, and a
trial's values become Hydra overrides of the trial job. An entry may carry a prior (where the
search starts and how it weighs the range), with the source it comes from."""
from dataclasses import dataclass
from typing import Any

from trainers.settings import ConfigError

TYPES = ("categorical", "int", "float", "tied")


@dataclass(frozen=True)
class Prior:
    """Where good values are believed to lie, before any trial: a numeric entry's centre and spread
    (in decades on a log scale, in the value's own units otherwise), or a categorical entry's
    weight per choice. The start of the search is spread by it (sweeper/search/start.py)."""
    center: float | None = None
    spread: float | None = None
    weights: tuple = ()
    source: str = ""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    target: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    of: str | None = None       # tied: the parameter it follows
    factor: float = 1.0         # tied: value = factor × of
    prior: Prior | None = None  # None: every value alike (uniform on the entry's scale)

    @property
    def searched(self) -> bool:
        """Tied parameters are derived, not Optuna parameters."""
        return self.type != "tied"


def _param(name: str, spec: Any) -> Param:
    key = f"search.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(key, spec, "a mapping with type, target and its range or choices")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{key}.type", kind, f"allowed: {', '.join(TYPES)}")
    target = spec.get("target")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{key}.target", target, "the config key this parameter sets, e.g. lora.r")
    known = {"type", "target", "choices", "low", "high", "log", "step", "of", "factor", "prior"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", spec[unknown[0]], f"unknown key; known: {', '.join(sorted(known))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key}.choices", choices, "a non-empty list")
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise ConfigError(f"{key}.choices", choices, "numbers, strings, booleans or null")
        seen = [repr(c) for c in choices]
        twice = [c for i, c in enumerate(choices) if seen[i] in seen[:i]]
        if twice:  # a repeat would weigh its value twice in the start and run it twice in a grid
            raise ConfigError(f"{key}.choices", choices, f"each value once ({twice[0]!r} is there twice)")
        return Param(name, kind, target, choices=tuple(choices), prior=_prior(key, spec.get("prior"), choices=choices))
    if kind == "tied":
        if spec.get("prior") is not None:
            raise ConfigError(f"{key}.prior", spec["prior"], "a tied parameter follows its own; give the prior to "
                              f"search.{spec.get('of')}")
        factor = spec.get("factor", 1)
        if not isinstance(spec.get("of"), str):
            raise ConfigError(f"{key}.of", spec.get("of"), "the name of the parameter it is tied to")
        if not isinstance(factor, (int, float)) or factor <= 0:
            raise ConfigError(f"{key}.factor", factor, "a number > 0")
        return Param(name, kind, target, of=spec["of"], factor=factor)
    low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
    for bound, value in (("low", low), ("high", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}.{bound}", value, "a number")
    if low >= high:
        raise ConfigError(f"{key}", f"[{low}, {high}]", "empty or inverted range; allowed: low < high")
    if log and low <= 0:
        raise ConfigError(f"{key}.low", low, "a log-scale range needs low > 0")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0 or log):
        raise ConfigError(f"{key}.step", step, "a number > 0, and no step on a log scale")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high)):
        raise ConfigError(f"{key}", f"[{low}, {high}]", "an int range needs whole-number bounds")
    return Param(name, kind, target, low=low, high=high, log=log, step=step,
                 prior=_prior(key, spec.get("prior"), low=low, high=high, log=log))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _prior(key: str, spec: Any, choices: list | None = None, low=None, high=None, log=False) -> Prior | None:
    """A prior as the config writes it: {center, spread, source} for a range, {weights, source} for
    choices. Checked here so a bad one is refused before the study opens."""
    if spec is None:
        return None
    key = f"{key}.prior"
    allowed = "{weights: [one per choice], source: ...}" if choices is not None else "{center, spread, source}"
    if not isinstance(spec, dict):
        raise ConfigError(key, spec, f"a mapping {allowed}")
    known = {"weights", "source"} if choices is not None else {"center", "spread", "source"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", spec[unknown[0]], f"unknown key; known: {', '.join(sorted(known))}")
    source = spec.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{key}.source", source, "where the prior comes from (a paper, a measurement): every prior cites one")
    if choices is not None:
        weights = spec.get("weights")
        if not isinstance(weights, list) or not weights or not all(_number(w) and w > 0 for w in weights):
            raise ConfigError(f"{key}.weights", weights, f"one number > 0 per choice ({len(choices)})")
        if len(weights) != len(choices):
            ordered = all(_number(c) for c in choices) and choices == sorted(choices) and len(weights) > 1
            if not ordered:
                raise ConfigError(f"{key}.weights", weights, f"one number > 0 per choice ({len(choices)}), or no prior "
                                  f"(~{key})")
            weights = along(weights, len(choices))  # choices overridden: the prior keeps its shape over them
        return Prior(weights=tuple(float(w) for w in weights), source=source)
    center, spread = spec.get("center"), spec.get("spread")
    if not _number(center):
        raise ConfigError(f"{key}.center", center, "a number: where in the range the prior puts the most weight")
    if not _number(spread) or spread <= 0:
        raise ConfigError(f"{key}.spread", spread, "a number > 0 (decades on a log scale, the value's units otherwise)")
    # A range narrowed by an override may leave the centre outside: the prior then leans on the
    # nearer end, rather than refusing a range the user chose.
    return Prior(center=float(min(max(center, low), high)), spread=float(spread), source=source)


def along(weights: list[float], n: int) -> list[float]:
    """Weights given for ordered choices, carried over n ordered choices by position (linear
    interpolation over 0..1), so a prior that grows with the rank still grows over other ranks."""
    if n == 1:
        return [sum(weights) / len(weights)]
    out = []
    for i in range(n):
        x = i / (n - 1) * (len(weights) - 1)
        k = min(int(x), len(weights) - 2)
        out.append(weights[k] + (x - k) * (weights[k + 1] - weights[k]))
    return out


def parse_space(raw: dict) -> list[Param]:
    """Check every entry of the search config group and return the parameters in order."""
    if not raw:
        raise ConfigError("search", raw, "an empty search space; name at least one parameter")
    params = [_param(name, spec) for name, spec in raw.items()]
    by_name = {p.name: p for p in params}
    for p in params:
        if p.type == "tied" and (p.of not in by_name or not by_name[p.of].searched):
            raise ConfigError(f"search.{p.name}.of", p.of, f"allowed: {', '.join(n for n, q in by_name.items() if q.searched)}")
    targets = [p.target for p in params]
    for p in params:
        if targets.count(p.target) > 1:
            raise ConfigError(f"search.{p.name}.target", p.target, "set by two parameters; each key at most once")
    return params


def suggest(trial, space: list[Param]) -> dict:
    """Ask the trial for each parameter's value; tied values are derived and stored as user attrs."""
    values = {}
    for p in space:
        if p.type == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        elif p.type == "float":
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    for p in space:
        if p.type == "tied":
            values[p.name] = tied_value(p, values[p.of])
            trial.set_user_attr(p.name, values[p.name])
    return {p.name: values[p.name] for p in space}


def tied_value(p: Param, of_value):
    value = p.factor * of_value
    return int(value) if float(value).is_integer() else value


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) else str(value)


def to_overrides(values: dict, space: list[Param]) -> list[str]:
    """Trial values → Hydra overrides of the trial job, e.g. ["lora.r=16", "quant.bits=4"]."""
    return [f"{p.target}={_override_value(values[p.name])}" for p in space if p.name in values]


def candidate_values(p: Param) -> list:
    """The values worth checking against the trial job's own validation: choices, or range ends."""
    if p.type == "categorical":
        return list(p.choices)
    if p.type in ("int", "float"):
        kind = int if p.type == "int" else float
        return [kind(p.low), kind(p.high)]
    return []


def grid(space: list[Param]) -> dict:
    """The GridSampler's search space; every searched parameter must be discrete."""
    import numpy as np

    out = {}
    for p in space:
        if p.type == "categorical":
            out[p.name] = list(p.choices)
        elif p.type in ("int", "float"):
            if p.step is None and p.type == "float":
                raise ConfigError(f"search.{p.name}.step", None, "sweep.sampler=grid needs a step on every float range")
            step = p.step or 1
            out[p.name] = [int(v) if p.type == "int" else float(v) for v in np.arange(p.low, p.high + step / 2, step)]
    return out


def check_enqueued(entry: dict, space: list[Param], where: str) -> dict:
    """An enqueued trial's values, checked against the space; tied values must agree and are dropped."""
    by_name = {p.name: p for p in space}
    if not isinstance(entry, dict) or not entry:
        raise ConfigError(where, entry, "a mapping of parameter names to values")
    params = {}
    for name, value in entry.items():
        p = by_name.get(name)
        if p is None:
            raise ConfigError(f"{where}.{name}", value, f"not in the search space; allowed: {', '.join(by_name)} "
                              f"(or sweep.enqueue=[]: no baseline trial)")
        if p.type == "tied":
            if entry.get(p.of) is None:  # nothing to tie it to: give the parameter it follows instead
                raise ConfigError(f"{where}.{name}", value, f"the space ties it to {p.factor:g} × {p.of}: give "
                                  f"{p.of} instead")
            expected = tied_value(p, entry[p.of])
            if value != expected:
                raise ConfigError(f"{where}.{name}", value, f"the space ties it to {p.factor:g} × {p.of} = {expected}")
            continue
        ok = value in p.choices if p.type == "categorical" else (
            isinstance(value, (int, float)) and p.low <= value <= p.high)
        if not ok:
            allowed = list(p.choices) if p.type == "categorical" else f"{p.low} <= value <= {p.high}"
            raise ConfigError(f"{where}.{name}", value, f"allowed: {allowed}")
        params[name] = value
    return params
