"""One W&B run per study, beside its trial runs in the study's group (job type sweep-summary):
the leaderboard as a wandb.Table, the report's plots, and the best trial's run named. Its id is
the study's, so each report (a rerun, make report) updates that one run."""
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

from sweeper.settings import SweepSettings
from trainers.tracking import finish_run, resolve_mode, start_run


def summary_run_id(s: SweepSettings) -> str:
    """The same for every report of one study (its name and storage), different for another."""
    return "summary-" + hashlib.sha256(f"{s.storage_shown}\n{s.study_name}".encode()).hexdigest()[:16]


def log_summary_run(study, s: SweepSettings, rows: list[dict], report_dir: Path, best=None, checked=None) -> Path | None:
    """The summary run's folder, or None when tracking is disabled. best: the crowned trial;
    checked: the re-check's verdict (sweeper/results/seeds.py), or None."""
    if resolve_mode(s.trial.tracking) == "disabled":
        return None
    import wandb

    tracking = replace(s.trial.tracking, group=s.study_name, run_name=f"{s.study_name}/summary",
                       job_type="sweep-summary")
    # Offline, the newest summary replaces the run when synced: keep that one only.
    for older in (s.dir / "summary" / "wandb").glob("offline-run-*"):
        shutil.rmtree(older, ignore_errors=True)
    # No system metadata: W&B would record this process's argv, where sweep.storage may hold a password.
    run = start_run(tracking, {"study": s.study_name, "n_trials": s.n_trials, "search": s.fingerprint},
                    s.dir / "summary", s.trial.cache_dir, system_metadata=False, run_id=summary_run_id(s))
    if run is None:  # W&B could not start it (start_run said why): the report stands without it
        return None
    keys = list(dict.fromkeys(k for r in rows for k in r))
    run.log({"leaderboard": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows]),
             **{f"plots/{png.stem}": wandb.Image(str(png)) for png in sorted(report_dir.glob("*.png"))}})
    if checked is not None:
        run.log({"recheck": wandb.Table(columns=["trial", "baseline", "seeds", "mean", "sd"],
                                        data=[[c.trial.number, c.baseline, len(c.runs), c.mean, c.sd]
                                              for c in checked.configurations])})
    summary = {"finished_trials": sum(r["state"] in ("complete", "pruned") and r.get("recheck_of") is None
                                      for r in rows)}
    if best is not None:
        summary.update(best_trial=best.number, best_trial_run=f"{s.study_name}/trial-{best.number}",
                       **{f"best_{s.objective}": best.value})
    if checked is not None:
        summary.update(recheck_winner=checked.winner.trial.number, recheck_winner_mean=checked.winner.mean,
                       recheck_verdict=checked.sentence(), recheck_beats_baseline=checked.beats_baseline)
    folder = Path(run.dir).parent
    finish_run(run, summary, say_offline=False)  # the report's own line names this run too
    return folder
