"""Non-maximum suppression in bird's-eye view: rotated IoU NMS and circle NMS, per class.

Both visit boxes by descending score with ties broken by ascending input index, and return the
kept indices in that order. Backends (``backend=``): "auto" (Triton on CUDA, the exact
candidate-pair path on CPU), "fast", "reference" (dense pairwise + greedy), "triton" (runs on
CPU under ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .fast import circle_nms_fast, nms_bev_fast
from .reference import circle_nms_reference, nms_bev_reference, paired_iou_bev, pairwise_iou_bev

__all__ = ["nms_bev", "circle_nms", "circle_nms_keep", "nms_bev_reference", "circle_nms_reference",
           "paired_iou_bev", "pairwise_iou_bev"]


def _pick(backend: str, is_cuda: bool) -> str:
    if backend == "auto":
        return "triton" if is_cuda else "fast"
    if backend not in ("fast", "reference", "triton"):
        raise ValueError(f"unknown backend {backend!r}")
    return backend


def nms_bev(boxes, scores: Tensor, labels: Tensor | None = None, iou_threshold: float = 0.5,
            max_out: int | None = None, *, backend: str = "auto") -> Tensor:
    """Rotated BEV-IoU NMS, batched per class.

    Args:
        boxes: ``Boxes3D`` or (N, 7+) tensor ``x, y, z, l, w, h, yaw, ...`` (metres, radians).
        scores: (N,) float. labels: (N,) int class ids, or None for a single class.
        iou_threshold: in [0, 1); a box is dropped when its BEV IoU with a kept box of the same
            class is > threshold.
        max_out: keep at most this many (the highest scoring), None for all.
    Returns:
        (K,) int64 indices into the input, descending score (ties: lower index first).
    """
    t = boxes.tensor if hasattr(boxes, "tensor") else boxes
    b = _pick(backend, t.is_cuda)
    if b == "fast":
        return nms_bev_fast(t, scores, labels, iou_threshold, max_out)
    if b == "reference":
        return nms_bev_reference(t, scores, labels, iou_threshold, max_out)
    from .triton import nms_bev_triton

    return nms_bev_triton(t, scores, labels, iou_threshold, max_out)


def circle_nms(centers, scores: Tensor, labels: Tensor | None = None, radius=1.0,
               max_out: int | None = None, *, backend: str = "auto") -> Tensor:
    """Circle NMS (CenterPoint), batched per class.

    Args:
        centers: (N, 2+) tensor whose first columns are x, y metres, or a ``Boxes3D``.
        scores: (N,). labels: (N,) int or None.
        radius: metres; a scalar or a per-class sequence indexed by label. A box is dropped when
            a kept box of its class has its centre within distance <= radius.
        max_out: keep at most this many.
    Returns:
        (K,) int64 indices, descending score (ties: lower index first).
    """
    t = centers.tensor if hasattr(centers, "tensor") else centers
    b = _pick(backend, t.is_cuda)
    if b == "fast":
        return circle_nms_fast(t, scores, labels, radius, max_out)
    if b == "reference":
        return circle_nms_reference(t, scores, labels, radius, max_out)
    from .triton import circle_nms_triton

    return circle_nms_triton(t, scores, labels, radius, max_out)


def circle_nms_keep(centers, scores: Tensor, labels: Tensor | None = None, radius=1.0,
                    valid: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """:func:`circle_nms` as flags over a fixed set of candidates, or over S independent sets.

    Args:
        centers: (N, 2+) or (S, N, 2+) (S sets of N candidates, each set on its own), or a
            ``Boxes3D``. scores, labels: (N,) or (S, N). radius: as :func:`circle_nms`.
        valid: (N,) or (S, N) bool, the candidates taking part (None: all); the others are
            neither kept nor suppress anything, as if they were not in the input.
    Returns:
        (N,) or (S, N) bool, True where :func:`circle_nms` on the valid candidates of the set
        keeps the box. On CUDA the shapes never depend on the data, so it never waits for the
        GPU (the decoder runs every class group of a frame as one batch of sets).
    """
    t = centers.tensor if hasattr(centers, "tensor") else centers
    b = _pick(backend, t.is_cuda)
    if b == "triton":
        from .triton import circle_nms_keep_triton

        return circle_nms_keep_triton(t, scores, labels, radius, valid)
    if t.ndim == 3:   # set after set
        flags = torch.zeros(t.shape[:2], dtype=torch.bool, device=t.device)
        for i in range(t.shape[0]):
            flags[i] = circle_nms_keep(t[i], scores[i], None if labels is None else labels[i],
                                       radius, None if valid is None else valid[i], backend=b)
        return flags
    n = t.shape[0]
    idx = (torch.arange(n, device=t.device) if valid is None
           else torch.nonzero(valid).squeeze(1))
    kept = circle_nms(t[idx], scores[idx], None if labels is None else labels[idx], radius,
                      backend=b)
    flags = torch.zeros(n, dtype=torch.bool, device=t.device)
    flags[idx[kept]] = True
    return flags
