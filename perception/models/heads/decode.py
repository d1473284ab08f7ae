"""Head maps -> Detections: 3x3 peak picking, top-k, score threshold, circle NMS per class
(``perception.ops.nms.circle_nms_keep``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perception.models.heads.targets import decode_codes
from perception.ops.nms import circle_nms_keep
from perception.structures.boxes import Boxes3D
from perception.structures.grid import BEVGrid
from perception.structures.instances import Detections
from perception.structures.labels import ATTRIBUTE_NAMES, attribute_prefix


def attribute_mask(classes: tuple[str, ...]) -> Tensor:
    """(num_classes, 8) bool: attributes allowed per class (the devkit scores attributes only
    within these); cones and barriers have none and always get -1."""
    m = torch.zeros(len(classes), len(ATTRIBUTE_NAMES), dtype=torch.bool)
    for i, c in enumerate(classes):
        prefix = attribute_prefix(c)
        if prefix:
            m[i] = torch.tensor([a.startswith(prefix) for a in ATTRIBUTE_NAMES])
    return m


def decode_group(heatmap: Tensor, regression: Tensor, attribute: Tensor, *, grid: BEVGrid,
                 class_ids: Tensor, attr_mask: Tensor, top_k: int, score_threshold: float,
                 nms_radius: float) -> list[tuple[Detections, Tensor]]:
    """One class group's maps -> per frame, its top-k candidates and which of them survive.

    Every shape here is fixed by ``top_k``, never by the data: on CUDA the whole group is queued
    without the host waiting for the GPU (the head reads the survivors of all groups at once).

    Args:
        heatmap: (B, K, H, W) logits; regression: (B, 10, H, W); attribute: (B, 8, H, W) logits.
        class_ids: (K,) global class index of each channel; attr_mask: (num_classes, 8) bool.
    Returns:
        per frame ``(candidates, keep)``: Detections (ego frame) of the ``min(top_k, K*H*W)``
        best 3x3 peaks in descending score, and (N,) bool: above the score threshold and not
        suppressed by circle NMS within its class.
    """
    b, k, h, w = heatmap.shape
    heat = heatmap.sigmoid()
    # A cell is a candidate only if it is the maximum of its 3x3 neighbourhood: one peak per
    # object before any NMS.
    peak = F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat * (heat == peak)
    scores, flat = heat.reshape(b, -1).topk(min(top_k, k * h * w), dim=1)
    chan, cell = flat // (h * w), flat % (h * w)
    cells = torch.stack([cell // w, cell % w], dim=-1)
    class_ids = class_ids.to(chan.device)
    attr_mask = attr_mask.to(chan.device)
    out = []
    for i in range(b):
        s, ce = scores[i], cell[i]
        codes = regression[i].reshape(regression.shape[1], -1)[:, ce].T
        boxes = decode_codes(cells[i], codes, grid)
        labels = class_ids[chan[i]]
        logits = attribute[i].reshape(attribute.shape[1], -1)[:, ce].T
        allowed = attr_mask[labels]
        attrs = logits.masked_fill(~allowed, float("-inf")).argmax(1)
        attrs = torch.where(allowed.any(1), attrs, torch.full_like(attrs, -1))
        keep = s > score_threshold
        if nms_radius > 0:
            # Per class (labels): a pedestrian next to a cone is not a duplicate.
            keep = circle_nms_keep(boxes[:, :2], s, labels, radius=nms_radius, valid=keep)
        out.append((Detections(boxes=Boxes3D(boxes), scores=s, labels=labels, attributes=attrs),
                    keep))
    return out
