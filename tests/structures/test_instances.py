import pytest
import torch

from perception.structures import (
    ATTRIBUTE_NAMES,
    DETECTION_CLASSES,
    Boxes3D,
    Detections,
    GroundTruth,
)


def boxes(n):
    t = torch.arange(n * 9, dtype=torch.float32).reshape(n, 9)
    return Boxes3D(t)


def test_vocabularies_match_devkit():
    constants = pytest.importorskip("nuscenes.eval.detection.constants")
    assert list(DETECTION_CLASSES) == constants.DETECTION_NAMES
    assert list(ATTRIBUTE_NAMES) == constants.ATTRIBUTE_NAMES


def test_detections_indexing_and_cat():
    d = Detections(boxes(5), torch.linspace(0, 1, 5), torch.tensor([0, 1, 2, 3, 4]),
                   torch.tensor([-1, 0, 1, 2, 3]))
    assert len(d) == 5
    top = d[d.scores > 0.5]
    assert len(top) == 2 and top.labels.tolist() == [3, 4] and top.attributes.tolist() == [2, 3]
    assert torch.equal(top.boxes.tensor, d.boxes.tensor[3:])
    one = d[1]
    assert len(one) == 1 and one.labels.tolist() == [1]
    assert d[-1].labels.tolist() == [4]
    assert d[[4, 0]].labels.tolist() == [4, 0]
    both = Detections.cat([d[:2], d[2:]])
    assert torch.equal(both.labels, d.labels) and torch.equal(both.boxes.tensor, d.boxes.tensor)
    assert d.to("meta").scores.device.type == "meta"
    with pytest.raises(ValueError):
        Detections(boxes(3), torch.zeros(2), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError):
        Detections(boxes(3), torch.zeros(3), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(IndexError):
        d[5]


def test_ground_truth_fields_follow_indexing():
    gt = GroundTruth(
        boxes(4), labels=torch.tensor([0, 5, 5, 9]), attributes=torch.tensor([6, 2, -1, -1]),
        num_lidar_pts=torch.tensor([10, 0, 3, 1]), num_radar_pts=torch.tensor([1, 0, 0, 2]),
        visibility=torch.tensor([4, 1, 2, 3]), instance_tokens=["a", "b", "c", "d"],
        annotation_tokens=["A", "B", "C", "D"],
    )
    sub = gt[gt.labels == 5]
    assert sub.instance_tokens == ["b", "c"] and sub.annotation_tokens == ["B", "C"]
    assert sub.visibility.tolist() == [1, 2] and sub.num_lidar_pts.tolist() == [0, 3]
    assert gt[torch.tensor([3, 0])].instance_tokens == ["d", "a"]
    assert gt[1:3].instance_tokens == ["b", "c"]
    assert gt[-1].instance_tokens == ["d"]
    # Defaults: unknown attributes / counts / visibility, empty tokens.
    bare = GroundTruth(boxes(2), labels=[1, 2])
    assert bare.attributes.tolist() == [-1, -1] and bare.visibility.tolist() == [0, 0]
    assert bare.instance_tokens == ["", ""]
    assert len(GroundTruth.empty()) == 0 and len(GroundTruth.empty()[:0]) == 0
    with pytest.raises(ValueError):
        GroundTruth(boxes(2), labels=[1, 2], instance_tokens=["x"])
    moved = gt.to("meta")
    assert moved.labels.device.type == "meta" and moved.instance_tokens == gt.instance_tokens
