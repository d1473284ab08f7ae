"""Per-stage latency (`perception bench --only end_to_end`) on the real scene, tiny model."""
from __future__ import annotations

import math

from perception.engine.latency import STAGES, stage_latency


def test_every_stage_of_the_fusion_model_is_timed(ekit, nusc):
    cfg = ekit.make_config(ekit.tiny_experiment())
    r = stage_latency(cfg, str(ekit.dataroot), "cpu", repeats=1)
    assert tuple(r["stages_ms"]) == STAGES
    assert all(v > 0 and math.isfinite(v) for v in r["stages_ms"].values())
    assert math.isclose(r["fps"], 1000.0 / r["total_ms"])
    assert r["first_call_ms"] > 0 and math.isfinite(r["first_call_ms"])
    assert r["lidar_points"] > 30_000 and r["radar_points"] > 0   # a real multi-sweep frame
    assert r["grid"] == [32, 32] and r["image_size"] == [32, 64] and not r["half"]
    assert r["parameters"] > 0


def test_stages_follow_the_sensors_of_the_model(ekit, nusc):
    data = ekit.tiny_experiment()
    data["model"]["modalities"] = ["lidar", "radar"]
    r = stage_latency(ekit.make_config(data), str(ekit.dataroot), "cpu", repeats=1)
    assert tuple(r["stages_ms"]) == ("lidar", "radar", "fusion", "head", "decode")
    assert r["image_size"] is None


def test_a_saved_frame_stands_in_for_the_dataset(ekit, nusc, tmp_path):
    # `bench --save-frames` here, `bench --frames` on a machine without the devkit (the GPU one).
    import pytest
    import torch

    from perception.bench import bench_end_to_end
    from perception.engine.latency import frame_batch

    cfg = ekit.make_config(ekit.tiny_experiment())
    fresh = frame_batch(cfg, str(ekit.dataroot))
    torch.save(fresh, tmp_path / "frame.pt")
    loaded = torch.load(tmp_path / "frame.pt", weights_only=False)
    assert torch.equal(loaded.lidar_points[0], fresh.lidar_points[0])
    assert torch.equal(loaded.images, fresh.images)
    r = stage_latency(cfg, None, "cpu", repeats=1, batch=loaded)
    assert tuple(r["stages_ms"]) == STAGES and r["lidar_points"] == len(fresh.lidar_points[0])
    with pytest.raises(FileNotFoundError, match="--save-frames"):
        bench_end_to_end("cpu", 1, str(tmp_path / "missing"))
