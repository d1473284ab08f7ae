"""Ground truth -> CenterPoint targets: per class group a Gaussian heatmap, and at each object's
centre cell the regression and attribute targets.

Regression code (10 channels, ``REG_FIELDS``), for a box centred at metric (x, y):
``u = (x - x_min) / cell``, ``v = (y - y_min) / cell``, centre cell ``(row, col) = (floor v,
floor u)``; ``dx = u - col``, ``dy = v - row`` in [0, 1); ``z`` metres; ``log l, log w, log h``;
``sin yaw, cos yaw`` (a continuous code: yaw itself jumps at +-pi), or for a class group whose
heading is only defined up to a half turn (``half_turn``: barriers, whose AOE the devkit scores
modulo pi) ``sin 2 yaw, cos 2 yaw``; ``vx, vy`` in units of ``VELOCITY_SCALE`` (5 m/s). NaN
velocities (the devkit cannot estimate them) get weight 0, never a made-up zero.

Why the half-turn code: a barrier looks the same turned round, and the world places it either
way, so (sin yaw, cos yaw) has two equally likely targets, (s, c) and (-s, -c); the L1 loss is
flat between them and the head regressed barriers 15-75 degrees short on the 24-scene synthetic
val set (docs/results.md, "Barriers: a heading code for what has no front"). Doubled, both
targets are one.

Every channel is of order 1. Velocity in m/s (a car: ~10) made the optimizer's fixed-size steps
take hundreds of iterations just to reach the scale of the targets, while the other channels
had long converged; in units of 5 m/s, a code weight of 1.0 is the 0.2 per m/s of CenterPoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from perception.structures.grid import BEVGrid
from perception.structures.instances import GroundTruth

REG_FIELDS = ("dx", "dy", "z", "log_l", "log_w", "log_h", "sin", "cos", "vx", "vy")
VELOCITY_SCALE = 5.0   # m/s per unit of the vx, vy codes


@dataclass
class GroupTargets:
    """Targets of one class group for a batch.

    Attributes:
        heatmap: (B, K_g, H, W) float in [0, 1], exactly 1 at object centre cells.
        index: (B, max_objects) int64 flat cell index ``row * W + col``.
        mask: (B, max_objects) bool, slot holds an object.
        regression: (B, max_objects, 10) float, ``REG_FIELDS`` (NaN-free).
        reg_valid: (B, max_objects, 10) bool, per channel (velocity false where unknown).
        attribute: (B, max_objects) int64 attribute index, -1 ignore.
        label: (B, max_objects) int64 class channel within the group.
    """

    heatmap: Tensor
    index: Tensor
    mask: Tensor
    regression: Tensor
    reg_valid: Tensor
    attribute: Tensor
    label: Tensor


def gaussian_radius(length: Tensor, width: Tensor, min_overlap: float) -> Tensor:
    """Largest centre displacement (same units as the sizes) at which a box of this footprint
    still overlaps the true one with IoU >= ``min_overlap``, taking the worst of the three ways
    (both corners inside, both outside, one of each) the displaced box can sit. (CenterNet's
    argument; each case is a quadratic in the radius.)"""
    h, w, o = length, width, min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * c1).clamp(min=0))) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 16 * c2).clamp(min=0))) / 2
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def encode_boxes(boxes: Tensor, grid: BEVGrid, *, half_turn: bool = False
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 9) boxes -> cells (N, 2) int64 (row, col), codes (N, 10), in-range mask (N,).
    ``half_turn``: the heading channels code twice the yaw (see the module)."""
    turns = 2.0 if half_turn else 1.0
    u = (boxes[:, 0] - grid.x_range[0]) / grid.cell_size
    v = (boxes[:, 1] - grid.y_range[0]) / grid.cell_size
    col, row = torch.floor(u), torch.floor(v)
    inside = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
    codes = torch.stack([
        u - col, v - row, boxes[:, 2],
        torch.log(boxes[:, 3].clamp(min=1e-3)), torch.log(boxes[:, 4].clamp(min=1e-3)),
        torch.log(boxes[:, 5].clamp(min=1e-3)),
        torch.sin(turns * boxes[:, 6]), torch.cos(turns * boxes[:, 6]),
        boxes[:, 7] / VELOCITY_SCALE, boxes[:, 8] / VELOCITY_SCALE,
    ], dim=1)
    return torch.stack([row, col], 1).long(), codes, inside


def decode_codes(cells: Tensor, codes: Tensor, grid: BEVGrid,
                 half_turn: bool | Tensor = False) -> Tensor:
    """Inverse of :func:`encode_boxes`: cells (N, 2) (row, col) + codes (N, 10) -> (N, 9) boxes.
    ``half_turn``: bool, or (N,) bool per row: the heading channels code twice the yaw (the yaw
    comes back in (-pi/2, pi/2])."""
    x = grid.x_range[0] + (cells[:, 1].to(codes.dtype) + codes[:, 0]) * grid.cell_size
    y = grid.y_range[0] + (cells[:, 0].to(codes.dtype) + codes[:, 1]) * grid.cell_size
    yaw = torch.atan2(codes[:, 6], codes[:, 7])
    if isinstance(half_turn, Tensor):
        yaw = torch.where(half_turn.to(yaw.device), yaw / 2, yaw)
    elif half_turn:
        yaw = yaw / 2
    return torch.stack([x, y, codes[:, 2], codes[:, 3].exp(), codes[:, 4].exp(),
                        codes[:, 5].exp(), yaw, codes[:, 8] * VELOCITY_SCALE,
                        codes[:, 9] * VELOCITY_SCALE], dim=1)


def draw_heatmap(cells: Tensor, labels: Tensor, radius: Tensor, num_classes: int,
                 shape: tuple[int, int]) -> Tensor:
    """Max of truncated Gaussians (sigma = (2r + 1) / 6, window |d| <= r per axis).

    Args:
        cells: (N, 2) int64 (row, col) centres; labels: (N,) channel; radius: (N,) int64 cells.
    Returns:
        (num_classes, H, W) float32, 1 exactly at each centre.
    """
    h, w = shape
    out = torch.zeros(num_classes, h * w, device=cells.device)
    if len(cells) == 0:
        return out.view(num_classes, h, w)
    rows = torch.arange(h, device=cells.device)
    cols = torch.arange(w, device=cells.device)
    # Separable: the 2D Gaussian is the outer product of two 1D ones, (N, H) x (N, W).
    dr = (rows[None] - cells[:, :1]).float()
    dc = (cols[None] - cells[:, 1:]).float()
    sigma = (2 * radius.float() + 1) / 6
    r = radius.float()[:, None]
    gr = torch.exp(-dr ** 2 / (2 * sigma[:, None] ** 2)) * (dr.abs() <= r)
    gc = torch.exp(-dc ** 2 / (2 * sigma[:, None] ** 2)) * (dc.abs() <= r)
    g = (gr[:, :, None] * gc[:, None, :]).reshape(len(cells), h * w)
    idx = labels[:, None].expand(-1, h * w)
    out.scatter_reduce_(0, idx, g, reduce="amax", include_self=True)
    return out.view(num_classes, h, w)


def half_turn_groups(class_groups: tuple[tuple[str, ...], ...],
                     half_turn: tuple[str, ...]) -> tuple[bool, ...]:
    """Per class group, whether its heading is coded by the half-turn code: its classes are all
    in ``half_turn``. A group with some in and some out raises ``ValueError`` (the channels are
    shared within a group)."""
    out = []
    for group in class_groups:
        inside = [c in half_turn for c in group]
        if any(inside) and not all(inside):
            raise ValueError(f"half_turn classes must fill their class group; group {group} "
                             f"mixes {[c for c in group if c in half_turn]} with the others")
        out.append(all(inside))
    return tuple(out)


def assign_targets(gts: list[GroundTruth], *, grid: BEVGrid, classes: tuple[str, ...],
                   class_groups: tuple[tuple[str, ...], ...], min_overlap: float,
                   min_radius: int, max_objects: int,
                   half_turn: tuple[bool, ...] | None = None) -> list[GroupTargets]:
    """Build the targets of every class group for a batch.

    Args:
        gts: B ground truths (boxes in the ego frame, labels index ``classes``).
        grid: the BEV raster (the head predicts at its resolution).
        classes: the model's class vocabulary; class_groups: names grouped per head.
        min_overlap, min_radius: heatmap radius (cells).
        max_objects: per frame and group; extra objects are dropped (a warning would flood logs
            at nuScenes density; pick it above the dataset's maximum).
        half_turn: per group, the half-turn heading code (``half_turn_groups``); None: none.
    Returns:
        one :class:`GroupTargets` per group.
    """
    dev = gts[0].boxes.device if gts else torch.device("cpu")
    b, (h, w) = len(gts), grid.shape
    out = []
    halves = half_turn if half_turn is not None else (False,) * len(class_groups)
    for group, half in zip(class_groups, halves):
        chan = {classes.index(c): k for k, c in enumerate(group)}
        heat = torch.zeros(b, len(group), h, w, device=dev)
        index = torch.zeros(b, max_objects, dtype=torch.int64, device=dev)
        mask = torch.zeros(b, max_objects, dtype=torch.bool, device=dev)
        reg = torch.zeros(b, max_objects, len(REG_FIELDS), device=dev)
        reg_valid = torch.zeros(b, max_objects, len(REG_FIELDS), dtype=torch.bool, device=dev)
        attr = torch.full((b, max_objects), -1, dtype=torch.int64, device=dev)
        label = torch.zeros(b, max_objects, dtype=torch.int64, device=dev)
        for i, gt in enumerate(gts):
            if gt is None:
                raise ValueError("assign_targets needs ground truth for every frame")
            sel = torch.zeros(len(gt), dtype=torch.bool, device=dev)
            for c in chan:
                sel |= gt.labels == c
            boxes = gt.boxes.tensor[sel].float()
            cells, codes, inside = encode_boxes(boxes, grid, half_turn=half)
            keep = torch.nonzero(inside).squeeze(1)[:max_objects]
            n = len(keep)
            if n == 0:
                continue
            cells, codes = cells[keep], codes[keep]
            labels = torch.tensor([chan[int(c)] for c in gt.labels[sel][keep].tolist()],
                                  dtype=torch.int64, device=dev)
            radius = gaussian_radius(boxes[keep, 3] / grid.cell_size,
                                     boxes[keep, 4] / grid.cell_size, min_overlap)
            radius = radius.floor().long().clamp(min=min_radius)
            heat[i] = draw_heatmap(cells, labels, radius, len(group), (h, w))
            index[i, :n] = cells[:, 0] * w + cells[:, 1]
            mask[i, :n] = True
            reg_valid[i, :n] = torch.isfinite(codes)
            reg[i, :n] = torch.nan_to_num(codes, nan=0.0, posinf=0.0, neginf=0.0)
            attr[i, :n] = gt.attributes[sel][keep]
            label[i, :n] = labels
        out.append(GroupTargets(heat, index, mask, reg, reg_valid, attr, label))
    return out
