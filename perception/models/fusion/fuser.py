"""BEV attention fuser: per-cell attention over the modalities present, then spatial context.

At each BEV cell the available modality features are M tokens. Their base combination is, channel
by channel, a learned convex combination over the modalities present (per-channel modality
weights, softmax renormalised over what is there; the channel-normalised weights of UniBEV): a
channel that only LiDAR informs can take LiDAR alone instead of its average with a camera channel
that is noise early in training. A query built from that base attends over the tokens
(multi-head, softmax over modalities only), with absent modalities and invalid cells (e.g.
outside every present camera's frustum) masked to -inf, never zero-filled: a zero feature is a
claim ("empty space"), an absent sensor is no claim. So the fused feature of
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
from perception.models.layers import GroupNorm
from perception.models.outputs import BEVFeatures


class AttentionFuser(nn.Module):
    """Args:
        in_channels: per modality name, its BEV channels (the order is the token order).
        channels: C, the fused width. heads: attention heads (C divisible by heads).
        context_blocks: residual 3x3 blocks per context level after the attention.
        context_scales: levels of the multi-scale context network (``BEVContext``; 1 = a plain
            stack of ``context_blocks`` blocks at the grid resolution).
        modality_bias: a learned logit per modality and head added to the attention logits
            (stored like ``channel_logits``, zero at a fresh start: no preference). With it and
            the channel logits, ``train.init_favour`` can start a fusion model as the model of
            fewer sensors it is initialised from (perception/engine/train.py, ``init_weights``).
    Forward: ``bevs`` maps a subset of the modality names to BEVFeatures (B, C_m, H, W);
    ``present`` (B, M) bool says which modality each frame uses (a modality may be computed for
    the batch and still be absent for some frames). Returns (B, C, H, W); cells with no valid
    modality are exactly zero.
    """

    # AdamW moves a parameter by ~lr a step whatever its gradient, so a logit stored at unit scale
    # would move ~1 in a 1,200-step run at lr 1.5e-3: too little to ever prefer a modality. Stored
    # at 1/10 scale, a preference forms within a few hundred steps.
    CHANNEL_LOGIT_GAIN = 10.0

    def __init__(self, *, in_channels: dict[str, int], channels: int, heads: int,
                 context_blocks: int, context_scales: int = 1, modality_bias: bool = False):
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
        # Per channel, a preference over modalities (logits, scaled by CHANNEL_LOGIT_GAIN in the
        # forward). Zero = the plain masked mean. One modality has nothing to choose between.
        if len(self.modalities) > 1:
            self.channel_logits = nn.Parameter(torch.zeros(len(self.modalities), channels))
        else:
            self.register_parameter("channel_logits", None)
        if modality_bias and len(self.modalities) > 1:
            self.modality_bias = nn.Parameter(torch.zeros(len(self.modalities), heads))
        else:
            self.register_parameter("modality_bias", None)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.norm = GroupNorm(1, channels)
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
        base = self.channel_mean(tokens, vmask, idx)                        # (B, C, H, W)
        flat = tokens.reshape(b * m, c, h, w)
        dh = c // self.heads
        q = self.q(base).reshape(b, 1, self.heads, dh, h, w)
        k = self.k(flat).reshape(b, m, self.heads, dh, h, w)
        v = self.v(flat).reshape(b, m, self.heads, dh, h, w)
        logits = (q * k).sum(3) / math.sqrt(dh)                             # (B, M', heads, H, W)
        if self.modality_bias is not None:
            bias = torch.stack([self.modality_bias[i] for i in idx]) * self.CHANNEL_LOGIT_GAIN
            logits = logits + bias[None, :, :, None, None].to(logits.dtype)
        # Cells where nothing is valid get uniform weights over garbage; the any-valid factor
        # below zeroes them, and keeping the logits finite keeps the softmax gradient finite.
        none = (count == 0)[:, None]                                        # (B, 1, 1, H, W)
        logits = logits.masked_fill(~valid[:, :, None] & ~none, float("-inf"))
        attn = logits.softmax(dim=1)
        fused = (attn[:, :, :, None] * v).sum(1).reshape(b, c, h, w)
        anyv = (count > 0).to(tokens.dtype)
        x = self.norm(base + self.out(fused)) * anyv
        return self.context(x) * anyv

    def channel_mean(self, tokens: Tensor, vmask: Tensor, idx: list[int]) -> Tensor:
        """Per channel, the weighted mean of the valid tokens (B, M', C, H, W) -> (B, C, H, W), the
        weights a softmax of the channel logits of the modalities ``idx`` over those valid at each
        cell (exactly 0 where none is). In float32 and normalised per cell, so that a strong
        preference for an absent sensor cannot underflow the others' weights (float16 under AMP)."""
        if self.channel_logits is None:
            return (tokens * vmask).sum(1) / vmask.sum(1).clamp(min=1)
        # Row by row (views): a list index would copy it from the host and wait for the GPU.
        logits = torch.stack([self.channel_logits[i] for i in idx]).float()
        logits = logits * self.CHANNEL_LOGIT_GAIN
        logits = logits[None, :, :, None, None]
        logits = logits.masked_fill(vmask == 0, float("-inf"))             # (B, M', C, H, W)
        top = logits.amax(dim=1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        w = torch.exp(logits - top)
        return ((w * tokens.float()).sum(1) / w.sum(1).clamp(min=1)).to(tokens.dtype)
