"""Configs: frozen dataclasses, YAML files that map onto them one to one, dotted overrides.

    cfg = load_config("configs/synthetic/world.yaml", SynthConfig, overrides=["duration_s=10"])
    save_config(cfg, work_dir / "config.yaml")      # every run saves what it resolved

Rules (they keep a config readable at a glance, see docs/config.md):
- YAML is read with ``yaml.safe_load`` only; nothing is ever evaluated.
- A file may name one ``base:`` file (relative to itself); the base may not have a base of its own.
- Unknown keys, wrong types and a missing required field are errors that name the file and the
  dotted key, never silently ignored.
"""
from perception.config.loader import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml_with_base,
    save_config,
)

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_yaml_with_base",
    "save_config",
]
