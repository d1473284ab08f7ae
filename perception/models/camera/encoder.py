"""CameraEncoder: images -> CNN + FPN -> depth lift -> camera BEV."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.models.camera.backbone import FPN, ResNetBackbone
from perception.models.camera.lift import DepthLift
from perception.models.layers import ConvBNReLU
from perception.models.outputs import BEVFeatures


class CameraEncoder(nn.Module):
    """Multi-camera images to one BEV map.

    Args:
        backbone, neck, lift: built modules (``neck.out_stride`` must equal ``lift.stride``).
        out_channels: channels of the BEV map after the BEV conv.
        pixel_mean, pixel_std: RGB normalisation on [0, 255].
    Forward: images (B, N, 3, H, W) uint8, camera_mask (B, N) bool, intrinsics (B, N, 3, 3),
    ego_T_camera (B, N, 4, 4), img_aug (B, N, 3, 3) -> BEVFeatures (B, out_channels, H_bev,
    W_bev) with the lift's depth logits and the feature maps it lifted. Only present cameras go
    through the CNN.
    """

    def __init__(self, *, backbone: ResNetBackbone, neck: FPN, lift: DepthLift,
                 out_channels: int, pixel_mean: tuple[float, float, float],
                 pixel_std: tuple[float, float, float]):
        super().__init__()
        if neck.out_stride != lift.stride:
            raise ValueError(f"FPN stride {neck.out_stride} != lift stride {lift.stride}")
        self.backbone, self.neck, self.lift = backbone, neck, lift
        self.bev_conv = nn.Sequential(
            ConvBNReLU(lift.out_channels, out_channels),
            ConvBNReLU(out_channels, out_channels),
        )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1),
                             persistent=False)
        self.out_channels = out_channels

    def forward(self, images: Tensor, *, camera_mask: Tensor, intrinsics: Tensor,
                ego_T_camera: Tensor, img_aug: Tensor,
                camera_mask_host: Tensor | None = None) -> BEVFeatures:
        """``camera_mask_host``: ``camera_mask`` on the host, if the caller has read it: with
        every camera present the CNN then takes all images as they are, with no index that
        would make the host wait for the GPU."""
        b, n, _, h, w = images.shape
        stride = self.neck.out_stride
        if h % stride or w % stride:
            raise ValueError(f"image size {(h, w)} is not a multiple of the stride {stride}")
        # The frustum geometry first: reading the calibration (and, on a cache miss, building
        # it) waits for the GPU, which costs least before the CNN's kernels are queued.
        geom = self.lift.geometry(intrinsics=intrinsics, ego_T_camera=ego_T_camera,
                                  img_aug=img_aug, camera_mask=camera_mask,
                                  feature_shape=(h // stride, w // stride))
        images = images.reshape(b * n, 3, h, w)
        if camera_mask_host is not None and bool(camera_mask_host.all()):
            feats = self.neck(self.backbone((images.float() - self.pixel_mean) / self.pixel_std))
        else:
            present = camera_mask.reshape(-1)
            f = self.neck(self.backbone((images[present].float() - self.pixel_mean)
                                        / self.pixel_std))
            feats = f.new_zeros(b * n, f.shape[1], h // stride, w // stride)
            feats[present] = f
        feats = feats.reshape(b, n, *feats.shape[1:])
        bev, valid, depth_logits = self.lift(
            feats, intrinsics=intrinsics, ego_T_camera=ego_T_camera, img_aug=img_aug,
            camera_mask=camera_mask, geometry=geom)
        return BEVFeatures(self.bev_conv(bev), valid, depth_logits, image_features=feats)
