"""Ground truth -> CenterPoint targets: per class group a Gaussian heatmap, and at each object's
centre cell the regression and attribute targets.

With ``regression_radius`` r > 0 the regression is also supervised at the cells up to r away
from the centre (a (2r+1)^2 window), each coding the same box relative to itself (its own dx, dy,
outside [0, 1) off the centre) and weighted by the object's heatmap Gaussian there, the weights
of an object summing to 1 (TTFNet's "more training samples from each box": the same loss per
object, spread over more cells, so the regression sees several samples per object and a step;
the decoder still reads the peak cell). A cell within reach of two objects of a group codes the
one whose Gaussian is higher there. r = 0 is CenterPoint: the centre cell only.

Regression code (10 channels, ``REG_FIELDS``), for a box centred at metric (x, y):
``u = (x - x_min) / cell``, ``v = (y - y_min) / cell``, centre cell ``(row, col) = (floor v,
floor u)``; ``dx = u - col``, ``dy = v - row`` in [0, 1); ``z`` metres; ``log l, log w, log h``;
``sin yaw, cos yaw`` (a continuous code: yaw itself jumps at +-pi); ``vx, vy`` in units of
``VELOCITY_SCALE`` (5 m/s). NaN velocities (the devkit cannot estimate them) get weight 0, never a
made-up zero.

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
        index: (B, S) int64 flat cell index ``row * W + col`` of each supervised cell;
            S = max_objects * (2r + 1)^2, an object's centre first.
        mask: (B, S) bool, slot holds a supervised cell.
        centre: (B, S) bool, the slot is an object's centre cell (one per object).
        weight: (B, S) float regression weight (1 at the centre when r = 0; an object's sum 1).
        regression: (B, S, 10) float, ``REG_FIELDS`` relative to the slot's cell (NaN-free).
        reg_valid: (B, S, 10) bool, per channel (velocity false where unknown).
        attribute: (B, S) int64 attribute index, -1 ignore (and off the centre).
        label: (B, S) int64 class channel within the group.
    """

    heatmap: Tensor
    index: Tensor
    mask: Tensor
    centre: Tensor
    weight: Tensor
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


def encode_boxes(boxes: Tensor, grid: BEVGrid) -> tuple[Tensor, Tensor, Tensor]:
    """(N, 9) boxes -> cells (N, 2) int64 (row, col), codes (N, 10), in-range mask (N,)."""
    u = (boxes[:, 0] - grid.x_range[0]) / grid.cell_size
    v = (boxes[:, 1] - grid.y_range[0]) / grid.cell_size
    col, row = torch.floor(u), torch.floor(v)
    inside = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
    codes = torch.stack([
        u - col, v - row, boxes[:, 2],
        torch.log(boxes[:, 3].clamp(min=1e-3)), torch.log(boxes[:, 4].clamp(min=1e-3)),
        torch.log(boxes[:, 5].clamp(min=1e-3)),
        torch.sin(boxes[:, 6]), torch.cos(boxes[:, 6]),
        boxes[:, 7] / VELOCITY_SCALE, boxes[:, 8] / VELOCITY_SCALE,
    ], dim=1)
    return torch.stack([row, col], 1).long(), codes, inside


def decode_codes(cells: Tensor, codes: Tensor, grid: BEVGrid) -> Tensor:
    """Inverse of :func:`encode_boxes`: cells (N, 2) (row, col) + codes (N, 10) -> (N, 9) boxes."""
    x = grid.x_range[0] + (cells[:, 1].to(codes.dtype) + codes[:, 0]) * grid.cell_size
    y = grid.y_range[0] + (cells[:, 0].to(codes.dtype) + codes[:, 1]) * grid.cell_size
    yaw = torch.atan2(codes[:, 6], codes[:, 7])
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


def _window(cells: Tensor, radius: Tensor, r: int, shape: tuple[int, int]):
    """The (2r+1)^2 cells around each centre, centre first: rows, cols (N, K) int64, Gaussian
    weight (N, K) (the heatmap's sigma; 0 outside the grid)."""
    h, w = shape
    d = torch.arange(-r, r + 1, device=cells.device)
    dr, dc = torch.meshgrid(d, d, indexing="ij")
    dr, dc = dr.reshape(-1), dc.reshape(-1)
    order = torch.argsort((dr.abs() + dc.abs()) * 100 + (dr + r) * (2 * r + 1) + dc + r)
    dr, dc = dr[order], dc[order]                        # (0, 0) first
    rows, cols = cells[:, :1] + dr, cells[:, 1:] + dc
    sigma = (2 * radius.float() + 1) / 6
    g = torch.exp(-(dr ** 2 + dc ** 2).float()[None] / (2 * sigma[:, None] ** 2))
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return rows, cols, g * inside, dr, dc


def assign_targets(gts: list[GroundTruth], *, grid: BEVGrid, classes: tuple[str, ...],
                   class_groups: tuple[tuple[str, ...], ...], min_overlap: float,
                   min_radius: int, max_objects: int, regression_radius: int = 0
                   ) -> list[GroupTargets]:
    """Build the targets of every class group for a batch.

    Args:
        gts: B ground truths (boxes in the ego frame, labels index ``classes``).
        grid: the BEV raster (the head predicts at its resolution).
        classes: the model's class vocabulary; class_groups: names grouped per head.
        min_overlap, min_radius: heatmap radius (cells).
        max_objects: per frame and group; extra objects are dropped (a warning would flood logs
            at nuScenes density; pick it above the dataset's maximum).
        regression_radius: r, cells around the centre also supervised (module docstring).
    Returns:
        one :class:`GroupTargets` per group.
    """
    dev = gts[0].boxes.device if gts else torch.device("cpu")
    b, (h, w) = len(gts), grid.shape
    k = (2 * regression_radius + 1) ** 2
    slots = max_objects * k
    out = []
    for group in class_groups:
        chan = {classes.index(c): j for j, c in enumerate(group)}
        heat = torch.zeros(b, len(group), h, w, device=dev)
        index = torch.zeros(b, slots, dtype=torch.int64, device=dev)
        mask = torch.zeros(b, slots, dtype=torch.bool, device=dev)
        centre = torch.zeros(b, slots, dtype=torch.bool, device=dev)
        weight = torch.zeros(b, slots, device=dev)
        reg = torch.zeros(b, slots, len(REG_FIELDS), device=dev)
        reg_valid = torch.zeros(b, slots, len(REG_FIELDS), dtype=torch.bool, device=dev)
        attr = torch.full((b, slots), -1, dtype=torch.int64, device=dev)
        label = torch.zeros(b, slots, dtype=torch.int64, device=dev)
        for i, gt in enumerate(gts):
            if gt is None:
                raise ValueError("assign_targets needs ground truth for every frame")
            sel = torch.zeros(len(gt), dtype=torch.bool, device=dev)
            for c in chan:
                sel |= gt.labels == c
            boxes = gt.boxes.tensor[sel].float()
            cells, codes, inside = encode_boxes(boxes, grid)
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
            rows, cols, g, dr, dc = _window(cells, radius, regression_radius, (h, w))
            flat = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)            # (n, K)
            # A cell goes to the object whose Gaussian is highest there (earlier object on ties);
            # an object's own centre always stays its own.
            key = g - 1e-6 * torch.arange(n, device=dev)[:, None]
            best = torch.full((h * w,), -1.0, device=dev).scatter_reduce(
                0, flat.reshape(-1), key.reshape(-1), reduce="amax")
            own = (g > 0) & (key >= best[flat])
            own[:, 0] = True
            wt = torch.where(own, g, torch.zeros_like(g))
            wt = wt / wt.sum(1, keepdim=True)
            cell_codes = codes[:, None, :].repeat(1, k, 1)                 # (n, K, 10)
            cell_codes[..., 0] -= dc.to(codes.dtype)
            cell_codes[..., 1] -= dr.to(codes.dtype)
            m = own.reshape(-1)
            s_n = int(m.sum())
            index[i, :s_n] = flat.reshape(-1)[m]
            mask[i, :s_n] = True
            is_centre = torch.zeros(n, k, dtype=torch.bool, device=dev)
            is_centre[:, 0] = True
            centre[i, :s_n] = is_centre.reshape(-1)[m]
            weight[i, :s_n] = wt.reshape(-1)[m]
            cc = cell_codes.reshape(n * k, -1)[m]
            reg_valid[i, :s_n] = torch.isfinite(cc)
            reg[i, :s_n] = torch.nan_to_num(cc, nan=0.0, posinf=0.0, neginf=0.0)
            a = torch.full((n, k), -1, dtype=torch.int64, device=dev)
            a[:, 0] = gt.attributes[sel][keep]
            attr[i, :s_n] = a.reshape(-1)[m]
            label[i, :s_n] = labels[:, None].expand(n, k).reshape(-1)[m]
        out.append(GroupTargets(heat, index, mask, centre, weight, reg, reg_valid, attr, label))
    return out
