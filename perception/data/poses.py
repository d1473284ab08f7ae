"""Rigid transforms of nuScenes records, in numpy alone (no torch), so that the synthetic-world
writer can use them without importing torch into every generator process."""
from __future__ import annotations

import numpy as np


def quaternion_to_matrix(q) -> np.ndarray:
    """(..., 4) quaternions ``(w, x, y, z)`` (any norm) -> (..., 3, 3) float64 rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def pose_matrix(translation, rotation) -> np.ndarray:
    """nuScenes ``translation`` (3,) and ``rotation`` (w, x, y, z) -> (4, 4) float64 A_T_B."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform without a general matrix inverse."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out
