"""Boxes3D: the one 3D box convention used inside the stack.

A box is a row of 9 numbers ``x, y, z, l, w, h, yaw, vx, vy``:

- ``x, y, z``: box centre (metres), in the frame the boxes live in (normally the ego frame of the
  sample's LiDAR keyframe);
- ``l, w, h``: size (metres); ``l`` is measured along the heading, ``w`` across it, ``h`` along z;
- ``yaw``: heading (radians), counter-clockwise from +x about +z;
- ``vx, vy``: velocity (metres per second) in the same frame. May be NaN where unknown (the
  nuScenes devkit reports NaN for an annotation seen in a single sample).

nuScenes stores size as ``w, l, h`` and rotation as a quaternion ``(w, x, y, z)``: only
:meth:`Boxes3D.from_nuscenes` / :meth:`Boxes3D.to_nuscenes` deal with that layout.
"""
from __future__ import annotations

from typing import Iterable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

BOX_FIELDS = ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")
BOX_DIM = len(BOX_FIELDS)

Index = Union[int, slice, Tensor, Sequence[int], np.ndarray]

# Unit-box corner signs (along l, w, h). The order is the nuScenes devkit's ``Box.corners()`` order
# so that corners can be compared one to one: the four front corners (+l/2) first, then the four
# rear ones; within each group: left-top, right-top, right-bottom, left-bottom (left is +w/2).
_CORNER_SIGNS = torch.tensor(
    [
        [1, 1, 1], [1, -1, 1], [1, -1, -1], [1, 1, -1],
        [-1, 1, 1], [-1, -1, 1], [-1, -1, -1], [-1, 1, -1],
    ],
    dtype=torch.float64,
)
# Footprint corner signs (along l, w), counter-clockwise seen from above (positive shoelace area):
# front-left, rear-left, rear-right, front-right.
_BEV_SIGNS = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)


def _as_tensor(x, dtype: torch.dtype | None = None, device=None) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class Boxes3D:
    """A set of N upright 3D boxes with velocity.

    Args:
        tensor: (N, 9) floating tensor ``x, y, z, l, w, h, yaw, vx, vy`` (metres, radians, m/s).
            A numpy array or nested list is converted to float32. An empty input of any shape with
            0 elements becomes (0, 9).

    Indexing (``boxes[i]``, ``boxes[mask]``, ``boxes[2:5]``, ``boxes[index_tensor]``) returns a
    ``Boxes3D``; an integer index keeps the row dimension, giving a set of one box.
    """

    __slots__ = ("tensor",)

    def __init__(self, tensor: Tensor | np.ndarray | Sequence):
        if not isinstance(tensor, Tensor):
            tensor = torch.as_tensor(np.asarray(tensor, dtype=np.float32))
        if tensor.numel() == 0:
            tensor = tensor.reshape(0, BOX_DIM)
        if tensor.ndim != 2 or tensor.shape[-1] != BOX_DIM:
            raise ValueError(f"Boxes3D expects a (N, {BOX_DIM}) tensor, got {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise TypeError(f"Boxes3D expects a floating tensor, got {tensor.dtype}")
        self.tensor = tensor

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, index: Index) -> "Boxes3D":
        if isinstance(index, int):
            return Boxes3D(self.tensor[index].view(1, BOX_DIM))
        if isinstance(index, (list, tuple, np.ndarray)):
            index = torch.as_tensor(np.asarray(index), device=self.tensor.device)
        out = self.tensor[index]
        if out.ndim != 2:
            raise IndexError(f"indexing Boxes3D with {index!r} did not keep the box dimension")
        return Boxes3D(out)

    def __repr__(self) -> str:
        return f"Boxes3D(n={len(self)}, dtype={self.dtype}, device={self.device})"

    def to(self, *args, **kwargs) -> "Boxes3D":
        """Same as ``Tensor.to`` (device and/or dtype), returning a new ``Boxes3D``."""
        return Boxes3D(self.tensor.to(*args, **kwargs))

    def clone(self) -> "Boxes3D":
        return Boxes3D(self.tensor.clone())

    @classmethod
    def cat(cls, boxes_list: Iterable["Boxes3D"]) -> "Boxes3D":
        """Concatenate along N. An empty list gives an empty float32 set."""
        boxes_list = list(boxes_list)
        if not boxes_list:
            return cls(torch.zeros(0, BOX_DIM))
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    @classmethod
    def empty(cls, dtype: torch.dtype = torch.float32, device=None) -> "Boxes3D":
        return cls(torch.zeros(0, BOX_DIM, dtype=dtype, device=device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tensor.dtype

    # ------------------------------------------------------------------ fields (views, (N,) or (N, k))
    x = property(lambda self: self.tensor[:, 0], doc="(N,) centre x, metres")
    y = property(lambda self: self.tensor[:, 1], doc="(N,) centre y, metres")
    z = property(lambda self: self.tensor[:, 2], doc="(N,) centre z, metres")
    l = property(lambda self: self.tensor[:, 3], doc="(N,) length along heading, metres")  # noqa: E741
    w = property(lambda self: self.tensor[:, 4], doc="(N,) width across heading, metres")
    h = property(lambda self: self.tensor[:, 5], doc="(N,) height, metres")
    yaw = property(lambda self: self.tensor[:, 6], doc="(N,) heading, radians CCW from +x")
    vx = property(lambda self: self.tensor[:, 7], doc="(N,) velocity x, m/s (NaN if unknown)")
    vy = property(lambda self: self.tensor[:, 8], doc="(N,) velocity y, m/s (NaN if unknown)")
    center = property(lambda self: self.tensor[:, 0:3], doc="(N, 3) centre x, y, z, metres")
    dims = property(lambda self: self.tensor[:, 3:6], doc="(N, 3) l, w, h, metres")
    velocity = property(lambda self: self.tensor[:, 7:9], doc="(N, 2) vx, vy, m/s")

    # ------------------------------------------------------------------ geometry
    def corners(self) -> Tensor:
        """Box corners, (N, 8, 3), same dtype as the boxes.

        Order (devkit ``Box.corners()`` order, transposed): indices 0-3 are the front face
        (+l/2 along the heading), 4-7 the rear face; in each face: left-top, right-top,
        right-bottom, left-bottom, where left is +w/2 and top is +h/2.
        """
        signs = _CORNER_SIGNS.to(device=self.device, dtype=self.dtype)
        local = signs[None] * (0.5 * self.dims)[:, None, :]  # (N, 8, 3)
        cos, sin = torch.cos(self.yaw)[:, None], torch.sin(self.yaw)[:, None]
        x = cos * local[..., 0] - sin * local[..., 1]
        y = sin * local[..., 0] + cos * local[..., 1]
        return torch.stack([x, y, local[..., 2]], dim=-1) + self.center[:, None, :]

    def bev_corners(self) -> Tensor:
        """Footprint corners in the xy plane, (N, 4, 2): front-left, rear-left, rear-right,
        front-right, i.e. counter-clockwise seen from above (+z)."""
        signs = _BEV_SIGNS.to(device=self.device, dtype=self.dtype)
        local = signs[None] * (0.5 * self.dims[:, None, 0:2])  # (N, 4, 2) along (l, w)
        cos, sin = torch.cos(self.yaw)[:, None], torch.sin(self.yaw)[:, None]
        x = cos * local[..., 0] - sin * local[..., 1] + self.x[:, None]
        y = sin * local[..., 0] + cos * local[..., 1] + self.y[:, None]
        return torch.stack([x, y], dim=-1)

    def points_in_boxes(self, points: Tensor, lag: Tensor | None = None) -> Tensor:
        """Which points fall inside which box (faces included, as the devkit's ``points_in_box``).

        Args:
            points: (P, 3+) points in the boxes' frame (metres); only columns 0..2 are used.
            lag: optional (P,) seconds between each point's measurement and the boxes' time
                (a multi-sweep cloud's ``time_lag``). A point measured ``lag`` s earlier is
                tested against the box where it stood then, ``velocity * lag`` back along its
                motion (constant velocity; an unknown velocity counts as standing). Without it,
                a moving object's older sweeps trail outside its box.
        Returns:
            (N, P) bool.

        Memory is O(N * P) (a few float tensors of that size); chunk over points for very large
        clouds.
        """
        pts = _as_tensor(points)[:, :3].to(device=self.device, dtype=self.dtype)
        d = pts[None, :, :] - self.center[:, None, :]  # (N, P, 3)
        if lag is not None:
            lag = _as_tensor(lag).to(device=self.device, dtype=self.dtype).reshape(1, -1, 1)
            v = torch.nan_to_num(self.velocity, nan=0.0)[:, None, :]          # (N, 1, 2)
            d = torch.cat([d[..., :2] + v * lag, d[..., 2:]], dim=-1)
        cos, sin = torch.cos(self.yaw)[:, None], torch.sin(self.yaw)[:, None]
        # Rotate the offsets by -yaw into the box frame; upright boxes make this a 2D rotation.
        lx = cos * d[..., 0] + sin * d[..., 1]
        ly = -sin * d[..., 0] + cos * d[..., 1]
        half = 0.5 * self.dims
        return (
            (lx.abs() <= half[:, 0:1]) & (ly.abs() <= half[:, 1:2]) & (d[..., 2].abs() <= half[:, 2:3])
        )

    def transform(self, A_T_B: Tensor | np.ndarray) -> "Boxes3D":
        """Move boxes from frame B to frame A.

        Args:
            A_T_B: (4, 4) homogeneous transform mapping points in B to A.
        Returns:
            New ``Boxes3D`` in frame A (same dtype/device): centre mapped by the full transform;
            yaw is the heading of the rotated unit heading vector projected on the xy plane;
            velocity ``(vx, vy, 0)`` rotated (rotation only), keeping its xy part. Sizes unchanged.

        The boxes stay upright: a rotation with roll/pitch changes the heading only through its
        effect on the xy projection, and the tilt itself is dropped. This is exact for nuScenes,
        whose boxes are upright and whose ego/sensor transforms are nearly rotations about z.
        The arithmetic runs in float64 because global poses carry translations of ~1e3 m.
        """
        T = _as_tensor(A_T_B, dtype=torch.float64, device=self.device)
        if T.shape != (4, 4):
            raise ValueError(f"transform expects a (4, 4) matrix, got {tuple(T.shape)}")
        b = self.tensor.to(torch.float64)
        R, t = T[:3, :3], T[:3, 3]
        center = b[:, 0:3] @ R.T + t
        heading = torch.stack([torch.cos(b[:, 6]), torch.sin(b[:, 6]), torch.zeros_like(b[:, 6])], -1)
        heading = heading @ R.T
        yaw = torch.atan2(heading[:, 1], heading[:, 0])
        vel = torch.cat([b[:, 7:9], torch.zeros_like(b[:, 7:8])], dim=1) @ R.T
        out = torch.cat([center, b[:, 3:6], yaw[:, None], vel[:, 0:2]], dim=1)
        return Boxes3D(out.to(self.dtype))

    # ------------------------------------------------------------------ nuScenes edge
    @classmethod
    def from_nuscenes(
        cls,
        center,
        wlh,
        rotation,
        velocity=None,
        dtype: torch.dtype = torch.float32,
    ) -> "Boxes3D":
        """Build from the nuScenes layout.

        Args:
            center: (N, 3) x, y, z, metres.
            wlh: (N, 3) width, length, height, metres (nuScenes order).
            rotation: (N, 4) quaternions ``(w, x, y, z)`` (any norm). Yaw is the heading of the
                rotated +x axis on the xy plane (roll/pitch dropped: nuScenes boxes are upright).
            velocity: (N, 2) or (N, 3) m/s (z ignored), or None for NaN.
        Returns:
            Boxes3D of ``dtype``.
        """
        c = np.asarray(center, dtype=np.float64).reshape(-1, 3)
        s = np.asarray(wlh, dtype=np.float64).reshape(-1, 3)
        q = np.asarray(rotation, dtype=np.float64).reshape(-1, 4)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        qw, qx, qy, qz = q.T
        # First column of the rotation matrix = image of +x; its xy angle is the heading.
        yaw = np.arctan2(2.0 * (qx * qy + qw * qz), 1.0 - 2.0 * (qy * qy + qz * qz))
        if velocity is None:
            v = np.full((len(c), 2), np.nan)
        else:
            v = np.asarray(velocity, dtype=np.float64).reshape(len(c), -1)[:, :2]
        arr = np.concatenate([c, s[:, [1, 0, 2]], yaw[:, None], v], axis=1)
        return cls(torch.as_tensor(arr, dtype=dtype))

    def to_nuscenes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Convert to the nuScenes layout (float64 numpy).

        Returns:
            center (N, 3) metres, wlh (N, 3) metres, rotation (N, 4) quaternion ``(w, x, y, z)``
            about +z, velocity (N, 2) m/s.
        """
        b = self.tensor.detach().to("cpu", torch.float64).numpy()
        half = 0.5 * b[:, 6]
        zeros = np.zeros_like(half)
        quat = np.stack([np.cos(half), zeros, zeros, np.sin(half)], axis=1)
        return b[:, 0:3].copy(), b[:, [4, 3, 5]].copy(), quat, b[:, 7:9].copy()
