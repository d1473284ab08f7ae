from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from perception.config import (ConfigError, apply_overrides, config_from_dict, config_to_dict,
                               load_config, save_config)


@dataclass(frozen=True)
class Fusion:
    heads: int = 4
    dropout: float = 0.1
    kind: Literal["attention", "conv"] = "attention"


@dataclass(frozen=True)
class Model:
    fusion: Fusion = field(default_factory=Fusion)
    sensors: tuple[str, ...] = ("camera", "lidar")
    image_size: tuple[int, int] = (128, 352)


@dataclass(frozen=True)
class Experiment:
    name: str
    model: Model = field(default_factory=Model)
    lr: float = 1e-3
    checkpoint: Optional[str] = None


def test_defaults_and_nested_mapping(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("name: run1\nmodel:\n  fusion:\n    heads: 8\n  sensors: [radar]\nlr: 2e-4\n")
    cfg = load_config(path, Experiment)
    assert cfg.name == "run1"
    assert cfg.model.fusion.heads == 8
    assert cfg.model.fusion.dropout == 0.1  # untouched default
    assert cfg.model.sensors == ("radar",)  # lists become tuples for frozen configs
    assert cfg.lr == pytest.approx(2e-4)    # YAML reads "2e-4" as a string; it is a number here
    assert cfg.checkpoint is None


def test_one_level_of_base(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nmodel:\n  fusion:\n    heads: 2\n    dropout: 0.3\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel:\n  fusion:\n    heads: 6\n")
    cfg = load_config(tmp_path / "child.yaml", Experiment)
    assert cfg.name == "base"
    assert cfg.model.fusion.heads == 6
    assert cfg.model.fusion.dropout == 0.3


def test_two_levels_of_base_refused(tmp_path):
    (tmp_path / "root.yaml").write_text("name: r\n")
    (tmp_path / "mid.yaml").write_text("base: root.yaml\n")
    (tmp_path / "leaf.yaml").write_text("base: mid.yaml\n")
    with pytest.raises(ConfigError, match="only one level"):
        load_config(tmp_path / "leaf.yaml", Experiment)


def test_dotted_overrides():
    data = apply_overrides({"name": "x"}, ["model.fusion.heads=16", "model.sensors=[lidar, radar]",
                                           "checkpoint=ck.pt", "lr=0.5"])
    cfg = config_from_dict(Experiment, data)
    assert cfg.model.fusion.heads == 16
    assert cfg.model.sensors == ("lidar", "radar")
    assert cfg.checkpoint == "ck.pt"
    assert cfg.lr == 0.5


@pytest.mark.parametrize("text, match", [
    ("name: a\nmodel:\n  fusion:\n    head: 3\n", r"model\.fusion\.head"),
    ("name: a\nmodel:\n  fusion:\n    heads: three\n", r"model\.fusion\.heads: expected an integer"),
    ("name: a\nmodel:\n  fusion:\n    kind: mlp\n", r"model\.fusion\.kind.*not one of"),
    ("name: a\nmodel:\n  image_size: [1, 2, 3]\n", r"model\.image_size: expected 2 items"),
    ("model: {}\n", r"name: required field missing"),
    ("name: [unclosed\n", r"not valid YAML"),
])
def test_errors_name_file_and_key(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path, Experiment)
    assert "bad.yaml" in str(info.value)


def test_no_eval_of_strings(tmp_path):
    # A Python expression stays an inert string: safe_load never evaluates anything.
    path = tmp_path / "c.yaml"
    path.write_text("name: \"__import__('os').system('false')\"\n")
    assert load_config(path, Experiment).name == "__import__('os').system('false')"
    path.write_text("name: !!python/object/apply:os.system ['false']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, Experiment)


def test_save_round_trip(tmp_path):
    cfg = config_from_dict(Experiment, apply_overrides({"name": "r"}, ["model.fusion.heads=3"]))
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text()) == config_to_dict(cfg)
    assert load_config(out, Experiment) == cfg
