"""Small 2D building blocks shared by the camera CNN, the BEV encoders, the fuser and the head."""
from __future__ import annotations

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
