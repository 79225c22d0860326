"""The loop that fills slots, policy only: every free slot asks the study for a trial and submits
it to the executor the moment its own trial ends (no barrier), until the study holds exactly
sweep.n_trials finished trials, counted across every slot and every sweep process on the storage.
It keeps each running trial's heartbeat, records outcomes, retries what was killed and lowers K
after an out-of-memory failure; where and how a job runs is the executor's (sweeper/executor.py)."""
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import TrialState

from sweeper.executor import Executor, Handle
from sweeper.job import KILLED, Job, Outcome, last_step, remove_checkpoints, resume_point, trial_dir
from sweeper.settings import SweepSettings

# A stop asked for by a signal while the loop runs: the loop raises KeyboardInterrupt at its next
# safe point (between polls). Raised by the handler itself, at any bytecode, it once landed inside
# a SQLite commit (the study stayed locked for stop_all) and once in a weakref callback, which
# swallowed it (the sweep ran on to the end).
LOOP_RUNNING, STOP = threading.Event(), threading.Event()
from sweeper.recheck import RECHECK_OF, SEED, duplicate_of, is_recheck, pending
from sweeper.search import asha
from sweeper.search.asha import PAUSED_AT, continued_from
from sweeper.search.sampler import CONTINUED_FROM
from sweeper.slots import Device, Slot
from sweeper.search.sampler import drawn_twice, unwritten
from sweeper.search.space import suggest, to_overrides
from sweeper.study import DATA_DIGEST, counts, data_changed, fail_lost_trials
from trainers.data import SourceWatch
from sweeper.view import LiveView

EXIT_FAILURES = 1
EXIT_DATA_CHANGED = 2  # bad input, found late: the study keeps what it holds
OUT_OF_MEMORY = "out of memory"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def trial_overrides(s: SweepSettings, number: int, values_overrides: list[str], resume_from: Path | None,
                    job_type: str = "trial") -> list[str]:
    out = values_overrides + [f"output_dir={trial_dir(s.dir, number)}", f"tracking.group={s.study_name}",
                              f"tracking.run_name={s.study_name}/trial-{number}", f"tracking.job_type={job_type}"]
    if s.checkpoints:  # one per eval: a killed trial loses at most one eval interval
        out += ["train.save_strategy=steps", "train.save_steps=${train.eval_steps}"]
    if resume_from is not None:
        out.append(f"resume_from_checkpoint={resume_from}")
    return out


@dataclass
class Running:
    trial: optuna.Trial
    handle: Handle
    slot: Slot
    trial_dir: Path
    started: float
    slots_at_launch: int   # K on its device when its memory share was set
    last_beat: float = 0.0

    @property
    def number(self) -> int:
        return self.trial.number


def tell(study, trial, outcome: Outcome) -> None:
    trial.set_user_attr("steps", outcome.steps)
    for key, value in outcome.facts.items():
        if value is not None:
            trial.set_user_attr(key, value)
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    elif outcome.state == "paused":  # asha: finished for now, its checkpoint kept for a continuation
        trial.set_user_attr(PAUSED_AT, outcome.steps)
        study.tell(trial, state=TrialState.PRUNED)
    elif outcome.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("fail_reason", outcome.reason[-500:])
        study.tell(trial, state=TrialState.FAIL)


def memory_share(s: SweepSettings, device: Device) -> dict | None:
    """What one of the device's K trial processes may take."""
    if s.debug_device_memory_mb is not None:  # tests: a pretend device size, enforced on host memory
        return {"host_bytes": s.debug_device_memory_mb * 2**20 // device.slots}
    if device.memory_bytes is None:
        return None
    from sweeper.packing import gpu_fraction

    return {"gpu_fraction": gpu_fraction(device.memory_bytes, device.slots)}


class SweepLoop:
    def __init__(self, s: SweepSettings, study, storage, executor: Executor, view: LiveView, after_last_start=None,
                 node: str | None = None, trials_storage: str | None = None):
        self.s, self.study, self.storage, self.executor, self.view = s, study, storage, executor, view
        self.node = node  # the machine (SLURM's node name, else the host name): recorded on each trial
        # Where trial processes open the study: this process's proxy (study.serve_trials), or the URL.
        self.trials_storage = trials_storage or s.storage
        # Called once, when the last trial starts with no spare after it: the CPU a spare's imports
        # would have taken is free.
        self.after_last_start = after_last_start
        self.running: dict[tuple[str, int], Running] = {}
        self.failures = 0
        self.waiting_said = False
        # False: the search, until n_trials finished; True: the re-check runs queued after it
        # (sweeper/recheck.py), which the search's counts leave out.
        self.recheck = False
        self.rungs = asha.rungs(s) if s.pruner == "asha" else []
        # The rows a trial trains on, looked at before each start: edited mid-sweep, later trials
        # would be ranked against earlier ones trained on other rows.
        self.data = SourceWatch(s.trial.data, storage.get_study_system_attrs(study._study_id).get(DATA_DIGEST))

    def _free_slots(self) -> list[Slot]:
        free, busy = [], {}
        for slot in self.executor.capacity():
            d = slot.device
            n = busy.setdefault(d.name, sum(1 for (name, _) in self.running if name == d.name))
            if n < d.slots and (d.name, slot.index) not in self.running:
                free.append(slot)
                busy[d.name] = n + 1
        return free

    def _not_needed(self, trial) -> bool:
        """Another sweep process may have claimed the last trial between our count and our ask
        (the storage has no atomic "ask if under budget"): then hand this one back, so the study
        still ends with exactly n_trials finished trials. A queued trial (a retry, an enqueued
        baseline) goes back to the queue as it was. In the re-check, a trial that is not a
        re-check run (the queue ran empty) or repeats one already claimed is handed back too."""
        frozen = self.storage.get_trial(trial._trial_id)
        claimed = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED))
        if self.recheck:
            twin = duplicate_of(claimed, frozen) if is_recheck(frozen) else None
            if is_recheck(frozen) and twin is None:
                return False
            why = (f"not needed: trial {twin} runs the same re-check (another sweep process queued it at the same "
                   "moment)" if twin is not None else "not needed: the re-check had no run left to start")
        elif is_recheck(frozen):  # a re-check run left queued by an interrupted sweep: it runs, uncounted
            return False
        elif continued_from(frozen) is not None:  # asha: uncounted, unless another process continues it already
            twin = next((t.number for t in claimed if t.number < frozen.number
                         and continued_from(t) == continued_from(frozen)), None)
            if twin is None:
                return False
            why = f"not needed: trial {twin} continues trial {continued_from(frozen)} already"
        elif sum(1 for t in claimed if t.number < trial.number and not is_recheck(t)
                 and continued_from(t) is None) < self.s.n_trials:
            return False
        else:
            why = ("not needed: the study already had sweep.n_trials trials (another sweep process started the last "
                   "one at the same moment)")
        trial.set_user_attr("fail_reason", why)
        self.study.tell(trial, state=TrialState.FAIL)
        if is_recheck(frozen) or continued_from(frozen) is not None:
            return True
        if "fixed_params" in frozen.system_attrs:
            self.study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=frozen.system_attrs,
                                                           user_attrs=frozen.user_attrs))
        return True

    def _promotable(self, ending: bool):
        """asha: the paused configuration to continue now, or None (sweeper/search/asha.py)."""
        if self.s.pruner != "asha" or self.recheck:
            return None
        return asha.promotion(asha.chains(self.study.get_trials(deepcopy=False), self.rungs), len(self.rungs),
                              self.s.asha_eta, ending)

    def _leg(self, trial, frozen) -> tuple[Path | None, int | None, int | None]:
        """Where a trial starts (a retry's or a continuation's checkpoint), the rung it pauses at
        (asha; None: to the end) and the trial it continues."""
        s = self.s
        history = [trial_dir(s.dir, n) for n in Retry.retry_history(frozen)]
        continues = continued_from(frozen)
        before = self.storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, continues)) if continues is not None else None
        if before is not None:
            history = [trial_dir(s.dir, continues), *history]
        resume_from = resume_point(history) if s.checkpoints else None
        if s.pruner != "asha" or is_recheck(frozen):
            return resume_from, None, continues
        if before is not None and resume_from is None:
            self.view.note(f"trial {trial.number}: the checkpoint of trial {continues} (paused at step "
                           f"{before.user_attrs.get(PAUSED_AT)}) is missing or unreadable: restarted from step 0")
        elif before is not None and not frozen.intermediate_values:  # its curve so far, for the models and the pruner
            for step, value in sorted(before.intermediate_values.items()):
                if step <= before.user_attrs.get(PAUSED_AT, 0):
                    trial.report(value, step)
        done = before.user_attrs.get(PAUSED_AT, 0) if before is not None else 0
        pause_at = next((r for r in self.rungs if r > done), None)
        return resume_from, (None if pause_at == self.rungs[-1] else pause_at), continues

    def _start(self, slot: Slot, tally: dict) -> None:
        s, study, storage = self.s, self.study, self.storage
        chain = self._promotable(ending=tally["finished"] >= s.n_trials)
        if chain is not None:  # asha: continue a paused configuration before starting a new one
            study.enqueue_trial(chain.latest.params, user_attrs={CONTINUED_FROM: chain.latest.number})
        trial = study.ask()
        # At once: optuna fails only trials whose heartbeat went stale, so a trial left RUNNING
        # without any heartbeat (the sweep killed before its first poll) would never be retried.
        storage.record_heartbeat(trial._trial_id)
        if self._not_needed(trial):
            return
        sampling = unwritten(study)  # trials that may propose this one's values without seeing them
        values = suggest(trial, s.space)
        twin = drawn_twice(study, trial, sampling)
        if twin is not None:  # another sweep process drew the same values at the same moment
            trial.set_user_attr("fail_reason", f"not run: trial {twin} has the same values (another sweep process "
                                               "drew them at the same moment); drawn again")
            study.tell(trial, state=TrialState.FAIL)
            return
        recheck = (trial.user_attrs[RECHECK_OF], trial.user_attrs[SEED]) if RECHECK_OF in trial.user_attrs else None
        # A re-check run repeats its trial's values on another seed: part of what reruns it.
        value_overrides = to_overrides(values, s.space) + ([f"train.seed={recheck[1]}"] if recheck else [])
        folder = trial_dir(s.dir, trial.number)
        trial.set_user_attr("value_overrides", value_overrides)
        trial.set_user_attr("output_dir", str(folder))
        if self.node:
            trial.set_user_attr("node", self.node)
        if slot.device.batch is not None:  # decided by the sweep: a rerun of the trial needs it spelt out
            trial.set_user_attr("batch_overrides", slot.device.batch_overrides())
        frozen = storage.get_trial(trial._trial_id)
        # A retry of a killed or interrupted trial continues from the newest checkpoint of its series,
        # an asha continuation from the checkpoint its paused trial kept.
        resume_from, pause_at, continues = self._leg(trial, frozen)
        # Always set: a retry inherits its predecessor's, which may have resumed from elsewhere.
        trial.set_user_attr("resumed_from", None if resume_from is None else str(resume_from))
        trial.set_user_attr("device", slot.label)
        # Last, and the trial's own number: a retry inherits every attribute of the trial it repeats,
        # so a follower (sweeper/follow) waits for this one to show the trial with its own attributes.
        trial.set_user_attr("launched_as", trial.number)
        retry_of = Retry.retried_trial_number(frozen)
        retry_of = frozen.user_attrs.get("retry_of") if retry_of is None else retry_of  # after out of memory
        self.view.start(trial.number, values, tally, retry_of, resume_from, slot.label, recheck, continues)
        # Keep a spare while more trials may follow than are running now (the re-check's after the search's).
        keep_spare = self._waiting_rechecks() > 0 if self.recheck else \
            tally["finished"] + tally["running"] + 1 < s.n_trials or s.recheck_seeds > 0
        overrides = trial_overrides(s, trial.number, value_overrides, resume_from,
                                    "recheck" if recheck else "trial") + slot.device.batch_overrides()
        shown = {**values, RECHECK_OF: recheck[0], SEED: recheck[1]} if recheck else values  # its W&B config
        job = Job(folder, s.public_overrides, overrides, shown, trial_id=trial._trial_id,
                  memory_share=memory_share(s, slot.device), threads=slot.device.threads, prune=recheck is None,
                  pause_at=pause_at, spare_follows=keep_spare)
        handle = self.executor.submit(job, slot, self.trials_storage, keep_spare)
        self.running[(slot.device.name, slot.index)] = Running(trial, handle, slot, folder, time.monotonic(),
                                                               slot.device.slots)
        if not keep_spare and self.after_last_start is not None:
            self.after_last_start()
            self.after_last_start = None

    def _out_of_memory(self, r: Running) -> None:
        """Fewer trials side by side on that device from now on; the values run again when they
        fit (first in the queue, with a bigger share), unless the trial ran alone already."""
        device, had = r.slot.device, r.slots_at_launch
        if had == 1:
            self.view.note(f"trial {r.number} does not fit on {device.label} even alone: not retried")
            return
        if device.slots >= had:  # trials launched side by side may all fail: lower K once for them
            self.executor.set_slots(device, had - 1)
            self.view.note(f"{device.label}: out of memory with {had} trials side by side; now {device.slots}")
        self.study.enqueue_trial(r.trial.params, user_attrs={"retry_of": r.number})
        self.view.note(f"trial {r.number}'s values will run again, with a {device.slots}-trial share")

    def _end(self, key, r: Running, outcome: Outcome) -> bool:
        """Record the outcome; False when max_failures consecutive failures must stop the sweep."""
        del self.running[key]
        outcome.facts["wall_s"] = round(time.monotonic() - r.started, 1)  # handed over to ended, as the sweep saw it
        tell(self.study, r.trial, outcome)
        frozen = self.storage.get_trial(r.trial._trial_id)
        # Killed from outside, for no fault of its values: they run again from its checkpoint, kept.
        again = outcome.reason.startswith(KILLED) and len(Retry.retry_history(frozen)) < self.s.max_failures
        if again:
            Retry(max_retry=self.s.max_failures, inherit_intermediate_values=True)(self.study, frozen)
        else:  # a paused trial keeps its own, for its continuation; the trial it continued needs its no more
            before = [] if continued_from(frozen) is None else [trial_dir(self.s.dir, continued_from(frozen))]
            remove_checkpoints([*before, *(trial_dir(self.s.dir, n) for n in Retry.retry_history(frozen)),
                                *([] if outcome.state == "paused" else [r.trial_dir])])
        self.view.end(r.number, outcome.state, outcome.value, outcome.steps, time.monotonic() - r.started,
                      counts(self.study, self.recheck), outcome.reason)
        if outcome.reason.startswith(OUT_OF_MEMORY):
            self._out_of_memory(r)
            return True  # the sweep's own packing, not the trial's values: not a failure streak
        if again:
            self.view.note(f"trial {r.number} was killed from outside the sweep: its values run again, from its "
                           "last checkpoint")
        self.failures = self.failures + 1 if outcome.state == "failed" else 0
        if self.failures >= self.s.max_failures:
            log = r.trial_dir / "trial.log"
            what = "trials failed in a row" if self.failures > 1 else "trial failed"
            print(f"error: {self.failures} {what} (sweep.max_failures={self.s.max_failures}); "
                  f"last: {outcome.reason}; log: {log}", file=sys.stderr)
            return False
        return True

    def _beat(self, r: Running) -> None:
        if time.monotonic() - r.last_beat >= self.s.heartbeat_interval:
            self.storage.record_heartbeat(r.trial._trial_id)
            r.last_beat = time.monotonic()

    def run(self) -> int:
        """0 once the study holds n_trials finished trials; EXIT_FAILURES after max_failures in a row."""
        LOOP_RUNNING.set()
        try:
            return self._run()
        finally:
            LOOP_RUNNING.clear()

    def _waiting_rechecks(self) -> int:
        return sum(is_recheck(t) for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _done(self, c: dict) -> bool:
        if self.running:
            return False
        if self.recheck:
            return pending(self.study.get_trials(deepcopy=False), self.s) == 0
        return c["finished"] >= self.s.n_trials and not asha.unfinished(self.study.get_trials(deepcopy=False), self.s)

    def _room(self, c: dict) -> bool:
        """Whether a free slot should start a trial now."""
        if self.recheck:
            return self._waiting_rechecks() > 0
        if self._promotable(ending=c["finished"] >= self.s.n_trials) is not None:
            return True
        if self.s.pruner == "asha" and any(continued_from(t) is not None for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.WAITING,))):  # queued behind a retry, say
            return True
        return c["finished"] + c["running"] < self.s.n_trials  # else the rest is running (maybe elsewhere)

    def _run(self) -> int:
        while True:
            if STOP.is_set():
                STOP.clear()
                raise KeyboardInterrupt
            fail_lost_trials(self.study)  # a dead sweep's RUNNING trials: failed, then retried
            for key, r in list(self.running.items()):
                self._beat(r)
                outcome = r.handle.poll()
                self.view.progress(r.number, r.handle.progress())
                if outcome is not None and not self._end(key, r, outcome):
                    self.stop_all("stopped after repeated failures")
                    return EXIT_FAILURES
            c = counts(self.study, self.recheck)
            if self._done(c):
                return 0
            if not self.running and not self._room(c) and not self.waiting_said:
                self.waiting_said = True
                self.view.note(f"waiting for {c['running']} trial(s) running elsewhere; a trial whose worker stopped "
                               f"is failed and retried after sweep.grace_period={self.s.grace_period} s")
            for slot in self._free_slots():
                if not self._room(c):
                    break
                if (current := self.data.changed()) is not None:
                    self.stop_all("stopped: the data changed")
                    print(f"error: {data_changed(self.s, self.data.digest, current)}", file=sys.stderr)
                    return EXIT_DATA_CHANGED
                self._start(slot, c)
                c = counts(self.study, self.recheck)
            STOP.wait(0.25 if self.running else self.s.heartbeat_interval)

    def stop_all(self, why: str) -> None:
        """Ctrl-C, SIGTERM, or a stop: every running trial is failed and its values run first next time.
        Their processes are stopped first: recording it may fail (a storage that takes no writes),
        and then the trials stay RUNNING and the rerun retries them from their heartbeat."""
        for r in self.running.values():
            r.handle.kill()
        for key, r in list(self.running.items()):
            try:
                r.trial.set_user_attr("fail_reason", why)
                r.trial.set_user_attr("steps", last_step(r.trial_dir))
                frozen = self.study.tell(r.trial, state=TrialState.FAIL)
                Retry(max_retry=self.s.max_failures, inherit_intermediate_values=True)(self.study, frozen)
                self.view.note(f"{why}: trial {r.number} will run again; rerun the same command to continue")
            except Exception:  # the storage is what failed: nothing more can be recorded now
                self.view.note(f"{why}: trial {r.number} could not be recorded as stopped; the rerun retries it")
            del self.running[key]
