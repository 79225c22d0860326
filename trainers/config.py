"""Hydra's Compose API over the project's conf/: the one place a config is composed. Hydra's own
command line answers --help, --cfg and --info."""
import re
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainers.paths import CONF_DIR, artifact
from trainers.settings import ConfigError, first_line


def times(value, factor) -> float:
    """${times:${train.learning_rate},10}: a search range set relative to the train preset, so one
    space fits the tiny demo (2e-3) and an 8B model (1e-4). Rounded so 2e-3 x 0.1 prints as 0.0002."""
    try:
        return float(f"{float(value) * float(factor):.12g}")
    except (TypeError, ValueError):
        raise ValueError(f"times: {value!r} x {factor!r} needs two numbers") from None


if not OmegaConf.has_resolver("times"):
    OmegaConf.register_new_resolver("times", times)
if not OmegaConf.has_resolver("artifacts"):  # the demo's built model and data, wherever the project is
    OmegaConf.register_new_resolver("artifacts", artifact)


def check_group_choices(overrides: list[str]) -> None:
    """A config group (model=, data=, quant=...) takes one option's name: Hydra would merge a list of
    them silently, or fail deep inside on one that is not a name."""
    for override in overrides:
        key, eq, value = override.partition("=")
        group = key.lstrip("+")
        folder = CONF_DIR / group
        if not eq or group == "hydra" or "." in group or "/" in group or not folder.is_dir():
            continue
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if value not in options:
            raise ConfigError(group, value, f"a config group: name one of its options ({', '.join(options)})")


def refuse_sweep_keys(overrides: list[str]) -> None:
    """One trial alone reads no sweep.* or search.* key: sweep.n_trials=5 given to it was composed
    and ignored without a word, as if it had run five."""
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key.split(".")[0] in ("sweep", "search"):
            raise ConfigError(key, override.partition("=")[2], "a sweep's key; python -m trainers runs one trial and "
                              "reads no sweep.* or search.* key: drop it, or run the sweep (python -m sweeper)")


# Hydra's parser on an override its grammar does not take (its lexer's errors are handled apart).
GRAMMAR = re.compile(r"mismatched input|no viable alternative|extraneous input|missing .* at ")
# A URL's password (sweep.storage=postgresql://user:secret@host/db), never printed.
PASSWORD = re.compile(r"(://[^:/@\s']*:)[^@\s']*@")


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml plus Hydra overrides; a bad override becomes a one-line ConfigError."""
    check_group_choices(overrides)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        message = first_line(e)
        if "LexerNoViableAltException" in message:  # Hydra's override grammar did not take it
            message = ("Hydra cannot read this override: quote a value holding spaces or characters other than "
                       "ASCII letters, digits and -_./ (key='a value')")
            named = [o for o in overrides if o in first_line(e)]
        elif GRAMMAR.search(message):  # the same, found by the parser: '=' in a URL's query, a split value
            message += "; quote a value holding spaces, '=' or brackets as a whole (key='a=b' or key='[1, 2]')"
            named = [o for o in overrides if o == getattr(e, "override", None)]  # OverrideParseException's
        else:
            # The override Hydra quotes, before one whose key is only part of it (sweep.dir in 'sweep.direction').
            named = sorted((o for o in overrides if _key(o) in message), key=lambda o: f"'{_key(o)}'" not in message)
            hint = merge_hint(e)
            unknown = unknown_key_hint(named[0], overrides) if "is not in struct" in hint and named else ""
            message = unknown or message + hint
        value = named[0] if named else " ".join(overrides)
        raise ConfigError("override", PASSWORD.sub(r"\1***@", value), PASSWORD.sub(r"\1***@", message)) from None


def _key(override: str) -> str:
    return override.split("=")[0].lstrip("+~")


def unknown_key_hint(override: str, overrides: list[str]) -> str:
    """For a key its section lacks (Hydra: "Key 'lr' is not in struct"): the closest keys the section
    has, or all of them."""
    import difflib

    section, _, name = _key(override).rpartition(".")
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[o for o in overrides if o != override])
    except (HydraException, OmegaConfBaseException):
        return ""
    node = OmegaConf.select(cfg, section) if section else cfg
    if not isinstance(node, DictConfig) or name in node:
        return ""
    keys = sorted(str(k) for k in node.keys())
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.5)
    where = section or "the config"
    if close:
        return f"{where} has no key {name!r}: did you mean {' or '.join(close)}?"
    return f"{where} has no key {name!r}; its keys: {', '.join(keys)}"


def merge_hint(e: Exception) -> str:
    """Hydra says only "Error merging override ..."; its cause says why: a mapping given where the
    config holds a list, or the other way round."""
    cause = first_line(e.__cause__) if e.__cause__ is not None else ""
    if "Cannot merge DictConfig with ListConfig" in cause:
        return ": this key holds a list; write the value as one, e.g. [{...}]"
    if "Cannot merge ListConfig with DictConfig" in cause:
        return ": this key holds a mapping; write the value as one, e.g. {key: value}"
    return f": {cause}" if cause else ""


# Hydra's flags that print and stop; they never run a trial or a sweep.
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i"}


def wants_hydra_cli(argv: list[str]) -> bool:
    return any(a.split("=", 1)[0] in HYDRA_FLAGS for a in argv)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return f"qlora-sweep {installed('qlora-sweep')}"
    except PackageNotFoundError:
        return "qlora-sweep (not installed: run from its folder)"


def unknown_flag(argv: list[str], command: str) -> str | None:
    """The one-line refusal of a flag this command does not take (Hydra's lexer would otherwise
    report `LexerNoViableAltException: -m`), or None."""
    for a in argv:
        flag = a.split("=", 1)[0]
        if not flag.startswith("-") or flag in HYDRA_FLAGS or flag == "--version":
            continue
        if flag in ("-m", "--multirun"):
            many = ("a sweep is this command itself: its trials come from the search space (search=..., "
                    "sweep.n_trials=...), not from Hydra's multirun" if command.endswith("sweeper") else
                    "this command runs one trial; many, searched by Optuna, are make sweep")
            return f"{flag}: {many}; drop {flag}"
        return (f"{flag}: not an option of {command}, which takes Hydra overrides (key=value) and --help, "
                "--cfg job, --info, --version")
    return None


def hydra_cli(argv: list[str], command: str) -> int:
    """Hand --help, --cfg job, --info (with any overrides) to hydra.main, which prints and returns
    before its task function would run; nothing is written (no outputs/ or .hydra folder)."""
    import hydra

    sys.argv = [command, *argv]

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _print_only(cfg: DictConfig) -> None:  # not reached with the flags above
        raise SystemExit(f"{command}: nothing to show")

    _print_only()
    return 0


def answer_flags(argv: list[str], command: str) -> int | None:
    """--version, a flag this command does not take (one line, exit 2), or Hydra's own --help,
    --cfg, --info: the exit code once answered; None when argv is overrides to run."""
    if "--version" in argv:
        print(version())
        return 0
    refusal = unknown_flag(argv, command)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if wants_hydra_cli(argv):
        return hydra_cli(argv, command)
    return None
