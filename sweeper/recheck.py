"""The re-check before crowning: once the search holds sweep.n_trials finished trials, the
sweep.recheck_top best configurations and the baseline are trained again on sweep.recheck_seeds
more seeds each, as trials of the same study marked with `recheck_of` (the trial whose values they
repeat) and `seed`. They do not count toward n_trials and no sampler learns from them
(sweeper/search/sampler.py); sweeper/results/seeds.py crowns the best mean."""
import optuna
from optuna.trial import FrozenTrial, TrialState

RECHECK_OF, SEED = "recheck_of", "seed"


def is_recheck(t: FrozenTrial) -> bool:
    return RECHECK_OF in t.user_attrs


def search_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials the search chose (the baseline included): what n_trials counts."""
    return [t for t in trials if not is_recheck(t)]


def baseline_of(trials: list[FrozenTrial], s) -> FrozenTrial | None:
    """The first sweep.enqueue entry's complete trial: the recipe every configuration is compared
    with (its values' first complete trial: under sweep.pruner=asha, the continuation that finished it)."""
    ordered = sorted(search_trials(trials), key=lambda t: t.number)
    first = next((t for t in ordered if s.enqueue and t.system_attrs.get("fixed_params") == s.enqueue[0]), None)
    if first is None:
        return None
    return next((t for t in ordered if t.state == TrialState.COMPLETE and t.params == first.params), None)


def configurations(trials: list[FrozenTrial], s) -> list[FrozenTrial]:
    """The search trials whose values are re-checked: the recheck_top best complete ones by the
    objective, and the baseline (once, if it is among them). Two trials with the same values (a
    retry after out of memory) are one configuration."""
    complete = sorted((t for t in search_trials(trials) if t.state == TrialState.COMPLETE),
                      key=lambda t: (t.value, t.number))
    chosen, seen = [], []
    for t in [*complete[:s.recheck_top], baseline_of(trials, s)]:
        if t is not None and t.params not in seen:
            chosen.append(t)
            seen.append(t.params)
    return chosen


def seeds(s) -> list[int]:
    """The seeds a re-check trains on: the ones after the trials' own train.seed."""
    return [s.trial.train.seed + i for i in range(1, s.recheck_seeds + 1)]


def planned(trials: list[FrozenTrial], s) -> list[tuple[int, int]]:
    """(trial number, seed) of every re-check run the finished search calls for."""
    if s.recheck_seeds == 0:
        return []
    return [(t.number, seed) for t in configurations(trials, s) for seed in seeds(s)]


def key(t: FrozenTrial) -> tuple[int, int]:
    return t.user_attrs[RECHECK_OF], t.user_attrs[SEED]


def enqueue_missing(study: optuna.Study, s) -> list[tuple[int, int]]:
    """Queue each planned run the study does not hold yet (a rerun queues nothing twice; a run that
    failed for its own reasons is not repeated); returns those queued."""
    trials = study.get_trials(deepcopy=False)
    held = {key(t) for t in trials if is_recheck(t)}
    by_number = {t.number: t for t in trials}
    queued = []
    for number, seed in planned(trials, s):
        if (number, seed) in held:
            continue
        study.enqueue_trial(by_number[number].params, user_attrs={RECHECK_OF: number, SEED: seed})
        queued.append((number, seed))
    return queued


def pending(trials: list[FrozenTrial], s) -> int:
    """Planned re-check runs not finished yet (queued, running, or not queued yet)."""
    done = {key(t) for t in trials if is_recheck(t) and t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = {key(t) for t in trials if is_recheck(t) and t.state == TrialState.FAIL}
    waiting = {key(t) for t in trials if is_recheck(t) and t.state in (TrialState.WAITING, TrialState.RUNNING)}
    # A failed run with no retry queued is over: the summary says which seeds it has.
    return sum(1 for k in planned(trials, s) if k not in done and (k in waiting or k not in failed))


def duplicate_of(trials: list[FrozenTrial], t: FrozenTrial) -> int | None:
    """An earlier re-check trial of the same values and seed, still to run or run (two sweep
    processes that finished the search together may both queue it), or None."""
    for other in trials:
        if other.number < t.number and is_recheck(other) and key(other) == key(t) and other.state != TrialState.FAIL:
            return other.number
    return None
