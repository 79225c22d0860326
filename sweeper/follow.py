"""Following a study whose trials run elsewhere (a SLURM job array, other machines): the live
view's lines read from the storage and the trial folders every few seconds, then the final report
once the study holds sweep.n_trials finished trials, asha's continuations are done and the workers'
re-check (sweeper/recheck.py) is done. It holds no GPU and starts no trial.
`make follow ARGS="..."` (`python -m sweeper.follow [overrides]`) follows a study again."""
import sys
import time
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from sweeper.job import read_progress
from sweeper.recheck import RECHECK_OF, SEED, is_recheck, pending
from sweeper.results.trials import eval_loss, trial_values
from sweeper.search import asha
from sweeper.study import counts
from sweeper.view import LiveView

ENDED = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
POLL_S = 2.0


def where(t: FrozenTrial) -> str:
    node = t.user_attrs.get("node")
    return f"{node}/{t.user_attrs['device']}" if node else t.user_attrs["device"]


class Follower:
    def __init__(self, s, study, view: LiveView):
        self.s, self.study, self.view = s, study, view
        self.shown: set[int] = set()  # started on screen, not yet ended
        self.done = {t.number for t in study.get_trials(deepcopy=False) if t.state in ENDED}  # before we looked

    def _start(self, t: FrozenTrial, tally: dict) -> None:
        self.shown.add(t.number)
        resumed = t.user_attrs.get("resumed_from")
        self.view.start(t.number, trial_values(t, self.s), tally, t.system_attrs.get("failed_trial",
                        t.user_attrs.get("retry_of")), Path(resumed) if resumed else None, where(t),
                        (t.user_attrs[RECHECK_OF], t.user_attrs[SEED]) if is_recheck(t) else None)

    def _end(self, t: FrozenTrial, tally: dict) -> None:
        self.shown.discard(t.number)
        self.done.add(t.number)
        value = t.value if t.state == TrialState.COMPLETE else eval_loss(t)
        seconds = t.user_attrs.get("wall_s") or (t.duration.total_seconds() if t.duration else 0.0)
        # A retry inherits its predecessor's attributes, fail_reason included: only a failure has one.
        reason = t.user_attrs.get("fail_reason", "") if t.state == TrialState.FAIL else ""
        self.view.end(t.number, ENDED[t.state], value, t.user_attrs.get("steps", 0), seconds, tally, reason)

    def poll(self) -> dict:
        """Say what changed since the last poll; the study's tally."""
        trials = self.study.get_trials(deepcopy=False)
        tally = counts(self.study)
        for t in trials:
            started = t.user_attrs.get("launched_as") == t.number  # set by the sweep once it has its values
            if t.number in self.done or not started:
                continue
            if t.number not in self.shown:
                self._start(t, tally)
            if t.state in ENDED:
                self._end(t, tally)
            elif t.state == TrialState.RUNNING:
                folder = t.user_attrs.get("output_dir")
                self.view.progress(t.number, read_progress(Path(folder)) if folder else None)
        return tally


def follow(s, study, job_id: str | None = None) -> int:
    """Until the study is done (0, after the final report), or the job has no task left (1)."""
    from sweeper.slurm import job_status, waiting_line

    view = LiveView(s.n_trials, quiet=s.quiet)
    follower = Follower(s, study, view)
    said = None  # the waiting reason last said: each new one once
    while True:
        tally = follower.poll()
        trials = study.get_trials(deepcopy=False)
        # n_trials counts configurations: under asha, continuations may still be running or due
        if tally["finished"] >= s.n_trials and tally["running"] == 0 and not asha.unfinished(trials, s) and \
                pending(trials, s) == 0:  # the workers' re-check too
            break
        alive, waiting = job_status(job_id) if job_id is not None else (True, None)
        if waiting and waiting != said:
            print(waiting_line(job_id, waiting), flush=True)
        said = waiting
        if not alive:
            print(f"error: SLURM job {job_id} has no task left and the study holds {tally['finished']}/{s.n_trials} "
                  f"finished trials; the workers' logs: {s.dir / 'slurm'}/worker-{job_id}_*.log; rerun the same "
                  "command to submit workers again", file=sys.stderr)
            return 1
        time.sleep(POLL_S)
    if s.final_report:
        from sweeper.results.report import final_report

        print(final_report(study, s))
    return 0


def main(argv: list[str]) -> int:
    from sweeper.settings import sweep_settings
    from sweeper.study import load_sweep_study
    from trainers.settings import ConfigError

    try:
        s = sweep_settings(argv, check_values=False)
        study = load_sweep_study(s)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = study.user_attrs.get("slurm_jobs", [])
    print(f"following study {s.study_name!r} in {s.storage_shown}" + (f" (SLURM job {jobs[-1]})" if jobs else ""),
          flush=True)
    try:
        return follow(s, study, jobs[-1] if jobs else None)
    except KeyboardInterrupt:
        print("stopped following; the trials go on", file=sys.stderr)
        return 130


def cli() -> None:
    """The qlora-follow command of an installed package."""
    from trainers.exit import exit_now

    exit_now(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
