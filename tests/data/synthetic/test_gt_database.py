"""The GT-paste database on a generated multi-sweep dataset (the real scene in ../shared/data
has keyframes only): a moving object's older sweeps are cut out with it."""
from __future__ import annotations

import numpy as np
import torch

from perception.data import NuScenesDataset
from perception.data.augment import GTDatabase, GTPaste
from perception.structures import Boxes3D


def test_database_cuts_a_moving_objects_older_sweeps_with_it(tiny_dataset, tiny_nusc):
    """With several sweeps a moving object's older returns trail behind its keyframe box. The
    database tests each point against the box where it stood when the point was measured, so a
    pasted moving object keeps its motion cue, and pasting clears the frame's own returns from
    the pasted object's trail as well."""
    ds = NuScenesDataset(tiny_dataset.root, "v1.0-mini", "mini_train", sweeps=6, radar_sweeps=3,
                         modalities=("lidar", "radar"), nusc=tiny_nusc)
    frames = [ds[i] for i in range(len(ds))]
    db = GTDatabase.build(iter(frames), min_lidar_points=5)
    lag = db.lidar_fields.index("time_lag")
    assert db.lidar_points[:, lag].max() > 0.2             # six sweeps: ~0.25 s of history
    speed = db.boxes[:, 7:9].norm(dim=1)
    moving = speed > 2.0
    assert moving.sum() >= 3
    trailing = 0
    for e in range(len(db)):
        pts = db.lidar_points[db.lidar_ptr[e]:db.lidar_ptr[e + 1]]
        box = Boxes3D(db.boxes[e:e + 1])
        assert box.points_in_boxes(pts, pts[:, lag]).all()
        outside_now = ~box.points_in_boxes(pts)[0]
        assert not outside_now[pts[:, lag] == 0].any()         # the keyframe sweep: in the box
        if moving[e]:
            trailing += int(outside_now.sum())
        elif speed[e] < 0.2:                                    # standing: the plain cut
            assert outside_now.sum() <= 0.05 * len(pts)
    assert trailing > 100, "the older sweeps of moving objects were left behind"

    # Pasting the moving entries into another frame: each lands with all its points, trail included,
    # and none of the frame's own points remain in the space the object swept through.
    target = frames[0]
    paste = GTPaste(db, {"car": 60, "truck": 20, "bus": 20, "motorcycle": 20, "bicycle": 20})
    out = paste(target, np.random.default_rng(0))
    n0 = len(target.gt)
    new = out.gt[n0:]
    assert len(new) > 0
    pts = out.lidar.points
    swept = new.boxes.points_in_boxes(pts, pts[:, lag])
    torch.testing.assert_close(swept.sum(1), new.num_lidar_pts)
