"""Where a sweep writes, said in one line when it cannot: the study's folder (trials, adapters,
checkpoints, logs) and a SQLite study file, checked before the study opens; a full disk or a
read-only file system met later is named by its path, not left to Optuna's "invalid data in the
commit"."""
import errno
import os
import shutil
from pathlib import Path

from trainers.paths import existing, write_refused
from trainers.settings import ConfigError

# errno values that mean "this disk will not take the write", whatever the file.
NO_ROOM = {errno.ENOSPC: "full", errno.EDQUOT: "over its quota", errno.EROFS: "read-only",
           errno.EACCES: "not writable", errno.EPERM: "not writable"}


def describe_error(e: OSError, path: Path | str | None = None) -> str | None:
    """'the disk holding <path> is full' for a write refused by the disk, else None."""
    what = NO_ROOM.get(getattr(e, "errno", None))
    if what is None:
        return None
    where = path or getattr(e, "filename", None) or "the study's folder"
    return f"{where}: the disk is {what}" if what in ("full", "over its quota") else f"{where} is {what} ({e.strerror})"


def state_of(path: Path) -> str | None:
    """After a write failed somewhere under path: 'full' or 'read-only' as the file system says, else None."""
    try:
        st = os.statvfs(existing(path))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < 2**20:
        return "full"
    return None


def unwritable(folder: Path, key: str, value, e: OSError) -> ConfigError:
    """The one line for a folder the disk refused (e: what it said)."""
    return ConfigError(key, value, f"cannot be written: {describe_error(e, existing(folder)) or e.strerror}")


def check_writable(folder: Path, key: str, value) -> None:
    """Write a file where folder is (or would be created), as a trial will; one line naming the key
    if the disk refuses. Nothing is left behind."""
    e = write_refused(folder)
    if e is not None:
        raise unwritable(folder, key, value, e)


def check_sqlite(path: Path, shown: str) -> None:
    """A SQLite study file must be writable, and so must its folder (SQLite writes a journal beside it)."""
    folder = path.parent
    if (path.exists() and not os.access(path, os.W_OK)) or state_of(path) == "read-only":
        raise ConfigError("sweep.storage", shown, f"the study database {path} is read-only: the study could not record "
                          "a trial (nothing was changed)")
    if path.exists():
        check_writable(folder, "sweep.storage", shown)


def check_room(folder: Path, needed: int, key: str, value) -> None:
    """Free space under folder for at least one trial's files (adapter, checkpoints, logs)."""
    free = shutil.disk_usage(existing(folder)).free
    if free < needed:
        raise ConfigError(key, value, f"has {free / 2**20:.0f} MiB free at {existing(folder)}; one trial writes about "
                          f"{needed / 2**20:.0f} MiB (adapter, optimizer checkpoints, logs): free some space or "
                          "choose another sweep.output_root")
