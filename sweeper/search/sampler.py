"""The sweep's sampler: the first trials from the start design (sweeper/search/start.py), then a
model of the finished ones (TPE or a Gaussian process). Each trial draws from its own number, so
sweep processes sharing one study (SLURM tasks, several local sweeps) never propose the same
values, and a study is still reproducible from sweep.seed."""
import copy
import hashlib
import warnings

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sweeper.recheck import is_recheck
from sweeper.search.space import Param
from sweeper.search.start import design

MODELS = ("tpe", "gp", "random")


def trial_seed(seed: int, number: int) -> int:
    """A seed for one trial's draw: distinct per trial number, the same in every process."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{number}".encode()).digest()[:4], "little")


def start_index(study: optuna.Study, trial: FrozenTrial) -> int:
    """Which start point a trial takes: its number, less the enqueued trials before it (the baseline,
    retries of killed trials), which the sampler never chose. Distinct for every sampled trial,
    whichever process asked for it."""
    before = study._storage.get_all_trials(study._study_id, deepcopy=False)
    return trial.number - sum(t.number < trial.number and "fixed_params" in t.system_attrs for t in before)


def model_sampler(model: str, seed: int) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if model == "tpe":
            # Multivariate, with the constant liar: trials running side by side count as
            # already-bad guesses, so K slots do not all go to the same corner.
            return optuna.samplers.TPESampler(n_startup_trials=0, seed=seed, multivariate=True, constant_liar=True)
        if model == "gp":
            import torch

            # One thread for the fit in the sweep process: the trials' processes keep the cores.
            torch.set_num_threads(1)
            return optuna.samplers.GPSampler(n_startup_trials=0, seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)


# A trial that continues a paused one from its checkpoint (promotion with continuation, replayed
# by bench/search.py) names it here; the paused one is then superseded.
CONTINUED_FROM = "continued_from"


class SearchView:
    """The study as the model sees it. The re-check's runs (sweeper/recheck.py) are left out: they
    repeat values the model has already seen, on other seeds, and would count them twice; so is a
    paused trial another one continued, which reports the same configuration further on. With
    pruned_as_complete (the Gaussian process) a pruned trial counts as finished at the last eval
    loss it reported: Optuna's GPSampler fits complete trials only, so without this it would never
    learn that the pruner found a region bad, and would propose it again (TPE counts pruned trials
    itself)."""

    def __init__(self, study: optuna.Study, pruned_as_complete: bool):
        self._study, self._pruned_as_complete = study, pruned_as_complete

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        out = []
        trials = self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
        continued = {t.user_attrs[CONTINUED_FROM] for t in trials if CONTINUED_FROM in t.user_attrs}
        for t in trials:
            if is_recheck(t) or t.number in continued:
                continue
            if self._pruned_as_complete and t.state == TrialState.PRUNED and t.intermediate_values:
                t = copy.copy(t)
                t.state, t.values = TrialState.COMPLETE, [t.intermediate_values[max(t.intermediate_values)]]
            if states is None or t.state in states:
                out.append(t)
        return out

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)


class StartThenModel(BaseSampler):
    """n_start trials from the start design, the rest from `model` (tpe, gp or random)."""

    def __init__(self, space: list[Param], n_start: int, model: str, seed: int):
        self._design = design(space, n_start, seed)
        self._model, self._seed = model, seed
        self._by_trial: dict[int, dict | BaseSampler] = {}  # trial number → its start point or model

    def _of(self, trial: FrozenTrial) -> dict | BaseSampler:
        return self._by_trial.get(trial.number) or model_sampler("random", trial_seed(self._seed, trial.number))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "fixed_params" in trial.system_attrs:  # enqueued: its values are given, nothing to choose
            return
        index = start_index(study, trial)
        if index < len(self._design):
            self._by_trial[trial.number] = self._design[index]
        else:
            sampler = model_sampler(self._model, trial_seed(self._seed, trial.number))
            sampler.before_trial(study, trial)
            self._by_trial[trial.number] = sampler

    def _seen(self, study):
        return SearchView(study, pruned_as_complete=self._model == "gp")

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        chosen = self._of(trial)
        return {} if isinstance(chosen, dict) else chosen.infer_relative_search_space(self._seen(study), trial)

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict) -> dict:
        chosen = self._of(trial)
        if isinstance(chosen, dict):
            return {}
        params = chosen.sample_relative(self._seen(study), trial, search_space)
        if params and self._taken(study, trial, params):
            # Another sweep process asked at the same moment and its model, fitted on the same
            # trials, proposed the same point: this trial draws its own instead (its number's seed).
            random = model_sampler("random", trial_seed(self._seed, trial.number))
            params = {name: random.sample_independent(study, trial, name, d) for name, d in search_space.items()}
        return params

    @staticmethod
    def _taken(study, trial: FrozenTrial, params: dict) -> bool:
        for other in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if other.number != trial.number and all(other.params.get(k) == v for k, v in params.items()):
                return True
        return False

    def sample_independent(self, study, trial: FrozenTrial, name: str, distribution: BaseDistribution):
        chosen = self._of(trial)
        if isinstance(chosen, dict):
            value = chosen.get(name)
            try:
                if value is not None and distribution._contains(distribution.to_internal_repr(value)):
                    return value
            except ValueError:  # a choice the distribution lacks
                pass
            chosen = model_sampler("random", trial_seed(self._seed, trial.number))  # a name the design lacks
        return chosen.sample_independent(self._seen(study), trial, name, distribution)

    def after_trial(self, study, trial: FrozenTrial, state, values) -> None:
        chosen = self._by_trial.pop(trial.number, None)
        if chosen is not None and not isinstance(chosen, dict):
            chosen.after_trial(study, trial, state, values)


def unwritten(study: optuna.Study) -> set[int]:
    """Trials running without values yet: asked, still sampling. Taken before a trial samples, so
    drawn_twice knows which trials could have proposed its point without seeing it."""
    running = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    return {t.number for t in running if not t.params}


def drawn_twice(study: optuna.Study, trial, unwritten_before: set[int]) -> int | None:
    """The number of another trial that drew this sampled trial's values while this one was
    sampling, or None. Two sweep processes that ask at the same moment fit their models on the same
    finished trials, and a Gaussian process's optimum does not depend on the seed: both may propose
    one point before either has written it (the check in sample_relative sees only values already
    written). Called once the trial's values are written, with the trials that had none when it
    began (unwritten): of two such trials, the one that checks last sees the other, so no point is
    trained twice (at worst both draw again). A point proposed again after it was written (a small
    discrete space used up) is not a race, and runs as before."""
    storage = study._storage
    if "fixed_params" in storage.get_trial_system_attrs(trial._trial_id):
        return None  # enqueued: its values were given
    mine = storage.get_trial_params(trial._trial_id)
    for other in storage.get_all_trials(study._study_id, deepcopy=False,
                                        states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)):
        if other.number != trial.number and other.number in unwritten_before and other.params == mine:
            return other.number
    return None
