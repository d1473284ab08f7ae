import math

import pytest
import torch

from perception.models.config import HeadConfig, ModelConfig
from perception.models.heads import (
    assign_targets,
    decode_codes,
    encode_boxes,
    gaussian_focal_loss,
    gaussian_radius,
    half_turn_groups,
)
from perception.models.heads.targets import VELOCITY_SCALE
from perception.structures import Boxes3D, GroundTruth
from perception.structures.grid import BEVGrid
from perception.structures.labels import DETECTION_CLASSES

GRID = BEVGrid(x_range=(-16.0, 16.0), y_range=(-16.0, 16.0), z_range=(-3.0, 1.0), cell_size=0.5,
               voxel_z=4.0)
GROUPS = (("car",), ("truck", "construction_vehicle"), ("bus", "trailer"), ("barrier",),
          ("motorcycle", "bicycle"), ("pedestrian", "traffic_cone"))


def _gt():
    boxes = torch.tensor([
        [3.3, -4.7, -0.9, 4.5, 1.9, 1.6, 0.3, 2.0, -1.0],        # car
        [-10.2, 7.9, -0.5, 10.0, 2.8, 3.5, -2.9, float("nan"), float("nan")],  # truck, v unknown
        [0.6, 0.6, -1.2, 0.7, 0.6, 1.7, math.pi - 0.01, 0.5, 0.2],   # pedestrian
        [0.1, 12.4, -1.4, 0.4, 0.4, 1.0, 0.0, 0.0, 0.0],           # traffic cone
        [40.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0],            # outside the grid
    ])
    labels = torch.tensor([0, 1, 5, 8, 0])
    attrs = torch.tensor([5, 6, 2, -1, 5])
    return GroundTruth(Boxes3D(boxes), labels, attributes=attrs)


def test_encode_decode_codes_round_trip():
    boxes = _gt().boxes.tensor[[0, 2, 3]]
    cells, codes, inside = encode_boxes(boxes, GRID)
    assert inside.all() and ((codes[:, :2] >= 0) & (codes[:, :2] < 1)).all()
    back = decode_codes(cells, codes, GRID)
    torch.testing.assert_close(back[:, :6], boxes[:, :6], atol=1e-5, rtol=1e-5)
    d_yaw = torch.remainder(back[:, 6] - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert d_yaw.abs().max() < 1e-5
    torch.testing.assert_close(back[:, 7:], boxes[:, 7:])
    # Velocity is coded in units of VELOCITY_SCALE m/s: the code channels stay of order 1.
    torch.testing.assert_close(codes[:, 8:], boxes[:, 7:9] / VELOCITY_SCALE)


def test_half_turn_code_is_one_target_for_a_box_and_its_turned_round_twin():
    """Barriers look the same turned round: with the half-turn code a yaw and the yaw + pi encode
    to the same codes, which decode to the yaw modulo pi; the plain code keeps them apart."""
    yaws = torch.tensor([0.3, 1.5, -1.2, math.pi / 2])
    boxes = torch.zeros(4, 9)
    boxes[:, 3:6] = torch.tensor([0.5, 2.5, 1.0])
    boxes[:, 6] = yaws
    turned = boxes.clone()
    turned[:, 6] = yaws + math.pi
    cells, codes, _ = encode_boxes(boxes, GRID, half_turn=True)
    _, codes_turned, _ = encode_boxes(turned, GRID, half_turn=True)
    torch.testing.assert_close(codes, codes_turned, atol=1e-6, rtol=0)
    back = decode_codes(cells, codes, GRID, half_turn=True)[:, 6]
    assert (back > -math.pi / 2 - 1e-6).all() and (back <= math.pi / 2 + 1e-6).all()
    d = torch.remainder(back - yaws + math.pi / 2, math.pi) - math.pi / 2
    assert d.abs().max() < 1e-5
    _, plain, _ = encode_boxes(boxes, GRID)
    _, plain_turned, _ = encode_boxes(turned, GRID)
    torch.testing.assert_close(plain[:, 6:8], -plain_turned[:, 6:8], atol=1e-6, rtol=0)
    # Per row: only the rows flagged decode as half turns.
    mixed = decode_codes(cells, plain, GRID, half_turn=torch.tensor([True, False, False, False]))
    assert mixed[0, 6] == pytest.approx(0.15, abs=1e-6)
    torch.testing.assert_close(mixed[1:, 6], yaws[1:], atol=1e-5, rtol=0)


def test_half_turn_classes_must_fill_their_group():
    assert half_turn_groups(GROUPS, ("barrier",)) == (False, False, False, True, False, False)
    assert half_turn_groups(GROUPS, ()) == (False,) * 6
    with pytest.raises(ValueError, match="mixes \\['traffic_cone'\\]"):
        half_turn_groups(GROUPS, ("traffic_cone",))
    ModelConfig(head=HeadConfig(half_turn=("barrier",)))
    with pytest.raises(ValueError, match="half_turn \\['tree'\\]"):
        ModelConfig(head=HeadConfig(half_turn=("tree",)))
    with pytest.raises(ValueError, match="fill their class group"):
        ModelConfig(head=HeadConfig(half_turn=("bus",)))


def test_perfect_half_turn_maps_decode_barriers_modulo_a_half_turn(kit):
    """A head with the half-turn code for barriers decodes ideal maps to each barrier's yaw modulo
    pi and every other box's full yaw (the per-group flag reaches the batched decoding)."""
    boxes = torch.tensor([
        [3.3, -4.7, -0.9, 4.5, 1.9, 1.6, -2.5, 2.0, -1.0],        # car, facing backwards-left
        [-6.0, 5.0, -1.0, 0.5, 2.5, 1.0, 2.0, 0.0, 0.0],          # barrier
        [6.0, 9.0, -1.0, 0.5, 2.5, 1.0, -1.4, 0.0, 0.0],          # barrier
    ])
    gt = GroundTruth(Boxes3D(boxes), torch.tensor([0, 9, 9]), attributes=torch.tensor([5, -1, -1]))
    head = kit.small_head(GRID, GROUPS, half_turn=("barrier",))
    det = head.decode(kit.ideal_outputs(gt, GRID, GROUPS, half_turn=head.half_turn))[0]
    det = det[torch.argsort(det.boxes.x)]
    ref = gt.boxes.tensor[torch.argsort(gt.boxes.x)]
    assert det.labels.tolist() == [9, 0, 9]
    d = torch.remainder(det.boxes.tensor[:, 6] - ref[:, 6] + math.pi / 2, math.pi) - math.pi / 2
    assert d.abs().max() < 1e-4
    assert det.boxes.tensor[1, 6] == pytest.approx(-2.5, abs=1e-4)     # the car: the full turn


def test_targets_heatmap_peaks_masks_and_nan_velocity():
    t = assign_targets([_gt()], grid=GRID, classes=DETECTION_CLASSES, class_groups=GROUPS,
                       min_overlap=0.1, min_radius=2, max_objects=16)
    car, truck, ped = t[0], t[1], t[5]
    assert int(car.mask.sum()) == 1  # the car outside the grid is dropped
    assert int(ped.mask.sum()) == 2 and ped.label[0, :2].tolist() == [0, 1]
    # Heatmap is exactly 1 at the centre cell and nowhere else for a lone object.
    r, c = int(car.index[0, 0]) // GRID.width, int(car.index[0, 0]) % GRID.width
    assert car.heatmap[0, 0, r, c] == 1 and int((car.heatmap == 1).sum()) == 1
    assert 0 < car.heatmap[0, 0, r, c + 1] < 1 and car.heatmap[0, 0, r, c + 10] == 0
    assert truck.reg_valid[0, 0, :8].all() and not truck.reg_valid[0, 0, 8:].any()
    assert torch.isfinite(truck.regression).all()
    assert car.attribute[0, 0] == 5 and ped.attribute[0, 1] == -1


def test_gaussian_radius_grows_with_size_and_shrinks_with_overlap():
    r = gaussian_radius(torch.tensor([2.0, 8.0]), torch.tensor([2.0, 8.0]), 0.1)
    assert r[1] > r[0] > 0
    assert gaussian_radius(torch.tensor(8.0), torch.tensor(8.0), 0.7) < r[1]


def test_perfect_maps_decode_back_to_the_ground_truth(kit):
    """Target encoding -> ideal head maps -> decode (top-k, NMS) gives the GT boxes back."""
    gt = _gt()
    head = kit.small_head(GRID, GROUPS)
    det = head.decode(kit.ideal_outputs(gt, GRID, GROUPS))[0]
    assert len(det) == 4
    inside = gt[torch.tensor([0, 1, 2, 3])]
    order = torch.argsort(det.labels * 100 + det.boxes.x)  # match by (label, x)
    ref = torch.argsort(inside.labels * 100 + inside.boxes.x)
    d, g = det[order], inside[ref]
    assert d.labels.tolist() == g.labels.tolist()
    torch.testing.assert_close(d.boxes.tensor[:, :6], g.boxes.tensor[:, :6], atol=1e-4, rtol=1e-4)
    known = torch.isfinite(g.boxes.tensor[:, 7])
    torch.testing.assert_close(d.boxes.tensor[known, 7:], g.boxes.tensor[known, 7:])
    # Cones carry no attribute; the others decode theirs.
    assert d.attributes.tolist() == g.attributes.tolist()
    assert (d.scores > 0.99).all()


def test_read_at_centres_gives_the_targets_back_from_perfect_maps_and_a_shift_from_others(kit):
    """The readout decodes the codes at each GT centre cell next to the box its targets encode:
    ideal regression maps read back the ground truth (unknown velocity NaN on the target side);
    a constant added to the vx code shows up as exactly that many m/s."""
    gt = _gt()
    head = kit.small_head(GRID, GROUPS)
    outs = kit.ideal_outputs(gt, GRID, GROUPS, vx_code_shift=0.2)           # +1 m/s in x everywhere
    ((labels, target, pred),) = head.read_at_centres(outs, [gt])
    assert sorted(labels.tolist()) == [0, 1, 5, 8]            # the box outside the grid is left out
    order = torch.argsort(labels)
    ref = gt.boxes.tensor[:4][torch.argsort(gt.labels[:4])]
    torch.testing.assert_close(target[order][:, :6], ref[:, :6], atol=1e-4, rtol=1e-4)
    truck = labels[order] == 1
    assert torch.isnan(target[order][truck, 7:]).all()         # unknown stays unknown
    torch.testing.assert_close(pred[:, :7], torch.nan_to_num(target[:, :7]), atol=1e-4, rtol=1e-4)
    known = ~truck[torch.argsort(order)]
    torch.testing.assert_close(pred[known, 7] - target[known, 7],
                               torch.full((int(known.sum()),), VELOCITY_SCALE * 0.2))


def test_gaussian_focal_loss_values():
    target = torch.tensor([1.0, 0.5, 0.0])
    logits = torch.tensor([0.0, 0.0, 0.0])
    loss, npos = gaussian_focal_loss(logits, target)
    # pos: -log(.5) * .5^2; neg (0.5): -log(.5) * .5^2 * .5^4; neg (0): -log(.5) * .5^2
    expect = math.log(2) * 0.25 * (1 + 0.5 ** 4 + 1)
    assert math.isclose(float(loss), expect, rel_tol=1e-5) and float(npos) == 1
    good, _ = gaussian_focal_loss(torch.tensor([8.0, -2.0, -8.0]), target)
    assert good < loss / 10


def test_head_loss_is_finite_with_nan_velocity_and_backpropagates(kit):
    head = kit.small_head(GRID, GROUPS).train()
    x = torch.randn(1, 8, *GRID.shape, requires_grad=True)
    losses = head.loss(head(x), [_gt()])
    assert set(losses) == {"loss_heatmap", "loss_regression", "loss_attribute"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _refine_by_definition(head, out, i, chan, cell, codes, labels):
    """``refine_codes`` spelled out, candidate by candidate and cell by cell: over the window of
    the class's half-width around the peak (inside the grid), the class's probabilities weigh
    each cell's metric centre (in cells, relative to the peak) and its sin and cos."""
    h, w = GRID.shape
    codes = codes.clone()
    reg = out.regression[i].float()
    for j in range(len(cell)):
        n = int(head.class_window[labels[j]])
        if n == 0:
            continue
        r0, c0 = int(cell[j]) // w, int(cell[j]) % w
        total = dx = dy = sin = cos = 0.0
        for r in range(r0 - n, r0 + n + 1):
            for c in range(c0 - n, c0 + n + 1):
                if not (0 <= r < h and 0 <= c < w):
                    continue
                p = float(out.heatmap[i, chan[j], r, c].float().sigmoid())
                total += p
                dx += p * (c - c0 + float(reg[0, r, c]))
                dy += p * (r - r0 + float(reg[1, r, c]))
                sin += p * float(reg[6, r, c])
                cos += p * float(reg[7, r, c])
        codes[j, 0], codes[j, 1], codes[j, 6], codes[j, 7] = dx / total, dy / total, sin, cos
    return codes


def _decode_by_definition(head, outputs):
    """The decoder spelled out: per frame and class group, the top-k 3x3 peaks above the score
    threshold, each centre and heading averaged over its class's window (where it has one),
    circle NMS per class (the plain reference), then all groups by score."""
    import torch.nn.functional as F

    from perception.ops.nms import circle_nms
    from perception.structures import Detections

    dets = []
    for i in range(outputs[0].heatmap.shape[0]):
        groups = []
        for g, out in enumerate(outputs):
            heat = out.heatmap[i].float().sigmoid()
            k, h, w = heat.shape
            heat = heat * (heat == F.max_pool2d(heat[None], 3, 1, 1)[0])
            s, flat = heat.reshape(-1).topk(min(head.top_k, k * h * w))
            above = s > head.score_threshold
            s, flat = s[above], flat[above]
            chan, cell = flat // (h * w), flat % (h * w)
            codes = out.regression[i].float().reshape(10, -1)[:, cell].T
            labels = torch.tensor([head.classes.index(c) for c in head.class_groups[g]])[chan]
            codes = _refine_by_definition(head, out, i, chan, cell, codes, labels)
            boxes = decode_codes(torch.stack([cell // w, cell % w], 1), codes, GRID)
            allowed = head.attr_mask[labels]
            attrs = out.attribute[i].float().reshape(8, -1)[:, cell].T \
                .masked_fill(~allowed, float("-inf")).argmax(1)
            attrs = torch.where(allowed.any(1), attrs, torch.full_like(attrs, -1))
            keep = (circle_nms(boxes[:, :2], s, labels, head.nms_radius[g], backend="reference")
                    if head.nms_radius[g] > 0 else torch.arange(len(s)))
            groups.append(Detections(Boxes3D(boxes[keep]), s[keep], labels[keep], attrs[keep]))
        d = Detections.cat(groups)
        order = torch.sort(d.scores, descending=True, stable=True).indices
        dets.append(d[order[:head.max_detections]])
    return dets


def _random_maps(seed=4, b=2):
    from perception.models.outputs import HeadOutput

    g = torch.Generator().manual_seed(seed)
    h, w = GRID.shape
    outputs = []
    for group in GROUPS:
        heat = torch.randn(b, len(group), h, w, generator=g) * 2.0 - 1.0
        heat[:, :, ::7, ::5] = 1.5     # equal scores, some of them peaks
        outputs.append(HeadOutput(heatmap=heat, regression=torch.randn(b, 10, h, w, generator=g),
                                  attribute=torch.randn(b, 8, h, w, generator=g)))
    return tuple(outputs)


@pytest.mark.cuda
def test_decode_on_cuda_equals_its_definition(kit):
    """The batched Triton NMS path of the decoder (all groups and frames as one batch of sets),
    with the window averaging of some classes."""
    from perception.models.outputs import HeadOutput

    head = kit.small_head(GRID, GROUPS, refine_window={"car": 0.5, "bus": 1.0})
    outputs = _random_maps(seed=7)
    on_gpu = tuple(HeadOutput(heatmap=o.heatmap.cuda(), regression=o.regression.cuda(),
                              attribute=o.attribute.cuda()) for o in outputs)
    got = head.cuda().decode(on_gpu)
    for d, e in zip(got, _decode_by_definition(head.cpu(), outputs)):
        assert len(d) == len(e) > 0
        torch.testing.assert_close(d.scores.cpu(), e.scores)
        assert d.labels.tolist() == e.labels.tolist()
        torch.testing.assert_close(d.boxes.tensor.cpu(), e.boxes.tensor, atol=1e-4, rtol=1e-4)


def test_decode_equals_its_definition_on_random_maps(kit):
    """Fixed-shape decoding (every group's top-k kept, survivors read once) gives what
    thresholding, NMS and sorting each group on its own give: noisy maps with many close peaks
    (NMS at work), equal scores, two frames, more survivors than max_detections."""
    head = kit.small_head(GRID, GROUPS)
    outputs = _random_maps()
    got, expect = head.decode(outputs), _decode_by_definition(head, outputs)
    assert len(got) == 2
    for d, e in zip(got, expect):
        assert len(d) == len(e) == head.max_detections
        torch.testing.assert_close(d.scores, e.scores, rtol=0, atol=0)
        assert d.labels.tolist() == e.labels.tolist()
        assert d.attributes.tolist() == e.attributes.tolist()
        torch.testing.assert_close(d.boxes.tensor, e.boxes.tensor)  # atan2 on other lengths: 1 ulp
    # A group without NMS (radius 0) keeps every peak above the threshold.
    head.nms_radius = (2.0, 0.0, 3.2, 1.0, 0.9, 0.4)
    got, expect = head.decode(outputs), _decode_by_definition(head, outputs)
    for d, e in zip(got, expect):
        assert d.labels.tolist() == e.labels.tolist()
        torch.testing.assert_close(d.boxes.tensor, e.boxes.tensor)
    head.nms_radius = (2.0, 3.5, 3.2, 1.0, 0.9, 0.4)
    # Fewer survivors than max_detections: a high threshold leaves a few per frame.
    head.score_threshold = 0.995
    got, expect = head.decode(outputs), _decode_by_definition(head, outputs)
    for d, e in zip(got, expect):
        assert 0 < len(d) == len(e) < head.max_detections
        torch.testing.assert_close(d.boxes.tensor, e.boxes.tensor)  # atan2 on other lengths: 1 ulp
        assert d.labels.tolist() == e.labels.tolist()


def test_window_decoding_equals_its_definition_on_random_maps(kit):
    """Centre and heading averaged over each class's window (``head.refine_window``): batched
    gathers over groups, channels, frames and the grid's edges give what the loop over each
    candidate's window gives; classes without a window decode exactly as before."""
    window = {"car": 0.5, "truck": 1.0, "trailer": 1.2, "pedestrian": 0.4, "bicycle": 1.5}
    head = kit.small_head(GRID, GROUPS, refine_window=window)
    assert head.class_window.tolist() == [
        {"car": 1, "truck": 2, "trailer": 2, "bicycle": 3}.get(c, 0) for c in DETECTION_CLASSES]
    outputs = _random_maps(seed=11)
    for nms in ((2.0, 3.5, 3.2, 1.0, 0.9, 0.4), (0.0,) * 6):
        head.nms_radius = nms
        got, expect = head.decode(outputs), _decode_by_definition(head, outputs)
        for d, e in zip(got, expect):
            assert len(d) == len(e) > 0
            torch.testing.assert_close(d.scores, e.scores, rtol=0, atol=0)
            assert d.labels.tolist() == e.labels.tolist()
            torch.testing.assert_close(d.boxes.tensor, e.boxes.tensor, atol=1e-4, rtol=1e-5)
    # Every survivor (no max_detections cut: a class that moved may keep other survivors).
    plain = kit.small_head(GRID, GROUPS)
    plain.max_detections = head.max_detections = 100_000
    head.nms_radius = plain.nms_radius
    for d, p in zip(head.decode(outputs), plain.decode(outputs)):
        for c in ("construction_vehicle", "bus", "barrier", "motorcycle", "traffic_cone"):
            k = DETECTION_CLASSES.index(c)
            torch.testing.assert_close(d.boxes.tensor[d.labels == k],
                                       p.boxes.tensor[p.labels == k], rtol=0, atol=0)
        # The classes with a window moved: the test would pass with the window ignored otherwise.
        car = DETECTION_CLASSES.index("car")
        assert not torch.equal(d.boxes.tensor[d.labels == car], p.boxes.tensor[p.labels == car])


def test_a_truck_whose_peak_lies_off_its_centre_gets_the_window_s_centre_and_heading(kit):
    """The case the window is for: a flat-topped truck heatmap whose peak lies a cell beside the
    centre, where the offsets stay within the peak cell and the heading points backwards, while
    the cells around it know the centre and the heading. The peak cell alone gives a box 0.25 m
    off and turned round; the window gives the truck (its own bad guess weighs a twentieth)."""
    from perception.models.outputs import HeadOutput

    h, w = GRID.shape
    yaw, x, y = 0.4, 2.3, -3.1                       # centre cell (row 25, col 36), offsets 0.6, 0.8
    row, col = int((y + 16.0) // 0.5), int((x + 16.0) // 0.5)
    heat = torch.full((1, 2, h, w), -8.0)
    reg = torch.zeros(1, 10, h, w)
    reg[0, 3:6] = torch.tensor([8.0, 2.5, 3.2]).log()[:, None, None]
    for r in range(row - 2, row + 3):
        for c in range(col - 2, col + 3):
            heat[0, 0, r, c] = 2.0 - 0.3 * max(abs(r - row), abs(c - col))
            # Every cell of the window points at the true centre and along the true heading.
            reg[0, 0, r, c] = (x + 16.0) / 0.5 - c
            reg[0, 1, r, c] = (y + 16.0) / 0.5 - r
            reg[0, 6, r, c], reg[0, 7, r, c] = math.sin(yaw), math.cos(yaw)
    peak = (row, col + 1)
    heat[0, 0, peak[0], peak[1]] = 2.5
    reg[0, 0, peak[0], peak[1]], reg[0, 1, peak[0], peak[1]] = 0.1, 0.8     # within its cell
    reg[0, 6, peak[0], peak[1]], reg[0, 7, peak[0], peak[1]] = -math.sin(yaw), -math.cos(yaw)
    empty = [HeadOutput(torch.full((1, len(g), h, w), -8.0), torch.zeros(1, 10, h, w),
                        torch.zeros(1, 8, h, w)) for g in GROUPS]
    empty[1] = HeadOutput(heat, reg, torch.zeros(1, 8, h, w))
    truck = DETECTION_CLASSES.index("truck")
    for window, centre_err, yaw_err in ((None, (0.24, 0.26), (3.1, 3.2)),
                                        ({"truck": 1.0}, (0.0, 0.02), (0.0, 0.01))):
        (det,) = kit.small_head(GRID, GROUPS, refine_window=window).decode(tuple(empty))
        assert det.labels.tolist() == [truck]
        b = det.boxes.tensor[0]
        err = math.hypot(float(b[0]) - x, float(b[1]) - y)
        turn = abs((float(b[6]) - yaw + math.pi) % (2 * math.pi) - math.pi)
        assert centre_err[0] <= err <= centre_err[1] and yaw_err[0] <= turn <= yaw_err[1], window


def test_refine_window_names_known_classes_with_non_negative_widths():
    with pytest.raises(ValueError, match="refine_window.*lorry"):
        ModelConfig(head=HeadConfig(refine_window={"lorry": 1.0}))
    with pytest.raises(ValueError, match="refine_window.*-1"):
        ModelConfig(head=HeadConfig(refine_window={"truck": -1.0}))
    assert ModelConfig(head=HeadConfig(refine_window={"truck": 1.6})).head.refine_window
