"""CenterPoint-style detection head: targets, losses, decoding."""
from perception.models.heads.center_head import CenterHead
from perception.models.heads.decode import attribute_mask, decode_candidates
from perception.models.heads.losses import gaussian_focal_loss, masked_l1
from perception.models.heads.targets import (
    REG_FIELDS,
    GroupTargets,
    assign_targets,
    decode_codes,
    draw_heatmap,
    encode_boxes,
    gaussian_radius,
    half_turn_groups,
)

__all__ = ["CenterHead", "GroupTargets", "REG_FIELDS", "assign_targets", "attribute_mask",
           "decode_candidates", "decode_codes", "draw_heatmap", "encode_boxes",
           "gaussian_focal_loss", "gaussian_radius", "half_turn_groups", "masked_l1"]
