"""Training augmentation on :class:`Frame`, consistent across every sensor.

Three kinds, applied in this order by :class:`FrameAugmenter`:

1. **GT copy-paste** (:class:`GTPaste`, SECOND's "GT sampling"): objects cut out of other training
   frames (their LiDAR and radar points, from a :class:`GTDatabase`) are pasted at the place they
   had in their own frame's ego coordinates, skipping any that would overlap a box already there.
   The cameras do not see pasted objects (no image is edited); that inconsistency is why the
   option is per class and can be turned off.
2. **Global BEV transform** (:func:`transform_frame`): one 4x4 ``aug_T_ego`` (rotation about +z,
   uniform scale, mirror in x and/or y, translation) moves LiDAR and radar points, radar
   velocities, GT boxes with their velocities, and every sensor's ``ego_T_sensor``. The cameras
   keep their pixels: the camera lift maps its frustum to ego through ``ego_T_camera``, so folding
   the BEV matrix into it (``aug_T_ego @ ego_T_camera``) puts the lifted features exactly where
   the augmented LiDAR and boxes are. No model change is needed; a mirrored or scaled
   ``ego_T_camera`` is no longer rigid, which the lift (plain matrix products) does not mind.
   ``global_T_ego`` becomes ``global_T_ego @ inv(aug_T_ego)`` so boxes still map to the world.
3. **Image resize/crop/flip/rotation** (:func:`augment_image`) to the network's input size, per
   camera, composed into ``calib.img_aug`` (pixel convention of ``models.camera.transforms``:
   corner origin, pixel k spans [k, k + 1)).

Mirrors and the cameras. A mirrored BEV transform (one of ``flip_x``, ``flip_y``) keeps every
position exact for the cameras too, but not what the pixels say about an object's heading: the
unmirrored image shows a car from its front left where the mirrored box says front right. An
image flip alone does the converse (mirrored pixels, unmirrored box). Together they agree: the
flipped image of a camera is what a rigid camera (the mirror of the original, its x axis
turned) sees of the mirrored world, and vehicles are left-right symmetric. With
``ImageAugmentConfig.flip_with_bev`` each image is flipped exactly when the BEV transform
mirrors; with independent flips (the default, what the shipped models trained with) the
appearance contradicts the box heading in half the camera views. Measured on the synthetic
fusion model's second phase, it changes nothing the val sets can see (docs/results.md, "Images
flipped with the mirrored scene"): at that budget the cameras carry little heading.

Randomness comes only from the ``numpy.random.Generator`` passed in, which the training sampler
seeds per sample (``perception.data.sampler``), so a sample's augmentation does not depend on the
DataLoader worker that made it and a resumed run repeats it exactly.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from perception.structures import Boxes3D, Calibration, Frame, GroundTruth, SensorSample
from perception.structures.labels import DETECTION_CLASSES

# Radar velocity column pairs rotated (and scaled) with the scene.
_RADAR_VELOCITY_PAIRS = (("vx_comp", "vy_comp"), ("vx", "vy"))


# ---------------------------------------------------------------------------------------------
# Global BEV transform
# ---------------------------------------------------------------------------------------------
def bev_matrix(rotation: float = 0.0, scale: float = 1.0, flip_x: bool = False,
               flip_y: bool = False, translation: Sequence[float] = (0.0, 0.0, 0.0)) -> Tensor:
    """The global augmentation ``aug_T_ego``: rotate about +z, mirror, scale, then translate.

    Args:
        rotation: radians, counter-clockwise about +z.
        scale: uniform factor (> 0).
        flip_x: mirror x -> -x. flip_y: mirror y -> -y.
        translation: (3,) metres, added last.
    Returns:
        (4, 4) float64.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    c, s = math.cos(rotation), math.sin(rotation)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    F = torch.diag(torch.tensor([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0],
                                dtype=torch.float64))
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = scale * (F @ R)
    M[:3, 3] = torch.as_tensor(translation, dtype=torch.float64)
    return M


def _linear_scale(M: Tensor) -> float:
    """Uniform scale of the linear part (|det| ** (1/3))."""
    return float(abs(torch.linalg.det(M[:3, :3])) ** (1.0 / 3.0))


def move_points(points: Tensor, fields: Sequence[str], M: Tensor) -> Tensor:
    """Positions by the full transform, velocity column pairs by the linear xy part."""
    out = points.clone()
    M = M.to(points)
    L = M[:3, :3]
    out[:, 0:3] = points[:, 0:3] @ L.T + M[:3, 3]
    for fx, fy in _RADAR_VELOCITY_PAIRS:
        if fx in fields and fy in fields:
            i, j = fields.index(fx), fields.index(fy)
            # Doppler velocities are planar (vz = 0); the BEV matrix never mixes z into x, y.
            v = points[:, [i, j]] @ L[:2, :2].T
            out[:, i], out[:, j] = v[:, 0], v[:, 1]
    return out


def _move_calib(calib: Calibration, M: Tensor) -> Calibration:
    return replace(calib, ego_T_sensor=M @ calib.ego_T_sensor)


def transform_boxes(boxes: Boxes3D, M: Tensor) -> Boxes3D:
    """GT boxes under ``aug_T_ego``: centres and velocities by the matrix, sizes by its scale."""
    out = boxes.transform(M)
    t = out.tensor.clone()
    t[:, 3:6] *= _linear_scale(M)
    return Boxes3D(t)


def transform_frame(frame: Frame, aug_T_ego: Tensor) -> Frame:
    """Apply the global BEV transform to every part of a Frame (see the module docstring).

    Args:
        frame: the Frame (ego frame of its keyframe).
        aug_T_ego: (4, 4) from :func:`bev_matrix` (rotation about z, mirror, uniform scale,
            translation).
    Returns:
        A new Frame whose "ego" frame is the augmented one.
    """
    M = torch.as_tensor(aug_T_ego, dtype=torch.float64)

    def move(s: SensorSample) -> SensorSample:
        data = s.data if s.is_camera else move_points(s.data, s.fields, M)
        return replace(s, data=data, calib=_move_calib(s.calib, M))

    gt = frame.gt
    if gt is not None:
        gt = replace(gt, boxes=transform_boxes(gt.boxes, M))
    return replace(
        frame,
        global_T_ego=frame.global_T_ego @ torch.linalg.inv(M),
        lidar=None if frame.lidar is None else move(frame.lidar),
        radars={k: move(v) for k, v in frame.radars.items()},
        cameras={k: move(v) for k, v in frame.cameras.items()},
        gt=gt,
    )


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def _affine(a: float, b: float, c: float, d: float, e: float, f: float) -> np.ndarray:
    return np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]], dtype=np.float64)


def augment_image(image: Tensor, img_aug: Tensor, size: tuple[int, int], *, scale: float = 1.0,
                  anchor_x: float = 0.5, anchor_y: float = 1.0, flip: bool = False,
                  rotation: float = 0.0) -> tuple[Tensor, Tensor]:
    """Resize so the image covers ``size`` (times ``scale``), crop, mirror, rotate.

    Args:
        image: (3, H, W) uint8.
        img_aug: (3, 3) float64, the image's current pixel transform.
        size: (H_out, W_out) pixels.
        scale: factor on the covering resize (< 1 zooms out: the crop then pads with black).
        anchor_x, anchor_y: where the crop window sits in [0, 1] (0 = left/top, 1 = right/bottom).
        flip: mirror horizontally (after the crop).
        rotation: radians, counter-clockwise in the displayed image, about the output centre.
    Returns:
        (3, H_out, W_out) uint8 and the (3, 3) float64 ``A @ img_aug`` where ``A`` maps pixel
        coordinates of the input image to the output (so ``Calibration.project`` stays exact).
    """
    _, h, w = image.shape
    h_out, w_out = size
    r = max(h_out / h, w_out / w) * scale
    w_rs, h_rs = max(1, round(w * r)), max(1, round(h * r))
    sx, sy = w_rs / w, h_rs / h  # exact scales of the rounded size
    x0 = math.floor((w_rs - w_out) * anchor_x)
    y0 = math.floor((h_rs - h_out) * anchor_y + 0.5)
    post = _affine(1, 0, -x0, 0, 1, -y0)                    # resized -> cropped
    if flip:
        post = _affine(-1, 0, w_out, 0, 1, 0) @ post
    if rotation:
        # Image y points down, so a counter-clockwise turn on screen is -rotation in (u, v).
        c, s = math.cos(rotation), math.sin(rotation)
        cx, cy = w_out / 2, h_out / 2
        rot = _affine(c, s, 0, -s, c, 0)
        post = _affine(1, 0, cx, 0, 1, cy) @ rot @ _affine(1, 0, -cx, 0, 1, -cy) @ post

    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    if (w_rs, h_rs) != (w, h):
        # Area averaging when shrinking: bilinear sampling would alias thin structures.
        hwc = cv2.resize(hwc, (w_rs, h_rs), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    if not flip and not rotation and 0 <= x0 <= w_rs - w_out and 0 <= y0 <= h_rs - h_out:
        out = hwc[y0:y0 + h_out, x0:x0 + w_out]   # a plain crop: exact, no resampling
    else:
        # OpenCV samples at pixel *indices* (centre of pixel k at k); ours puts it at k + 0.5.
        shift = _affine(1, 0, 0.5, 0, 1, 0.5)
        cv = np.linalg.inv(shift) @ post @ shift
        out = cv2.warpAffine(hwc, cv[:2], (w_out, h_out), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    A = torch.from_numpy(post @ _affine(sx, 0, 0, 0, sy, 0))
    new_aug = A @ img_aug.to(torch.float64)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), new_aug


def resize_frame_images(frame: Frame, size: tuple[int, int]) -> Frame:
    """Every camera covered-resized to ``size`` with the bottom crop (evaluation's fixed view)."""
    cams = {}
    for ch, s in frame.cameras.items():
        img, aug = augment_image(s.data, s.calib.img_aug, size)
        cams[ch] = replace(s, data=img, calib=replace(s.calib, img_aug=aug))
    return replace(frame, cameras=cams)


# ---------------------------------------------------------------------------------------------
# GT copy-paste
# ---------------------------------------------------------------------------------------------
def bev_overlap(a: Boxes3D, b: Boxes3D) -> Tensor:
    """Whether rotated BEV footprints intersect (separating axis theorem; touching counts).

    Returns:
        (N, M) bool for N boxes ``a`` and M boxes ``b``.
    """
    ca = a.bev_corners().double()  # (N, 4, 2)
    cb = b.bev_corners().double()  # (M, 4, 2)
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b), dtype=torch.bool)

    def axes(boxes: Boxes3D) -> Tensor:
        yaw = boxes.yaw.double()
        c, s = torch.cos(yaw), torch.sin(yaw)
        return torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)  # (K, 2, 2)

    def separated(axes_: Tensor, own: Tensor, other: Tensor, own_first: bool) -> Tensor:
        # axes_ (K, 2, 2) of the `own` boxes (K, 4, 2); other (L, 4, 2) -> (K, L) separated.
        p_own = torch.einsum("kad,kcd->kac", axes_, own)                # (K, 2, 4)
        p_oth = torch.einsum("kad,lcd->klac", axes_, other)             # (K, L, 2, 4)
        lo_o, hi_o = p_own.min(-1).values[:, None], p_own.max(-1).values[:, None]   # (K, 1, 2)
        lo_t, hi_t = p_oth.min(-1).values, p_oth.max(-1).values                      # (K, L, 2)
        sep = ((hi_t < lo_o) | (hi_o < lo_t)).any(-1)
        return sep if own_first else sep.T

    sep = separated(axes(a), ca, cb, True) | separated(axes(b), cb, ca, False)
    return ~sep


def _time_lag(points: Tensor, fields: Sequence[str]) -> Tensor | None:
    """The ``time_lag`` column of a point cloud, or None when it has none."""
    return points[:, fields.index("time_lag")] if "time_lag" in fields else None


@dataclass
class GTDatabase:
    """Objects cut out of training frames: boxes (their frame's ego coordinates) and points.

    Attributes:
        boxes: (E, 9) float32 ``Boxes3D`` rows.
        labels, attributes, num_lidar_pts, num_radar_pts: (E,) int64.
        lidar_points: (P, C_lidar) float32, entry e's points are ``lidar_ptr[e]:lidar_ptr[e+1]``.
        lidar_ptr: (E + 1,) int64.
        radar_points: (R, C_radar) float32; radar_ptr: (E + 1,) int64.
        lidar_fields, radar_fields: column names.
        source: (E,) sample tokens the entries were cut from.
    """

    boxes: Tensor
    labels: Tensor
    attributes: Tensor
    num_lidar_pts: Tensor
    num_radar_pts: Tensor
    lidar_points: Tensor
    lidar_ptr: Tensor
    radar_points: Tensor
    radar_ptr: Tensor
    lidar_fields: tuple[str, ...]
    radar_fields: tuple[str, ...]
    source: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(cls, frames, *, min_lidar_points: int = 5, radar_margin: float = 0.5,
              progress=None) -> "GTDatabase":
        """Cut every GT object with at least ``min_lidar_points`` LiDAR points out of ``frames``.

        Args:
            frames: an iterable of Frames with LiDAR and GT (the training split, unaugmented).
            radar_margin: metres added to l, w, h when collecting radar returns.
            progress: optional callable(i) called after each frame.
        """
        boxes, labels, attrs, n_lid, n_rad, lid, rad, src = [], [], [], [], [], [], [], []
        lidar_fields: tuple[str, ...] = ()
        radar_fields: tuple[str, ...] = ()
        for i, frame in enumerate(frames):
            if progress is not None:
                progress(i)
            if frame.gt is None or frame.lidar is None or len(frame.gt) == 0:
                continue
            lidar_fields = frame.lidar.fields
            pts = frame.lidar.points
            radar = [frame.radars[k].points for k in sorted(frame.radars)]
            if frame.radars:
                radar_fields = next(iter(frame.radars.values())).fields
            rpts = torch.cat(radar) if radar else torch.zeros(0, len(radar_fields) or 7)
            gt = frame.gt
            # Chunks of boxes bound the (boxes x points) masks to a few tens of MB.
            for start in range(0, len(gt), 16):
                sub = gt[start:start + 16]
                # A moving object's older sweeps trail behind its box: cut them with it.
                inside = sub.boxes.points_in_boxes(pts, _time_lag(pts, lidar_fields))
                enlarged = sub.boxes.tensor.clone()
                enlarged[:, 3:6] += 2 * radar_margin
                rin = (Boxes3D(enlarged).points_in_boxes(rpts, _time_lag(rpts, radar_fields))
                       if len(rpts) else torch.zeros(len(sub), 0, dtype=torch.bool))
                for j in range(len(sub)):
                    count = int(inside[j].sum())
                    if count < min_lidar_points:
                        continue
                    boxes.append(sub.boxes.tensor[j])
                    labels.append(int(sub.labels[j]))
                    attrs.append(int(sub.attributes[j]))
                    lid.append(pts[inside[j]])
                    rad.append(rpts[rin[j]])
                    n_lid.append(count)
                    n_rad.append(int(rin[j].sum()))
                    src.append(frame.token)

        def ptr(chunks):
            return torch.tensor([0] + np.cumsum([len(c) for c in chunks]).tolist(), dtype=torch.int64)

        n_lidar_cols = len(lidar_fields) or 5
        n_radar_cols = len(radar_fields) or 7
        return cls(
            boxes=torch.stack(boxes).float() if boxes else torch.zeros(0, 9),
            labels=torch.tensor(labels, dtype=torch.int64),
            attributes=torch.tensor(attrs, dtype=torch.int64),
            num_lidar_pts=torch.tensor(n_lid, dtype=torch.int64),
            num_radar_pts=torch.tensor(n_rad, dtype=torch.int64),
            lidar_points=torch.cat(lid) if lid else torch.zeros(0, n_lidar_cols),
            lidar_ptr=ptr(lid),
            radar_points=torch.cat(rad) if rad else torch.zeros(0, n_radar_cols),
            radar_ptr=ptr(rad),
            lidar_fields=tuple(lidar_fields), radar_fields=tuple(radar_fields), source=src)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a temporary file, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({k: getattr(self, k) for k in self.__dataclass_fields__}, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GTDatabase":
        data = torch.load(path, map_location="cpu", weights_only=True)
        data["lidar_fields"] = tuple(data["lidar_fields"])
        data["radar_fields"] = tuple(data["radar_fields"])
        return cls(**data)


class GTPaste:
    """Paste database objects into a frame until each class reaches its target count.

    Args:
        database: the objects.
        counts: class name -> objects of that class a frame should hold after pasting.
        classes: class vocabulary of the labels.
        radar_margin: metres around a pasted box within which the frame's own radar returns are
            removed (they would sit inside the pasted object).
    """

    def __init__(self, database: GTDatabase, counts: Mapping[str, int],
                 classes: Sequence[str] = DETECTION_CLASSES, radar_margin: float = 0.5):
        unknown = set(counts) - set(classes)
        if unknown:
            raise ValueError(f"paste counts name unknown classes {sorted(unknown)}")
        self.db = database
        self.counts = {classes.index(c): int(n) for c, n in counts.items() if n > 0}
        self.radar_margin = radar_margin
        self.by_class = {c: torch.nonzero(database.labels == c).squeeze(1).numpy()
                         for c in self.counts}

    def sample(self, gt: GroundTruth, rng: np.random.Generator) -> np.ndarray:
        """Database indices to paste into a frame with ground truth ``gt`` (no overlaps)."""
        picks = []
        for c, target in self.counts.items():
            pool = self.by_class[c]
            k = min(target - int((gt.labels == c).sum()), len(pool))
            if k > 0:
                picks.append(rng.choice(pool, size=k, replace=False))
        if not picks:
            return np.zeros(0, dtype=np.int64)
        cand = np.concatenate(picks)
        cboxes = Boxes3D(self.db.boxes[torch.from_numpy(cand)])
        ok = ~bev_overlap(cboxes, gt.boxes.to(torch.float32)).any(1)
        among = bev_overlap(cboxes, cboxes)
        accepted: list[int] = []
        for j in range(len(cand)):
            # Greedy in sampling order: a candidate must also clear those accepted before it.
            if ok[j] and not among[j, accepted].any():
                accepted.append(j)
        return cand[accepted]

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        if frame.gt is None or (frame.lidar is None and not frame.radars):
            return frame
        idx = self.sample(frame.gt, rng)
        if len(idx) == 0:
            return frame
        db = self.db
        t = torch.from_numpy(idx)
        boxes = Boxes3D(db.boxes[t])
        lidar = frame.lidar
        if lidar is not None:
            keep = ~boxes.points_in_boxes(lidar.points, _time_lag(lidar.points, lidar.fields)).any(0)
            new = [db.lidar_points[db.lidar_ptr[i]:db.lidar_ptr[i + 1]] for i in idx]
            # Rows stay in order, so earlier pasted rows that survive are still the last ones.
            earlier = int(keep[len(keep) - lidar.num_pasted:].sum()) if lidar.num_pasted else 0
            lidar = replace(lidar, data=torch.cat([lidar.points[keep], *new]),
                            num_pasted=earlier + sum(len(x) for x in new))
        radars = dict(frame.radars)
        if radars:
            enlarged = boxes.tensor.clone()
            enlarged[:, 3:6] += 2 * self.radar_margin
            enlarged = Boxes3D(enlarged)
            for ch, s in radars.items():
                keep = ~enlarged.points_in_boxes(s.points, _time_lag(s.points, s.fields)).any(0)
                radars[ch] = replace(s, data=s.points[keep])
            # The pasted returns join one channel: the model concatenates all radars anyway.
            new = [db.radar_points[db.radar_ptr[i]:db.radar_ptr[i + 1]] for i in idx]
            first = sorted(radars)[0]
            radars[first] = replace(radars[first], data=torch.cat([radars[first].points, *new]))
        g = frame.gt
        n = len(idx)
        gt = GroundTruth(
            boxes=Boxes3D(torch.cat([g.boxes.tensor, boxes.tensor.to(g.boxes.dtype)])),
            labels=torch.cat([g.labels, db.labels[t]]),
            attributes=torch.cat([g.attributes, db.attributes[t]]),
            num_lidar_pts=torch.cat([g.num_lidar_pts, db.num_lidar_pts[t]]),
            num_radar_pts=torch.cat([g.num_radar_pts, db.num_radar_pts[t]]),
            visibility=torch.cat([g.visibility, torch.zeros(n, dtype=torch.int64)]),
            instance_tokens=g.instance_tokens + [""] * n,
            annotation_tokens=g.annotation_tokens + [""] * n,
        )
        return replace(frame, lidar=lidar, radars=radars, gt=gt)


# ---------------------------------------------------------------------------------------------
# The composition used by training
# ---------------------------------------------------------------------------------------------
class FrameAugmenter:
    """Paste -> global BEV transform -> per-camera image augmentation (see the module docstring).

    Args:
        cfg: ``AugmentConfig`` (``perception.models.config``).
        image_size: (H, W) the network takes, or None to leave images alone.
        paste: a built :class:`GTPaste`, or None.
        paste_until: training-stream position from which nothing is pasted (the paste fade,
            ``PasteConfig.fade``); None: paste everywhere.
    """

    def __init__(self, cfg, image_size: tuple[int, int] | None, paste: GTPaste | None = None,
                 paste_until: int | None = None):
        self.cfg = cfg
        self.image_size = None if image_size is None else tuple(image_size)
        self.paste = paste
        self.paste_until = paste_until

    def sample_bev(self, rng: np.random.Generator) -> Tensor:
        g = self.cfg.global_bev
        return bev_matrix(rotation=rng.uniform(*g.rotation), scale=rng.uniform(*g.scale),
                          flip_x=bool(rng.random() < g.flip_x), flip_y=bool(rng.random() < g.flip_y),
                          translation=rng.normal(0.0, 1.0, 3) * np.asarray(g.translation_std))

    def __call__(self, frame: Frame, rng: np.random.Generator,
                 position: int | None = None) -> Frame:
        """Augment ``frame`` with ``rng``; ``position`` is its place in the training stream
        (for the paste fade; None counts as before it)."""
        fading = (self.paste_until is not None and position is not None
                  and position >= self.paste_until)
        if self.paste is not None and not fading:
            frame = self.paste(frame, rng)
        bev = self.sample_bev(rng)
        frame = transform_frame(frame, bev)
        if self.image_size is not None and frame.cameras:
            c = self.cfg.image
            mirrored = bool(torch.linalg.det(bev[:2, :2].double()) < 0)
            cams = {}
            for ch in sorted(frame.cameras):  # fixed order: draws must not depend on dict order
                s = frame.cameras[ch]
                # Drawn in this order, the flip's draw made either way: the stream of draws is
                # the same with and without flip_with_bev (and as before it existed).
                scale, anchor_x = rng.uniform(*c.scale), rng.uniform(*c.crop_x)
                anchor_y, flip = rng.uniform(*c.crop_y), bool(rng.random() < c.flip)
                img, aug = augment_image(
                    s.data, s.calib.img_aug, self.image_size, scale=scale, anchor_x=anchor_x,
                    anchor_y=anchor_y, flip=mirrored if c.flip_with_bev else flip,
                    rotation=rng.uniform(*c.rotation))
                cams[ch] = replace(s, data=img, calib=replace(s.calib, img_aug=aug))
            frame = replace(frame, cameras=cams)
        return frame


class AugmentedDataset(torch.utils.data.Dataset):
    """A Frame dataset seen through augmentation.

    ``ds[(index, seed, position)]`` (what the training sampler yields) or ``ds[(index, seed)]``
    augments frame ``index`` with ``numpy.random.default_rng(seed)`` (``position``: its place in
    the training stream, for the paste fade); ``ds[index]`` only resizes the images to
    ``image_size`` (evaluation). Picklable when ``base`` is.

    Args:
        base: a dataset of Frames (``NuScenesDataset``).
        augmenter: a :class:`FrameAugmenter`, or None for no augmentation.
        image_size: (H, W) to resize images to when not augmenting (None: leave them).
    """

    def __init__(self, base, augmenter: FrameAugmenter | None = None,
                 image_size: tuple[int, int] | None = None):
        self.base, self.augmenter = base, augmenter
        self.image_size = None if image_size is None else tuple(image_size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key) -> Frame:
        if isinstance(key, tuple):
            index, seed, position = key if len(key) == 3 else (*key, None)
        else:
            index, seed, position = key, None, None
        frame = self.base[int(index)]
        if self.augmenter is not None and seed is not None:
            return self.augmenter(frame, np.random.default_rng(int(seed)), position)
        if self.image_size is not None and frame.cameras:
            return resize_frame_images(frame, self.image_size)
        return frame
