"""Image backbone (ResNet-style, written here: torchvision is not importable) and an FPN neck."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from perception.models.layers import BasicBlock, ConvBNReLU


class ResNetBackbone(nn.Module):
    """Stride-2 stem, then residual stages that each halve the resolution.

    (B, 3, H, W) float -> list of stage outputs; stage i has stride ``4 * 2**i`` and
    ``stage_channels[i]`` channels (``self.strides`` / ``self.out_channels``).
    """

    def __init__(self, *, stem_channels: int, stage_channels: tuple[int, ...],
                 blocks_per_stage: int = 1):
        super().__init__()
        self.stem = ConvBNReLU(3, stem_channels, kernel_size=3, stride=2)
        stages, c_in = [], stem_channels
        for c in stage_channels:
            blocks = [BasicBlock(c_in, c, stride=2)]
            blocks += [BasicBlock(c, c) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(stage_channels)
        self.strides: tuple[int, ...] = tuple(4 * 2 ** i for i in range(len(stage_channels)))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """Top-down feature pyramid collapsed onto one output level.

    Lateral 1x1 convs bring every level at or below ``out_stride`` (coarser levels) to
    ``out_channels``; coarser levels are upsampled and summed top-down, then one 3x3 conv.
    Only one level is lifted to BEV, so only that level is produced.

    Args:
        in_channels, in_strides: of the backbone stages.
        out_stride: the stride of the returned map (one of ``in_strides``).
    Shapes: list of (B, C_i, H/s_i, W/s_i) -> (B, out_channels, H/out_stride, W/out_stride).
    """

    def __init__(self, *, in_channels: tuple[int, ...], in_strides: tuple[int, ...],
                 out_channels: int, out_stride: int):
        super().__init__()
        if out_stride not in in_strides:
            raise ValueError(f"feature_stride {out_stride} is not a backbone stride {in_strides}")
        self.first = in_strides.index(out_stride)
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, out_channels, 1) for c in in_channels[self.first:])
        self.output = ConvBNReLU(out_channels, out_channels, kernel_size=3)
        self.out_channels = out_channels
        self.out_stride = out_stride

    def forward(self, feats: list[Tensor]) -> Tensor:
        feats = feats[self.first:]
        y = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = lat(f) + F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.output(y)
