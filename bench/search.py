"""make bench-search: how well each search strategy finds a good configuration, replayed on a suite of
landscapes (bench/landscapes.py: a grid of configurations with the result and eval curve each got),
at the budgets QLoRA users have (6, 12 and 30 trials), over many seeds. Nothing in it reads a clock.

The suite (bench/landscapes/): the demo tasks' landscapes, measured through the sweep on this
project's tiny model (demo-*.json, bench/demo_landscapes.py), and LCBench's 34 tasks (lcbench/,
bench/lcbench.py). Or any landscape a user gives:

    python bench/search.py [--landscape FILE ...] [--seeds 20] [--parallel K] [-- SWEEP OVERRIDES]
    python bench/search.py --export STUDY --storage URL > FILE     (a finished grid study as a landscape)

Each strategy searches the space the sweep itself builds from the config (sweep overrides after --
set it, e.g. `-- train=gpu`), with the sweep's own sampler and pruner (sweeper.search): a landscape
parameter named like one of the space's entries is searched with that entry's prior and range
(widened to the file's values where they reach beyond it, which is said), the space's other
entries are dropped, and a parameter the space lacks becomes a categorical entry (a log-scale float
with "log"). Each suggestion is answered by the nearest cell on the parameter's scale, its curve
reported eval by eval (so pruners cut as they would), its value seen through the cell's seed runs
or noise_sd where the file has them.

--parallel K replays a sweep with K slots: K trials asked side by side, each while the others
run (asked first, then run and told in turn), so the model proposes without their results, as
the sweep's does; random search is the same either way, asha is replayed one at a time.

Regret: (the true value of the configuration the run would crown - the grid's best) / (the grid's
median - its best), after 6, 12 and 30 trials; 0 is the best configuration, 1 the median one.
On landscapes with seed noise (runs per cell, or noise_sd) it also replays issue 22's re-check of the
default's crowned configuration: the top 2 by seen value trained on 2 more seeds, the best mean
crowned; it prints how often each way crowns a near-best configuration, and a line
recheck_near_best_at_12=<landscape>:<share>,...
On landscapes with curves it replays issue 22's promotion with continuation (ASHA, replay_asha): the
default's sampler proposes, a configuration pauses at each rung and is continued from where it
stopped when it ranks in the top 1/sweep.asha_eta there; it prints the training it spends against the
default's and its steps to a near-best configuration.

Last lines: suite_regret_default=.. suite_regret_random=.. (mean after 6 trials over the suite, or
landscape_regret_... for files given with --landscape) and, for the demo landscape, search_share /
random_share: the training spent until a near-best trial finished, as a share of the whole grid's."""
import argparse
import dataclasses
import hashlib
import math
import os
import random
import statistics
import sys
import warnings
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from landscapes import Landscape, LandscapeError, from_study, load, to_record  # noqa: E402
from sweeper.search.asha import promotion, rungs_of  # noqa: E402
from sweeper.search.sampler import CONTINUED_FROM  # noqa: E402
from sweeper.search.space import Param, Prior, along, suggest  # noqa: E402
from sweeper.search.strategy import build_pruner, build_sampler  # noqa: E402
from trainers.settings import ConfigError  # noqa: E402

SUITE = ROOT / "bench" / "landscapes"
DEMO = SUITE / "demo-prices.json"  # search_share is read off this one, as before the suite
BUDGETS = (6, 12, 30)
DEFAULT, RANDOM = "default", "random"
ASHA = "asha with continuation (the default sampler)"  # issue 22 item 1, replayed before the sweep has it
PARALLEL = 1  # trials asked side by side (--parallel): a sweep's slots
STRATEGIES = {  # name: sweep overrides (what a user can choose in conf/sweep), or a sampler of the bench's own
    DEFAULT: [],  # conf/sweep/default.yaml as it stands
    RANDOM: ["sweep.sampler=random", "sweep.pruner=none"],
    "qmc (Optuna's scrambled Sobol)": ["sweep.sampler=qmc", "sweep.pruner=none"],
    "start + tpe": ["sweep.sampler=tpe", "sweep.pruner=none"],
    "start + gp, no pruning": ["sweep.sampler=gp", "sweep.pruner=none"],
    "optuna tpe, random start (before)": ["sweep.pruner=percentile"],
    ASHA: ["sweep.pruner=none"],  # the default's sampler; the schedule is replay_asha's
}
OWN_SAMPLERS = {  # the sweep's default before this suite: Optuna's TPE after n_trials // 4 random trials
    "optuna tpe, random start (before)": lambda s: optuna.samplers.TPESampler(
        n_startup_trials=max(1, min(5, s.n_trials // 4)), seed=s.seed),
}


# -- the space a strategy searches on a landscape ---------------------------------------------------

def replay_space(space: list[Param], land: Landscape) -> tuple[list[Param], list[str]]:
    """The sweep's entries the landscape names (with their priors), the landscape's other parameters
    as plain entries; and a note for each range widened to reach the file's values."""
    by_name, out, notes = {p.name: p for p in space}, [], []
    for name, spec in land.params.items():
        values, entry = spec["values"], by_name.get(name)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if entry is not None and entry.type in ("int", "float") and numeric:
            if (min(values), max(values)) != (entry.low, entry.high):
                notes.append(f"{name}: searched over the file's {min(values):g}..{max(values):g} (the space: "
                             f"{entry.low:g}..{entry.high:g}), its prior kept in the same place within the range")
            out.append(transposed(entry, min(values), max(values), all(isinstance(v, int) for v in values)))
        elif entry is not None and entry.type == "categorical":
            if set(values) != set(entry.choices):
                notes.append(f"{name}: the file's values {values} searched in place of the space's {list(entry.choices)}")
            out.append(dataclasses.replace(entry, choices=tuple(values), prior=carried_prior(entry, values)))
        elif spec.get("log"):
            out.append(Param(name, "float", f"landscape.{name}", low=min(values), high=max(values), log=True))
        else:
            out.append(Param(name, "categorical", f"landscape.{name}", choices=tuple(values)))
    return out, notes


def transposed(entry: Param, low: float, high: float, whole: bool) -> Param:
    """A numeric entry over a landscape's own range: a grid holds nothing beyond its first and last
    value (a suggestion there would only land on an edge cell), and the sweep's range is itself set
    around the preset's rate, so the prior keeps its place within the range: the centre at the
    same fraction of it, the spread the same share of its width, on the entry's scale."""
    kind = "int" if entry.type == "int" and whole else "float"
    moved = dataclasses.replace(entry, low=low, high=high, step=None, type=kind, prior=None)
    if entry.prior is None or entry.prior.center is None or low == high:
        return moved
    scale = math.log10 if entry.log else float
    width, new_width = scale(entry.high) - scale(entry.low), scale(high) - scale(low)
    at = (scale(entry.prior.center) - scale(entry.low)) / width
    center = scale(low) + at * new_width
    return dataclasses.replace(moved, prior=Prior(center=10 ** center if entry.log else center,
                                                  spread=entry.prior.spread * new_width / width, source=entry.prior.source))


def carried_prior(entry: Param, values: list) -> Prior | None:
    """A categorical entry's prior weights over a landscape's values: a value the entry has keeps its
    weight; ordered numeric values take the weights by position (sweeper.search.space.along), so a
    prior that grows with the rank grows over the file's ranks too; other values weigh alike."""
    if entry.prior is None or not entry.prior.weights:
        return None
    weights = dict(zip(entry.choices, entry.prior.weights))
    if all(v in weights for v in values):
        return Prior(weights=tuple(weights[v] for v in values), source=entry.prior.source)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*values, *entry.choices])
    if not numeric:
        return None
    carried = dict(zip(sorted(values), along([weights[c] for c in sorted(entry.choices)], len(values))))
    return Prior(weights=tuple(carried[v] for v in values), source=entry.prior.source)


@lru_cache(maxsize=None)
def base_settings(strategy: str, overrides: tuple):
    from sweeper.settings import sweep_settings

    return sweep_settings(["sweep.enqueue=[]", *STRATEGIES[strategy], *overrides], check_values=False)


@lru_cache(maxsize=None)
def landscape(path: str) -> Landscape:
    return load(path)


def study_seed(land: Landscape, seed: int) -> int:
    """The sweep.seed of a landscape's replay number `seed`: its own per landscape. With seeds 0..N-1 on
    every landscape, all of LCBench's tasks (one space) replayed the same N start designs and random
    draws, so the suite mean rested on N draws, not N x 36: over 20 seeds its ratio to random moved by
    about +-0.05 (bench/results.md)."""
    return int.from_bytes(hashlib.sha256(f"{land.name}/{seed}".encode()).digest()[:4], "little") % 2**31


def settings_for(strategy: str, overrides: tuple, land: Landscape, budget: int, seed: int):
    s = base_settings(strategy, overrides)
    steps = sorted({step for c in land.cells.values() for step in c.curve}) or [1]
    train = dataclasses.replace(s.trial.train, eval_steps=steps[0], max_steps=steps[-1])
    return dataclasses.replace(s, space=replay_space(s.space, land)[0], n_trials=budget, seed=study_seed(land, seed),
                               trial=dataclasses.replace(s.trial, train=train))


# -- one replay -------------------------------------------------------------------------------------

def observe(land: Landscape, key: tuple, rng: random.Random) -> tuple[float, dict, float, int | None]:
    """What a trial of a cell reports (its curve and final value, one seed's where the file has runs,
    or with noise_sd added), the cell's true value, and which of its seed runs answered."""
    cell = land.result(key)
    if cell is None:
        return land.missing, {}, land.missing, None
    if cell.runs:
        i = rng.randrange(len(cell.runs))
        return cell.runs[i]["final"], cell.runs[i]["curve"], cell.final, i
    shift = rng.gauss(0, land.noise_sd) if land.noise_sd else 0.0  # one seed's offset, shared by its curve
    return cell.final + shift, {s: v + shift for s, v in cell.curve.items()}, cell.final, None


def replay(job: tuple) -> dict:
    """One strategy on one landscape for `budget` trials: per trial, the true value, what was seen,
    the steps it trained and whether it was pruned."""
    path, strategy, overrides, budget, seed = job
    land = landscape(path)
    s = settings_for(strategy, overrides, land, budget, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = OWN_SAMPLERS[strategy](s) if strategy in OWN_SAMPLERS else build_sampler(s)
        # Named, as hyperband picks a trial's bracket from the study's name.
        study = optuna.create_study(study_name=f"{strategy}-{seed}", sampler=sampler, pruner=build_pruner(s))
    rng = random.Random(f"{land.name} {seed}")  # which seed run answers, the same for every strategy
    trials = []
    while len(trials) < budget:
        side_by_side = []
        for _ in range(min(PARALLEL, budget - len(trials))):
            trial = study.ask()  # its values drawn now, with the trials asked before it still running
            side_by_side.append((trial, land.nearest(suggest(trial, s.space))))
        trials += [run_and_tell(study, trial, key, land, rng) for trial, key in side_by_side]
    return {"job": job, "trials": trials}


def run_and_tell(study, trial, key: tuple, land: Landscape, rng: random.Random) -> dict:
    """One asked trial trained on its cell: its curve reported eval by eval (pruned as the sweep
    would), then told to the study."""
    seen, curve, truth, run = observe(land, key, rng)
    record = {"truth": truth, "seen": seen, "pruned": False, "steps": max(curve) if curve else 1, "key": key,
              "run": run}
    for step, value in curve.items():
        trial.report(value, step)
        if step != max(curve) and trial.should_prune():  # the sweep never prunes at the last step
            record.update(pruned=True, steps=step)
            break
    study.tell(trial, state=optuna.trial.TrialState.PRUNED) if record["pruned"] else study.tell(trial, seen)
    return record


# -- promotion with continuation (ASHA) -------------------------------------------------------------
# sweeper/search/asha.py's rule, one configuration or continuation at a time: a configuration trains
# to the first rung and pauses; a paused one is continued to the next rung when it ranks in the top
# 1/eta of those that reached its rung; else a new configuration starts. Continued from its own
# checkpoint, a promoted configuration costs only its new steps and ends with the loss an
# uninterrupted run would (so its seen curve is one curve).

class Config(dict):
    """A replayed configuration; asha.promotion reads its rung, at and paused as attributes."""
    __getattr__ = dict.__getitem__


def rungs_for(land: Landscape, s) -> list[int]:
    """Rungs on the steps the landscape's curves (its cells' or their seed runs') were evaluated at:
    from sweep.asha_min_step (on the landscape's own step scale; null: its first eval) by sweep.asha_eta."""
    steps = sorted({step for c in land.cells.values() for curve in [c.curve, *(r["curve"] for r in c.runs or [])]
                    for step in curve}) or [1]
    return rungs_of(steps, s.asha_min_step or steps[0], s.asha_eta)


def train_to(study, c: dict, rungs: list[int], spent: int, trial=None) -> int:
    """Train configuration c from its rung to the next: its asked trial's first leg, or a
    continuation, recorded as the sweep would (an enqueued trial naming the one it continues, which
    the sampler's models then leave out: they see each configuration once, at its latest rung)."""
    start = rungs[c["rung"]] if c["rung"] >= 0 else 0
    c["rung"] += 1
    stop = rungs[c["rung"]]
    curve = {step: v for step, v in c["curve"].items() if step <= stop}
    c["at"].append(curve[max(curve)] if curve else c["seen"])  # a curve that starts later: its value so far
    c["steps"] += stop - start
    spent += stop - start
    done = c["rung"] == len(rungs) - 1
    state = optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED
    if trial is not None:
        for step, value in curve.items():
            trial.report(value, step)
        study.tell(trial, c["seen"] if done else None, state=state)
        c["number"] = trial.number
    else:
        study.add_trial(optuna.trial.create_trial(
            params=c["params"], distributions=c["distributions"], intermediate_values=curve, state=state,
            value=c["seen"] if done else None, user_attrs={CONTINUED_FROM: c["number"]},
            system_attrs={"fixed_params": c["params"]}))
        c["number"] = len(study.trials) - 1
    if done:
        c.update(pruned=False, paused=False, done_at=spent)
    return spent


def replay_asha(job: tuple) -> dict:
    """ASHA with continuation, one configuration or continuation at a time, new configurations from
    the default's sampler, until `budget` configurations have started and none is left to continue.
    Per configuration: as replay's, plus done_at, the steps spent in the whole run when it finished."""
    path, strategy, overrides, budget, seed = job
    land = landscape(path)
    s = settings_for(strategy, overrides, land, budget, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(sampler=build_sampler(s))
    rng = random.Random(f"{land.name} {seed}")
    rungs = rungs_for(land, s)
    configs, spent = [], 0
    while True:
        c = promotion(configs, len(rungs), s.asha_eta, ending=len(configs) >= budget)
        if c is not None:
            spent = train_to(study, c, rungs, spent)
            continue
        if len(configs) >= budget:
            break
        trial = study.ask()
        key = land.nearest(suggest(trial, s.space))
        seen, curve, truth, run = observe(land, key, rng)
        c = Config(truth=truth, seen=seen, pruned=True, steps=0, key=key, run=run, curve=curve, at=[], rung=-1,
                   paused=True, done_at=None, params=trial.params, distributions=trial.distributions)
        configs.append(c)
        if curve and len(rungs) > 1:
            spent = train_to(study, c, rungs, spent, trial)
        else:  # a missing cell, or no curves to pause on: nothing to continue, its value at once
            spent += 1
            c.update(pruned=False, paused=False, steps=1, done_at=spent, rung=len(rungs) - 1, at=[seen] * len(rungs))
            study.tell(trial, seen)
    return {"job": job, "trials": [{k: v for k, v in c.items() if k not in ("curve", "params", "distributions")}
                                   for c in configs]}


def replay_any(job: tuple) -> dict:
    return replay_asha(job) if job[1] == ASHA else replay(job)


# -- what a run achieved ----------------------------------------------------------------------------

def regret_after(land: Landscape, trials: list[dict], n: int) -> float:
    """The regret of the configuration a sweep of the first n trials would crown (its best seen value)."""
    return land.regret(truth_crowned(land, trials, n))


# The re-check issue 22 asks for, replayed: after the search, the top configurations by their best
# seen value are trained again on more seeds and the one with the best mean is crowned.
RECHECK_TOP, RECHECK_SEEDS = 2, 2


def seeded(land: Landscape) -> bool:
    """A landscape whose cells answer differently per seed: runs per cell, or a noise_sd."""
    return bool(land.noise_sd) or any(c.runs for c in land.cells.values())


def again(land: Landscape, key: tuple, used: set, rng: random.Random) -> tuple[float, int]:
    """One more seed of a cell: a seed run not used yet where the file has runs (any, once all are),
    else its true value plus one seed's noise; and the steps it costs."""
    cell, steps = land.result(key), land.steps.get(key, 1)
    if cell is None:
        return land.missing, steps
    if cell.runs:
        unused = [i for i in range(len(cell.runs)) if i not in used] or list(range(len(cell.runs)))
        i = rng.choice(unused)
        used.add(i)
        return cell.runs[i]["final"], steps
    return cell.final + (rng.gauss(0, land.noise_sd) if land.noise_sd else 0.0), steps


def recheck(land: Landscape, trials: list[dict], n: int, rng: random.Random) -> tuple[float, int]:
    """After the first n trials: the true value of the configuration crowned by its mean over every
    seed it ran (its search trials and RECHECK_SEEDS more, for the RECHECK_TOP best by seen value),
    and the steps the re-check cost."""
    done = finished(trials, n)
    if not done:
        return max(land.finals), 0
    seen: dict[tuple, list[float]] = {}
    used: dict[tuple, set] = {}
    for t in sorted(done, key=lambda t: t["seen"]):
        seen.setdefault(t["key"], []).append(t["seen"])
        used.setdefault(t["key"], set()).update({t["run"]} - {None})
    top, cost = list(seen)[:RECHECK_TOP], 0
    for key in top:
        for _ in range(RECHECK_SEEDS):
            value, steps = again(land, key, used[key], rng)
            seen[key].append(value)
            cost += steps
    crowned = min(top, key=lambda k: statistics.fmean(seen[k]))
    cell = land.result(crowned)
    return (cell.final if cell else land.missing), cost


def recheck_table(land: Landscape, runs: dict, seeds: int) -> tuple[list[str], dict[int, float]]:
    """The default's crowned configuration, without and with the re-check: how often it is near-best
    by its true value (within one seed sd of the grid's best), its mean regret, and the re-check's
    training as a share of the search's; and the near-best share with the re-check per budget."""
    lines = ["| trials | crowned near-best: best single run | with the re-check | regret: best single run | "
             "with the re-check | re-check steps / search steps |", "|---|---|---|---|---|---|"]
    shares = {}
    for n in BUDGETS:
        single, checked, extra, spent = [], [], 0, 0
        for seed in range(seeds):
            trials = runs[(DEFAULT, n, seed)]
            single.append(truth_crowned(land, trials, n))
            value, cost = recheck(land, trials, n, random.Random(f"recheck {land.name} {seed}"))
            checked.append(value)
            extra, spent = extra + cost, spent + sum(t["steps"] for t in trials[:n])
        near = [sum(v <= land.near_target for v in vs) / seeds for vs in (single, checked)]
        shares[n] = near[1]
        lines.append(f"| {n} | {near[0]:.0%} | {near[1]:.0%} | {statistics.fmean(map(land.regret, single)):.3f} | "
                     f"{statistics.fmean(map(land.regret, checked)):.3f} | {extra / spent:.2f} |")
    return lines, shares


def finished(trials: list[dict], n: int) -> list[dict]:
    """Of the first n trials, those a sweep could crown: trained to the end, not pruned."""
    return [t for t in trials[:n] if not t["pruned"]]


def truth_crowned(land: Landscape, trials: list[dict], n: int) -> float:
    """The true value of the configuration the best single seen value crowns (what regret_after scores)."""
    done = finished(trials, n)
    return min(done, key=lambda t: t["seen"])["truth"] if done else max(land.finals)


def to_near(land: Landscape, trials: list[dict]) -> tuple[int | None, int]:
    """(trials until a near-best one finished, or None) and the steps spent until then (or in all)."""
    if trials and "done_at" in trials[0]:  # ASHA: configurations finish out of the order they start
        done = [(t["done_at"], i + 1) for i, t in enumerate(trials)
                if t["done_at"] is not None and t["truth"] <= land.near_target]
        return (min(done)[1], min(done)[0]) if done else (None, sum(t["steps"] for t in trials))
    spent = 0
    for i, t in enumerate(trials):
        spent += t["steps"]
        if not t["pruned"] and t["truth"] <= land.near_target:
            return i + 1, spent
    return None, spent


def cuts(land: Landscape, trials: list[dict]) -> tuple[int, int]:
    """Trials pruned, and of them those that would have finished near-best."""
    pruned = [t for t in trials if t["pruned"]]
    return len(pruned), sum(t["truth"] <= land.near_target for t in pruned)


def best_cut(trials: list[dict]) -> bool:
    """Whether pruning (or a pause never continued) cut the run's eventual best: the configuration
    with the best true value of those the run tried, none of its trials trained to the end (issue 22
    compares this count with the default's)."""
    best = min(t["truth"] for t in trials)
    return all(t["pruned"] for t in trials if t["truth"] == best)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def table(land: Landscape, runs: dict, seeds: int) -> list[str]:
    """One landscape: a row per strategy."""
    lines = ["| strategy | regret after 6 (mean ± sd) | after 12 | after 30 | trials to a near-best (median) | found "
             "in 30 | steps to it / grid steps (median) | pruned | pruned a would-be near-best | runs whose best was cut |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for strategy in STRATEGIES:
        cells = []
        for budget in BUDGETS:
            m, sd = mean_sd([regret_after(land, runs[(strategy, budget, seed)], budget) for seed in range(seeds)])
            cells.append(f"{m:.3f} ± {sd:.3f}")
        longest = [runs[(strategy, BUDGETS[-1], seed)] for seed in range(seeds)]
        near = [to_near(land, r) for r in longest]
        found = [n for n, _ in near if n is not None]
        pruned = [cuts(land, r) for r in longest]
        lines.append(f"| {strategy} | {' | '.join(cells)} | {statistics.median(found) if found else '-'} | "
                     f"{len(found)}/{seeds} | {statistics.median(s for _, s in near) / land.grid_steps:.3f} | "
                     f"{sum(p for p, _ in pruned)} | {sum(c for _, c in pruned)} | {sum(map(best_cut, longest))}/{seeds} |")
    return lines


def asha_line(land: Landscape, runs: dict, seeds: int, overrides: tuple) -> str | None:
    """ASHA with continuation against the default on one landscape with curves: the training it
    spends per budget as a share of the default's, and the steps until a near-best configuration
    finished (median over seeds; issue 22 asks for fewer)."""
    if ASHA not in STRATEGIES or len(rungs_for(land, base_settings(ASHA, overrides))) < 2:
        return None
    spend = []
    for n in BUDGETS:
        a = sum(t["steps"] for s in range(seeds) for t in runs[(ASHA, n, s)])
        d = sum(t["steps"] for s in range(seeds) for t in runs[(DEFAULT, n, s)])
        spend.append(f"{a / d:.2f}" if d else "-")
    steps = {k: statistics.median(to_near(land, runs[(k, BUDGETS[-1], s)])[1] for s in range(seeds)) / land.grid_steps
             for k in (ASHA, DEFAULT)}
    return (f"asha with continuation: training spent / the default's at {', '.join(map(str, BUDGETS))} trials: "
            f"{', '.join(spend)}; steps to a near-best / grid steps (median): {steps[ASHA]:.3f} against the "
            f"default's {steps[DEFAULT]:.3f}")


def describe(land: Landscape, notes: list[str]) -> str:
    best = min(land.cells, key=lambda k: land.cells[k].final)
    size = math.prod(len(p["values"]) for p in land.params.values())
    near = sum(c.final <= land.near_target for c in land.cells.values())
    text = (f"{size} configurations ({', '.join(land.names)}{'; ' + str(size - len(land.cells)) + ' missing, answered by ' + format(land.missing, 'g') if len(land.cells) < size else ''}); "
            f"best {land.best:.4f} at {dict(zip(land.names, best))}, median {land.median:.4f}; near-best (<= "
            f"{land.near_target:.4f}): {near}; seed noise: "
            + (f"sd {land.noise_sd:.4f}" if land.noise_sd else "none recorded"))
    return text + "".join(f"\n- {n}" for n in notes)


def suite_se(regrets: list[float], seeds: int) -> float:
    """The standard error of a suite mean: regrets are `seeds` runs per landscape, in landscape order,
    each run independent of the others (study_seed); the landscapes are the suite's, not a sample."""
    if seeds < 2:
        return 0.0
    per = [regrets[i:i + seeds] for i in range(0, len(regrets), seeds)]
    return math.sqrt(sum(statistics.variance(r) / seeds for r in per)) / len(per)


def worse_than_random(land: Landscape, runs: dict, seeds: int, budget: int) -> bool:
    """The default's mean regret above random's by more than twice the standard error of the difference."""
    d = [regret_after(land, runs[(DEFAULT, budget, s)], budget) for s in range(seeds)]
    r = [regret_after(land, runs[(RANDOM, budget, s)], budget) for s in range(seeds)]
    se = math.sqrt((statistics.variance(d) + statistics.variance(r)) / seeds) if seeds > 1 else 0.0
    return statistics.fmean(d) - statistics.fmean(r) > 2 * se


def search_share(land: Landscape, overrides: tuple, seeds: int, pool) -> dict[str, float]:
    """Steps until a near-best trial finished, as a share of the grid's steps (median over seeds), with
    as many trials as the grid has: the figure bench-search reported before the suite."""
    budget = len(land.cells)
    jobs = [(str(DEMO), strategy, overrides, budget, seed) for strategy in (DEFAULT, RANDOM) for seed in range(seeds)]
    by = {}
    for out in pool.map(replay, jobs):
        by.setdefault(out["job"][1], []).append(to_near(land, out["trials"])[1] / land.grid_steps)
    return {k: statistics.median(v) for k, v in by.items()}


def one_thread(parallel: int = 1) -> None:
    """Each replay process fits its Gaussian processes on one thread: with a process per core,
    torch's own threads would only fight over the cores (GPSampler took 7x longer). It replays
    `parallel` trials side by side (--parallel)."""
    import torch

    global PARALLEL
    PARALLEL = parallel
    torch.set_num_threads(1)


def export(study_name: str, storage: str) -> None:
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from sweeper.settings import sqlite_file
    from trainers.settings import first_line

    path = sqlite_file(storage)
    if path and not Path(path).is_file():  # SQLAlchemy would create an empty database there
        sys.exit(f"--storage: no database file {path}")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        sys.exit(f"--export: no study named {study_name!r} in {storage}")
    except (SQLAlchemyError, ValueError, ImportError) as e:
        sys.exit(f"--storage {storage}: cannot be opened ({first_line(e)})")
    if len(study.directions) > 1:
        sys.exit(f"--export: study {study_name!r} has {len(study.directions)} objectives; a landscape holds one "
                 "value per configuration")
    try:
        print(json.dumps(to_record(from_study(study, study_name)), indent=1))
    except LandscapeError as e:
        sys.exit(str(e))


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments are said in one line (argparse's own error prints the whole usage first)."""

    def error(self, message):
        sys.exit(f"bench/search.py: {message} (--help lists the options)")


def positive(text: str) -> int:
    """argparse's type for a count: a whole number of at least 1, else its one-line error."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return n


def chosen_strategies(text: str) -> tuple[list[str], str | None]:
    """--strategies' names, and the first that is not one (or None). Split at commas, but a name may
    hold one ("start + gp, no pruning"): the longest run of pieces that forms a name is taken."""
    pieces, chosen, i = [p.strip() for p in text.split(",")], [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i, -1) if ", ".join(pieces[i:j]) in STRATEGIES), None)
        if j is None:
            return chosen, pieces[i]
        chosen.append(", ".join(pieces[i:j]))
        i = j
    return chosen, None


def main():
    argv = sys.argv[1:]
    overrides = tuple(argv[argv.index("--") + 1:]) if "--" in argv else ()
    ap = OneLineParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--landscape", action="append", help="a landscape file (repeatable); default: the suite")
    ap.add_argument("--seeds", type=positive, default=20, help="replays per landscape and budget (default 20)")
    ap.add_argument("--export", metavar="STUDY", help="print a finished grid study as a landscape file")
    ap.add_argument("--storage", help="the study's storage URL (with --export)")
    ap.add_argument("--jobs", type=positive, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--parallel", type=positive, default=1, help="trials asked side by side, as K slots ask them")
    ap.add_argument("--strategies", help=f"a comma-separated subset of: {' | '.join(STRATEGIES)} (default: all)")
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if a.strategies:
        chosen, unknown = chosen_strategies(a.strategies)
        if unknown or not {DEFAULT, RANDOM} <= set(chosen):
            sys.exit((f"--strategies: {unknown!r} is not one" if unknown else "--strategies: the default and random "
                      "are always replayed (the regret lines compare them)") + f"; known: {' | '.join(STRATEGIES)}")
        for name in [n for n in STRATEGIES if n not in chosen]:
            del STRATEGIES[name]
    if a.export:
        if not a.storage:
            sys.exit("--export needs --storage URL (e.g. sqlite:///outputs/my-study/study.db)")
        return export(a.export, a.storage)
    paths = [Path(p) for p in a.landscape] if a.landscape else sorted(SUITE.glob("*.json")) + sorted(SUITE.glob("*/*.json"))
    try:
        lands = {str(p): load(p) for p in paths}
        base = base_settings(DEFAULT, overrides)
    except LandscapeError as e:
        sys.exit(str(e))
    except ConfigError as e:
        sys.exit(f"{e}")
    jobs = [(p, strategy, overrides, budget, seed) for p in lands for strategy in STRATEGIES for budget in BUDGETS
            for seed in range(a.seeds)]
    with Pool(a.jobs, initializer=one_thread, initargs=(a.parallel,)) as pool:
        results = pool.map(replay_any, jobs, chunksize=8)
        runs = {}
        for out in results:
            p, strategy, _, budget, seed = out["job"]
            runs.setdefault(p, {})[(strategy, budget, seed)] = out["trials"]
        regret = {(strategy, n): [] for strategy in STRATEGIES for n in BUDGETS}
        worse, rechecked = [], {}
        for p, land in lands.items():
            print(f"\n### {land.name}: {describe(land, replay_space(base.space, land)[1])}\n")
            print("\n".join(table(land, runs[p], a.seeds)))
            if (line := asha_line(land, runs[p], a.seeds, overrides)) is not None:
                print(f"\n{line}")
            for strategy in STRATEGIES:
                for n in BUDGETS:
                    regret[(strategy, n)] += [regret_after(land, runs[p][(strategy, n, s)], n) for s in range(a.seeds)]
            worse += [f"{land.name} at {n}" for n in BUDGETS if worse_than_random(land, runs[p], a.seeds, n)]
            if seeded(land):
                lines, shares = recheck_table(land, runs[p], a.seeds)
                print(f"\nThe default's crowned configuration with the re-check (the top {RECHECK_TOP} by seen value, "
                      f"{RECHECK_SEEDS} more seeds each, crowned by mean; issue 22), {a.seeds} seeds:\n")
                print("\n".join(lines))
                rechecked[land.name] = shares
        side = f", {a.parallel} trials asked side by side (asha: one at a time)" if a.parallel > 1 else ""
        print(f"\n### The {'files given' if a.landscape else 'suite'}: {len(lands)} landscapes x {a.seeds} "
              f"seeds{side}, mean regret ± its standard error over the seeds\n")
        print("| strategy | after 6 | after 12 | after 30 |\n|---|---|---|---|")
        for strategy in STRATEGIES:
            print(f"| {strategy} | " + " | ".join(f"{statistics.fmean(regret[(strategy, n)]):.3f} ± "
                                                  f"{suite_se(regret[(strategy, n)], a.seeds):.3f}" for n in BUDGETS) + " |")
        print(f"\nwhere the default is worse than random beyond the spread over seeds (2 standard errors): "
              f"{', '.join(worse) if worse else 'nowhere'}")
        share = search_share(lands[str(DEMO)], overrides, a.seeds, pool) if str(DEMO) in lands else None
    word = "landscape" if a.landscape else "suite"
    if rechecked:
        print("recheck_near_best_at_12=" + ",".join(f"{name}:{s[12]:.2f}" for name, s in rechecked.items()))
    for n in BUDGETS[1:]:
        print(f"{word}_regret_at_{n}_default={statistics.fmean(regret[(DEFAULT, n)]):.3f} "
              f"{word}_regret_at_{n}_random={statistics.fmean(regret[(RANDOM, n)]):.3f}")
    if share:
        print(f"search_share={share[DEFAULT]:.3f} random_share={share[RANDOM]:.3f}")
    print(f"{word}_regret_default={statistics.fmean(regret[(DEFAULT, 6)]):.3f} "
          f"{word}_regret_random={statistics.fmean(regret[(RANDOM, 6)]):.3f}")


if __name__ == "__main__":
    main()
