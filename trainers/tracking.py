"""One W&B run per trial: opened before training (transformers' callback reuses it), its
files kept inside the trial's output folder, finished with the final metrics in its summary."""
import functools
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from trainers.settings import TrackingSettings


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


SERVER_TIMEOUT_S = 5  # wandb.init itself waits ~90 s per trial, then fails it, when the server is out of reach


def server_problem() -> str | None:
    """Why the W&B server cannot be reached (one line), or None when it answers (any HTTP status)."""
    return _problem_at(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))


@functools.cache  # asked once per server and process: by each trial, and by the sweep before the study
def _problem_at(url: str) -> str | None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=SERVER_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"{url} did not answer within {SERVER_TIMEOUT_S} s ({getattr(reason, 'strerror', None) or reason})"
    return None


def resolve_mode(tracking: TrackingSettings) -> str:
    """online only when the user is logged in and the W&B server answers; otherwise offline,
    synced later by hand (fallback_note says why)."""
    if tracking.mode == "online" and (not _logged_in() or server_problem()):
        return "offline"
    return tracking.mode


def fallback_note(tracking: TrackingSettings) -> str | None:
    """The one line to say when tracking.mode=online runs offline because the server is out of reach."""
    if tracking.mode == "online" and _logged_in() and server_problem():
        return (f"W&B: {server_problem()}: runs are saved offline (upload them later with wandb sync; "
                "tracking.mode=offline skips this check)")
    return None


# One name per metric in a run: transformers' callback logs the eval loss as eval/loss, so the
# summary this project writes uses the same names, not a second eval_loss beside it.
METRIC_NAMES = {"eval_loss": "eval/loss", "price_mae": "eval/price_mae", "price_within_20": "eval/price_within_20"}


def wandb_names(metrics: dict) -> dict:
    return {METRIC_NAMES.get(k, k): v for k, v in metrics.items()}


def start_run(tracking: TrackingSettings, config: dict, output_dir: Path, cache_dir: Path, system_metadata: bool = True,
              run_id: str | None = None):
    """Open the trial's W&B run, or return None when tracking is disabled. system_metadata=False
    keeps W&B from recording this process's command line (a sweep's may hold a storage password).
    run_id: a run of this id is continued online (offline runs cannot be: syncing the newest one
    replaces the run). The config records the mode that happened (online falls back to offline)."""
    mode = resolve_mode(tracking)
    if mode == "disabled":
        return None
    if isinstance(config.get("tracking"), dict):
        config = {**config, "tracking": {**config["tracking"], "mode": mode}}
    # wandb-core writes caches and logs under ~/.cache unless told otherwise.
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        os.environ[var] = str((cache_dir / "wandb" / sub).resolve())
    os.environ["WANDB_PROJECT"] = tracking.project  # transformers' WandbCallback reads it
    import wandb

    output_dir.mkdir(parents=True, exist_ok=True)
    note = fallback_note(tracking)
    if note:
        print(note, flush=True)

    def init(mode: str):
        resume = {"id": run_id, **({"resume": "allow"} if mode == "online" else {})} if run_id else {}
        return wandb.init(project=tracking.project, entity=tracking.entity, group=tracking.group,
                          name=tracking.run_name, job_type=tracking.job_type, config=config,
                          dir=str(output_dir), mode=mode, reinit="finish_previous", **resume,
                          settings=wandb.Settings(quiet=True, silent=True, x_disable_meta=not system_metadata,
                                                  init_timeout=30, finish_timeout=tracking.finish_timeout_s,
                                                  finish_timeout_raises=True))

    try:
        return init(mode)
    except Exception as e:  # tracking never fails a trial: the server went away, a bad key, a full disk
        if mode != "online":
            print(f"W&B: the run could not start ({str(e).splitlines()[0][:200]}); training goes on untracked", flush=True)
            return None
        print(f"W&B: the online run could not start ({str(e).splitlines()[0][:200]}); saving it offline", flush=True)
        config = {**config, "tracking": {**config["tracking"], "mode": "offline"}} if isinstance(config.get("tracking"), dict) else config
        try:
            return init("offline")
        except Exception as e2:
            print(f"W&B: the offline run could not start either ({str(e2).splitlines()[0][:200]}); training goes on "
                  "untracked", flush=True)
            return None


def finish_run(run, summary: dict, say_offline: bool = True) -> None:
    """Write the summary and close the run; print how to upload it when it ran offline (unless the
    caller says so itself: the sweep's report names every run of the study in one wandb sync line)."""
    if run is None:
        return
    try:
        for key, value in wandb_names(summary).items():
            run.summary[key] = value
        state = run.summary.get("state")  # complete, pruned or failed: a tag, to filter runs by in W&B
        if state:
            run.tags = tuple(dict.fromkeys((*(run.tags or ()), state)))
        offline = run.settings.mode == "offline" or run.offline
        run_dir = Path(run.dir).parent
        run.finish()
    except TimeoutError:  # the server stopped answering mid-run; the run's record on disk is whole
        print(f"W&B: the server did not take the run's last data within tracking.finish_timeout_s="
              f"{run.settings.finish_timeout:g} s; the trial goes on, and the run is kept on disk: upload it with "
              f"wandb sync {run_dir}", flush=True)
        return
    except Exception as e:  # tracking never fails a trial whose training is done
        print(f"W&B: the run could not be closed ({str(e).splitlines()[0][:200]}); the trial's result stands", flush=True)
        return
    if offline and say_offline:
        print(f"W&B run saved offline; upload it with: wandb sync {run_dir}", flush=True)
