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


def decode_candidates(outputs, *, grid: BEVGrid, class_table: Tensor, attr_mask: Tensor,
                      top_k: int, score_threshold: float, class_radius: Tensor,
                      half_turn: Tensor | None = None, class_window: Tensor | None = None,
                      max_window: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Every class group's maps at once -> each group's top-k candidates and which survive.

    Every shape here is fixed by ``top_k``, never by the data, and the groups go through the
    box decoding and the NMS together: on CUDA the whole decode is queued without the host
    waiting for the GPU, in a few dozen kernels whatever the number of groups.

    Args:
        outputs: one ``HeadOutput`` per group: heatmap (B, K_g, H, W) logits, regression
            (B, 10, H, W), attribute (B, 8, H, W) logits.
        class_table: (G, max K_g) int64, the global class index of each group's channels.
        attr_mask: (num_classes, 8) bool, the attributes each class may take.
        class_radius: (num_classes,) float, circle-NMS radius (m) per class; <= 0: no NMS.
        half_turn: (G,) bool, the groups whose heading channels code twice the yaw
            (``targets.encode_boxes``); None: none.
        class_window: (num_classes,) int64, per class the half-width n in cells of the window
            whose cells' centres and headings a candidate averages (:func:`refine_codes`); 0 or
            None: the peak cell's own. max_window: its largest entry, a host int (the window's
            shape; read from the device it would make decoding wait for the GPU); 0: no window.
    Returns:
        boxes (B, G, k, 9) ego frame, scores (B, G, k), labels (B, G, k) int64, attributes
        (B, G, k) int64 (-1: none) and keep (B, G, k) bool: above the score threshold and not
        suppressed by circle NMS within its class. Per group the candidates are the
        ``min(top_k, K_g*H*W)`` best 3x3 peaks in descending score; k is the largest of those
        (shorter groups padded with score -1, never kept).
    """
    b, _, h, w = outputs[0].heatmap.shape
    hw = h * w
    ks = [min(top_k, out.heatmap.shape[1] * hw) for out in outputs]
    k = max(ks)
    scores, flat, probs = [], [], []
    for out, kg in zip(outputs, ks):
        heat = out.heatmap.float().sigmoid()
        probs.append(heat)
        # A cell is a candidate only if it is the maximum of its 3x3 neighbourhood: one peak
        # per object before any NMS.
        heat = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
        s, f = heat.reshape(b, -1).topk(kg, dim=1)
        scores.append(F.pad(s, (0, k - kg), value=-1.0))
        flat.append(F.pad(f, (0, k - kg)))
    scores, flat = torch.stack(scores, 1), torch.stack(flat, 1)               # (B, G, k)
    g = len(outputs)
    chan, cell = flat // hw, flat % hw
    labels = class_table.to(chan.device)[None].expand(b, -1, -1).gather(2, chan)
    reg = torch.stack([out.regression.float() for out in outputs], 1).reshape(b, g, -1, hw)
    codes = reg.gather(3, cell[:, :, None].expand(-1, -1, reg.shape[2], -1)).transpose(2, 3)
    logits = torch.stack([out.attribute.float() for out in outputs], 1).reshape(b, g, -1, hw)
    logits = logits.gather(3, cell[:, :, None].expand(-1, -1, logits.shape[2], -1)) \
        .transpose(2, 3)                                                      # (B, G, k, 8)
    cells = torch.stack([cell // w, cell % w], dim=-1)
    if class_window is not None and max_window > 0:
        codes = refine_codes(codes, cells, chan, labels, probs, reg, class_window, max_window,
                             (h, w))
    half = False if half_turn is None else half_turn.to(cells.device)[None, :, None] \
        .expand(b, -1, k).reshape(-1)
    boxes = decode_codes(cells.reshape(-1, 2), codes.reshape(-1, codes.shape[-1]), grid, half) \
        .reshape(b, g, k, -1)
    allowed = attr_mask.to(labels.device)[labels]
    attrs = logits.masked_fill(~allowed, float("-inf")).argmax(-1)
    attrs = torch.where(allowed.any(-1), attrs, torch.full_like(attrs, -1))
    valid = scores > score_threshold
    radius = class_radius.to(labels.device)
    # Per class (labels): a pedestrian next to a cone is not a duplicate. Every (frame, group)
    # is one independent set of the batched NMS.
    kept = circle_nms_keep(boxes[..., :2].reshape(b * g, k, 2), scores.reshape(b * g, k),
                           labels.reshape(b * g, k), radius=radius,
                           valid=valid.reshape(b * g, k)).reshape(b, g, k)
    keep = torch.where(radius[labels] > 0, kept, valid)
    return boxes, scores, labels, attrs, keep


def refine_codes(codes: Tensor, cells: Tensor, chan: Tensor, labels: Tensor,
                 probs: list[Tensor], reg: Tensor, class_window: Tensor, max_window: int,
                 shape: tuple[int, int]) -> Tensor:
    """Each candidate's centre and heading as the mean over the window around its peak cell of
    what each cell decodes, weighted by that cell's probability of the candidate's class.

    Why: the loss reads the regression at the true centre cell only, and a large vehicle's
    heatmap is flat over several cells, so its peak often lies a cell or two off the centre,
    where the offsets stay within the peak cell (the centre is off by that much) and the heading
    was never taught: on synthetic mini_val the fusion model's trucks turned round in 23 of 57
    matches read at the peak against 2 at the true centre cell (docs/results.md, "Centre and
    heading from the window around the peak"). The window's cells agree on the centre's metric
    position and, weighted by the heatmap, on the heading (sin and cos summed: the direction
    most of the weight points to; a half-turn code averages the same way).

    Args:
        codes: (B, G, k, 10) the peak cells' codes; cells (B, G, k, 2) (row, col); chan and
            labels (B, G, k) the channel in its group and the class; probs: per group
            (B, K_g, H, W) sigmoid heatmaps; reg (B, G, 10, H*W) regression maps;
            class_window (num_classes,) int64 half-width n in cells ((2n + 1)^2 cells),
            max_window its largest entry (> 0).
    Returns:
        (B, G, k, 10): dx, dy (relative to the peak cell, so possibly outside [0, 1)) and
        sin, cos replaced for the candidates of classes with a window; the rest untouched.
    """
    n = class_window.to(labels.device)[labels]                             # (B, G, k)
    h, w = shape
    b, g, k = chan.shape
    d = torch.arange(-max_window, max_window + 1, device=codes.device)
    dr, dc = [t.reshape(-1) for t in torch.meshgrid(d, d, indexing="ij")]    # (O,)
    rows = cells[..., :1] + dr                                             # (B, G, k, O)
    cols = cells[..., 1:] + dc
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) \
        & (torch.maximum(dr.abs(), dc.abs()) <= n[..., None])
    at = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)                  # (B, G, k, O)
    # Each candidate's own class channel: index (channel, cell) of its group's flat maps.
    own = chan[..., None] * (h * w) + at
    heat = torch.stack([p.reshape(b, -1).gather(1, own[:, i].reshape(b, -1))
                        for i, p in enumerate(probs)], 1).reshape(b, g, k, -1)
    at = at.reshape(b, g, -1)                                              # (B, G, k*O)
    weight = heat * inside                                                  # (B, G, k, O)
    index = at[:, :, None].expand(-1, -1, 2, -1)

    def window(first: int) -> Tensor:   # channels first, first + 1 at the window's cells
        return reg[:, :, first:first + 2].gather(3, index).reshape(b, g, 2, k, -1)

    offset, heading = window(0), window(6)                                  # (B, G, 2, k, O)
    total = weight.sum(-1).clamp(min=1e-12)
    dx = (weight * (dc + offset[:, :, 0])).sum(-1) / total
    dy = (weight * (dr + offset[:, :, 1])).sum(-1) / total
    sin = (weight * heading[:, :, 0]).sum(-1)
    cos = (weight * heading[:, :, 1]).sum(-1)
    refined = torch.stack([dx, dy, sin, cos], -1)
    use = (n > 0)[..., None]
    out = codes.clone()
    out[..., [0, 1, 6, 7]] = torch.where(use, refined, codes[..., [0, 1, 6, 7]])
    return out
