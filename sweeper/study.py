"""The Optuna study in real storage: opened or created (refusing a mismatched one), with the
sampler and pruner the settings name, heartbeats so trials of a dead sweep are retried."""
import copy
import json
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweeper.settings import SweepSettings, sqlite_file
from sweeper.search.strategy import build_pruner, build_sampler
from trainers.data import source_digest
from trainers.settings import ConfigError, first_line

DIRECTION = optuna.study.StudyDirection.MINIMIZE  # eval loss
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# Database connections one sweep process keeps: its loop, and the threads that serve its trial
# processes' reports (serve_trials). A node's trials share them, so a cluster's connections grow
# with its nodes, not its trials (bench/storage_scale.py: 320 trials opening the study themselves
# exhausted PostgreSQL's default 100 connections).
NODE_CONNECTIONS = 4


class StaleTrial:
    """A trial whose heartbeat stopped (its sweep process, or its node, is gone): retried, resuming
    from its last checkpoint with the eval losses it reported (Optuna's retry callback)."""

    def __init__(self, s: SweepSettings):
        self.grace_period = s.grace_period
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=s.max_failures, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial) -> None:
        trial.user_attrs.pop("fail_reason", None)  # a copy: the retry inherits the rest, not why this one failed
        self.retry(study, trial)

    def reason(self, trial) -> str:
        where = f" on node {trial.user_attrs['node']}" if trial.user_attrs.get("node") else ""
        return (f"lost: its heartbeat stopped for more than sweep.grace_period={self.grace_period} s (its sweep "
                f"process{where} died or lost the database); retried from its last checkpoint")


def fail_lost_trials(study: optuna.Study) -> None:
    """Optuna's fail_stale_trials, with a reason: Optuna leaves it empty, and a failed trial can no
    longer take one, so it is written while the trial is still RUNNING."""
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        try:
            if isinstance(callback, StaleTrial):
                storage.set_trial_user_attr(trial_id, "fail_reason", callback.reason(storage.get_trial(trial_id)))
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another sweep process failed it first, and retries it
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))


def check_study_exists(s: SweepSettings) -> None:
    """For the commands that only read a study (make report, follow, dashboard): a SQLite file that
    is not there is refused, not created empty (with its folder) by opening it."""
    if (path := sqlite_file(s.storage)) and not Path(path).exists():
        raise ConfigError("sweep.storage", s.storage_shown, f"no study {s.study_name!r} there yet (no such file): "
                          "run make sweep with the same ARGS first")


def build_storage(s: SweepSettings, connections: int | None = None):
    """RDB storage (SQLite, PostgreSQL, MySQL...) with heartbeats; a bad URL is one line.
    connections: at most this many database connections (the sweep process's own storage)."""
    try:
        s.dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives here, and the trials
    except OSError as e:  # make report/follow reach here without the sweep's disk checks
        from sweeper.disk import unwritable

        raise unwritable(s.dir, "sweep.dir", str(s.dir), e) from None
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since optuna 2.8; we rely on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pool = {} if connections is None else {"pool_size": connections, "max_overflow": 0}
            return RDBStorage(s.storage, engine_kwargs={"pool_pre_ping": True, **pool},
                              heartbeat_interval=s.heartbeat_interval,
                              grace_period=s.grace_period, heartbeat_stale_trial_callback=StaleTrial(s))
    except Exception as e:  # sqlalchemy's errors differ per driver; the user needs the first line
        raise ConfigError("sweep.storage", s.storage_shown, f"cannot be opened: {first_line(e)[:200]}"
                          f"{storage_hint(s.storage, e)}") from None


def storage_hint(url: str, e: Exception) -> str:
    """What to do when the URL names a database the installed drivers cannot reach."""
    text = first_line(e)
    if (path := sqlite_file(url)) and "unable to open database file" in text:
        folder = Path(path).expanduser().parent
        if folder.exists() and not folder.is_dir():
            return f"; {folder} is a file, not a folder: name a file in a folder"
        if not folder.is_dir():
            return f"; its folder {folder} does not exist: create it, or name a file in a folder that does"
    if url.startswith("mysql") and "DB access module" in text:
        return ("; MySQL and MariaDB need a driver this project does not install: pip install PyMySQL, then a "
                "mysql+pymysql://user@host/database URL")
    if "Can't load plugin" in text or "Could not parse" in text:
        return "; allowed: sqlite:///path/to/study.db, postgresql://user@host/database, mysql+pymysql://user@host/database"
    return ""


def _differences(stored: dict, current: dict) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [f"{k} ({json.dumps(stored.get(k))} → {json.dumps(current.get(k))})" for k in keys
            if stored.get(k) != current.get(k)]


def check_existing(storage, s: SweepSettings) -> str | None:
    """Refuse, before touching it, a study whose direction, configuration or data differs; returns
    the data's digest (check_data)."""
    try:
        study_id = storage.get_study_id_from_name(s.study_name)
    except KeyError:
        return source_digest(s.trial.data)
    directions = storage.get_study_directions(study_id)
    if directions != [DIRECTION]:
        names = ", ".join(d.name.lower() for d in directions)
        raise ConfigError("sweep.study_name", s.study_name, f"exists with direction {names}; this sweep minimizes "
                          "eval loss: choose another sweep.study_name")
    stored = stored_fingerprint(storage, study_id)
    if stored is None:
        refuse_foreign(storage, study_id, s)
    # A key added to the config since the study began, still at its default null, is no difference.
    elif diff := _differences(stored, s.fingerprint):
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise ConfigError("sweep.study_name", s.study_name, f"exists with a different search space or fixed "
                          f"config: {shown}. Restore them or choose another sweep.study_name")
    return check_data(storage, study_id, s)


# The search space and fixed config a study was made with, as a study *system* attribute: kept
# out of what optuna-dashboard and `optuna studies` show (a user attribute, it was a screenful of
# JSON above every study).
FINGERPRINT = "qlora_sweep:fingerprint"


# The rows' sha256 (trainers/data.py: source_digest): the fingerprint holds the data's path, and an
# edited file under the same path would rank new trials against old ones trained on other rows.
DATA_DIGEST = "qlora_sweep:data_sha256"


def check_data(storage, study_id: int, s: SweepSettings) -> str | None:
    """The data's digest now, after refusing a study begun on other rows."""
    stored = storage.get_study_system_attrs(study_id).get(DATA_DIGEST)
    current = source_digest(s.trial.data)
    if stored is not None and current is not None and stored != current:
        raise data_changed(s, stored, current)
    return current


def data_changed(s: SweepSettings, stored: str, current: str) -> ConfigError:
    return ConfigError("data.name_or_path", s.trial.data.name_or_path, f"has changed since study {s.study_name!r} "
                       f"began (sha256 {stored[:12]} → {current[:12]}), so its trials trained on other rows: restore "
                       "the data or choose another sweep.study_name")


def refuse_foreign(storage, study_id: int, s: SweepSettings) -> None:
    """For a study without a fingerprint: one with trials was made by Optuna itself or another tool,
    and its trials were taken for LoRA trials, its best crowned without an adapter."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    if trials:
        params = sorted({p for t in trials for p in t.params})
        raise ConfigError("sweep.study_name", s.study_name, f"exists with {len(trials)} trial(s) that qlora-sweep did "
                          f"not make (parameters: {', '.join(params[:5]) or 'none'}): choose another sweep.study_name")


def load_sweep_study(s: SweepSettings) -> optuna.Study:
    """The study the overrides name, for the commands that only read it (make report, follow)."""
    check_study_exists(s)
    storage = build_storage(s)
    try:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
    except KeyError:
        raise ConfigError("sweep.study_name", s.study_name, f"no such study in {s.storage_shown}: run make sweep "
                          "with the same ARGS first") from None
    if stored_fingerprint(storage, study._study_id) is None:
        refuse_foreign(storage, study._study_id, s)
    return study


def stored_fingerprint(storage, study_id: int) -> dict | None:
    """The study's fingerprint (a user attribute in studies made before 2026-12)."""
    stored = storage.get_study_system_attrs(study_id).get(FINGERPRINT)
    return stored if stored is not None else storage.get_study_user_attrs(study_id).get("fingerprint")


def open_study(s: SweepSettings, storage) -> optuna.Study:
    digest = check_existing(storage, s)
    study = optuna.create_study(study_name=s.study_name, storage=storage, sampler=build_sampler(s),
                                pruner=build_pruner(s), direction="minimize", load_if_exists=True)
    if stored_fingerprint(storage, study._study_id) is None:
        storage.set_study_system_attr(study._study_id, FINGERPRINT, s.fingerprint)
    if digest is not None and DATA_DIGEST not in storage.get_study_system_attrs(study._study_id):  # older studies too
        storage.set_study_system_attr(study._study_id, DATA_DIGEST, digest)
    if study.metric_names is None:  # optuna-dashboard and the CLI call the value this, not "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([s.objective])
    for params in s.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    return study


def serve_trials(study: optuna.Study) -> str:
    """Serve the study's storage to this machine's trial processes through Optuna's gRPC storage
    proxy (127.0.0.1 only, a thread of this process); returns the address they open it at. Their
    reports and pruner questions then use this process's few connections, not one pool each."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket() as sock:  # a free port; the proxy's own API takes a number
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        threading.Thread(target=optuna.storages.run_grpc_proxy_server, args=(study._storage,), daemon=True,
                         kwargs={"host": "127.0.0.1", "port": port,
                                 "thread_pool": ThreadPoolExecutor(NODE_CONNECTIONS - 1)}).start()
        optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(timeout=30)
    return f"grpc://127.0.0.1:{port}"


def trial_storage(address: str):
    """What a trial process opens the study with: its sweep process's proxy (grpc://host:port), or
    a storage URL."""
    if not address.startswith("grpc://"):
        return address
    host, port = address.removeprefix("grpc://").rsplit(":", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.GrpcStorageProxy(host=host, port=int(port))


def storage_problem(e: BaseException, s: SweepSettings) -> str | None:
    """One line for a study storage that stopped taking writes mid-sweep (a full disk, a read-only
    file or file system, a database gone), or None for any other error. Optuna's own words for
    it are "invalid data in the commit, e.g. exceeding max length", whatever the cause."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    from sweeper.disk import state_of

    if not isinstance(e, (optuna.exceptions.StorageInternalError, SQLAlchemyError)):
        return None
    cause = e
    while isinstance(cause, optuna.exceptions.StorageInternalError) and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    said = first_line(getattr(cause, "orig", None) or cause)[:200]
    path = sqlite_file(s.storage)
    if path:
        state = state_of(path)
        if state is not None or isinstance(cause, OperationalError):
            return (f"the study database {path} can no longer be written" + (f": its disk is {state}" if state else "")
                    + f" ({said}); trials still running were stopped; free the disk or make it writable, then rerun "
                    "the same command to continue")
    return f"the study storage {s.storage_shown} failed ({said}); rerun the same command to continue"


def counts(study: optuna.Study, recheck: bool = False) -> dict:
    """The search's trials by state (what sweep.n_trials counts: asha's continuations left out), or
    with recheck=True the re-check's."""
    from sweeper.recheck import is_recheck
    from sweeper.search.sampler import CONTINUED_FROM

    trials = [t for t in study.get_trials(deepcopy=False)
              if is_recheck(t) == recheck and CONTINUED_FROM not in t.user_attrs]
    by_state = {state: sum(t.state == state for t in trials) for state in TrialState}
    paused = sum(t.state == TrialState.PRUNED and "paused_at" in t.user_attrs for t in trials)  # asha's
    return {"complete": by_state[TrialState.COMPLETE], "pruned": by_state[TrialState.PRUNED] - paused, "paused": paused,
            "failed": by_state[TrialState.FAIL], "running": by_state[TrialState.RUNNING],
            "finished": by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]}
