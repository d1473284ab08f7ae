"""What the checkpoint probes (tools/probe_depth.py, probe_pixels.py, probe_regression.py)
share: their command line, the model they load, the frames they read and the JSON they write."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def add_probe_arguments(ap: argparse.ArgumentParser) -> None:
    """CONFIG CHECKPOINT --dataroot [--version] [--split] [--frames] [--threads] [--json]."""
    ap.add_argument("config", type=Path)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--split", default="mini_val")
    ap.add_argument("--frames", type=int, default=0, help="an even spread of N samples (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")


def load_experiment(path: Path, overrides: Sequence[str] = ()):
    """The ExperimentConfig at ``path`` with ``KEY=VALUE`` overrides."""
    from perception.config import load_config
    from perception.models import ExperimentConfig

    return load_config(path, ExperimentConfig, list(overrides))


def load_model(cfg, checkpoint, threads: int):
    """The model of ``cfg`` with the checkpoint's weights, in eval mode, on ``threads`` threads."""
    from perception.engine.checkpoint import model_state
    from perception.models import build_model

    torch.set_num_threads(threads)
    model = build_model(cfg.model)
    model.load_state_dict(model_state(checkpoint))
    return model.eval()


def spread(n: int, frames: int) -> list[int]:
    """Sample indices: an even spread of ``frames`` of ``n`` (all when 0 or at least ``n``);
    neighbouring samples are near copies of each other."""
    picks = (np.linspace(0, n - 1, frames).round().astype(int) if 0 < frames < n
             else np.arange(n))
    return sorted(set(picks.tolist()))


def write_json(path: Path | None, result) -> None:
    """Write ``result`` as indented JSON to ``path`` (nothing when None)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
