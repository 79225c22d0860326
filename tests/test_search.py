"""The search strategy (sweeper/search): priors as data, the start design they spread, the sampler
that follows it, and distinct draws for sweep processes that share a study."""
import math
import queue
import random
import statistics
import uuid

import optuna
import pytest

from sweeper.search.sampler import drawn_twice, unwritten
from sweeper.search.space import parse_space, suggest
from sweeper.search.start import design
from sweeper.search.strategy import build_pruner, build_sampler, describe, pruner_startup, start_trials
from sweeper.settings import sweep_settings
from trainers.settings import ConfigError


def first_trials(s, n: int, storage=None) -> list[dict]:
    """Ask the sweep's own sampler for n trials, the enqueued baseline first, as the loop does."""
    study = optuna.create_study(sampler=build_sampler(s), storage=storage)
    for params in s.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    values = []
    for i in range(n):
        trial = study.ask()
        values.append(suggest(trial, s.space))
        study.tell(trial, 1.0 + 0.1 * i)
    return values


@pytest.mark.parametrize("seed", range(5))
def test_first_six_trials_hold_the_baseline_both_bit_widths_and_every_rank(seed):
    s = sweep_settings([f"sweep.seed={seed}", "sweep.n_trials=6"], check_values=False)
    trials = first_trials(s, 6)
    assert trials[0] == {**s.enqueue[0], "lora_alpha": 64}  # the QLoRA recipe, at the preset's rate
    assert {t["lora_r"] for t in trials} == {8, 16, 32}
    assert {t["quant_bits"] for t in trials} == {4, 8}
    rates = sorted(t["learning_rate"] for t in trials[1:])  # the start spreads the rate over its range
    assert rates[0] < 2e-3 < rates[-1]


def test_the_start_follows_the_priors():
    s = sweep_settings(["sweep.n_trials=30"], check_values=False)
    points = design(s.space, 30, seed=0)
    ranks = [p["lora_r"] for p in points]
    assert (ranks.count(8), ranks.count(16), ranks.count(32)) == (5, 10, 15)  # weights 1 : 2 : 3
    rates = sorted(p["learning_rate"] for p in points)
    lr = {p.name: p for p in s.space}["learning_rate"]
    assert lr.low <= rates[0] and rates[-1] <= lr.high
    # A normal of half a decade around twice the preset's rate (4e-3), truncated to the range:
    # its median is near the centre, where a uniform start's would be the range's middle (2e-3).
    assert 3e-3 < statistics.median(rates) < 5.5e-3
    assert design(s.space, 30, seed=0) == points and design(s.space, 30, seed=1) != points


@pytest.mark.parametrize("seed", range(3))
def test_the_first_start_point_is_the_priors_mode_and_the_rest_keep_their_strata(seed):
    s = sweep_settings(["sweep.n_trials=6"], check_values=False)
    points = design(s.space, 5, seed=seed)
    # rank: the heaviest weight; dropout and rate: the centres; bits (equal weights): no mode, drawn
    assert {k: points[0][k] for k in ("lora_r", "lora_dropout", "learning_rate")} == \
        {"lora_r": 32, "lora_dropout": 0.1, "learning_rate": pytest.approx(4e-3)}
    ranks = [p["lora_r"] for p in points]
    assert sorted(ranks) == [8, 16, 16, 32, 32]  # shares 1 : 2 : 3 of five, as without the mode
    flat = ["~search.lora_r.prior", "~search.lora_dropout.prior", "~search.learning_rate.prior"]
    s = sweep_settings(flat, check_values=False)
    lr = {p.name: p for p in s.space}["learning_rate"]
    strata = sorted(int(5 * math.log(p["learning_rate"] / lr.low) / math.log(lr.high / lr.low)) for p in design(s.space, 5, seed))
    assert strata == [0, 1, 2, 3, 4]  # no prior, no mode: one point in each fifth of the (log) range


def _ask_and_tell(storage: str, name: str, sampler: str, n: int, out) -> None:
    """One sweep process's share of a study: its own sampler, built from the same settings."""
    import warnings

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = sweep_settings([f"sweep.sampler={sampler}", "sweep.n_trials=12"], check_values=False)
    study = optuna.load_study(study_name=name, storage=storage, sampler=build_sampler(s))
    done = 0
    while done < n:  # as the sweep loop does (sweeper/loop.py): a point drawn twice is drawn again
        trial = study.ask()
        sampling = unwritten(study)
        values = suggest(trial, s.space)
        if drawn_twice(study, trial, sampling) is not None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            out.put((trial.number, None, False))
            continue
        fixed = "fixed_params" in study._storage.get_trial_system_attrs(trial._trial_id)
        out.put((trial.number, tuple(sorted(values.items())), fixed))
        study.tell(trial, 1.0 + random.random())
        done += 1


@pytest.mark.parametrize("sampler", ["auto", "random", "tpe"])
def test_two_sweep_processes_on_one_postgres_study_never_draw_the_same_values(sampler):
    """Two processes, each with its own sampler built with the same sweep.seed (two SLURM tasks, or
    two local sweeps on one database), ask side by side: trial numbers, not process-local
    counters, pick the values, so no sampled configuration is trained twice."""
    import multiprocessing

    from test_sweep import POSTGRES

    name = f"shared-{sampler}-{uuid.uuid4().hex[:8]}"
    s = sweep_settings([f"sweep.sampler={sampler}"], check_values=False)
    study = optuna.create_study(study_name=name, storage=POSTGRES, sampler=build_sampler(s))
    for params in s.enqueue:
        study.enqueue_trial(params)  # the baseline, as open_study enqueues it
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    workers = [spawn.Process(target=_ask_and_tell, args=(POSTGRES, name, sampler, 6, out)) for _ in range(2)]
    for w in workers:
        w.start()
    drawn, again = [], []
    while len(drawn) < 12:
        try:
            got = out.get(timeout=5)
            (drawn if got[1] is not None else again).append(got)
        except queue.Empty:
            assert all(w.is_alive() for w in workers), [w.exitcode for w in workers]
    for w in workers:
        w.join(timeout=60)
    sampled = [values for _, values, fixed in drawn if not fixed]
    assert len(sampled) == 11 and len(set(sampled)) == len(sampled)  # the baseline aside, all distinct
    assert sorted(number for number, _, _ in drawn + again) == list(range(12 + len(again)))
    optuna.delete_study(study_name=name, storage=POSTGRES)


def test_trials_side_by_side_do_not_go_to_one_corner():
    """After the start, K trials asked before any of them ends must differ (the constant liar)."""
    s = sweep_settings(["sweep.n_trials=12", "sweep.enqueue=[]", "sweep.startup_trials=4"], check_values=False)
    study = optuna.create_study(sampler=build_sampler(s))
    for i in range(4):
        trial = study.ask()
        suggest(trial, s.space)
        study.tell(trial, 1.0 + i)
    running = [study.ask() for _ in range(4)]
    values = [tuple(sorted(suggest(t, s.space).items())) for t in running]
    assert len(set(values)) == 4


def test_start_is_sized_to_the_budget_and_named_samplers_build():
    # Three, and one per informative prior (rank, dropout, learning rate), one trial left to the model.
    assert start_trials(sweep_settings(["sweep.n_trials=20"], check_values=False)) == 6
    assert start_trials(sweep_settings(["sweep.n_trials=6"], check_values=False)) == 5
    flat = ["~search.lora_r.prior", "~search.lora_dropout.prior", "~search.learning_rate.prior", "sweep.n_trials=20"]
    assert start_trials(sweep_settings(flat, check_values=False)) == 3
    assert start_trials(sweep_settings(["sweep.startup_trials=2"], check_values=False)) == 2
    # The pruner waits for Optuna's 5 finished trials where the start is shorter, unless the user set it.
    assert pruner_startup(sweep_settings(flat, check_values=False)) == 5
    assert pruner_startup(sweep_settings(["sweep.n_trials=20"], check_values=False)) == 6
    assert pruner_startup(sweep_settings(["sweep.startup_trials=2"], check_values=False)) == 2
    percentile = build_pruner(sweep_settings(flat, check_values=False)).inner
    assert isinstance(percentile, optuna.pruners.PercentilePruner) and percentile._n_startup_trials == 5
    for name in ("auto", "tpe", "gp", "qmc", "random"):
        s = sweep_settings([f"sweep.sampler={name}", "sweep.enqueue=[]"], check_values=False)
        trials = first_trials(s, 3)
        assert len(trials) == 3 and all(set(t) == {p.name for p in s.space} for t in trials)
    s = sweep_settings(["sweep.pruner=hyperband", "train.max_steps=40", "train.eval_steps=10"], check_values=False)
    hyperband = build_pruner(s)
    assert (hyperband._min_resource, hyperband._max_resource) == (10, 40)
    assert isinstance(build_pruner(sweep_settings(["sweep.pruner=none"], check_values=False)), optuna.pruners.NopPruner)


def test_the_search_line_says_when_the_pruner_can_never_act():
    """eval_steps >= max_steps: each trial evaluates once, at its end, where nothing is pruned."""
    never = describe(sweep_settings(["train.max_steps=20", "train.eval_steps=30"], check_values=False))
    assert never.endswith("the percentile pruner, which never acts here: train.eval_steps=30 >= train.max_steps=20, "
                          "so a trial evaluates only at its end"), never
    acts = describe(sweep_settings(["train.max_steps=20", "train.eval_steps=10"], check_values=False))
    assert acts.endswith("; the percentile pruner"), acts


@pytest.mark.parametrize("prior, key", [
    ({"weights": [1, 2, 3]}, "search.x.prior.source"),                         # every prior cites its source
    ({"weights": [1, 0, 3], "source": "s"}, "search.x.prior.weights"),          # a weight must be > 0
    ({"weights": "heavy", "source": "s"}, "search.x.prior.weights"),
    ({"center": 16, "source": "s"}, "search.x.prior.center"),                  # weights, not a centre, for choices
])
def test_a_bad_categorical_prior_names_its_key(prior, key):
    with pytest.raises(ConfigError) as err:
        parse_space({"x": {"type": "categorical", "choices": [8, 16, 32], "target": "lora.r", "prior": prior}})
    assert err.value.key == key and "\n" not in str(err.value)


@pytest.mark.parametrize("prior, key", [
    ({"center": "high", "spread": 0.5, "source": "s"}, "search.x.prior.center"),
    ({"center": 1e-3, "spread": 0, "source": "s"}, "search.x.prior.spread"),
    ({"center": 1e-3, "spread": 0.5}, "search.x.prior.source"),
    ({"center": 1e-3, "spread": 0.5, "source": "s", "shape": "beta"}, "search.x.prior.shape"),
])
def test_a_bad_range_prior_names_its_key(prior, key):
    with pytest.raises(ConfigError) as err:
        parse_space({"x": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "target": "train.learning_rate",
                           "prior": prior}})
    assert err.value.key == key


def test_a_prior_follows_a_range_or_choices_the_user_narrowed():
    """Overriding the choices or the range keeps the prior's shape instead of refusing the override."""
    s = sweep_settings(["search.lora_r.choices=[16,32,64,128]", "search.lora_dropout.low=0.15", "sweep.enqueue=[]"],
                       check_values=False)
    by = {p.name: p for p in s.space}
    assert by["lora_r"].prior.weights == pytest.approx((1, 5 / 3, 7 / 3, 3))  # 1 : 2 : 3 carried by position
    assert by["lora_dropout"].prior.center == 0.15  # the centre (0.1) leans on the nearer end
    with pytest.raises(ConfigError) as err:
        sweep_settings(["search=qlora_modules", "search.target_modules.choices=[attention,all-linear,q_proj]"],
                       check_values=False)  # choices with no order to carry two weights over
    assert err.value.key == "search.target_modules.prior.weights" and "~search.target_modules.prior" in str(err.value)


def test_a_trial_that_trained_all_its_steps_is_never_pruned(tmp_path):
    """The pruner is asked at every eval but the last: a trial in the worst quarter at its final
    eval trained every step, and is complete (a retry resumed near its end was reported pruned)."""
    from types import SimpleNamespace

    from sweeper.worker import Progress, trial_callback

    study = optuna.create_study(pruner=optuna.pruners.PercentilePruner(75.0, n_startup_trials=0, n_warmup_steps=0))
    for value in (1.0, 1.1, 1.2):
        study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={30: value, 40: value},
                                                  params={}, distributions={}))
    callback = trial_callback(study.ask(), Progress(tmp_path / "progress.json"))
    callback.on_evaluate(None, SimpleNamespace(global_step=40, max_steps=40), None, metrics={"eval_loss": 9.0})
    with pytest.raises(optuna.TrialPruned):  # before the end, the same loss is cut
        callback.on_evaluate(None, SimpleNamespace(global_step=30, max_steps=40), None, metrics={"eval_loss": 9.0})


def test_a_point_two_trials_drew_while_both_sampled_is_drawn_again_but_a_reused_one_runs(tmp_path):
    """drawn_twice, step by step on one study: two trials asked together, both given one value
    (a one-choice space, as a GP's seed-independent optimum would), see each other; a later trial
    that draws a point already written (a used-up discrete space) is not a race and runs."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'race.db'}")
    a, b = study.ask(), study.ask()
    before_a, before_b = unwritten(study), unwritten(study)
    a.suggest_categorical("x", [1])
    b.suggest_categorical("x", [1])
    assert drawn_twice(study, b, before_b) == a.number and drawn_twice(study, a, before_a) == b.number
    study.tell(a, 1.0)
    study.tell(b, state=optuna.trial.TrialState.FAIL)  # b drew again
    c = study.ask()
    before_c = unwritten(study)
    c.suggest_categorical("x", [1])
    assert drawn_twice(study, c, before_c) is None  # a's value was written before c sampled
