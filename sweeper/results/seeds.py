"""The re-check's verdict (sweeper/recheck.py): each re-checked configuration's objective over its
seeds (its search trial's own, train.seed, and the re-check's), mean and spread, the winner by
mean, and a paired comparison with the baseline over the seeds both have (a one-sided paired
t-test, scipy's: seeds pair up because a seed fixes the same data order and LoRA initialisation)."""
import math
import statistics
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from sweeper.recheck import RECHECK_OF, SEED, baseline_of, configurations, is_recheck, search_trials

SIGNIFICANCE = 0.05  # "beyond the seed noise": a one-sided paired t-test below this p-value


@dataclass
class Configuration:
    trial: FrozenTrial                                  # the search trial whose values were re-checked
    runs: dict[int, FrozenTrial] = field(default_factory=dict)  # seed -> its complete trial
    baseline: bool = False

    def values(self) -> dict[int, float]:
        return {seed: t.value for seed, t in self.runs.items()}

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values().values())

    @property
    def sd(self) -> float:
        v = list(self.values().values())
        return statistics.stdev(v) if len(v) > 1 else float("nan")

    def best_run(self) -> FrozenTrial:
        return min(self.runs.values(), key=lambda t: (t.value, t.number))


@dataclass
class Verdict:
    configurations: list[Configuration]  # best mean first
    winner: Configuration
    baseline: Configuration | None
    difference: float | None = None      # baseline's mean less the winner's, over their common seeds
    common_seeds: int = 0
    p_value: float | None = None

    @property
    def beats_baseline(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE and self.difference > 0

    def sentence(self) -> str:
        if self.baseline is None:
            return f"winner by mean: trial {self.winner.trial.number} (no baseline was re-checked to compare with)"
        if self.winner is self.baseline:
            return (f"no configuration beats the baseline beyond the seed noise: the baseline (trial "
                    f"{self.baseline.trial.number}) has the best mean")
        paired = f"over {self.common_seeds} seeds, paired t-test p={self.p_value:.2g}" if self.p_value is not None \
            else f"over {self.common_seeds} seed(s): too few to test"
        if self.beats_baseline:
            return f"trial {self.winner.trial.number} beats the baseline by {self.difference:.4f} ({paired})"
        return (f"no configuration beats the baseline beyond the seed noise (the best mean, trial "
                f"{self.winner.trial.number}, is {self.difference:.4f} lower, {paired})")


def _paired(winner: Configuration, baseline: Configuration) -> tuple[float | None, int, float | None]:
    common = sorted(set(winner.runs) & set(baseline.runs))
    if not common:
        return None, 0, None
    w, b = [winner.values()[x] for x in common], [baseline.values()[x] for x in common]
    difference = statistics.fmean(b) - statistics.fmean(w)
    if len(common) < 2:
        return difference, len(common), None
    if all(x == y for x, y in zip(w, b)) or len({y - x for x, y in zip(w, b)}) == 1:
        # No spread in the differences: the t statistic is undefined (0/0) or infinite.
        return difference, len(common), (0.0 if difference > 0 else 1.0)
    from scipy.stats import ttest_rel

    p = float(ttest_rel(w, b, alternative="less").pvalue)
    return difference, len(common), (p if math.isfinite(p) else None)


def verdict(trials: list[FrozenTrial], s) -> Verdict | None:
    """None when the study holds no complete re-check run (off, or not run yet)."""
    if not any(is_recheck(t) and t.state == TrialState.COMPLETE for t in trials):
        return None
    baseline_trial = baseline_of(trials, s)
    chosen = {t.number: Configuration(t, {s.trial.train.seed: t}, baseline=t is baseline_trial)
              for t in configurations(trials, s)}
    for t in trials:
        if is_recheck(t) and t.state == TrialState.COMPLETE and t.user_attrs[RECHECK_OF] in chosen:
            chosen[t.user_attrs[RECHECK_OF]].runs[t.user_attrs[SEED]] = t
    # Those with every seed first: a configuration whose re-check failed keeps only the run it was
    # chosen by, lucky by selection.
    most = max(len(c.runs) for c in chosen.values())
    ranked = sorted(chosen.values(), key=lambda c: (len(c.runs) < most, c.mean, c.trial.number))
    baseline = next((c for c in ranked if c.baseline), None)
    out = Verdict(ranked, ranked[0], baseline)
    if baseline is not None and out.winner is not baseline:
        out.difference, out.common_seeds, out.p_value = _paired(out.winner, baseline)
    return out


def lines(v: Verdict, objective: str) -> list[str]:
    """The report's lines: one per configuration, then the verdict."""
    out = [f"re-check ({objective} over seeds, best mean first among those with every seed):"]
    for c in v.configurations:
        seeds = ", ".join(f"{seed}: {value:.4f}" for seed, value in sorted(c.values().items()))
        sd = "" if math.isnan(c.sd) else f" ± {c.sd:.4f}"
        tag = " (baseline)" if c.baseline else ""
        out.append(f"  trial {c.trial.number}{tag}: mean {c.mean:.4f}{sd} over {len(c.runs)} seeds ({seeds})")
    out.append(v.sentence())
    return out


def crowned(trials: list[FrozenTrial], s) -> tuple[FrozenTrial | None, Verdict | None]:
    """The trial whose adapter is the sweep's result, and the re-check's verdict: the winner by
    mean from its best seed; with no re-check, the best single search trial (None: none complete)."""
    checked = verdict(trials, s)
    if checked is not None:
        return checked.winner.best_run(), checked
    complete = [t for t in search_trials(trials) if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: (t.value, t.number), default=None), None
