"""Flip test-time augmentation: run the detector on mirrored copies of a batch and average the
head maps, mapped back to the original frame, before decoding (CenterPoint's "double flip").

A flip is a mirror of the BEV scene: ``"x"`` (x -> -x), ``"y"`` (y -> -y) or ``"xy"`` (both, a
180 degree turn). Every sensor moves with it exactly as in training's global augmentation
(``perception.data.augment``): point positions and radar velocities are mirrored, cameras get
mirrored extrinsics, images are untouched. On a grid symmetric about the ego origin the mirrored
scene lands on mirrored cells, so each map is flipped back along its axes and its channels
re-expressed in the original frame:

- heatmap and attribute logits: only the cell moves;
- regression (``REG_FIELDS``): the in-cell offset along a mirrored axis becomes ``1 - d`` (the
  centre's cell coordinate ``u`` becomes ``W - u``), a mirror of x turns yaw into ``pi - yaw``
  (cos changes sign), a mirror of y into ``-yaw`` (sin changes sign), and the velocity component
  along a mirrored axis changes sign; z and the sizes stay.

The merged maps are the mean over the views of the heatmap probabilities (returned as logits),
the regression codes and the attribute logits.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

from perception.data.augment import bev_matrix, move_points, transform_boxes
from perception.models.config import check_flips
from perception.models.heads.targets import REG_FIELDS
from perception.models.outputs import HeadOutput
from perception.structures.batch import Batch

_DX, _DY = REG_FIELDS.index("dx"), REG_FIELDS.index("dy")
_SIN, _COS = REG_FIELDS.index("sin"), REG_FIELDS.index("cos")
_VX, _VY = REG_FIELDS.index("vx"), REG_FIELDS.index("vy")


def flip_batch(batch: Batch, flip: str) -> Batch:
    """The batch as seen in the mirrored scene (points, radar velocities, camera extrinsics and
    ground-truth boxes). ``global_T_ego`` is left as it is: the flipped batch only feeds the
    network, whose outputs :func:`unflip_heads` brings back."""
    check_flips([flip])
    M = bev_matrix(flip_x="x" in flip, flip_y="y" in flip)

    def move(points: list[Tensor], fields: Sequence[str]) -> list[Tensor]:
        return [move_points(p, fields, M) for p in points]

    ego_T_camera = batch.ego_T_camera
    if ego_T_camera is not None:
        ego_T_camera = M.to(ego_T_camera) @ ego_T_camera
    gt = [None if g is None else replace(g, boxes=transform_boxes(g.boxes, M)) for g in batch.gt]
    return replace(batch, lidar_points=move(batch.lidar_points, batch.lidar_fields),
                   radar_points=move(batch.radar_points, batch.radar_fields),
                   ego_T_camera=ego_T_camera, gt=gt)


def unflip_heads(heads: Sequence[HeadOutput], flip: str,
                 half_turn: Sequence[bool] | None = None) -> tuple[HeadOutput, ...]:
    """Head maps computed on ``flip_batch(batch, flip)`` -> the same maps in the original frame.
    ``half_turn``: per group, whether its heading channels code twice the yaw
    (``CenterHead.half_turn``): x -> -x turns yaw into pi - yaw, so 2 yaw into -2 yaw, whose
    sine changes sign and cosine does not."""
    check_flips([flip])
    dims = [d for a, d in (("y", -2), ("x", -1)) if a in flip]
    halves = half_turn if half_turn is not None else (False,) * len(heads)
    out = []
    for h, half in zip(heads, halves):
        reg = h.regression.flip(dims)   # flip copies
        if "x" in flip:
            reg[:, _DX] = 1.0 - reg[:, _DX]
            if half:
                reg[:, _SIN] = -reg[:, _SIN]
            else:
                reg[:, _COS] = -reg[:, _COS]
            reg[:, _VX] = -reg[:, _VX]
        if "y" in flip:
            reg[:, _DY] = 1.0 - reg[:, _DY]
            reg[:, _SIN] = -reg[:, _SIN]
            reg[:, _VY] = -reg[:, _VY]
        out.append(HeadOutput(h.heatmap.flip(dims), reg, h.attribute.flip(dims)))
    return tuple(out)


def merge_heads(views: Sequence[Sequence[HeadOutput]]) -> tuple[HeadOutput, ...]:
    """Average several views' head maps (all in the same frame), group by group."""
    if len(views) == 1:
        return tuple(views[0])
    merged = []
    for group in zip(*views):
        prob = torch.stack([h.heatmap.float().sigmoid() for h in group]).mean(0)
        eps = torch.finfo(prob.dtype).eps
        merged.append(HeadOutput(
            torch.logit(prob, eps=eps),
            torch.stack([h.regression.float() for h in group]).mean(0),
            torch.stack([h.attribute.float() for h in group]).mean(0)))
    return tuple(merged)
