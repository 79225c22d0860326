"""The configs (Hydra's), shipped in a wheel as the package qlora_sweep_conf: see trainers/paths.py."""
