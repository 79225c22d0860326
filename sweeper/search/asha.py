"""Promotion with continuation (sweep.pruner=asha; Li et al., arXiv 1810.05934): a configuration
trains to the first rung and pauses, its checkpoint kept; a paused one is continued from that
checkpoint to the next rung when it ranks in the top 1/eta of the configurations that reached its
rung, else a new configuration starts. A continuation is a trial naming the one it continues
(CONTINUED_FROM); it does not count toward sweep.n_trials. bench/search.py replays the same rule."""
import math
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from sweeper.recheck import is_recheck
from sweeper.search.sampler import CONTINUED_FROM

PAUSED_AT = "paused_at"  # the step a trial paused at, its checkpoint kept for a continuation


def rungs_of(eval_steps: list[int], first: int, eta: int) -> list[int]:
    """The steps a configuration may pause at: `first` times eta**k (the next eval step at or after
    it), then the last step."""
    out, r = [], first
    while r < eval_steps[-1]:
        at = min(s for s in eval_steps if s >= r)
        if at < eval_steps[-1] and (not out or at > out[-1]):
            out.append(at)
        r *= eta
    return out + [eval_steps[-1]]


def rungs(s) -> list[int]:
    """The sweep's rungs, from train.max_steps, train.eval_steps and sweep.asha_min_step / asha_eta."""
    train = s.trial.train
    steps = list(range(train.eval_steps, train.max_steps + 1, train.eval_steps))
    if not steps or steps[-1] != train.max_steps:
        steps.append(train.max_steps)
    return rungs_of(steps, s.asha_min_step or train.eval_steps, s.asha_eta)


def check(s) -> None:
    """Refuse rungs that make no sense for the trial's steps, in one line, before the study opens."""
    from trainers.settings import ConfigError

    train = s.trial.train
    if not s.checkpoints:
        raise ConfigError("sweep.checkpoints", False, "sweep.pruner=asha continues paused trials from their "
                          "checkpoints; allowed: true")
    if train.max_steps <= 0:
        raise ConfigError("train.max_steps", train.max_steps, "sweep.pruner=asha places its rungs on the "
                          "steps; allowed: a whole number > 0 (not epochs)")
    first = s.asha_min_step or train.eval_steps
    if first % train.eval_steps:
        raise ConfigError("sweep.asha_min_step", first, f"a rung must be an eval step; allowed: a multiple of "
                          f"train.eval_steps={train.eval_steps}")
    if len(rungs(s)) < 2:
        raise ConfigError("sweep.asha_min_step", first, f"leaves fewer than two rungs below train.max_steps="
                          f"{train.max_steps}; allowed: below it, with train.eval_steps={train.eval_steps}")


def promotion(configs: list, n_rungs: int, eta: int, ending: bool):
    """The paused configuration to continue, highest rung first, or None. A configuration has
    `rung` (the index of the highest rung it reached, -1 for none), `at` (its loss at each rung it
    reached) and `paused` (whether it waits at its rung). Ending (no new configuration may start):
    the quota rounds up, so the best of each rung still reaches the end."""
    for k in reversed(range(n_rungs - 1)):
        reached = [c for c in configs if c.rung >= k]
        quota = (math.ceil if ending else math.floor)(len(reached) / eta)
        for c in sorted(reached, key=lambda c: c.at[k])[:quota]:
            if c.rung == k and c.paused:
                return c
    return None


@dataclass
class Chain:
    """One configuration as the study holds it: its trials, first to latest."""
    trials: list[FrozenTrial] = field(default_factory=list)
    rung: int = -1
    at: list[float] = field(default_factory=list)
    paused: bool = False

    @property
    def latest(self) -> FrozenTrial:
        return self.trials[-1]


def continued_from(t: FrozenTrial) -> int | None:
    return t.user_attrs.get(CONTINUED_FROM)


def unfinished(trials: list[FrozenTrial], s) -> bool:
    """Once every configuration has started: whether the schedule still has work, a continuation
    queued or running (maybe on another node) or a paused configuration the quota continues. The
    sweep loop and a follower (sweeper/follow.py) end only when it has none."""
    if s.pruner != "asha":
        return False
    if any(continued_from(t) is not None and t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return True
    ladder = rungs(s)
    return promotion(chains(trials, ladder), len(ladder), s.asha_eta, ending=True) is not None


def chains(trials: list[FrozenTrial], rungs: list[int]) -> list[Chain]:
    """The search's configurations, each with its rung and losses: a failed trial is left out (its
    retry carries its work on), a continuation joins the chain of the trial it continues."""
    live = [t for t in sorted(trials, key=lambda t: t.number) if not is_recheck(t) and t.state != TrialState.FAIL]
    by_number = {t.number: t for t in live}
    found: dict[int, Chain] = {}
    for t in live:
        root = t
        while continued_from(root) is not None and continued_from(root) in by_number:
            root = by_number[continued_from(root)]
        found.setdefault(root.number, Chain()).trials.append(t)
    for chain in found.values():
        values = {}
        for t in chain.trials:
            values.update(t.intermediate_values)
        chain.at = [values[r] for r in rungs if r in values]
        chain.at = chain.at[:next((i for i, r in enumerate(rungs) if r not in values), len(rungs))]
        chain.rung = len(chain.at) - 1
        last = chain.latest
        chain.paused = last.state == TrialState.PRUNED and last.user_attrs.get(PAUSED_AT) == rungs[chain.rung] \
            if chain.rung >= 0 else False
    return list(found.values())
