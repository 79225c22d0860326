"""The report folder: leaderboard as CSV and Markdown, Optuna's own plots with one point or line per
finished trial (pruned ones included), and one self-contained index.html."""
import base64
import csv
import html

import optuna
import pytest
from optuna.trial import TrialState

from landscape import rank_driven_study
from sweeper.results.files import left_out, plots, write_report
from sweeper.settings import sweep_settings


@pytest.fixture
def study():
    """Like the demo: 3 trials complete, 5 pruned at step 10, 1 failed."""
    study = rank_driven_study(8, seed=1, dropout_effect=1.0, user_attrs=True)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "out of memory: x"}))
    return study


def titles(figure) -> list[str]:
    """Every title drawn on the figure: the figure's own and each axes' left, centre and right."""
    drawn = [figure._suptitle.get_text()] if figure._suptitle is not None else []
    drawn += [ax.get_title(loc=where) for ax in figure.axes for where in ("left", "center", "right")]
    return [t for t in drawn if t]


def test_each_plot_says_what_it_plots_once(study):
    """The history, parallel coordinates and slices plot the objective of the completed trials,
    so their best is the leaderboard's; the curves every trial; the importances say their step."""
    figures = {name: figure for name, (figure, _) in plots(study).items()}
    assert set(figures) == {"curves", "history", "importances", "parallel", "slices"}
    for name, figure in figures.items():
        (title,) = [t for t in titles(figure) if t not in ("lora_r", "lora_dropout")][:1] or [None]
        assert title and len([t for t in titles(figure) if t == title]) == 1, (name, titles(figure))
        assert not any(t.endswith(" Plot") for t in titles(figure)), (name, titles(figure))  # Optuna's own, gone
    curves = figures["curves"].axes[0]
    assert len(curves.get_lines()) == 8
    assert sorted(len(line.get_xdata()) for line in curves.get_lines()) == [1] * 5 + [3] * 3  # pruned: cut short
    assert curves.get_xlabel() == "training step" and curves.get_ylabel() == "eval loss"
    history = figures["history"].axes[0]
    points = history.collections[0].get_offsets()
    assert len(points) == 3 and history.get_ylabel() == "eval_loss"
    assert min(points[:, 1]) == study.best_value  # the leaderboard's best
    assert titles(figures["history"]) == ["History: eval_loss of the search's 3 completed trials"]
    slices = [ax for ax in figures["slices"].axes if ax.get_xlabel() in ("lora_r", "lora_dropout")]  # not the colorbar
    assert len(slices) == 2 and all(len(ax.collections[0].get_offsets()) == 3 for ax in slices)
    parallel = figures["parallel"].axes[0]
    assert sum(len(c.get_segments()) for c in parallel.collections if hasattr(c, "get_segments")) == 3
    importances = figures["importances"].axes[0]
    assert [t.get_text() for t in importances.get_yticklabels()][-1] == "lora_r"  # the top bar: what drives it
    assert titles(figures["importances"]) == ["What mattered: fANOVA on the eval loss at step 10, 8 finished trials"]


def test_a_parameter_with_one_value_plots_without_matplotlibs_warnings():
    """Every completed trial 4-bit: matplotlib warned of identical axis limits in the sweep's output."""
    import warnings

    study = optuna.create_study()
    for i, r in enumerate((8, 16, 32)):
        study.add_trial(optuna.trial.create_trial(
            params={"lora_r": r, "quant_bits": 4}, value=1.0 + i / 10, intermediate_values={10: 1.5, 20: 1.0 + i / 10},
            distributions={"lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32]),
                           "quant_bits": optuna.distributions.CategoricalDistribution([4, 8])}))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        figures = plots(study)
    assert {"parallel", "slices"} <= set(figures)
    assert [str(w.message) for w in seen if issubclass(w.category, UserWarning)] == []


def test_report_folder(study, tmp_path):
    s = sweep_settings([f"sweep.dir={tmp_path}"], check_values=False)
    index = write_report(study, s, "study text")
    folder = tmp_path / "report"
    assert index == folder / "index.html"
    assert sorted(p.name for p in folder.glob("*.png")) == ["curves.png", "history.png", "importances.png",
                                                            "parallel.png", "slices.png"]
    page = index.read_text()
    images = page.split("src='data:image/png;base64,")[1:]
    assert len(images) == 5 and all(base64.b64decode(i.split("'")[0])[:4] == b"\x89PNG" for i in images)
    with (folder / "leaderboard.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["state"] for r in table] == ["complete"] * 3 + ["pruned"] * 5 + ["fail"]
    assert table[-1]["fail_reason"] == "out of memory: x" and table[0]["lora_alpha"]
    assert (folder / "leaderboard.md").read_text().count("\n") == 2 + 9


def test_a_small_study_says_which_plots_it_left_out_and_why(tmp_path):
    """3 finished trials, 1 of them completed: only the curves can be drawn, and the report says why
    the rest are missing."""
    small = rank_driven_study(3, seed=1, dropout_effect=1.0, user_attrs=True, complete=1)
    assert set(plots(small)) == {"curves"}
    assert left_out(small) == [
        "history, parallel, slices: left out: they plot the objective of the search's completed trials, which needs "
        "at least 2; "
        "this study has 1 completed trial",
        "importances: left out: fANOVA compares trials at one eval step, which needs at least 5 finished trials "
        "that reached it; this study has 3 finished trials, re-check runs aside"]
    s = sweep_settings([f"sweep.dir={tmp_path}"], check_values=False)
    page = write_report(small, s, "study text").read_text()
    assert all(html.escape(line) in page for line in left_out(small))
    assert [p.name for p in (tmp_path / "report").glob("*.png")] == ["curves.png"]


def test_the_search_plots_leave_the_rechecks_runs_out(study):
    """The re-check's runs (the top configurations again, on more seeds) are not points of the
    search: a lucky seed would show as the best so far. The trials keep the leaderboard's numbers."""
    best = study.best_trial
    for seed in (43, 44):
        study.add_trial(optuna.trial.create_trial(params=best.params, distributions=best.distributions,
                                                  value=best.value - 0.5, intermediate_values={10: 0.1},
                                                  user_attrs={"recheck_of": best.number, "seed": seed}))
    figures = {name: figure for name, (figure, _) in plots(study).items()}
    history = figures["history"].axes[0]
    points = history.collections[0].get_offsets()
    assert len(points) == 3 and min(points[:, 1]) == best.value
    assert best.number in points[:, 0]  # the x axis: the study's own trial numbers
    assert len(figures["curves"].axes[0].get_lines()) == 10  # every run's curve, the re-check's too


def test_a_study_with_enough_trials_leaves_nothing_out(study):
    assert left_out(study) == []


def test_a_trial_that_trained_no_token_has_no_rate():
    """Resumed at its last step, a trial evaluates and trains nothing: its rate read 0 tok/s."""
    from sweeper.results.report import leaderboard

    study = rank_driven_study(2, seed=0, dropout_effect=0.0, user_attrs=True, complete=2)
    trials = study.get_trials(deepcopy=True)
    trials[0].user_attrs.update(train_tokens=0, tokens_per_s=0.0)
    trials[1].user_attrs.update(train_tokens=20_000, tokens_per_s=1234.0)
    rows = {line.split()[0]: line for line in leaderboard(trials, sweep_settings([], check_values=False)).splitlines()}
    header = rows["trial"]
    column = slice(header.index("tok/s") - 2, header.index("tok/s") + 5)
    assert (rows["0"][column].strip(), rows["1"][column].strip()) == ("-", "1234")
