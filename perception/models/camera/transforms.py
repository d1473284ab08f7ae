"""Resize camera images of a Batch to the network's input size, keeping ``img_aug`` exact.

Pixel convention: continuous coordinates with the origin at the top-left *corner* of the image
(pixel k spans [k, k+1)); then a resize by s is exactly ``u' = s * u``, and a crop by x0 is
``u' = u - x0``. The frustum (``camera.lift``) uses the same convention for pixel centres.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from perception.structures.batch import Batch


def resize_images(batch: Batch, size: tuple[int, int], *, crop_anchor_y: float = 1.0) -> Batch:
    """Resize (keeping the aspect ratio) so the image covers ``size``, then crop to ``size``.

    Args:
        batch: with images (B, N, 3, H, W) uint8 (returned unchanged when images is None or
            already ``size``).
        size: (H_out, W_out) pixels.
        crop_anchor_y: where the vertical crop sits: 0 keeps the top rows, 1 the bottom rows
            (the road; the sky carries nothing to detect). The horizontal crop is centred.
    Returns:
        A new Batch: images (B, N, 3, H_out, W_out) uint8, ``img_aug`` left-multiplied by the
        resize-and-crop matrix (so ``project`` and the lift stay exact); nothing else changes.
    """
    if batch.images is None or tuple(batch.images.shape[-2:]) == tuple(size):
        return batch
    b, n, c, h, w = batch.images.shape
    h_out, w_out = size
    scale = max(h_out / h, w_out / w)
    h_rs, w_rs = max(h_out, round(h * scale)), max(w_out, round(w * scale))
    x0 = (w_rs - w_out) // 2
    y0 = int(round((h_rs - h_out) * crop_anchor_y))
    img = batch.images.reshape(b * n, c, h, w).float()
    # Antialias when shrinking, or thin structures alias into noise the depth net must learn.
    img = F.interpolate(img, size=(h_rs, w_rs), mode="bilinear", align_corners=False,
                        antialias=scale < 1.0)
    img = img[:, :, y0:y0 + h_out, x0:x0 + w_out]
    images = img.round_().clamp_(0, 255).to(torch.uint8).reshape(b, n, c, h_out, w_out)
    # The rounded resize size gives slightly different x/y scales; use the exact ones.
    sx, sy = w_rs / w, h_rs / h
    M = torch.tensor([[sx, 0.0, -x0], [0.0, sy, -y0], [0.0, 0.0, 1.0]],
                     dtype=batch.img_aug.dtype, device=batch.img_aug.device)
    return replace(batch, images=images, img_aug=M @ batch.img_aug)
