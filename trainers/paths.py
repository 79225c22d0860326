"""Where the project's own files live, whatever the working directory: its configs (conf/, which a
wheel ships as the qlora_sweep_conf package) and the demo's locally built model and data
(artifacts/ beside a clone's pyproject.toml; for an installed package, a cache folder, as
site-packages is not ours to write)."""
import os
from importlib.util import find_spec
from pathlib import Path

# Found, not imported: a folder of YAML for Hydra, wherever the installed package put it.
CONF_DIR = Path(find_spec("qlora_sweep_conf").submodule_search_locations[0]).resolve()
_CHECKOUT = Path(__file__).resolve().parent.parent
ARTIFACTS = (_CHECKOUT / "artifacts" if (_CHECKOUT / "pyproject.toml").is_file() else
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qlora-sweep")


def artifact(name: str) -> str:
    """${artifacts:tiny-llama} in a config: the demo's built files, wherever the project is."""
    return str(ARTIFACTS / name)


def local_or_hub(name_or_path: str) -> str:
    """A model folder as an absolute path (an adapter records the path its base was loaded from, and
    a relative one only loads from the same working directory); a hub id as it is."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def existing(path: Path) -> Path:
    """The path, or its nearest folder that exists: where a write under it lands."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_refused(folder: Path) -> OSError | None:
    """Why a file cannot be written where folder is (or would be created), or None; it writes one
    and removes it, and creates no folder."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=existing(folder), prefix=".write-check-"):
            pass
    except OSError as e:
        return e
    return None
