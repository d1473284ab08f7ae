"""BEV attention fuser: per-cell attention over the modalities present, then spatial context.

At each BEV cell the available modality features are M tokens. A query built from their masked
mean attends over them (multi-head, softmax over modalities only), with absent modalities and
invalid cells (e.g. outside every present camera's frustum) masked to -inf, never zero-filled:
a zero feature is a claim ("empty space"), an absent sensor is no claim. So the fused feature of
a cell is a convex combination of what *is* there, for any non-empty subset of sensors, and the
same weights serve every subset (trained with modality dropout). Spatial context comes from a
multi-scale residual network afterwards (``context.BEVContext``): heading and velocity are read
off neighbourhoods several cells wide, and where the sensors' features are misaligned by a cell
or two, the neighbourhood recovers it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from perception.models.fusion.context import BEVContext
from perception.models.outputs import BEVFeatures


class AttentionFuser(nn.Module):
    """Args:
        in_channels: per modality name, its BEV channels (the order is the token order).
        channels: C, the fused width. heads: attention heads (C divisible by heads).
        context_blocks: residual 3x3 blocks per context level after the attention.
        context_scales: levels of the multi-scale context network (``BEVContext``; 1 = a plain
            stack of ``context_blocks`` blocks at the grid resolution).
    Forward: ``bevs`` maps a subset of the modality names to BEVFeatures (B, C_m, H, W);
    ``present`` (B, M) bool says which modality each frame uses (a modality may be computed for
    the batch and still be absent for some frames). Returns (B, C, H, W); cells with no valid
    modality are exactly zero.
    """

    def __init__(self, *, in_channels: dict[str, int], channels: int, heads: int,
                 context_blocks: int, context_scales: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"fusion channels {channels} not divisible by heads {heads}")
        self.modalities = tuple(in_channels)
        self.proj = nn.ModuleDict({
            m: nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels),
                             nn.ReLU(inplace=True))
            for m, c in in_channels.items()})
        # Which sensor a token came from matters (camera depth is fuzzy, LiDAR geometry is
        # sharp): a learned embedding per modality lets keys say so.
        self.embed = nn.Parameter(torch.zeros(len(self.modalities), channels, 1, 1))
        nn.init.normal_(self.embed, std=0.02)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.norm = nn.GroupNorm(1, channels)
        self.context = BEVContext(channels, blocks=context_blocks, scales=context_scales)
        self.heads = heads
        self.channels = channels
        self.out_channels = channels

    def forward(self, bevs: dict[str, BEVFeatures], present: Tensor) -> Tensor:
        names = [m for m in self.modalities if m in bevs]
        if not names:
            raise ValueError("the fuser needs at least one modality")
        unknown = set(bevs) - set(self.modalities)
        if unknown:
            raise ValueError(f"fuser got modalities {sorted(unknown)} it was not built for")
        idx = [self.modalities.index(m) for m in names]
        tokens = torch.stack([self.proj[m](bevs[m].features) + self.embed[i]
                              for m, i in zip(names, idx)], dim=1)          # (B, M', C, H, W)
        valid = torch.stack([bevs[m].valid & present[:, i, None, None]
                             for m, i in zip(names, idx)], dim=1)           # (B, M', H, W)
        b, m, c, h, w = tokens.shape
        vmask = valid[:, :, None].to(tokens.dtype)
        count = vmask.sum(1)                                                # (B, 1, H, W)
        mean = (tokens * vmask).sum(1) / count.clamp(min=1)                 # (B, C, H, W)
        flat = tokens.reshape(b * m, c, h, w)
        dh = c // self.heads
        q = self.q(mean).reshape(b, 1, self.heads, dh, h, w)
        k = self.k(flat).reshape(b, m, self.heads, dh, h, w)
        v = self.v(flat).reshape(b, m, self.heads, dh, h, w)
        logits = (q * k).sum(3) / math.sqrt(dh)                             # (B, M', heads, H, W)
        # Cells where nothing is valid get uniform weights over garbage; the any-valid factor
        # below zeroes them, and keeping the logits finite keeps the softmax gradient finite.
        none = (count == 0)[:, None]                                        # (B, 1, 1, H, W)
        logits = logits.masked_fill(~valid[:, :, None] & ~none, float("-inf"))
        attn = logits.softmax(dim=1)
        fused = (attn[:, :, :, None] * v).sum(1).reshape(b, c, h, w)
        anyv = (count > 0).to(tokens.dtype)
        x = self.norm(mean + self.out(fused)) * anyv
        return self.context(x) * anyv
