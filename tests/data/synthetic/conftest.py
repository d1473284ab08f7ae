"""Shared fixtures of the synthetic-world tests: tiny generated datasets, built once per session.

TINY: 2 scenes (one mini_train, one mini_val) x 2 s (4 samples each), 320 x 180 images, 2
workers. The datasets are generated lazily: a test run that needs none of them pays nothing.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from perception.data.synthetic.generate import SynthConfig, generate

TINY = SynthConfig(version="v1.0-mini", seed=7, scenes=2, duration_s=2.0, image_width=320,
                   image_height=180, workers=2, jpeg_quality=85)


def _build(tmp_path_factory, name: str, config: SynthConfig) -> SimpleNamespace:
    root = tmp_path_factory.mktemp(name)
    summary = generate(root, config, verbose=False)
    return SimpleNamespace(root=str(root), config=config, summary=summary)


def _load(ds: SimpleNamespace):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=ds.config.version, dataroot=ds.root, verbose=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> SimpleNamespace:
    """The TINY dataset, generated in parallel (workers=2): .root, .config, .summary."""
    return _build(tmp_path_factory, "synth_tiny", TINY)


@pytest.fixture(scope="session")
def tiny_nusc(tiny_dataset):
    """The devkit's NuScenes on the TINY dataset."""
    return _load(tiny_dataset)


@pytest.fixture(scope="session")
def tiny_serial(tmp_path_factory) -> SimpleNamespace:
    """TINY again with workers=1: must be byte-identical to ``tiny_dataset``."""
    return _build(tmp_path_factory, "synth_tiny_serial", dataclasses.replace(TINY, workers=1))


@pytest.fixture(scope="session")
def tiny_other_seed(tmp_path_factory) -> SimpleNamespace:
    """TINY with another seed and one scene (mini_val): different worlds, calibration, timing."""
    return _build(tmp_path_factory, "synth_tiny_seed8", dataclasses.replace(TINY, seed=8, scenes=1))


@pytest.fixture(scope="session")
def tiny_other_seed_nusc(tiny_other_seed):
    return _load(tiny_other_seed)


@pytest.fixture(scope="session")
def tiny_keyframes_only(tmp_path_factory) -> SimpleNamespace:
    """TINY with sweeps=False (keyframe files only)."""
    return _build(tmp_path_factory, "synth_tiny_kf", dataclasses.replace(TINY, sweeps=False))
