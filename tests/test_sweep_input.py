"""Bad sweep input is refused before any training: one line naming the key, the bad value and
what is allowed, exit code 2, the study untouched. Also: the fingerprint refusal."""
import uuid
from pathlib import Path

import optuna
import pytest

from sweeper.__main__ import main
from sweeper.settings import sweep_settings
from sweeper.study import build_storage, check_existing, open_study
from test_sweep import POSTGRES
from trainers.settings import ConfigError


@pytest.fixture
def sweep_args(short_trial, tmp_path):
    return short_trial + [f"sweep.dir={tmp_path / 'sweep'}", f"sweep.storage=sqlite:///{tmp_path / 'study.db'}",
                          "sweep.study_name=t", "sweep.trials_per_device=1", "sweep.recheck_seeds=0"]


def refused(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("override,key", [
    ("search.lora_dropout.low=0.3", "search.lora_dropout"),            # inverted range
    ("search.lora_dropout.high=0.05", "search.lora_dropout"),           # empty range
    ("search.lora_r.choices=[8,0,32]", "search.lora_r"),                # a bad rank
    ("search.quant_bits.choices=[4,16]", "search.quant_bits"),
    ("search.quant_bits.choices=[4,none]", "search.quant_bits"),
    ("sweep.sampler=annealing", "sweep.sampler"), ("sweep.pruner=sometimes", "sweep.pruner"),
    ("sweep.n_trials=0", "sweep.n_trials"), ("sweep.max_failures=0", "sweep.max_failures"),
    ("sweep.seed=abc", "sweep.seed"), ("sweep.seed=-1", "sweep.seed"),
    ("sweep.recheck_top=0", "sweep.recheck_top"), ("sweep.recheck_seeds=-1", "sweep.recheck_seeds"),
    ("sweep.recheck_seeds=two", "sweep.recheck_seeds"),
    ("sweep.enqueue=[{lora_r: 7}]", "sweep.enqueue[0].lora_r"),
    ("sweep.enqueue=[{lora_alpha: 8}]", "sweep.enqueue[0].lora_alpha"),             # tied: nothing to tie it to
    ("+search.batch={type: categorical, choices: [8, 16], target: train.per_device_train_batch_size}", "search.batch"),
    ("+search.x={type: categorical, choices: [1, 2], target: lora.rank}", "search.x"),   # no such key
    ("lora.dropout=1.5", "lora.dropout"),                                  # the trial job's own checks
    ("train.max_length=8", "train.max_length"),
    ("model.name_or_path=/nonexistent/model", "model.name_or_path"),
    ("train.optim=adamw_typo", "train.optim"), ("train.lr_scheduler_type=cosin", "train.lr_scheduler_type"),
    ("lora.target_modules=[q_proj,vproj]", "lora.target_modules"),
    ("+search.opt={type: categorical, choices: [adamw_torch, adamw_typo], target: train.optim}", "search.opt"),
    ("+search.sched={type: categorical, choices: [cosine, cosin], target: train.lr_scheduler_type}", "search.sched"),
    ("sweep.stall_timeout=0", "sweep.stall_timeout"), ("sweep.trial_timeout=-5", "sweep.trial_timeout"),
    ("sweep.output_root=''", "sweep.output_root"), ("sweep.dir=' x'", "sweep.dir"),  # '' made sweep.dir '/t'
    ("sweep.output_root=true", "sweep.output_root"),
    ("sweep.checkpoints=maybe", "sweep.checkpoints"),
    ("sweep.objective=accuracy", "sweep.objective"), ("data.metric=bleu", "data.metric"),
    ("sweep.launcher=kubernetes", "sweep.launcher"), ("sweep.final_report=sometimes", "sweep.final_report"),
    ("sweep.launcher=slurm", "sweep.storage"),                                  # SQLite: one machine's file
    ("sweep.slurm.workers=0", "sweep.slurm.workers"), ("sweep.slurm.gpus_per_worker=-1", "sweep.slurm.gpus_per_worker"),
    ("sweep.slurm.extra=[h100]", "sweep.slurm.extra"), ("sweep.slurm.signal_before_s=0", "sweep.slurm.signal_before_s"),
    ("sweep.slurm.time=forever", "sweep.slurm.time"), ("sweep.slurm.time='1:2:3:4'", "sweep.slurm.time"),
    ("sweep.slurm.mem=64GB", "sweep.slurm.mem"),
    ("train.gradient_checkpointing=maybe", "train.gradient_checkpointing"), ("data.columns=[a]", "data.columns"),
])
def test_bad_input_refused_before_training(override, key, sweep_args, tmp_path, capsys):
    line = refused(sweep_args + ["model.build=null", override], capsys)
    assert line.startswith(f"error: {key}="), line
    assert not (tmp_path / "study.db").exists(), "refused before the storage was touched"


@pytest.mark.parametrize("overrides,key,says", [
    (["sweep.asha_min_step=15"], "sweep.asha_min_step", "a rung must be an eval step"),   # eval_steps=10
    (["sweep.asha_min_step=20", "train.max_steps=20"], "sweep.asha_min_step", "fewer than two rungs"),
    (["train.max_steps=10"], "sweep.asha_min_step", "fewer than two rungs"),            # the first rung is the end
    (["sweep.checkpoints=false"], "sweep.checkpoints", "continues paused trials from their checkpoints"),
    (["train.max_steps=-1"], "train.max_steps", "not epochs"),
    (["sweep.asha_eta=1"], "sweep.asha_eta", ">= 2"),
])
def test_asha_rungs_that_make_no_sense_are_refused(overrides, key, says, sweep_args, tmp_path, capsys):
    line = refused(sweep_args + ["model.build=null", "sweep.pruner=asha", *overrides], capsys)
    assert line.startswith(f"error: {key}=") and says in line, line
    assert not (tmp_path / "study.db").exists(), "refused before the storage was touched"


def test_slurm_time_and_memory_in_sbatch_forms_are_taken():
    from sweeper.slurm import parse_slurm

    for time, mem in (("04:00:00", "64G"), (60, 4096), ("1-12", "512M"), ("2-00:30", "1T"), ("UNLIMITED", 0)):
        c = parse_slurm({"workers": 2, "gpus_per_worker": 1, "signal_before_s": 120, "time": time, "mem": mem})
        assert (c.time, c.mem) == (str(time), str(mem))


def test_grid_needs_discrete_values(sweep_args, capsys):
    assert refused(sweep_args + ["sweep.sampler=grid"], capsys).startswith("error: search.lora_dropout.step=")


def test_the_tally_line_of_a_study_that_already_holds_more_than_asked():
    from sweeper.__main__ import study_line

    s = sweep_settings(["sweep.n_trials=2", "sweep.study_name=t"], check_values=False)
    assert study_line(s, 1) == f"study 't': 1/2 trials finished; storage {s.storage_shown}"
    assert study_line(s, 8) == f"study 't': 8 trials finished, more than sweep.n_trials=2: none to add; storage {s.storage_shown}"


def test_a_folder_named_by_a_number_is_a_folder():
    """Hydra reads sweep.dir=7 as an int (it was a TypeError from pathlib)."""
    assert sweep_settings(["sweep.dir=7"], check_values=False).dir == Path("7").resolve()
    assert sweep_settings(["sweep.output_root=2026", "sweep.study_name=s"], check_values=False).dir == Path("2026/s").resolve()


def test_varying_batch_is_allowed_without_pruning():
    s = sweep_settings(["sweep.pruner=none", "+search.batch={type: categorical, choices: [8, 16], "
                                             "target: train.per_device_train_batch_size}"])
    assert [p.name for p in s.space][-1] == "batch"


@pytest.mark.parametrize("url,says", [
    ("sqlite:////nonexistent-dir/deeper/study.db", "its folder /nonexistent-dir/deeper does not exist"),
    ("postgresql://postgres@127.0.0.1:1/test", ""),
    ("mysql://root@127.0.0.1/test", "pip install PyMySQL, then a mysql+pymysql://"),  # MariaDB runs beside
    ("redis://127.0.0.1:6379", "allowed: sqlite:///path/to/study.db, postgresql://"), ("notaurl", "allowed: sqlite:///")])
def test_storage_that_cannot_be_opened(url, says, sweep_args, capsys):
    line = refused(sweep_args + [f"sweep.storage={url}"], capsys)
    assert line.startswith(f"error: sweep.storage='{url}': cannot be opened") and says in line


def test_storage_under_a_file_says_it_is_a_file(sweep_args, tmp_path, capsys):
    (tmp_path / "notes").write_text("mine\n")
    line = refused(sweep_args + [f"sweep.storage=sqlite:///{tmp_path / 'notes' / 'study.db'}"], capsys)
    assert line.endswith(f"; {tmp_path / 'notes'} is a file, not a folder: name a file in a folder"), line
    assert (tmp_path / "notes").read_text() == "mine\n"


@pytest.mark.parametrize("url,says", [
    ("sqlite:///", "an in-memory database, which the trial processes cannot see"),  # was sqlalchemy's max_overflow
    ("sqlite:///:memory:", "an in-memory database, which the trial processes cannot see"),
    ("sqlite:///{tmp}", "{tmp} is a folder; allowed: a file, e.g. sqlite:///{tmp}/study.db")])
def test_sqlite_url_that_names_no_file_is_refused(url, says, sweep_args, tmp_path, capsys):
    url, says = url.format(tmp=tmp_path), says.format(tmp=tmp_path)
    assert refused(sweep_args + [f"sweep.storage={url}"], capsys).startswith(f"error: sweep.storage='{url}': {says}")


def test_existing_study_with_other_direction_is_left_alone(sweep_args, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="t", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    line = refused(sweep_args, capsys)
    assert "direction maximize" in line and "sweep.study_name='t'" in line
    again = optuna.load_study(study_name="t", storage=url)
    assert len(again.trials) == 1 and again.user_attrs == {}


def test_a_study_another_tool_made_is_left_alone(sweep_args, tmp_path, capsys):
    """An Optuna study of the same name made by other code: its trials were taken for LoRA trials,
    its best crowned (with no adapter), and the sweep trained nothing when they were enough."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="t", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=3)
    from sweeper.follow import main as follow_main
    from sweeper.results.__main__ import main as report_main

    for command in (main, report_main, follow_main):
        code = command(sweep_args)
        assert (code, capsys.readouterr().err) == (2, (
            "error: sweep.study_name='t': exists with 3 trial(s) that qlora-sweep did not make "
            "(parameters: x): choose another sweep.study_name\n")), command.__module__
    for command in (report_main, follow_main):  # a study name the file does not hold
        code = command([a for a in sweep_args if a != "sweep.study_name=t"] + ["sweep.study_name=u"])
        assert (code, capsys.readouterr().err) == (2, (
            f"error: sweep.study_name='u': no such study in {url}: run make sweep with the same ARGS first\n"))
    again = optuna.load_study(study_name="t", storage=url)
    assert len(again.trials) == 3 and again.user_attrs == {}
    assert again._storage.get_study_system_attrs(again._study_id) == {}  # no fingerprint set on it


def test_fingerprint_refuses_a_changed_space_or_fixed_config(sweep_args):
    s = sweep_settings(sweep_args)
    open_study(s, build_storage(s))
    # Extending the study, or changing W&B settings, is the same study.
    check_existing(build_storage(s), sweep_settings(sweep_args + ["sweep.n_trials=20", "tracking.project=other"]))
    for change, named in (("train.weight_decay=0.1", "train.weight_decay"),
                          # the searched rate's range is the preset's, so moving the preset moves the space
                          ("train.learning_rate=0.01", "search.learning_rate.low"),
                          ("search.lora_dropout.high=0.3", "search.lora_dropout.high"),
                          ("data.eval_size=32", "data.eval_size")):
        changed = sweep_settings(sweep_args + [change])
        with pytest.raises(ConfigError) as err:
            check_existing(build_storage(changed), changed)
        assert named in str(err.value) and "\n" not in str(err.value)


def test_a_study_from_before_a_config_key_existed_goes_on(sweep_args):
    """A key added since the study began (train.lr_scheduler_kwargs), at its default null, is no
    difference: the study was refused with an empty list of differences. Set, it is one."""
    from sweeper.study import FINGERPRINT

    s = sweep_settings(sweep_args)
    storage = build_storage(s)
    study = open_study(s, storage)
    older = {k: v for k, v in s.fingerprint.items() if k != "train.lr_scheduler_kwargs"}
    assert len(older) == len(s.fingerprint) - 1
    storage.set_study_system_attr(study._study_id, FINGERPRINT, older)
    check_existing(storage, s)
    changed = sweep_settings(sweep_args + ["train.lr_scheduler_kwargs={power: 2}"])
    with pytest.raises(ConfigError, match=r"train.lr_scheduler_kwargs.power \(null → 2\)"):
        check_existing(storage, changed)


def test_fingerprint_refusal_through_the_command(sweep_args, capsys):
    s = sweep_settings(sweep_args)
    open_study(s, build_storage(s))
    line = refused(sweep_args + ["train.weight_decay=0.1"], capsys)
    assert "train.weight_decay (0.0 → 0.1)" in line


def test_data_edited_under_the_same_path_is_refused_by_content(sweep_args, synthetic_data, tmp_path, capsys):
    import os
    import shutil

    data = tmp_path / "rows.jsonl"
    shutil.copy(synthetic_data, data)
    args = sweep_args + [f"data.name_or_path={data}"]
    s = sweep_settings(args)
    study = open_study(s, build_storage(s))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    os.utime(data, (1, 1))  # touched: the same rows
    check_existing(build_storage(s), s)
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="t", storage=s.storage).trials]
    original = data.read_bytes()
    data.write_bytes(b"".join(original.splitlines(keepends=True)[:-1]))  # the last row dropped: other rows
    line = refused(args, capsys)
    assert "data.name_or_path=" in line and "has changed since study 't' began" in line
    assert [(t.number, t.state, t.value) for t in optuna.load_study(study_name="t", storage=s.storage).trials] == before
    data.write_bytes(original)  # restored: the study goes on
    check_existing(build_storage(s), s)


def test_data_edited_while_the_sweep_runs_stops_it_before_the_next_trial(sweep_args, synthetic_data, tmp_path,
                                                                        capsys, monkeypatch):
    import shutil

    from sweeper.loop import SweepLoop

    data = tmp_path / "rows.jsonl"
    shutil.copy(synthetic_data, data)
    start = SweepLoop._start

    def start_then_edit(self, slot, tally):  # the first trial starts on the rows, then they change
        start(self, slot, tally)
        if not data.read_bytes().endswith(b"{}\n"):
            data.write_bytes(b"".join(data.read_bytes().splitlines(keepends=True)[:-1]) + b"{}\n")

    monkeypatch.setattr(SweepLoop, "_start", start_then_edit)
    code = main(sweep_args + [f"data.name_or_path={data}", "sweep.trials_per_device=2", "sweep.n_trials=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has changed since study 't' began" in err[0], err
    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert trials[0].state == optuna.trial.TrialState.FAIL  # stopped, and queued to run again
    assert trials[0].user_attrs["fail_reason"] == "stopped: the data changed" and len(trials) == 2


def test_grid_sampler_runs_the_whole_grid_by_ask_and_tell():
    """Optuna's GridSampler stops Study.optimize when the grid is used up, raising outside it: the
    sweep's ask/tell loop must get through every point, the last one included (found by bench-search)."""
    from sweeper.search.space import suggest
    from sweeper.search.strategy import build_sampler

    s = sweep_settings(["sweep.sampler=grid", "sweep.enqueue=[]", "sweep.n_trials=12", "~search.lora_dropout",
                        "+search.lora_dropout={type: float, low: 0.1, high: 0.2, step: 0.1, target: lora.dropout}",
                        "~search.learning_rate"])
    study = optuna.create_study(sampler=build_sampler(s))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        seen.add(tuple(sorted(suggest(trial, s.space).items())))
        study.tell(trial, 1.0)
    assert len(seen) == 12  # 3 ranks x 2 dropouts x 2 bit widths, each once


def test_final_report_ranks_trials_and_says_what_mattered(tmp_path):
    from sweeper.results.report import final_report

    s = sweep_settings([f"sweep.dir={tmp_path}"])
    study = optuna.create_study()
    dists = {"lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32]),
             "lora_dropout": optuna.distributions.FloatDistribution(0.05, 0.2)}
    for i, (r, dropout, loss) in enumerate([(8, 0.1, 2.0), (16, 0.1, 1.5), (32, 0.1, 1.0), (32, 0.15, 1.05)]):
        (tmp_path / f"t{i}").mkdir()
        study.add_trial(optuna.trial.create_trial(
            params={"lora_r": r, "lora_dropout": dropout}, distributions=dists, value=loss,
            user_attrs={"lora_alpha": 2 * r, "steps": 40, "output_dir": str(tmp_path / f"t{i}"),
                        "value_overrides": [f"lora.r={r}", f"lora.alpha={2 * r}", f"lora.dropout={dropout}"]}))
    report = final_report(study, s).splitlines()
    rows = [line.split()[0] for line in report[3:7]]
    assert rows == ["2", "3", "1", "0"]  # best first
    assert "best: trial 2, eval_loss 1.0000: lora_r=32 lora_alpha=64 lora_dropout=0.1" in report
    assert any(line.startswith("rerun it alone: python -m trainers lora.r=32 lora.alpha=64") for line in report)
    (said,) = [line for line in report if line.startswith("what mattered")]  # 4 points: too few, and it says so
    assert said.startswith("what mattered: too few trials to say") and "this study has 4" in said
    assert (tmp_path / "best").resolve() == tmp_path / "t2"
    # t2 holds no adapter (as if deleted): said, not shown as the adapter to load; once there, shown.
    assert f"best adapter: missing: {tmp_path / 't2'} holds no adapter (deleted or moved?); the rerun below trains " \
           "it again" in report
    (tmp_path / "t2" / "adapter_config.json").write_text("{}")
    assert f"best adapter: {tmp_path / 't2'}  (also {tmp_path / 'best'}, with a model card: " \
           f"{tmp_path / 'best' / 'README.md'})" in final_report(study, s).splitlines()


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


@pytest.mark.parametrize("override", [
    "train.optim=adamw_typo", "lora.target_modules=[q_proj,vproj]", "model.name_or_path=/typo/tiny-llama",
    "data.columns={prompt: question}", "sweep.storage=postgresql://postgres:hunter2@127.0.0.1:1/test",
])
def test_bad_input_leaves_an_existing_study_and_its_folder_alone(override, sweep_args, tmp_path, capsys):
    s = sweep_settings(sweep_args)
    study = open_study(s, build_storage(s))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.5))
    (s.dir / "trials" / "0").mkdir(parents=True)
    (s.dir / "trials" / "0" / "metrics.json").write_text("{}")
    before = listing(s.dir), (tmp_path / "study.db").read_bytes()
    line = refused(sweep_args + [override], capsys)
    assert "hunter2" not in line
    assert (listing(s.dir), (tmp_path / "study.db").read_bytes()) == before, "nothing written, no trial created"
    assert not (tmp_path / "typo").exists() and not Path("/typo").exists()


def test_storage_password_hidden_in_the_error(sweep_args, capsys):
    line = refused(sweep_args + ["sweep.storage=postgresql://postgres:hunter2@127.0.0.1:1/test"], capsys)
    assert line.startswith("error: sweep.storage='postgresql://postgres:***@127.0.0.1:1/test': cannot be opened")
    # An '=' in the URL's query is not Hydra's grammar: its parser's error quoted the whole override, password too.
    line = refused(sweep_args + ["sweep.storage=postgresql://postgres:hunter2@127.0.0.1:1/test?sslmode=require"], capsys)
    assert line == ("error: override='sweep.storage=postgresql://postgres:***@127.0.0.1:1/test?sslmode=require': "
                    "mismatched input '=' expecting <EOF>; quote a value holding spaces, '=' or brackets as a whole "
                    "(key='a=b' or key='[1, 2]')")


@pytest.mark.parametrize("url,shown", [
    ("postgresql://user:s3cr%40t@db.example:5432/study", "postgresql://user:***@db.example:5432/study"),
    ("postgresql+psycopg://user@host/db", "postgresql+psycopg://user@host/db"),
    ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
])
def test_hide_password(url, shown):
    from sweeper.settings import hide_password

    assert hide_password(url) == shown


def test_cost_totals_count_what_pruning_saved():
    from optuna.trial import TrialState

    from sweeper.results.report import cost_totals

    def trial(state, stopped, resumed=0, **recheck):
        return optuna.trial.create_trial(
            state=state, value=1.0 if state == TrialState.COMPLETE else None, params={}, distributions={},
            user_attrs={"train_s": 10.0, "train_tokens": 1000, "stopped_at_step": stopped, "max_steps": 40,
                        "resumed_from_step": resumed, "wall_s": 20.0, "peak_memory_gib": 1.5, "peak_memory_of": "gpu",
                        **recheck})

    lines = cost_totals([trial(TrialState.COMPLETE, 40), trial(TrialState.PRUNED, 10), trial(TrialState.PRUNED, 20),
                         trial(TrialState.COMPLETE, 40, resumed=20),
                         trial(TrialState.COMPLETE, 40, recheck_of=0, seed=43)])
    # steps run: 40 + 10 + 20 + (40 - 20) = 90; not run thanks to pruning: 30 + 20 = 50 of 140
    assert lines == ["cost: 4 trials, 80 s of trial time, 40 s training, 90 training steps, 4,000 tokens; peak memory "
                     "1.50 GiB (gpu); pruning saved 50 steps (36% of running every trial to its end)",
                     "re-check cost: 1 run, 20 s of trial time, 40 training steps (0.44x the search's 90 steps, "
                     "0.25x its trial time)"]
    assert cost_totals([]) == []
    assert cost_totals([trial(TrialState.COMPLETE, 40)])[0].startswith("cost: 1 trial, 20 s of trial time")


def test_what_mattered_names_the_parameter_that_drives_the_loss():
    """A landscape where the answer is known: the loss falls with the rank, dropout adds noise.
    Most trials are pruned at step 10, as in the demo; their losses there still count."""
    from landscape import rank_driven_study
    from sweeper.results.report import what_mattered

    study = rank_driven_study(12, seed=0, dropout_effect=0.05)
    line, dashboard = what_mattered(study)
    assert line.startswith("what mattered (fANOVA on the eval loss at step 10, 12 finished trials, pruned ones "
                           "included; in brackets, the middle 80% over resamples): lora_r ")
    shares = dict(part.split(" (")[0].rsplit(" ", 1) for part in line.split("): ", 1)[1].split("; ")[0].split(", "))
    assert int(shares["lora_r"].rstrip("%")) > 90
    assert line.endswith("lora_r came first in 95% of 20 resamples of these trials")  # stable: a finding
    assert "PED-ANOVA, Optuna's default, on the 3 completed trials' eval_loss" in dashboard


def test_what_mattered_says_when_the_trials_are_too_few_to_tell():
    """Losses that are noise around one value: whichever parameter fANOVA puts first, resampling the
    trials moves it, and the line says so instead of presenting it as a finding."""
    import random

    from sweeper.recheck import RECHECK_OF, SEED
    from sweeper.results.report import what_mattered

    rng = random.Random(3)
    space = {"lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32]),
             "lora_dropout": optuna.distributions.FloatDistribution(0.05, 0.2)}
    study = optuna.create_study()
    for _ in range(8):
        study.add_trial(optuna.trial.create_trial(
            params={"lora_r": rng.choice([8, 16, 32]), "lora_dropout": rng.uniform(0.05, 0.2)}, distributions=space,
            value=rng.gauss(2, 0.1), intermediate_values={10: rng.gauss(2, 0.1)}))
    line, _ = what_mattered(study)
    assert line.endswith("of 20 resamples of these trials: too few trials to tell what mattered")
    small = optuna.create_study()
    small.add_trials(study.trials[:3])
    too_few = ["what mattered: too few trials to say (fANOVA compares trials at one eval step, which needs at least 5 "
               "finished trials that reached it; this study has 3, re-check runs aside)"]
    assert what_mattered(small) == too_few
    # The re-check's runs repeat configurations: counted, 3 trials read as 6, more than the 5 it needs.
    for t in study.trials[:3]:
        small.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value,
                                                  intermediate_values=t.intermediate_values,
                                                  user_attrs={RECHECK_OF: t.number, SEED: 43}))
    assert what_mattered(small) == too_few


def test_slurm_without_sbatch_is_refused_before_the_study_exists(sweep_args, tmp_path, capsys, monkeypatch):
    """On a machine with no SLURM, sweep.launcher=slurm is refused before the study and its baseline
    are created (it used to create both, then refuse)."""
    name = f"no-sbatch-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it, sbatch least of all
    args = [a for a in sweep_args if not a.startswith(("sweep.storage=", "sweep.study_name="))]
    line = refused(args + ["sweep.launcher=slurm", f"sweep.storage={POSTGRES}", f"sweep.study_name={name}"], capsys)
    assert "sweep.launcher='slurm': sbatch is not on this machine's PATH" in line
    assert name not in optuna.get_all_study_names(POSTGRES)


def test_every_key_of_the_sweep_section_is_known():
    """The known keys are the default config's: an unknown one (a typo) is refused with them."""
    from omegaconf import OmegaConf

    from sweeper.settings import SWEEP_KEYS
    from trainers.config import compose_config

    assert sorted(OmegaConf.to_container(compose_config([]).sweep)) == sorted(SWEEP_KEYS)
    for typo, key in (("+sweep.n_trails=20", "sweep.n_trails"), ("+sweep.slurm.worker=4", "sweep.slurm.worker")):
        with pytest.raises(ConfigError) as err:
            sweep_settings([typo], check_values=False)
        assert err.value.key == key and "unknown key; known: " in err.value.allowed


@pytest.mark.parametrize("name", ["../../escape", "/abs/study", "a b/c", ".hidden", "naïve", "a" * 129])
def test_a_study_name_is_one_folder_under_the_output_root(name, capsys):
    line = refused([f"sweep.study_name='{name}'"], capsys)
    assert line.startswith("error: sweep.study_name=") and "one folder name under sweep.output_root" in line


def test_max_steps_zero_trains_by_epochs():
    from trainers.config import compose_config
    from trainers.settings import trial_settings

    for steps in (0, -1):
        assert trial_settings(compose_config([f"train.max_steps={steps}"])).train.max_steps == -1


def test_make_does_not_echo_a_storage_password():
    """make prints each recipe line before running it unless told not to: the sweep's and the
    follower's command lines carry ARGS, storage password and all."""
    import subprocess

    from conftest import ROOT

    for target in ("sweep", "follow"):
        proc = subprocess.run(["make", target, "ARGS=sweep.storage=postgresql://u:s3cr3t-pw@127.0.0.1:1/db "
                               "sweep.n_trials=0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "sweep.n_trials=0" in proc.stderr, proc.stderr
        assert "s3cr3t-pw" not in proc.stdout + proc.stderr
