"""Landscape files: a grid of configurations with the result each got, which bench/search.py replays
strategies against. One JSON file per landscape:

    {"parameters": {"learning_rate": {"values": [4e-05, 0.0001, 0.0003], "log": true},
                    "lora_r": {"values": [4, 16, 64]}},
     "cells": [{"params": {"learning_rate": 0.0001, "lora_r": 16}, "final": 0.5983,
                "curve": {"10": 0.71, "20": 0.64}}, ...],
     "noise_sd": 0.002, "missing": 3.0}

`curve` (eval loss by step) and `noise_sd` (seed noise of a final value) are optional; so is
`runs` per cell ([{"seed": 1, "final": ..., "curve": {...}}, ...]: one result per training seed,
`final` then being their mean). A cell may be absent (a run that diverged or was never made) when
the file names the value that answers a suggestion there, `missing`. `source` says where the
numbers come from. Every check fails in one line naming the file and the cell."""
import itertools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path


class LandscapeError(Exception):
    """A landscape file that cannot be replayed; str() is the one line to show."""


@dataclass
class Cell:
    final: float                  # the configuration's true result (mean over runs when there are several)
    curve: dict[int, float]       # step -> eval loss ({} when the file has none)
    runs: list[dict] = field(default_factory=list)  # per training seed: {"final", "curve"}


@dataclass
class Landscape:
    name: str
    params: dict[str, dict]       # name -> {"values": [...], "log": bool}, in file order
    cells: dict[tuple, Cell]      # values in params order -> result
    missing: float | None
    noise_sd: float | None
    source: str = ""

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def nearest(self, values: dict) -> tuple:
        """The cell answering a suggestion: per parameter, the same value or the nearest one on the
        parameter's scale (log where the file says so)."""
        return tuple(_nearest(values[n], self.params[n]) for n in self.names)

    def result(self, key: tuple) -> Cell | None:
        return self.cells.get(key)

    @property
    def finals(self) -> list[float]:
        """Every grid point's result, a missing one counted at the file's `missing` value."""
        size = math.prod(len(p["values"]) for p in self.params.values())
        return [c.final for c in self.cells.values()] + [self.missing] * (size - len(self.cells))

    @property
    def best(self) -> float:
        return min(self.finals)

    @property
    def median(self) -> float:
        return statistics.median(self.finals)

    def regret(self, value: float) -> float:
        """(value - grid best) / (grid median - grid best): 0 is the best, 1 the median configuration."""
        gap = self.median - self.best
        return (value - self.best) / gap if gap > 0 else 0.0

    @property
    def near_target(self) -> float:
        """A near-best result: within one seed sd of the best (as good as the best, as far as the
        noise can tell), or within a tenth of the best-to-median gap on a landscape without noise."""
        return self.best + (self.noise_sd if self.noise_sd else 0.1 * (self.median - self.best))

    @property
    def steps(self) -> dict[tuple, int]:
        """Training steps a trial of each cell costs: the last step of its curve, or of its seed runs'
        curves (a cell measured on several seeds keeps its curves there), 1 where there is none."""
        return {k: max((max(curve) for curve in [c.curve, *(r["curve"] for r in c.runs)] if curve), default=1)
                for k, c in self.cells.items()}

    @property
    def grid_steps(self) -> int:
        size = math.prod(len(p["values"]) for p in self.params.values())
        return sum(self.steps.values()) + max(self.steps.values(), default=1) * (size - len(self.cells))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _nearest(value, spec: dict):
    choices = spec["values"]
    if value in choices or not _number(value) or not all(_number(c) for c in choices):
        return value
    scale = math.log if spec.get("log") else float
    return min(choices, key=lambda c: (abs(scale(c) - scale(value)), c))


def _curve(where: str, raw) -> dict[int, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise LandscapeError(f"{where}: curve {json.dumps(raw)[:60]} is not a mapping of step to value")
    out = {}
    for step, value in raw.items():
        if not str(step).isdigit() or not _number(value):
            raise LandscapeError(f"{where}: curve point {json.dumps({step: value})[:60]} is not a step (a whole "
                                 "number) and a number")
        out[int(step)] = float(value)
    return dict(sorted(out.items()))


def _parameters(path: Path, raw) -> dict[str, dict]:
    if not isinstance(raw, dict) or not raw:
        raise LandscapeError(f"{path}: 'parameters' must name at least one parameter, each with its 'values'")
    out = {}
    for name, spec in raw.items():
        values = spec.get("values") if isinstance(spec, dict) else None
        if not isinstance(values, list) or not values:
            raise LandscapeError(f"{path}: parameter {name!r} needs a non-empty 'values' list")
        if len(set(map(json.dumps, values))) != len(values):
            raise LandscapeError(f"{path}: parameter {name!r} repeats a value in {values}")
        log = spec.get("log", False)
        if not isinstance(log, bool) or (log and not all(_number(v) and v > 0 for v in values)):
            raise LandscapeError(f"{path}: parameter {name!r}: 'log' must be true or false, and true needs values > 0")
        unknown = sorted(set(spec) - {"values", "log"})
        if unknown:
            raise LandscapeError(f"{path}: parameter {name!r} has an unknown key {unknown[0]!r} (known: values, log)")
        out[name] = {"values": values, "log": log}
    return out


def _cell(path: Path, i: int, raw, params: dict) -> tuple[tuple, Cell]:
    where = f"{path}: cell {i}"
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict):
        raise LandscapeError(f"{where}: needs 'params' (a mapping of parameter to value) and 'final'")
    given = raw["params"]
    extra = sorted(set(given) - set(params))
    if extra:
        raise LandscapeError(f"{where} names parameter {extra[0]!r}, which 'parameters' lacks (it has: {', '.join(params)})")
    lacking = [n for n in params if n not in given]
    if lacking:
        raise LandscapeError(f"{where} gives no value for parameter {lacking[0]!r}")
    for name, value in given.items():
        if value not in params[name]["values"]:
            raise LandscapeError(f"{where}: {name}={json.dumps(value)} is not one of its values {params[name]['values']}")
    runs = raw.get("runs") or []
    if not isinstance(runs, list) or not all(isinstance(r, dict) and _number(r.get("final")) for r in runs):
        raise LandscapeError(f"{where}: 'runs' must be a list of {{\"final\": number, ...}}, one per seed")
    final = raw.get("final", statistics.fmean(r["final"] for r in runs) if runs else None)
    if not _number(final):
        raise LandscapeError(f"{where}: final {json.dumps(final)} is not a number")
    runs = [{"final": float(r["final"]), "curve": _curve(f"{where} run {j}", r.get("curve"))} for j, r in enumerate(runs)]
    return tuple(given[n] for n in params), Cell(float(final), _curve(where, raw.get("curve")), runs)


def parse(path: Path, record) -> Landscape:
    if not isinstance(record, dict):
        raise LandscapeError(f"{path}: not a landscape (a JSON object with 'parameters' and 'cells')")
    params = _parameters(path, record.get("parameters"))
    raw_cells = record.get("cells")
    if not isinstance(raw_cells, list) or not raw_cells:
        raise LandscapeError(f"{path}: the grid is empty: 'cells' must list at least one result")
    cells = {}
    for i, raw in enumerate(raw_cells):
        key, cell = _cell(path, i, raw, params)
        if key in cells:
            raise LandscapeError(f"{path}: cell {i} repeats the params of an earlier cell: {dict(zip(params, key))}")
        cells[key] = cell
    missing, noise = record.get("missing"), record.get("noise_sd")
    if missing is not None and not _number(missing):
        raise LandscapeError(f"{path}: missing {json.dumps(missing)} is not a number")
    if noise is not None and (not _number(noise) or noise < 0):
        raise LandscapeError(f"{path}: noise_sd {json.dumps(noise)} is not a number >= 0")
    size = math.prod(len(p["values"]) for p in params.values())
    if len(cells) < size and missing is None:
        absent = next(k for k in itertools.product(*(p["values"] for p in params.values())) if k not in cells)
        raise LandscapeError(f"{path}: {size - len(cells)} of {size} grid cells have no result (the first: "
                             f"{json.dumps(dict(zip(params, absent)))}) and the file names no \"missing\" value to answer them")
    return Landscape(path.stem, params, cells, None if missing is None else float(missing),
                     None if noise is None else float(noise), str(record.get("source", "")))


def load(path: str | Path) -> Landscape:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as e:
        raise LandscapeError(f"{path}: cannot be read ({e.strerror})") from None
    except ValueError as e:
        raise LandscapeError(f"{path}: not JSON ({e})") from None
    return parse(path, record)


def to_record(land: Landscape) -> dict:
    """The file form of a landscape (what load reads back)."""
    cells = []
    for key, c in land.cells.items():
        cell = {"params": dict(zip(land.names, key)), "final": c.final}
        if c.curve:
            cell["curve"] = {str(s): v for s, v in c.curve.items()}
        if c.runs:
            cell["runs"] = [{"final": r["final"], **({"curve": {str(s): v for s, v in r["curve"].items()}}
                                                     if r["curve"] else {})} for r in c.runs]
        cells.append(cell)
    record = {"parameters": land.params, "cells": cells}
    if land.noise_sd is not None:
        record["noise_sd"] = land.noise_sd
    if land.missing is not None:
        record["missing"] = land.missing
    if land.source:
        record["source"] = land.source
    return record


def from_study(study, name: str) -> Landscape:
    """A finished grid study (sweep.sampler=grid) as a landscape: each configuration's final value and
    eval curve; configurations run more than once (train.seed in the space, or reruns) become runs,
    whose spread gives noise_sd; a grid point with no complete trial is answered by the worst value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        raise LandscapeError(f"study {name!r} has no complete trial to export")
    seeds = [n for n in done[0].params if n == "seed" or n.endswith("_seed")]
    names = sorted(n for n in done[0].params if n not in seeds)
    params = {}
    for n in names:
        dist = done[0].distributions[n]
        # A categorical's every choice (a grid point whose trials all failed is still a point);
        # a range's, the values its trials took.
        values = (list(dist.choices) if isinstance(dist, CategoricalDistribution) else
                  sorted({t.params[n] for t in done if n in t.params}))
        params[n] = {"values": values, "log": isinstance(dist, (FloatDistribution, IntDistribution)) and dist.log}
    groups: dict[tuple, list] = {}
    for t in done:
        if all(n in t.params for n in names):
            groups.setdefault(tuple(t.params[n] for n in names), []).append(t)
    cells, spreads = {}, []
    for key, trials in groups.items():
        runs = [{"final": float(t.value), "curve": {int(s): float(v) for s, v in sorted(t.intermediate_values.items())}}
                for t in trials]
        final = statistics.fmean(r["final"] for r in runs)
        if len(runs) > 1:
            spreads.append(statistics.stdev(r["final"] for r in runs))
        curve = runs[0]["curve"] if len(runs) == 1 else {}
        cells[key] = Cell(final, curve, runs if len(runs) > 1 else [])
    size = math.prod(len(p["values"]) for p in params.values())
    missing = max(c.final for c in cells.values()) if len(cells) < size else None
    return Landscape(name, params, cells, missing, statistics.fmean(spreads) if spreads else None,
                     f"exported from the Optuna study {name!r}")
