"""The re-check before crowning, on real Optuna studies: which runs it queues (once), that the
search's counts and the sampler's models leave them out, and the verdict: the winner by mean,
the paired comparison with the baseline, a configuration missing a seed ranked after."""
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeper.recheck import enqueue_missing, pending, planned
from sweeper.results.seeds import crowned, lines, verdict
from sweeper.search.sampler import SearchView
from sweeper.settings import sweep_settings
from sweeper.study import counts

DISTRIBUTIONS = {"lora_r": CategoricalDistribution([8, 16, 32]), "lora_dropout": FloatDistribution(0.05, 0.2),
                 "quant_bits": CategoricalDistribution([4, 8]), "learning_rate": FloatDistribution(2e-4, 2e-2, log=True)}


@pytest.fixture
def s():
    return sweep_settings(["sweep.recheck_top=2", "sweep.recheck_seeds=2"], check_values=False)


def searched(s, values: list[float]) -> optuna.Study:
    """The baseline (the enqueued recipe, trial 0) and one trial per further value; None: pruned."""
    study = optuna.create_study()
    baseline = s.enqueue[0]
    study.add_trial(create_trial(params={k: baseline[k] for k in DISTRIBUTIONS}, distributions=DISTRIBUTIONS,
                                 value=values[0], system_attrs={"fixed_params": baseline}))
    for i, v in enumerate(values[1:]):
        params = {"lora_r": 8, "lora_dropout": 0.05 + 0.01 * i, "quant_bits": 4, "learning_rate": 1e-3}
        if v is None:
            study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, state=TrialState.PRUNED,
                                         intermediate_values={10: 3.0}))
        else:
            study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, value=v))
    return study


def rechecked(study, number: int, seed: int, value: float | None) -> None:
    t = study.trials[number]
    state = TrialState.COMPLETE if value is not None else TrialState.FAIL
    study.add_trial(create_trial(params=t.params, distributions=t.distributions, value=value, state=state,
                                 user_attrs={"recheck_of": number, "seed": seed}))


def three_rechecked(s, values_by_seed) -> optuna.Study:
    """The baseline (2.0), trials 1 (1.5) and 2 (1.8), each re-checked on seeds 43 and 44 with the
    (baseline, trial 1, trial 2) values given per seed."""
    study = searched(s, [2.0, 1.5, 1.8])
    for seed, values in zip((43, 44), values_by_seed):
        for number, value in enumerate(values):
            rechecked(study, number, seed, value)
    return study


def test_the_top_and_the_baseline_are_queued_once_and_counted_apart(s):
    study = searched(s, [2.0, 1.5, None, 1.8, 1.9])
    assert planned(study.trials, s) == [(1, 43), (1, 44), (3, 43), (3, 44), (0, 43), (0, 44)]
    assert enqueue_missing(study, s) == planned(study.trials, s)
    assert enqueue_missing(study, s) == []  # a rerun queues nothing twice
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs["recheck_of"], t.user_attrs["seed"]) for t in waiting] == planned(study.trials, s)
    assert waiting[0].system_attrs["fixed_params"] == study.trials[1].params
    assert counts(study)["finished"] == 5 and counts(study, recheck=True)["finished"] == 0
    assert pending(study.trials, s) == 6
    view = SearchView(study, pruned_as_complete=True)  # what the sampler's model fits
    assert [t.number for t in view._get_trials()] == [0, 1, 2, 3, 4]


def test_the_baseline_among_the_top_is_rechecked_once(s):
    study = searched(s, [1.0, 1.5, 1.8])
    assert planned(study.trials, s) == [(0, 43), (0, 44), (1, 43), (1, 44)]
    off = sweep_settings(["sweep.recheck_seeds=0"], check_values=False)
    assert planned(study.trials, off) == [] and verdict(study.trials, off) is None


def test_a_consistent_gain_beats_the_baseline(s):
    study = three_rechecked(s, ((2.1, 1.65, 1.9), (1.95, 1.45, 1.85)))
    assert pending(study.trials, s) == 0
    v = verdict(study.trials, s)
    assert [c.trial.number for c in v.configurations] == [1, 2, 0]
    assert v.winner.mean == pytest.approx((1.5 + 1.65 + 1.45) / 3) and v.beats_baseline and v.p_value < 0.01
    assert v.difference == pytest.approx((2.0 + 2.1 + 1.95) / 3 - (1.5 + 1.65 + 1.45) / 3)
    best, _ = crowned(study.trials, s)
    assert best.number == study.trials[-2].number  # trial 1's values at seed 44: its best seed
    text = lines(v, "eval_loss")
    assert text[1] == "  trial 1: mean 1.5333 ± 0.1041 over 3 seeds (42: 1.5000, 43: 1.6500, 44: 1.4500)"
    assert text[3] == "  trial 0 (baseline): mean 2.0167 ± 0.0764 over 3 seeds (42: 2.0000, 43: 2.1000, 44: 1.9500)"
    assert text[-1].startswith("trial 1 beats the baseline by 0.4833 (over 3 seeds, paired t-test p=")


def test_a_gain_within_the_seed_noise_is_said_to_be_noise(s):
    """The search's best single run (1.5) was lucky: its other seeds are the baseline's, give or take."""
    study = three_rechecked(s, ((1.7, 2.1, 2.3), (2.2, 1.9, 2.4)))
    v = verdict(study.trials, s)
    assert v.winner.trial.number == 1 and not v.beats_baseline
    assert v.sentence().startswith("no configuration beats the baseline beyond the seed noise (the best mean, trial 1")


def test_a_configuration_missing_a_seed_is_ranked_after_those_with_every_seed(s):
    study = searched(s, [2.0, 1.0, 1.8])
    rechecked(study, 1, 43, None)  # its re-check failed: only its lucky search run is left
    rechecked(study, 1, 44, 1.2)
    for seed in (43, 44):
        rechecked(study, 0, seed, 2.0)
        rechecked(study, 2, seed, 1.7)
    assert pending(study.trials, s) == 0  # a failed run with no retry queued is over
    v = verdict(study.trials, s)
    assert [c.trial.number for c in v.configurations] == [2, 0, 1]
    assert v.winner.trial.number == 2 and len(v.configurations[-1].runs) == 2


@pytest.mark.parametrize("model", ["gp", "tpe"])
def test_the_models_ask_past_the_rechecks(s, model):
    """With the re-check's runs in the study (and one of them still queued), a later extension of
    the study samples new values from the search's trials alone."""
    from sweeper.search.space import suggest
    from sweeper.search.strategy import build_sampler

    settings = sweep_settings([f"sweep.sampler={model}", "sweep.n_trials=12", "sweep.startup_trials=1"],
                              check_values=False)
    study = searched(s, [2.0, 1.5, 1.8, 1.7, None])
    for seed in (43, 44):
        rechecked(study, 1, seed, 1.6)
    study.sampler = build_sampler(settings)
    trial = study.ask()
    values = suggest(trial, settings.space)
    assert "recheck_of" not in trial.user_attrs and values["lora_r"] in (8, 16, 32)



def test_the_pruner_judges_a_trial_against_the_search_not_the_recheck(s):
    """A study extended after its re-check: the re-check's runs of the top configurations (their
    low early losses, again) would lower the pruner's bar; it compares with the search's trials."""
    from sweeper.search.strategy import build_pruner

    def study_with(pruner) -> optuna.Study:
        study = optuna.create_study(pruner=pruner)
        for i, loss in enumerate([1.0, 1.1, 1.2, 1.3, 1.4, 1.5]):
            params = {"lora_r": 8, "lora_dropout": 0.05 + 0.01 * i, "quant_bits": 4, "learning_rate": 1e-3}
            study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, value=loss,
                                         intermediate_values={10: loss}))
        for seed in (43, 44):
            for number in (0, 1, 2):
                study.add_trial(create_trial(params=study.trials[number].params, distributions=DISTRIBUTIONS,
                                             value=1.0, intermediate_values={10: 1.0},
                                             user_attrs={"recheck_of": number, "seed": seed}))
        trial = study.ask()
        trial.report(1.3, 10)  # below the search's 75th percentile at step 10, above it with the re-check's
        return bool(trial.should_prune())

    counted_twice = optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=0)
    assert study_with(counted_twice) is True
    assert study_with(build_pruner(s)) is False
