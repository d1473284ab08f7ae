"""Small 2D building blocks shared by the camera CNN, the BEV encoders, the fuser and the head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias: BN follows) -> BatchNorm -> ReLU. Keeps H, W at stride 1."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.out_channels = out_channels


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity (or 1x1-projected) shortcut.

    (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # Zero-init the last BN so every block starts as the identity: deep stacks then train
        # from the first step without warm-up tricks.
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(self.conv1(x)).relu_()
        y = self.bn2(self.conv2(y))
        return (y + self.shortcut(x)).relu_()


def group_norm_by_reduction(x: Tensor, groups: int, weight: Tensor | None,
                            bias: Tensor | None, eps: float) -> Tensor:
    """``F.group_norm`` written as a plain reduction (``torch.var_mean`` over each sample's
    group), in float32 at least. The same statistics; the reduction spreads one long row over the
    whole GPU, where PyTorch's CUDA group-norm kernel reduces each (sample, group) row in one
    thread block."""
    b, c = x.shape[:2]
    dtype = torch.promote_types(x.dtype, torch.float32)
    x32 = x.to(dtype)
    var, mean = torch.var_mean(x32.reshape(b, groups, -1), dim=2, correction=0, keepdim=True)
    y = ((x32.reshape(b, groups, -1) - mean) * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.to(dtype).reshape(shape)
    if bias is not None:
        y = y + bias.to(dtype).reshape(shape)
    return y


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same checkpoints) whose CUDA forward computes the
    statistics with :func:`group_norm_by_reduction`. With few groups over a large BEV map
    PyTorch's kernel leaves the GPU nearly idle: the fuser's ``GroupNorm(1, 256)`` at 180 x 180
    took 5.9 ms of a 50 ms frame on an H200 (docs/performance.md). On CPU it is
    ``nn.GroupNorm`` itself. Output dtype as ``nn.GroupNorm``'s: float32 under autocast (group
    norm is on autocast's float32 list), else the input's."""

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_cuda:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        y = group_norm_by_reduction(x, self.num_groups, self.weight, self.bias, self.eps)
        return y if torch.is_autocast_enabled(x.device.type) else y.to(x.dtype)
