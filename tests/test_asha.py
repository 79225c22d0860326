"""sweep.pruner=asha (sweeper/search/asha.py) on real Optuna studies: what the sampler's models see
of a continued configuration, and where a continuation starts from."""
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from sweeper.search.sampler import SearchView
from sweeper.settings import sweep_settings
from test_recheck import DISTRIBUTIONS, searched


@pytest.fixture
def s():
    return sweep_settings([], check_values=False)


def test_a_paused_trial_another_continued_is_seen_once(s):
    """Promotion with continuation (bench/search.py's replay): the sampler's models see the
    continuation, at its latest eval, not the paused trial it superseded."""
    study = searched(s, [2.0, 1.5])
    paused = study.trials[1]
    study.add_trial(create_trial(params={**paused.params, "lora_dropout": 0.2}, distributions=DISTRIBUTIONS,
                                 state=TrialState.PRUNED, intermediate_values={10: 2.5}))
    study.add_trial(create_trial(params={**paused.params, "lora_dropout": 0.2}, distributions=DISTRIBUTIONS,
                                 value=1.4, intermediate_values={10: 2.5, 30: 1.6, 40: 1.4},
                                 user_attrs={"continued_from": 2}))
    seen = SearchView(study, pruned_as_complete=True)._get_trials()
    assert [t.number for t in seen] == [0, 1, 3] and seen[-1].value == 1.4


@pytest.mark.parametrize("checkpoint", ["missing", "unreadable", "whole"])
def test_a_continuation_resumes_from_its_paused_trials_checkpoint_or_restarts_and_says_so(checkpoint, tmp_path):
    """sweep.pruner=asha with rungs 10, 30, 40: trial 0 paused at 10; its continuation resumes from
    its checkpoint-10 with its curve so far and pauses at 30, or, the checkpoint gone or damaged,
    trains from step 0 to 30 and the live view says why."""
    import io

    from sweeper.job import trial_dir
    from sweeper.loop import SweepLoop
    from sweeper.view import LiveView

    s = sweep_settings([f"sweep.dir={tmp_path}", "sweep.pruner=asha", "sweep.asha_eta=3"], check_values=False)
    study = optuna.create_study()
    study.add_trial(create_trial(params={"lora_r": 8}, distributions={"lora_r": DISTRIBUTIONS["lora_r"]},
                                 state=TrialState.PRUNED, intermediate_values={10: 2.0}, user_attrs={"paused_at": 10}))
    saved = trial_dir(s.dir, 0) / "checkpoint-10"
    if checkpoint != "missing":
        saved.mkdir(parents=True)
        (saved / "adapter_model.safetensors").write_bytes(b"weights")
        (saved / "trainer_state.json").write_text('{"global_step": 10}' if checkpoint == "whole" else '{"global_st')
    out = io.StringIO()
    loop = SweepLoop(s, study, study._storage, executor=None, view=LiveView(1, stream=out))
    chain = loop._promotable(ending=True)
    assert chain is not None and chain.latest.number == 0
    study.enqueue_trial(chain.latest.params, user_attrs={"continued_from": 0})
    trial = study.ask()
    resume_from, pause_at, continues = loop._leg(trial, study._storage.get_trial(trial._trial_id))
    assert (pause_at, continues) == (30, 0)
    if checkpoint == "whole":
        assert resume_from == saved and study.trials[1].intermediate_values == {10: 2.0} and out.getvalue() == ""
    else:
        assert resume_from is None and study.trials[1].intermediate_values == {}
        assert "the checkpoint of trial 0 (paused at step 10) is missing or unreadable: restarted from step 0" in out.getvalue()


def test_the_schedule_is_unfinished_while_a_continuation_is_due_or_running():
    """What the sweep loop and a SLURM follower wait for once every configuration has started:
    the quota's continuations (ceil(2 / 3) = 1 at rung 10 here), run to their end."""
    from sweeper.search.asha import unfinished

    s = sweep_settings(["sweep.pruner=asha", "sweep.asha_eta=3", "train.max_steps=40", "train.eval_steps=10"],
                       check_values=False)
    study = optuna.create_study()
    for loss in (2.0, 1.5):
        study.add_trial(create_trial(params={"lora_r": 8}, distributions={"lora_r": DISTRIBUTIONS["lora_r"]},
                                     state=TrialState.PRUNED, intermediate_values={10: loss}, user_attrs={"paused_at": 10}))
    assert unfinished(study.trials, s)  # trial 1 is due
    study.enqueue_trial({"lora_r": 8}, user_attrs={"continued_from": 1})
    assert unfinished(study.trials, s)  # queued
    trial = study.ask()
    assert unfinished(study.trials, s)  # running, maybe on another node
    trial.report(1.3, 30)
    trial.report(1.2, 40)
    study.tell(trial, 1.2)  # to the end (rung 30's quota of one is its own)
    assert not unfinished(study.trials, s)
    assert not unfinished(study.trials, sweep_settings([], check_values=False))  # not asha: nothing to continue
