"""How the sweep searches: which sampler and pruner a sweep.sampler / sweep.pruner name builds,
and how long the start design runs for a given budget (sweep.n_trials). bench/search.py measures
these choices on the landscape suite (bench/results.md)."""
import warnings

import optuna

from sweeper.search.sampler import SearchView, StartThenModel
from sweeper.search.space import grid

# auto: chosen per budget by bench-search; tpe / gp: the start design, then that model; qmc:
# Optuna's scrambled Sobol sequence; random; grid: every point of a discrete space.
SAMPLERS = ("auto", "tpe", "gp", "qmc", "random", "grid")
PRUNERS = ("percentile", "median", "hyperband", "asha", "none")
PERCENTILE = 75.0


# Beyond this many trials sweep.sampler=auto models them with TPE: a Gaussian process's fit grows
# with the cube of the trials, TPE's with their number (bench/results.md measured GP to 84 trials).
GP_UP_TO = 100


def informative(p) -> bool:
    """A prior that says something: a centre, or weights that differ."""
    return p.searched and p.prior is not None and (p.prior.center is not None or len(set(p.prior.weights)) > 1)


def start_trials(s) -> int:
    """Trials the start design proposes before the model takes over (sweep.startup_trials, or sized
    to the space): three, the fewest a Gaussian process fits a trend to, and one more for each
    parameter with an informative prior, whose draws are worth more than an early model's guesses;
    at least one trial is left to the model. Measured on the suite (bench/results.md): with no prior
    (LCBench) three beat five at 6 and 12 trials; with the LoRA priors five beat three."""
    if s.startup_trials is not None:
        return s.startup_trials
    return max(1, min(s.n_trials - 1, 3 + sum(informative(p) for p in s.space)))


# Optuna's pruners wait for 5 finished trials by default (n_startup_trials=5): the worst quarter of
# three curves is one curve. On the suite (bench/results.md) waiting for 5 where the start is shorter
# lowered the regret at 6 and 12 trials; the start's own length stays the model's.
PRUNER_STARTUP = 5


def pruner_startup(s) -> int:
    """Finished trials before the percentile or median pruner cuts one: the start design's, and at
    least Optuna's default when the start is sized automatically (sweep.startup_trials set: that)."""
    if s.startup_trials is not None:
        return s.startup_trials
    return max(PRUNER_STARTUP, start_trials(s))


def model_of(s) -> str:
    """The model behind the start for sweep.sampler=auto, tpe or gp."""
    if s.sampler == "auto":
        return "gp" if s.n_trials <= GP_UP_TO else "tpe"
    return s.sampler


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler calls Study.stop once the grid is used up, which raises outside
    Study.optimize; this sweep drives ask/tell itself and stops at sweep.n_trials."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def build_sampler(s):
    if s.sampler == "grid":
        return GridSampler(grid(s.space), seed=s.seed)
    if s.sampler == "random":  # no start: each trial's draw comes from its own number
        return StartThenModel(s.space, 0, "random", s.seed)
    if s.sampler == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=s.seed, warn_asynchronous_seeding=False)
    return StartThenModel(s.space, start_trials(s), model_of(s), s.seed)


class SearchPruner(optuna.pruners.BasePruner):
    """A pruner that compares a trial with the search's trials only (SearchView): the re-check's
    runs of the top configurations, counted again, would raise the bar for the trials of a study
    extended after its re-check, as they would for the sampler's models."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study, trial) -> bool:
        return self.inner.prune(SearchView(study, pruned_as_complete=False), trial)


def build_pruner(s):
    """The storage keeps no pruner: every process that loads the study must build this again."""
    startup = pruner_startup(s)
    if s.pruner == "percentile":
        # Cut only a trial in the worst quarter at its step. bench-search (bench/results.md), 20
        # seeds on the default space: the median pruner cut 161 trials that would have ended near
        # the best and missed the target in 2 seeds; this one cut 1 and saved a quarter of the steps.
        return SearchPruner(optuna.pruners.PercentilePruner(PERCENTILE, n_startup_trials=startup, n_warmup_steps=0))
    if s.pruner == "median":
        return SearchPruner(optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0))
    if s.pruner == "hyperband":
        max_steps = s.trial.train.max_steps
        return optuna.pruners.HyperbandPruner(min_resource=s.trial.train.eval_steps,
                                              max_resource=max_steps if max_steps > 0 else "auto")
    return optuna.pruners.NopPruner()  # none; asha pauses trials at its rungs itself (sweeper/search/asha.py)


def _prior_text(p) -> str:
    if p.prior.weights:
        return f"{p.name} {':'.join(map(str, p.choices))} weighted {':'.join(f'{w:g}' for w in p.prior.weights)}"
    unit = " decades" if p.log else ""
    return f"{p.name} around {p.prior.center:g} (±{p.prior.spread:g}{unit})"


def describe(s) -> str:
    """One line for the sweep's start: how it will search."""
    if s.sampler in ("grid", "qmc"):
        what = {"grid": "every point of the grid", "qmc": "a scrambled Sobol sequence (Optuna's QMCSampler)"}[s.sampler]
    elif s.sampler == "random":
        what = "random search"
    else:
        priors = [_prior_text(p) for p in s.space if informative(p)]
        model = {"tpe": "TPE (multivariate, constant liar)", "gp": "a Gaussian process (Optuna's GPSampler)"}[model_of(s)]
        n = start_trials(s)
        what = (f"{n} trial{'s' if n != 1 else ''} spread over the space"
                + (f" by the priors ({'; '.join(priors)}), the first on their modes" if priors else "")
                + (f", then {model}" if n < s.n_trials else ""))
    pruner = "no pruning" if s.pruner == "none" else f"the {s.pruner} pruner"
    train = s.trial.train
    if s.pruner in ("percentile", "median", "hyperband") and 0 < train.max_steps <= train.eval_steps:
        pruner += (f", which never acts here: train.eval_steps={train.eval_steps} >= train.max_steps={train.max_steps}, "
                   f"so a trial evaluates only at its end")
    if s.pruner == "asha":
        from sweeper.search.asha import rungs

        pruner = (f"asha: each configuration pauses at steps {', '.join(map(str, rungs(s)[:-1]))} and the best "
                  f"1/{s.asha_eta} at each go on from their checkpoints to {rungs(s)[-1]}")
    return f"search ({s.sampler}): {what}; {pruner}"
