"""The end of a sweep: the leaderboard (best first), the best trial's values, where its adapter
is, and the `python -m trainers` command that reruns it alone."""
import os
import shlex
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from sweeper.results.files import left_out, plural, write_report
from sweeper.recheck import RECHECK_OF, SEED, is_recheck, search_trials
from sweeper.search.sampler import CONTINUED_FROM
from sweeper.results.model_card import model_card
from sweeper.results.seeds import lines as seeds_lines
from sweeper.results.seeds import crowned
from sweeper.results.trials import (MIN_POINTS, ORDER, common_step_study, compared_trials, continued, eval_loss,
                                    rank_value, rows, state_name, trial_values)
from sweeper.settings import SweepSettings
from sweeper.view import format_values
from trainers.tracking import resolve_mode


def leaderboard(trials: list[FrozenTrial], s: SweepSettings) -> str:
    rows = [t for t in trials if t.state in ORDER]
    rows.sort(key=lambda t: (ORDER[t.state], rank_value(t)))
    task = s.objective != "eval_loss"  # then a column of the objective too, complete trials ranked by it
    header = (f"{'trial':>5}  {'state':<8}  {'eval_loss':>9}  " + (f"{s.objective:>10}  " if task else "") +
              f"{'steps':>5}  {'time':>6}  {'train':>6}  {'tok/s':>7}  {'peak GiB':>8}  values")
    lines = [header, "-" * len(header)]
    promoted = continued(trials)
    for t in rows:
        loss = eval_loss(t)
        seconds = t.user_attrs.get("wall_s", t.duration.total_seconds() if t.duration else 0)
        a = t.user_attrs
        # A trial that trained no token (resumed at its last step, failed before its first) has no rate, not 0.
        rate = f"{'-':>7}" if a.get("train_tokens") == 0 or "tokens_per_s" not in a else f"{a['tokens_per_s']:>7.0f}"
        cost = f"{a.get('train_s', 0):>5.0f}s  {rate}  {a.get('peak_memory_gib', 0):>8.2f}"
        why = f"  — {t.user_attrs['fail_reason'][:120]}" if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs else ""
        if is_recheck(t):
            why = f"  (re-check of trial {t.user_attrs[RECHECK_OF]}, seed {t.user_attrs[SEED]}){why}"
        if CONTINUED_FROM in t.user_attrs:
            why = f"  (continues trial {t.user_attrs[CONTINUED_FROM]}){why}"
        objective = (f"{t.value if t.state == TrialState.COMPLETE else float('nan'):>10.4f}  " if task else "")
        lines.append(f"{t.number:>5}  {state_name(t, promoted):<8}  {loss if loss is not None else float('nan'):>9.4f}  "
                     f"{objective}{t.user_attrs.get('steps', 0):>5}  {seconds:>5.0f}s  {cost}  {format_values(trial_values(t, s))}{why}")
    return "\n".join(lines)


def cost_totals(trials: list[FrozenTrial]) -> list[str]:
    """The search's cost, and the training steps pruning did not run (against every trial to its
    end); then the re-check's, beside it."""
    measured = [t for t in search_trials(trials) if "train_s" in t.user_attrs]
    if not measured:
        return []
    a = [t.user_attrs for t in measured]
    run = sum(x["stopped_at_step"] - x.get("resumed_from_step", 0) for x in a)
    promoted = continued(trials)  # paused, then continued: their steps were not saved but spent later
    saved = sum(x["max_steps"] - x["stopped_at_step"] for t, x in zip(measured, a)
                if t.state == TrialState.PRUNED and t.number not in promoted)
    share = saved / (run + saved) if run + saved else 0.0
    paused = any("paused_at" in x for x in a)
    cut = "pausing at rungs (asha)" if paused else "pruning"
    memory = max(x.get("peak_memory_gib", 0) for x in a)
    return [f"cost: {plural(len(measured), 'trial')}, {sum(x.get('wall_s', 0) for x in a):.0f} s of trial time, "
            f"{sum(x['train_s'] for x in a):.0f} s training, {run} training steps, "
            f"{sum(x['train_tokens'] for x in a):,} tokens; peak memory {memory:.2f} GiB "
            f"({a[0].get('peak_memory_of', '?')}); {cut} saved {saved} steps ({share:.0%} of running every "
            f"{'configuration' if paused else 'trial'} to its end)", *recheck_cost(trials, run, sum(x.get('wall_s', 0) for x in a))]


def kept_checkpoints(trials: list[FrozenTrial], s: SweepSettings) -> list[str]:
    """asha: the paused configurations never continued keep their checkpoints, so that a longer
    study (sweep.n_trials raised, the same command again) can still continue them; say where and
    how much, as they are the study's only files a user may want to delete."""
    from sweeper.job import trial_dir

    promoted = continued(trials)
    kept = {t.number: list(trial_dir(s.dir, t.number).glob("checkpoint-*")) for t in search_trials(trials)
            if t.state == TrialState.PRUNED and "paused_at" in t.user_attrs and t.number not in promoted}
    kept = {n: folders for n, folders in kept.items() if folders}
    if not kept:
        return []
    size = sum(f.stat().st_size for folders in kept.values() for d in folders for f in d.rglob("*") if f.is_file())
    return [f"asha: {len(kept)} paused configuration{'s' if len(kept) > 1 else ''} never continued keep "
            f"{'their checkpoints' if len(kept) > 1 else 'its checkpoint'} ({size / 2**20:.1f} MiB in "
            f"{s.dir / 'trials'}/{{{','.join(map(str, kept))}}}/checkpoint-*), so that a longer study (sweep.n_trials "
            f"raised, the same command) can continue them; delete them to free the space"]


def recheck_cost(trials: list[FrozenTrial], search_steps: int, search_s: float) -> list[str]:
    runs = [t.user_attrs for t in trials if is_recheck(t) and "train_s" in t.user_attrs]
    if not runs:
        return []
    steps = sum(x["stopped_at_step"] - x.get("resumed_from_step", 0) for x in runs)
    seconds = sum(x.get("wall_s", 0) for x in runs)
    return [f"re-check cost: {plural(len(runs), 'run')}, {seconds:.0f} s of trial time, {steps} training steps "
            f"({steps / search_steps if search_steps else 0:.2f}x the search's {search_steps} steps, "
            f"{seconds / search_s if search_s else 0:.2f}x its trial time)"]


def rerun_command(t: FrozenTrial, s: SweepSettings) -> str:
    user = [o for o in s.overrides if not o.lstrip("+~").startswith(("sweep", "search"))]
    values = t.user_attrs.get("value_overrides", []) + t.user_attrs.get("batch_overrides", [])
    out = s.dir / "reruns" / f"trial-{t.number}"
    return shlex.join(["python", "-m", "trainers", *user, *values, f"output_dir={out}"])


RESAMPLES = 20   # fANOVA on resamples of the trials: how much its answer rests on which trials ran
STABLE = 0.8     # the top parameter must come first in this share of them to be reported as a finding


def _fanova(trials: list, seed: int) -> dict[str, float]:
    import optuna

    study = optuna.create_study(direction="minimize")
    study.add_trials(trials)
    return optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))


def what_mattered(study, objective: str = "eval_loss") -> list[str]:
    """Optuna's fANOVA importances (random forests; how much of the loss's variance each parameter
    explains) of the eval loss at one step, over every trial that reached it, pruned ones
    included: with pruning on, the sweep refuses spaces that change what a step means, so losses at
    the same step compare. The step is the latest one at least MIN_POINTS trials reached. Optuna 5's
    default, PED-ANOVA, looks at the best 10% only, which on the demo's 8 trials is one trial: it
    named dropout 100% where fANOVA names the rank 85-91% (seeds 0-2), as the losses show.
    How far to trust it is measured, not assumed: fANOVA again on RESAMPLES resamples of the same
    trials (drawn with replacement, each with its own forest seed) gives each share's range and how
    often the top parameter stays first; below STABLE, the line says the trials are too few."""
    import random

    import optuna

    step, points = common_step_study(study)
    if points is None:
        return [f"what mattered: too few trials to say (fANOVA compares trials at one eval step, which needs at least "
                f"{MIN_POINTS} finished trials that reached it; this study has {len(compared_trials(study))}, "
                "re-check runs aside)"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        importances = _fanova(points.trials, seed=0)
    except (RuntimeError, ValueError):  # e.g. every trial has the same values
        return []
    rng, firsts, ranges = random.Random(0), 0, {name: [] for name in importances}
    for i in range(RESAMPLES):
        try:
            again = _fanova([rng.choice(points.trials) for _ in points.trials], seed=i + 1)
        except (RuntimeError, ValueError):  # a resample of identical trials
            continue
        firsts += max(again, key=again.get) == next(iter(importances))
        for name in ranges:
            ranges[name].append(again.get(name, 0.0))
    shown = ", ".join(f"{name} {share:.0%} ({_spread(ranges[name])})" for name, share in importances.items())
    agreed = firsts / RESAMPLES
    verdict = (f"{next(iter(importances))} came first in {agreed:.0%} of {RESAMPLES} resamples of these trials"
               + ("" if agreed >= STABLE else ": too few trials to tell what mattered"))
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return [f"what mattered (fANOVA on the eval loss at step {step}, {len(points.trials)} finished trials, pruned ones "
            f"included; in brackets, the middle 80% over resamples): {shown}; {verdict}",
            f"  (optuna-dashboard's importances answer another question: PED-ANOVA, Optuna's default, on the "
            f"{completed} completed trials' {objective})"]


def _spread(shares: list[float]) -> str:
    if not shares:
        return "no resample"
    ranked = sorted(shares)
    return f"{ranked[len(ranked) // 10]:.0%}-{ranked[-1 - len(ranked) // 10]:.0%}"


def note_on_dashboard(study, lines: list[str]) -> None:
    """The re-check's verdict as the study's note in optuna-dashboard (its own Markdown note)."""
    from optuna_dashboard import save_note

    save_note(study, "\n".join(["## Re-check before crowning", "", *(f"- {line.strip()}" for line in lines)]))


def warm_imports() -> None:
    """The final report's imports (scikit-learn for fANOVA, matplotlib, wandb), done on a thread
    while the last trials train instead of after them."""
    # Before matplotlib and scikit-learn: the summary run's wandb.init imports wandb's launch inputs,
    # whose pydantic models read their docstrings through inspect, which walks every loaded module
    # (as for a trial, sweeper/worker.py: preload). Imported there, at the end of a 2-trial sweep,
    # wandb.init took 1.09 s; imported first, 0.33 s (2 cores, 2026-12-04).
    try:
        import wandb.sdk.launch.inputs.internal  # noqa: F401  (wandb 0.31's path; a later one may move it)
    except ImportError:
        pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import wandb  # noqa: F401


def final_report(study, s: SweepSettings) -> str:
    trials = study.get_trials(deepcopy=False)
    text = [f"study {s.study_name!r} in {s.storage_shown}", leaderboard(trials, s)]
    best, checked = crowned(trials, s)
    verdict = seeds_lines(checked, s.objective) if checked else []
    if best is not None:
        adapter = Path(best.user_attrs.get("output_dir", ""))
        link = s.dir / "best"
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            # Relative (trials/<n>): the study's folder can be moved, copied or mounted elsewhere.
            link.symlink_to(os.path.relpath(adapter, link.parent) if adapter.is_absolute() else adapter)
        rerun = rerun_command(best, s)
        saved = (adapter / "adapter_config.json").exists()
        if saved:
            finished = sum(t.state in ORDER and t.state != TrialState.FAIL for t in search_trials(trials))
            (adapter / "README.md").write_text(model_card(best, trial_values(best, s), s, finished, rerun, link,
                                                          verdict or None))
        which = f" (the winner's best seed, {best.user_attrs[SEED]})" if SEED in best.user_attrs else \
            (" (the winner, from its search run)" if checked else "")
        kept = f"best adapter: {adapter}  (also {link}, with a model card: {link / 'README.md'})" \
            if saved else \
            f"best adapter: missing: {adapter} holds no adapter (deleted or moved?); the rerun below trains it again"
        text += [*verdict, f"best: trial {best.number}{which}, {s.objective} {best.value:.4f}: "
                           f"{format_values(trial_values(best, s))}",
                 kept, f"rerun it alone: {rerun}"]
        text += what_mattered(study, s.objective)
    else:
        text.append("no trial completed yet")
    text += cost_totals(trials)
    text += kept_checkpoints(trials, s)
    from sweeper.results.wandb_summary import log_summary_run

    index = write_report(study, s, "\n".join(text))
    text.append(f"report: {index} (leaderboard as CSV and Markdown, plots)")
    text += [f"report: {line}" for line in left_out(study)]
    if verdict:
        note_on_dashboard(study, verdict)
    if log_summary_run(study, s, rows(trials, s), index.parent, best, checked) is not None:
        text.append(f"W&B: trial runs ({s.study_name}/trial-N) and a summary run ({s.study_name}/summary, updated by "
                    f"every report) in group {s.study_name!r}")
    if resolve_mode(s.trial.tracking) == "offline":
        text.append(f"W&B runs were saved offline (not logged in, or tracking.mode=offline); upload them with: "
                    f"wandb sync {s.dir / 'trials'}/*/wandb/offline-run-* {s.dir / 'summary'}/wandb/offline-run-*")
    report = "\n".join(text)
    (s.dir / "leaderboard.txt").write_text(report + "\n")
    return report
