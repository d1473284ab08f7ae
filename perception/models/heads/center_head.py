"""CenterPoint-style head: per class group a heatmap, 10-channel box regression and attribute."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perception.models.heads.decode import attribute_mask, decode_candidates
from perception.models.heads.losses import gaussian_focal_loss, masked_l1
from perception.models.heads.targets import (REG_FIELDS, assign_targets, decode_codes,
                                             half_turn_groups)
from perception.models.layers import ConvBNReLU
from perception.models.outputs import HeadOutput
from perception.structures.grid import BEVGrid
from perception.structures.boxes import Boxes3D
from perception.structures.instances import Detections, GroundTruth
from perception.structures.labels import ATTRIBUTE_NAMES


class CenterHead(nn.Module):
    """Args:
        in_channels: fused BEV channels.
        grid: the BEV raster (the head predicts one value set per cell).
        classes: the class vocabulary; class_groups: class names per group.
        shared_channels: width of the shared 3x3 conv.
        head_channels: width of each group's 3x3 conv (six groups: this is where the head's
            cost is).
        min_overlap, min_radius, max_objects: target assignment (see ``assign_targets``).
        heatmap_weight, regression_weight, attribute_weight, code_weights: loss weights.
        score_threshold, top_k, max_detections, nms_radius: decoding (nms_radius per group, m).
        half_turn: classes whose heading is coded modulo a half turn (``heads.targets``); each
            must fill its class group.
        refine_window: per class, half-width (m) of the window a detection's centre and heading
            are averaged over (``heads.decode.refine_codes``); absent: the peak cell's own.
    Forward: (B, C, H, W) -> tuple of HeadOutput, one per group.
    """

    def __init__(self, *, in_channels: int, grid: BEVGrid, classes: tuple[str, ...],
                 class_groups: tuple[tuple[str, ...], ...], shared_channels: int, head_channels: int,
                 min_overlap: float, min_radius: int, max_objects: int, heatmap_weight: float,
                 regression_weight: float, attribute_weight: float,
                 code_weights: tuple[float, ...], score_threshold: float, top_k: int,
                 max_detections: int, nms_radius: tuple[float, ...],
                 half_turn: tuple[str, ...] = (), refine_window: dict[str, float] | None = None):
        super().__init__()
        if len(code_weights) != len(REG_FIELDS):
            raise ValueError(f"code_weights needs {len(REG_FIELDS)} entries ({REG_FIELDS})")
        self.grid, self.classes, self.class_groups = grid, classes, class_groups
        self.half_turn = half_turn_groups(class_groups, tuple(half_turn))
        self.register_buffer("group_half_turn", torch.tensor(self.half_turn, dtype=torch.bool),
                             persistent=False)
        self.shared = ConvBNReLU(in_channels, shared_channels)
        self.groups = nn.ModuleList()
        for group in class_groups:
            body = ConvBNReLU(shared_channels, head_channels)
            heat = nn.Conv2d(head_channels, len(group), 1)
            # Start every cell at p = 0.1: with the default 0.5 the ~1e4 negatives per map
            # swamp the first steps of the focal loss.
            nn.init.constant_(heat.bias, -math.log((1 - 0.1) / 0.1))
            self.groups.append(nn.ModuleDict({
                "body": body, "heatmap": heat,
                "regression": nn.Conv2d(head_channels, len(REG_FIELDS), 1),
                "attribute": nn.Conv2d(head_channels, len(ATTRIBUTE_NAMES), 1),
            }))
        self.register_buffer("code_weights", torch.tensor(code_weights), persistent=False)
        # Per class the decoding window's half-width in whole cells (``refine_codes``).
        window = [int(math.floor((refine_window or {}).get(c, 0.0) / grid.cell_size + 1e-6))
                  for c in classes]
        self.register_buffer("class_window", torch.tensor(window, dtype=torch.int64),
                             persistent=False)
        self.max_window = max(window)
        self.register_buffer("attr_mask", attribute_mask(classes), persistent=False)
        # Each group's class indices as one (G, max group size) table (padded with class 0, never
        # read), kept on the model's device: a host tensor copied to the GPU at every decode
        # would wait for the GPU's queue each time.
        width = max(len(group) for group in class_groups)
        self.register_buffer("group_class_table", torch.tensor(
            [[classes.index(c) for c in group] + [0] * (width - len(group))
             for group in class_groups], dtype=torch.int64), persistent=False)
        self.register_buffer("_class_nms_radius", torch.zeros(len(classes)), persistent=False)
        self._class_nms_radius_of: tuple | None = None     # the nms_radius it was built from
        self.min_overlap, self.min_radius, self.max_objects = min_overlap, min_radius, max_objects
        self.heatmap_weight = heatmap_weight
        self.regression_weight = regression_weight
        self.attribute_weight = attribute_weight
        self.score_threshold, self.top_k = score_threshold, top_k
        self.max_detections = max_detections
        self.nms_radius = nms_radius

    def forward(self, x: Tensor) -> tuple[HeadOutput, ...]:
        x = self.shared(x)
        outs = []
        for g in self.groups:
            y = g["body"](x)
            outs.append(HeadOutput(g["heatmap"](y), g["regression"](y), g["attribute"](y)))
        return tuple(outs)

    def loss(self, outputs: tuple[HeadOutput, ...], gts: list[GroundTruth], *,
             code_weights: Sequence[float] | None = None) -> dict[str, Tensor]:
        """Weighted losses; the total is their sum. ``code_weights`` replaces the head's
        regression channel weights for this call (the subset passes' own, ``FusionDetector``).

        Returns ``loss_heatmap`` (focal, normalised by the batch's positives),
        ``loss_regression`` (weighted L1 per object), ``loss_attribute`` (cross-entropy over
        objects with an attribute).
        """
        targets = assign_targets(gts, grid=self.grid, classes=self.classes,
                                 class_groups=self.class_groups, min_overlap=self.min_overlap,
                                 min_radius=self.min_radius, max_objects=self.max_objects,
                                 half_turn=self.half_turn)
        # The losses in float32 whatever autocast produced (sums over 16k cells in bfloat16
        # would round to ~3 significant digits).
        outputs = tuple(HeadOutput(o.heatmap.float(), o.regression.float(), o.attribute.float())
                        for o in outputs)
        heat_loss = reg_loss = attr_loss = outputs[0].heatmap.new_zeros(())
        channel_weights = (self.code_weights if code_weights is None
                           else self.code_weights.new_tensor(code_weights))
        for out, t in zip(outputs, targets):
            fl, npos = gaussian_focal_loss(out.heatmap, t.heatmap)
            heat_loss = heat_loss + fl / npos.clamp(min=1)
            b, c = out.regression.shape[:2]
            pred = out.regression.reshape(b, c, -1).gather(
                2, t.index[:, None].expand(-1, c, -1)).transpose(1, 2)      # (B, max_obj, 10)
            weight = (t.reg_valid & t.mask[..., None]) * channel_weights
            reg_loss = reg_loss + masked_l1(pred, t.regression, weight) / t.mask.sum().clamp(min=1)
            a = out.attribute.shape[1]
            logits = out.attribute.reshape(b, a, -1).gather(
                2, t.index[:, None].expand(-1, a, -1)).transpose(1, 2)      # (B, max_obj, 8)
            attr_t = torch.where(t.mask, t.attribute, torch.full_like(t.attribute, -1))
            if (attr_t >= 0).any():
                attr_loss = attr_loss + F.cross_entropy(
                    logits.reshape(-1, a), attr_t.reshape(-1), ignore_index=-1)
            else:
                attr_loss = attr_loss + 0.0 * logits.sum()
        return {
            "loss_heatmap": self.heatmap_weight * heat_loss,
            "loss_regression": self.regression_weight * reg_loss,
            "loss_attribute": self.attribute_weight * attr_loss,
        }

    @torch.no_grad()
    def read_at_centres(self, outputs: tuple[HeadOutput, ...],
                        gts: list[GroundTruth]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """The regression read where the loss reads it: at each ground-truth object's centre cell.

        This judges the box geometry (offset, size, heading, velocity) apart from the heatmap:
        whether the peak is found there is the detection's business, what the head regresses
        there is this one's. ``tools/probe_regression.py`` aggregates it per class.

        Returns:
            per frame ``(labels (M,), target (M, 9), predicted (M, 9))``: the objects inside the
            grid (class vocabulary indices), the boxes their targets encode and the boxes the
            head's codes at the same cells decode to (``Boxes3D`` layout, ego frame; target
            velocity NaN where unknown).
        """
        targets = assign_targets(gts, grid=self.grid, classes=self.classes,
                                 class_groups=self.class_groups, min_overlap=self.min_overlap,
                                 min_radius=self.min_radius, max_objects=self.max_objects,
                                 half_turn=self.half_turn)
        w = self.grid.shape[1]
        parts: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in gts]
        for out, t, group, half in zip(outputs, targets, self.class_groups, self.half_turn):
            ids = torch.tensor([self.classes.index(c) for c in group], device=t.label.device)
            b, c = out.regression.shape[:2]
            pred = out.regression.float().reshape(b, c, -1).gather(
                2, t.index[:, None].expand(-1, c, -1)).transpose(1, 2)      # (B, max_obj, 10)
            for i in range(b):
                m = t.mask[i]
                cells = torch.stack([t.index[i, m] // w, t.index[i, m] % w], 1)
                codes = torch.where(t.reg_valid[i, m], t.regression[i, m],
                                    torch.full_like(t.regression[i, m], float("nan")))
                parts[i].append((ids[t.label[i, m]], decode_codes(cells, codes, self.grid, half),
                                 decode_codes(cells, pred[i, m], self.grid, half)))
        return [tuple(torch.cat(x) for x in zip(*p)) for p in parts]

    def class_nms_radius(self) -> Tensor:
        """(num_classes,) circle-NMS radius of each class (its group's ``nms_radius``; 0 for
        classes in no group), on the model's device; rebuilt only when ``nms_radius`` changes."""
        if self._class_nms_radius_of != tuple(self.nms_radius):
            r = torch.zeros(len(self.classes))
            for group, radius in zip(self.class_groups, self.nms_radius):
                for c in group:
                    r[self.classes.index(c)] = float(radius)
            self._class_nms_radius.copy_(r)
            self._class_nms_radius_of = tuple(self.nms_radius)
        return self._class_nms_radius

    @torch.no_grad()
    def decode(self, outputs: tuple[HeadOutput, ...]) -> list[Detections]:
        """Head maps -> B Detections in the ego frame, best ``max_detections`` by score."""
        boxes, scores, labels, attrs, keep = decode_candidates(
            outputs, grid=self.grid, class_table=self.group_class_table,
            attr_mask=self.attr_mask, top_k=self.top_k, score_threshold=self.score_threshold,
            class_radius=self.class_nms_radius(), half_turn=self.group_half_turn,
            class_window=self.class_window, max_window=self.max_window)
        dets = []
        for i in range(len(keep)):
            # The one place decoding waits for the GPU: how many boxes survived, all groups.
            sel = torch.nonzero(keep[i].reshape(-1)).squeeze(1)
            d = Detections(boxes=Boxes3D(boxes[i].reshape(-1, boxes.shape[-1])[sel]),
                           scores=scores[i].reshape(-1)[sel], labels=labels[i].reshape(-1)[sel],
                           attributes=attrs[i].reshape(-1)[sel])
            order = torch.argsort(d.scores, descending=True, stable=True)
            dets.append(d[order[:self.max_detections]])
        return dets
