"""Reading a study's trials the way every result shows them: ranked (complete by the objective,
then pruned and failed by their last eval loss), with their searched and tied values, and every
finished trial's eval loss at one common step (losses at one step compare; the sweep guarantees it)."""
from optuna.trial import FrozenTrial, TrialState

from sweeper.recheck import RECHECK_OF, SEED, is_recheck, search_trials
from sweeper.search.sampler import CONTINUED_FROM
from sweeper.settings import SweepSettings

ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COLUMNS = ("trial", "state", "eval_loss", "steps", "wall_s", "train_s", "train_tokens", "tokens_per_s",
           "peak_memory_gib", "price_mae", "price_within_20")
MIN_POINTS = 5  # below this, importances are noise presented as a finding


def trial_values(t: FrozenTrial, s: SweepSettings) -> dict:
    """Searched and tied values, in the space's order."""
    merged = {**t.params, **{k: v for k, v in t.user_attrs.items() if k in {p.name for p in s.space}}}
    return {p.name: merged[p.name] for p in s.space if p.name in merged}


def eval_loss(t: FrozenTrial) -> float | None:
    if "eval_loss" in t.user_attrs:  # the value may be a task metric (sweep.objective)
        return t.user_attrs["eval_loss"]
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def rank_value(t: FrozenTrial) -> float:
    """Complete trials by their value (the objective); others by their last eval loss."""
    value = t.value if t.state == TrialState.COMPLETE else eval_loss(t)
    return value if value is not None else float("inf")


def continued(trials: list[FrozenTrial]) -> set[int]:
    """The paused trials (sweep.pruner=asha) another trial continued."""
    return {t.user_attrs[CONTINUED_FROM] for t in trials if CONTINUED_FROM in t.user_attrs}


def state_name(t: FrozenTrial, promoted: set[int]) -> str:
    """complete, pruned, failed; under asha a pruned trial that stopped at a rung is paused, or
    promoted once another trial continued it."""
    if t.state == TrialState.PRUNED and "paused_at" in t.user_attrs:
        return "promoted" if t.number in promoted else "paused"
    return t.state.name.lower()


def rows(trials: list[FrozenTrial], s: SweepSettings) -> list[dict]:
    ranked = sorted((t for t in trials if t.state in ORDER), key=lambda t: (ORDER[t.state], rank_value(t)))
    promoted = continued(trials)
    return [{"trial": t.number, "state": state_name(t, promoted), "eval_loss": eval_loss(t),
             "steps": t.user_attrs.get("steps"), **{k: t.user_attrs.get(k) for k in COLUMNS[4:]},
             **trial_values(t, s), "recheck_of": t.user_attrs.get(RECHECK_OF), "seed": t.user_attrs.get(SEED),
             "continued_from": t.user_attrs.get(CONTINUED_FROM),
             # a retry inherits its predecessor's attributes, fail_reason included: only a failure has one
             "fail_reason": t.user_attrs.get("fail_reason", "") if t.state == TrialState.FAIL else ""} for t in ranked]


def compared_trials(study) -> list:
    """The finished trials whose eval losses the importances compare: not the re-check's runs, nor
    a paused trial another continued (asha), whose values again would weigh them twice."""
    finished = search_trials(study.get_trials(deepcopy=False, states=FINISHED))
    promoted = continued(finished)
    return [t for t in finished if t.number not in promoted]


def common_step_study(study):
    """(step, a study of every compared trial's eval loss at that step), or (None, None)."""
    from collections import Counter

    import optuna

    trials = [t for t in compared_trials(study) if t.intermediate_values]
    reached = Counter(step for t in trials for step in t.intermediate_values)
    steps = [step for step, n in reached.items() if n >= MIN_POINTS]
    if not steps:
        return None, None
    step = max(steps)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # an in-memory helper study: no "created" line
    points = optuna.create_study()
    optuna.logging.set_verbosity(verbosity)
    for t in trials:
        if step in t.intermediate_values:
            points.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                       value=t.intermediate_values[step],
                                                       user_attrs={"trial": t.number}))
    return step, points


def search_study(study):
    """An in-memory copy of the study without the re-check's runs, for the plots of the search
    (history, parallel coordinates, slices): a configuration's repeats on other seeds are not
    points of the search, and a lucky seed would show as the best so far. Each re-check run keeps
    its number as a failed placeholder, so the plots' trial numbers stay the leaderboard's."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    copy = optuna.create_study(direction=study.direction)
    optuna.logging.set_verbosity(verbosity)
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if is_recheck(t) or t.state not in FINISHED:
            copy.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
        else:
            copy.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=t.value if t.state == TrialState.COMPLETE else None,
                state=t.state, intermediate_values=t.intermediate_values, user_attrs=t.user_attrs))
    return copy
