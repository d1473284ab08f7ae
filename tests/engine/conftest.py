"""A tiny experiment on the real nuScenes scene-0916 (``../shared/data`` or
``$PERCEPTION_SHARED_DATA``; tests skip with a message where it is absent)."""
from __future__ import annotations

import pytest
import torch

from perception.config import config_from_dict
from perception.models.config import ExperimentConfig

from real_scene import DATAROOT, VERSION, require_scene

SPLIT = "mini_val"


def tiny_experiment(**train) -> dict:
    """Plain-data config: a ~30k-parameter model on a +-12.8 m grid, the scene as the training
    split, every kind of randomness on (augmentation, GT paste, CBGS, modality dropout), depth
    supervision of the cameras on."""
    return {
        "model": {
            "grid": {"x_range": [-12.8, 12.8], "y_range": [-12.8, 12.8], "z_range": [-3.0, 1.0],
                     "cell_size": 0.8, "voxel_z": 4.0},
            "camera": {"image_size": [32, 64], "stem_channels": 8, "stage_channels": [8, 16, 16],
                       "fpn_channels": 16, "feature_stride": 8, "depth_bins": [1.0, 17.0, 1.0],
                       "context_channels": 8, "out_channels": 16, "depth_weight": 1.0},
            "lidar": {"voxel_z": 0.5, "channels": [8, 16], "out_channels": 16, "max_voxels": 5000},
            "radar": {"hidden_channels": [16], "out_channels": 16},
            "fusion": {"channels": 16, "heads": 2, "context_blocks": 1, "modality_dropout": 0.3},
            "head": {"shared_channels": 16, "head_channels": 16, "max_objects": 64, "top_k": 50},
        },
        "data": {"root": str(DATAROOT), "version": VERSION, "train_split": SPLIT,
                 "val_split": SPLIT, "num_workers": 0, "cbgs": True,
                 "augment": {"paste": {"counts": {"car": 4, "bicycle": 3, "pedestrian": 3}}}},
        "train": {"max_iters": 4, "checkpoint_interval": 2, "log_interval": 1, "lr": 1e-3,
                  "warmup": 0.25, **train},
    }


def make_config(data: dict) -> ExperimentConfig:
    return config_from_dict(ExperimentConfig, data)


@pytest.fixture(scope="session")
def nusc():
    from nuscenes.nuscenes import NuScenes

    require_scene()
    return NuScenes(version=VERSION, dataroot=str(DATAROOT), verbose=False)


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI machine is shared: one intra-op thread is both faster there and deterministic.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class EngineKit:
    """The helpers above as a fixture (tests are imported with ``--import-mode=importlib`` and
    cannot import this conftest)."""

    dataroot, version, split = DATAROOT, VERSION, SPLIT
    tiny_experiment = staticmethod(tiny_experiment)
    make_config = staticmethod(make_config)


@pytest.fixture
def ekit() -> EngineKit:
    require_scene()
    return EngineKit()
