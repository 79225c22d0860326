"""Hydra's Compose API over the project's conf/: the one place a config is composed."""
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from trainers.settings import ConfigError, first_line

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml plus Hydra overrides; a bad override becomes a one-line ConfigError."""
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        message = first_line(e)
        named = [o for o in overrides if o.split("=")[0].lstrip("+~") in message]
        raise ConfigError("override", named[0] if named else " ".join(overrides), message) from None
