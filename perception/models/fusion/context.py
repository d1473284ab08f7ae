"""BEV spatial context after the per-cell fusion: a multi-scale residual network.

One level per scale: level 0 keeps the grid resolution, level k halves it k times and doubles the
channels; each level is ``blocks`` residual blocks. Every level is brought back to the grid
resolution (transposed conv) and the levels are concatenated and mixed by a 1x1 conv, as in
SECOND's BEV network. A car spans ~6 x 3 cells at 0.8 m and moves ~1 m between the sweeps a
frame carries: its heading and velocity are read off a neighbourhood several cells wide,
which the coarser levels see at little cost. ``scales=1`` is a plain stack of residual blocks.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.models.layers import BasicBlock, ConvBNReLU


class BEVContext(nn.Module):
    """Args:
        channels: C, in and out channels.
        blocks: residual blocks per level (>= 1).
        scales: levels (>= 1); the grid's H and W must be divisible by ``2 ** (scales - 1)``.
    Forward: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, *, blocks: int, scales: int = 1):
        super().__init__()
        if blocks < 1 or scales < 1:
            raise ValueError(f"BEVContext needs blocks >= 1 and scales >= 1, got {blocks}, {scales}")
        self.scales = scales
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        c_in = channels
        for k in range(scales):
            c = channels * 2 ** k
            first = BasicBlock(c_in, c, stride=1 if k == 0 else 2)
            self.levels.append(nn.Sequential(first, *[BasicBlock(c, c) for _ in range(blocks - 1)]))
            if k > 0:
                f = 2 ** k
                self.ups.append(nn.Sequential(
                    nn.ConvTranspose2d(c, channels, f, stride=f, bias=False),
                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
            c_in = c
        self.mix = ConvBNReLU(channels * scales, channels, kernel_size=1) if scales > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        f = 2 ** (self.scales - 1)
        if h % f or w % f:
            raise ValueError(f"BEV grid {h}x{w} must be divisible by {f} for {self.scales} "
                             "context scales")
        outs = []
        for level in self.levels:
            x = level(x)
            outs.append(x)
        if self.mix is None:
            return outs[0]
        return self.mix(torch.cat([outs[0]] + [up(o) for up, o in zip(self.ups, outs[1:])], dim=1))
