"""bench/search.py on a user's own landscape files: bad files refused in one line naming the file and
the cell, a good one replayed to the landscape_regret line, and a finished grid study exported to
a file the replay reads. Real subprocesses, nothing trained."""
import json
from pathlib import Path
import subprocess
import sys

import optuna
import pytest

from conftest import ROOT
from sweeper.search.strategy import GridSampler  # Optuna's own stops the study outside optimize

SEARCH = ROOT / "bench" / "search.py"
RATES = [4e-05, 0.0001, 0.0003, 0.001, 0.003]
RANKS = [4, 16, 64]


def lora_like() -> dict:
    """A public-sweep-shaped landscape: loss U-shaped in the log rate, best at 3e-4 and the top
    rank, the highest rate diverged (missing)."""
    cells = []
    for i, lr in enumerate(RATES[:-1]):
        for j, r in enumerate(RANKS):
            cells.append({"params": {"learning_rate": lr, "lora_r": r},
                          "final": round(0.60 + 0.01 * (i - 2) ** 2 - 0.002 * j, 4),
                          "curve": {"10": 0.9, "20": round(0.7 + 0.01 * (i - 2) ** 2, 4)}})
    return {"parameters": {"learning_rate": {"values": RATES, "log": True}, "lora_r": {"values": RANKS}},
            "cells": cells, "noise_sd": 0.002, "missing": 3.0}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SEARCH), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_users_landscape_is_replayed_to_the_regret_line(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(lora_like()))
    proc = run("--landscape", str(path), "--seeds", "2", "--strategies", "default,random", "--", "train=gpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("landscape_regret_default=") and " landscape_regret_random=" in lines[-1]
    default, random = (float(x.split("=")[1]) for x in lines[-1].split())
    assert 0 <= default and 0 <= random
    text = proc.stdout
    assert "### sweep: 15 configurations (learning_rate, lora_r; 3 missing, answered by 3)" in text
    assert "| default |" in text and "| random |" in text
    # The sweep's rank choices (8, 16, 32) give way to the file's, keeping the prior's shape.
    assert "lora_r: the file's values [4, 16, 64] searched in place of the space's [8, 16, 32]" in text
    # noise_sd makes it a landscape with seeds: the re-check of the top configurations is replayed
    assert "The default's crowned configuration with the re-check" in text
    (line,) = [x for x in lines if x.startswith("recheck_near_best_at_12=")]
    assert 0 <= float(line.split("sweep:")[1]) <= 1


@pytest.mark.parametrize("change, says", [
    (lambda d: d["cells"].pop(0) and d.pop("missing"), 'have no result (the first: {"learning_rate": 4e-05, "lora_r": 4})'),
    (lambda d: d["cells"][2]["params"].update(lora_alpha=32), "cell 2 names parameter 'lora_alpha', which 'parameters' lacks"),
    (lambda d: d["cells"][5].update(final="0.61"), 'cell 5: final "0.61" is not a number'),
    (lambda d: d["cells"][1]["params"].update(lora_r=8), "cell 1: lora_r=8 is not one of its values [4, 16, 64]"),
    (lambda d: d.update(cells=[]), "the grid is empty"),
    (lambda d: d["cells"][3]["curve"].update(late="x"), 'cell 3: curve point {"late": "x"} is not a step'),
])
def test_a_bad_landscape_is_refused_in_one_line(tmp_path, change, says):
    record = lora_like()
    change(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    proc = run("--landscape", str(path), "--seeds", "1")
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(str(path)) and says in err[0], err


@pytest.mark.parametrize("option", [("--seeds", "0"), ("--seeds", "x"), ("--jobs", "0")])
def test_a_count_below_one_is_refused_in_one_line(tmp_path, option):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(lora_like()))
    proc = run("--landscape", str(path), *option)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"argument {option[0]}: {option[1]!r} is not a whole number of at least 1" in err[0], err


def test_strategies_are_named_whole_though_a_name_holds_a_comma():
    """--strategies splits at commas, and "start + gp, no pruning" is one name: it was split in two
    and refused."""
    sys.path.insert(0, str(ROOT))
    from bench.search import chosen_strategies

    assert chosen_strategies("default,random,start + gp, no pruning") == (
        ["default", "random", "start + gp, no pruning"], None)
    assert chosen_strategies("default, random , qmc (Optuna's scrambled Sobol)")[1] is None
    assert chosen_strategies("default,start + gp,random") == (["default"], "start + gp")
    proc = run("--strategies", "default,sobol")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "--strategies: 'sobol' is not one; known: default | random | qmc (Optuna's scrambled Sobol) | start + tpe | "
        "start + gp, no pruning | optuna tpe, random start (before) | asha with continuation (the default sampler)"]


def test_a_bad_sampler_is_refused_like_any_other_sweep_setting(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(lora_like()))
    proc = run("--landscape", str(path), "--seeds", "1", "--", "sweep.sampler=bayes")
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "sweep.sampler" in err[0] and "auto, tpe, gp, qmc, random, grid" in err[0], err


def test_an_export_that_cannot_be_made_is_refused_in_one_line(tmp_path):
    """No complete trial, two objectives, a database file that is not there (and is not created)."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="empty", storage=storage)
    pair = optuna.create_study(study_name="pair", storage=storage, directions=["minimize", "minimize"])
    trial = pair.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    pair.tell(trial, [1.0, 2.0])
    missing = tmp_path / "missing.db"
    for args, says in [(("empty", storage), "study 'empty' has no complete trial to export"),
                       (("pair", storage), "study 'pair' has 2 objectives"),
                       (("grid", f"sqlite:///{missing}"), f"--storage: no database file {missing}")]:
        proc = run("--export", args[0], "--storage", args[1])
        err = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(err) == 1 and says in err[0], err
    assert not missing.exists()


def test_a_finished_grid_study_exports_to_a_landscape(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    study = optuna.create_study(study_name="grid", storage=storage,
                                sampler=GridSampler({"learning_rate": RATES, "lora_r": RANKS}))
    truth = {(c["params"]["learning_rate"], c["params"]["lora_r"]): c for c in lora_like()["cells"]}
    for _ in range(len(RATES) * len(RANKS)):
        trial = study.ask()
        key = (trial.suggest_categorical("learning_rate", RATES), trial.suggest_categorical("lora_r", RANKS))
        if key not in truth:  # the diverged rate: the trial failed, as a real one would
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        for step, value in truth[key]["curve"].items():
            trial.report(value, int(step))
        study.tell(trial, truth[key]["final"])
    proc = run("--export", "grid", "--storage", storage)
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(proc.stdout)
    assert exported["parameters"]["lora_r"]["values"] == RANKS
    assert len(exported["cells"]) == 12 and exported["missing"] == max(c["final"] for c in truth.values())
    cell = next(c for c in exported["cells"] if c["params"] == {"learning_rate": 0.0003, "lora_r": 64})
    assert cell["final"] == truth[(0.0003, 64)]["final"] and cell["curve"] == truth[(0.0003, 64)]["curve"]
    path = tmp_path / "exported.json"
    path.write_text(proc.stdout)
    replayed = run("--landscape", str(path), "--seeds", "1", "--strategies", "default,random")
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert replayed.stdout.strip().splitlines()[-1].startswith("landscape_regret_default=")


def test_a_cell_measured_on_seeds_costs_its_runs_steps(tmp_path):
    """A cell with seed runs keeps its curves there: the grid's cost counts their steps (it counted 1
    per cell, and the table showed 4.3 grids' steps to reach the best of one)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from landscapes import load

    data = lora_like()
    for cell in data["cells"]:
        curve = cell.pop("curve")
        cell["runs"] = [{"final": cell["final"], "curve": curve}, {"final": cell["final"] + 0.01, "curve": curve}]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(data))
    land = load(path)
    assert set(land.steps.values()) == {20}
    assert land.grid_steps == 20 * len(RATES) * len(RANKS)  # the missing cells at the full length too


def test_the_recheck_crowns_by_the_mean_over_unused_seeds():
    """A lucky seed puts configuration a first; two more of its seeds (never the one its trial drew)
    and two of b's show b's mean is better, and b is crowned; the re-check's cost is 4 trials'."""
    sys.path.insert(0, str(ROOT / "bench"))
    import random

    import search
    from landscapes import parse

    curve = {"10": 1.5, "20": 1.0}
    land = parse(Path("seeds.json"), {"parameters": {"lora_r": {"values": [8, 16]}}, "cells": [
        {"params": {"lora_r": 8}, "runs": [{"final": 0.5, "curve": curve}, {"final": 1.25, "curve": curve},
                                           {"final": 1.25, "curve": curve}]},
        {"params": {"lora_r": 16}, "runs": [{"final": 0.8, "curve": curve}] * 3}]})
    trials = [{"key": (8,), "seen": 0.5, "truth": 1.0, "pruned": False, "steps": 20, "run": 0},
              {"key": (16,), "seen": 0.8, "truth": 0.8, "pruned": False, "steps": 20, "run": 1}]
    assert search.truth_crowned(land, trials, 2) == pytest.approx(1.0)  # the best single run: a's lucky seed
    assert search.recheck(land, trials, 2, random.Random(0)) == (pytest.approx(0.8), 4 * 20)


def test_each_landscape_replays_its_own_designs():
    """Replay number k of two landscapes over one space starts from two different designs (shared
    designs made the suite mean rest on --seeds draws), and the same landscape and k always from the
    same one, so a run is reproducible."""
    sys.path.insert(0, str(ROOT / "bench"))
    import search
    from landscapes import parse

    from sweeper.search.start import design

    record = lora_like()
    a, b = parse(Path("a.json"), record), parse(Path("b.json"), record)
    settings = {name: search.settings_for(search.DEFAULT, (), land, 6, 0) for name, land in (("a", a), ("b", b))}
    assert settings["a"].seed == search.settings_for(search.DEFAULT, (), a, 6, 0).seed
    assert settings["a"].seed != settings["b"].seed
    assert settings["a"].space == settings["b"].space
    first = {name: design(s.space, 3, s.seed) for name, s in settings.items()}
    assert first["a"] != first["b"]


def test_the_suite_mean_says_its_standard_error():
    """Per landscape the spread of its seeds' runs; the landscapes themselves are fixed, not sampled."""
    sys.path.insert(0, str(ROOT / "bench"))
    import search

    assert search.suite_se([0.0, 1.0, 2.0, 2.0], 2) == pytest.approx(0.25)  # sqrt(0.5 / 2 + 0 / 2) / 2
    assert search.suite_se([0.3], 1) == 0.0


def test_asha_continues_the_best_paused_configurations_and_pays_only_new_steps():
    """ASHA with continuation, replayed: rungs at the first eval step times 3**k, then the last; a
    configuration is continued when it ranks in the top third of its rung (rounded up once no new
    one may start), and its steps are its legs', never its earlier steps again."""
    sys.path.insert(0, str(ROOT / "bench"))
    import search

    from sweeper.search.asha import promotion, rungs_of

    assert rungs_of([10, 20, 30, 40], 10, 3) == [10, 30, 40]
    assert rungs_of(list(range(4, 53, 4)), 4, 3) == [4, 12, 36, 52]
    assert rungs_of([20], 20, 3) == [20] and rungs_of([10, 20, 30, 40], 20, 2) == [20, 40]
    paused = [search.Config(rung=0, at=[v], paused=True) for v in (0.9, 0.5, 0.7, 0.8)]
    assert promotion(paused, 3, 3, ending=False) is paused[1]  # 4 // 3 = 1: the best
    paused[1].update(rung=1, at=[0.5, 0.4])
    assert promotion(paused, 3, 3, ending=False) is None  # 1 // 3 at rung 1; rung 0's best is gone
    assert promotion(paused, 3, 3, ending=True) is paused[1]  # ending: the best goes on to the end
    paused[1]["paused"] = False  # running on: not to be continued twice
    assert promotion(paused, 3, 3, ending=True) is paused[2]  # ending: rung 0's quota is ceil(4 / 3) = 2

    path = ROOT / "bench" / "landscapes" / "demo-prices.json"
    out = search.replay_asha((str(path), search.ASHA, ("sweep.asha_eta=3",), 6, 0))["trials"]
    land = search.landscape(str(path))
    assert len(out) == 6 and any(not t["pruned"] for t in out)
    for t in out:  # 10 steps to rung 0, 20 more to rung 1, 10 more to the end: never a step twice
        assert t["steps"] == {0: 10, 1: 30, 2: 40}[t["rung"]] and t["pruned"] == (t["rung"] < 2)
    finished = [t for t in out if not t["pruned"]]
    assert max(t["done_at"] for t in finished) <= sum(t["steps"] for t in out)
    assert search.regret_after(land, out, 6) == land.regret(min(finished, key=lambda t: t["seen"])["truth"])
    # the run's eventual best cut: every trial of its best configuration stopped before the end
    assert search.best_cut([{"truth": 1.0, "pruned": True}, {"truth": 1.2, "pruned": False}])
    assert not search.best_cut([{"truth": 1.0, "pruned": True}, {"truth": 1.0, "pruned": False}])
    # the replay's rungs follow the sweep's own asha settings (the default eta 2, or `-- sweep.asha_eta=3`)
    assert search.rungs_for(land, search.base_settings(search.ASHA, ())) == [10, 20, 40]
    assert search.rungs_for(land, search.base_settings(search.ASHA, ("sweep.asha_eta=3",))) == [10, 30, 40]
    assert search.rungs_for(land, search.base_settings(search.ASHA, ("sweep.asha_min_step=20",))) == [20, 40]


def test_parallel_asks_k_trials_before_any_is_told(monkeypatch):
    """--parallel K: the model proposes each of K trials while the others run, as a sweep's K slots
    ask them; so in each group of K every trial starts before any of the group finishes."""
    sys.path.insert(0, str(ROOT / "bench"))
    import search
    from landscapes import parse

    studies = []
    create = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda **kw: studies.append(create(**kw)) or studies[-1])
    monkeypatch.setattr(search, "landscape", lambda path: parse(Path(path), lora_like()))
    search.one_thread(3)
    try:
        out = search.replay(("lora.json", search.DEFAULT, (), 7, 0))
    finally:
        search.one_thread(1)
    trials = studies[-1].trials
    assert len(out["trials"]) == len(trials) == 7
    for group in (trials[0:3], trials[3:6], trials[6:7]):
        assert max(t.datetime_start for t in group) <= min(t.datetime_complete for t in group)
    assert trials[2].datetime_complete <= trials[3].datetime_start  # the next group after this one's results
