"""One W&B run per study, beside its trial runs in the study's group (job type sweep-summary):
the leaderboard as a wandb.Table, the report's plots, and the best trial's run named."""
from dataclasses import replace
from pathlib import Path

from sweeper.settings import SweepSettings
from trainers.tracking import finish_run, resolve_mode, start_run


def log_summary_run(study, s: SweepSettings, rows: list[dict], report_dir: Path) -> Path | None:
    """The summary run's folder, or None when tracking is disabled."""
    if resolve_mode(s.trial.tracking) == "disabled":
        return None
    import wandb

    tracking = replace(s.trial.tracking, group=s.study_name, run_name=f"{s.study_name}-summary",
                       job_type="sweep-summary")
    # No system metadata: W&B would record this process's argv, where sweep.storage may hold a password.
    run = start_run(tracking, {"study": s.study_name, "n_trials": s.n_trials, "search": s.fingerprint},
                    s.dir / "summary", s.trial.cache_dir, system_metadata=False)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    run.log({"leaderboard": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows]),
             **{f"plots/{png.stem}": wandb.Image(str(png)) for png in sorted(report_dir.glob("*.png"))}})
    summary = {"finished_trials": sum(r["state"] in ("complete", "pruned") for r in rows)}
    complete = [r for r in rows if r["state"] == "complete"]
    if complete:
        best = study.best_trial
        summary.update(best_trial=best.number, best_trial_run=f"trial-{best.number}", best_eval_loss=best.value)
    folder = Path(run.dir).parent
    finish_run(run, summary)
    return folder
