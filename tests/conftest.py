"""Shared fixtures: the real embedded tiny model (built once, cached in artifacts/), W&B offline,
no hub access, and config overrides that keep every trial short and inside tmp_path."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ["WANDB_MODE"] = "offline"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

TINY_MODEL = ROOT / "artifacts" / "tiny-llama"
SYNTHETIC_DATA = ROOT / "artifacts" / "data" / "synthetic_prices.jsonl"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from trainers.tiny_model import ensure_tiny_model

    return ensure_tiny_model(TINY_MODEL)


@pytest.fixture(scope="session")
def synthetic_data() -> Path:
    from trainers.config import compose_config
    from trainers.data import ensure_embedded_data
    from trainers.settings import trial_settings

    data = trial_settings(compose_config([f"data.name_or_path={SYNTHETIC_DATA}"])).data
    ensure_embedded_data(data)
    return SYNTHETIC_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def short_trial(tiny_model, synthetic_data, cache_dir, tmp_path):
    """Overrides for a ~10 s trial (20 steps, eval every 10) on the tiny model, writing only under tmp_path."""
    return [
        f"model.name_or_path={tiny_model}", f"data.name_or_path={synthetic_data}",
        f"output_dir={tmp_path / 'run'}", f"cache_dir={cache_dir}", "tracking.mode=offline",
        "train.max_steps=20", "train.eval_steps=10", "train.logging_steps=10", "data.eval_size=16",
        "lora.r=8", "lora.alpha=16",
    ]
