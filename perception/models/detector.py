"""FusionDetector (one encoder per sensor -> attention fuser -> CenterPoint head) and the one
explicit ``build_model(cfg)``.

Which sensors a frame uses is decided once per forward, as a (B, M) ``present`` mask:
available in the Batch (``camera_mask.any``, ``lidar_mask``, ``radar_mask``) AND requested
(``modalities=`` argument, default all built) AND, in training, not dropped by modality dropout.
An encoder runs only if some frame uses its sensor; the fuser masks the rest per frame and cell.
"""
from __future__ import annotations

import contextlib
from dataclasses import fields, replace
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from perception.models.camera import (
    FPN,
    CameraEncoder,
    DepthLift,
    ResNetBackbone,
    resize_images,
)
from perception.models.camera.depth import depth_loss, lidar_depth_targets
from perception.models.camera.paint import PointPainter, pixel_loss, pixel_targets
from perception.models.config import MODALITIES, ModelConfig, check_flips
from perception.models.fusion import AttentionFuser
from perception.models.heads import CenterHead
from perception.models.lidar import HeightCollapse, LidarEncoder, SparseBackbone3D
from perception.models.outputs import BEVFeatures, DetectorOutput, HeadOutput, SubsetOutput
from perception.models.radar import RadarEncoder
from perception.models.radar.velocity import refine_velocity
from perception.models.standstill import apply_standstill
from perception.models.tta import flip_batch, merge_heads, unflip_heads
from perception.structures.batch import Batch, host_to_device
from perception.structures.grid import BEVGrid
from perception.structures.instances import Detections


class FusionDetector(nn.Module):
    """Args:
        grid: the BEV raster every stage shares.
        encoders: built encoders keyed by modality ("camera", "lidar", "radar"; any non-empty
            subset); each reports ``out_channels``.
        fuser: built ``AttentionFuser`` whose modalities match ``encoders``.
        head: built ``CenterHead``.
        image_size: (H, W) the camera encoder takes; other sizes are resized (img_aug updated).
        modality_dropout: per-frame probability of dropping each sensor in training: one for
            every sensor, or a mapping sensor -> probability (unnamed sensors: 0).
        depth_weight: weight of the camera depth supervision from LiDAR (``loss_depth``); 0: off.
        test_flips: mirrored views ``predict`` averages with the frame itself ("x", "y", "xy";
            ``perception.models.tta``); empty: off.
        refine_velocity: ``predict`` replaces the velocity (and front/back heading) of each
            vehicle by what its radar returns measure, in frames that use radar
            (``perception.models.radar.velocity``).
        still_returns: with ``refine_velocity``, its ``still_returns`` (standing vehicles
            measured by radar; 0: off).
        standstill: ``predict`` ends by making each detection stand (velocity 0, a still
            attribute) or move (the moving attribute) by its speed
            (``perception.models.standstill``).
        subset_loss: sensor subsets also trained on every frame (``FusionConfig.subset_loss``):
            in training, the frames whose sensors the subset changes (and leaves non-empty) are
            fused again from the subset alone and decoded; their loss is ``loss_subset``.
        subset_loss_weight: weight of ``loss_subset``.
        subset_code_weights: regression channel weights of the subset passes' loss (None: the
            head's ``code_weights``).
        subset_heads: one more head per ``subset_loss`` subset, built like ``head``: every
            frame whose sensors all lie in that subset (its subset pass in training, a frame
            modality dropout left without the others, a test without them) is decoded by it
            (by the smallest such subset's), so that ``head`` learns only from frames with a
            sensor outside every subset.
        subset_norm_stats: the BatchNorm layers after the fuser (``fuser.context``, ``head``)
            keep running statistics of their own per ``subset_loss`` subset (buffers
            ``subset_stats.<camera+radar>.*``), gathered and used for the frames whose sensors
            all lie in it (``FusionConfig.subset_norm_stats``).
        painter: a built ``PointPainter`` (models with cameras and LiDAR): in frames that use
            both, its map of the camera features at the LiDAR points is added to the LiDAR BEV
            map (``perception.models.camera.paint``).
        pixel_weight: weight of the painter's pixel loss (``loss_pixel``, with its
            ``pixel_head``): what the LiDAR point each camera feature pixel shows belongs to.
    """

    def __init__(self, *, grid: BEVGrid, encoders: dict[str, nn.Module], fuser: AttentionFuser,
                 head: CenterHead, image_size: tuple[int, int] | None = None,
                 modality_dropout: float | Mapping[str, float] = 0.0, depth_weight: float = 0.0,
                 test_flips: Sequence[str] = (), refine_velocity: bool = False,
                 still_returns: int = 0, standstill: bool = False,
                 subset_loss: Sequence[Sequence[str]] = (),
                 subset_loss_weight: float = 1.0,
                 subset_code_weights: Sequence[float] | None = None,
                 subset_heads: Sequence[CenterHead] = (), subset_norm_stats: bool = False,
                 painter: PointPainter | None = None, pixel_weight: float = 0.0):
        super().__init__()
        if not encoders or set(encoders) - set(MODALITIES):
            raise ValueError(f"encoders must be a non-empty subset of {MODALITIES}")
        # Fixed order (camera, lidar, radar) so that ``present`` columns mean the same thing in
        # every model, whatever order the dict came in.
        self.modalities = tuple(m for m in MODALITIES if m in encoders)
        if tuple(fuser.modalities) != self.modalities:
            raise ValueError(f"fuser modalities {fuser.modalities} != encoders {self.modalities}")
        if painter is not None and not {"camera", "lidar"} <= set(self.modalities):
            raise ValueError(f"a painter needs cameras and LiDAR, the model has {self.modalities}")
        self.grid = grid
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.painter = painter
        self.pixel_weight = pixel_weight
        if pixel_weight > 0 and (painter is None or painter.pixel_head is None):
            raise ValueError("pixel_weight > 0 needs a painter with a pixel head")
        self.fuser, self.head = fuser, head
        self.image_size = image_size
        self.modality_dropout = modality_dropout
        self.depth_weight = depth_weight if "camera" in self.modalities else 0.0
        self.test_flips = check_flips(test_flips, grid)
        self.refine_velocity = refine_velocity
        self.still_returns = still_returns
        self.standstill = standstill
        for subset in subset_loss:
            if not set(subset) < set(self.modalities):
                raise ValueError(f"subset_loss entry {list(subset)} must be a proper subset of "
                                 f"the model's sensors {self.modalities}")
        self.subset_loss = tuple(tuple(s) for s in subset_loss)
        self.subset_loss_weight = subset_loss_weight
        self.subset_code_weights = (None if subset_code_weights is None
                                    else tuple(float(w) for w in subset_code_weights))
        if subset_heads and len(subset_heads) != len(self.subset_loss):
            raise ValueError(f"subset_heads: {len(subset_heads)} heads for "
                             f"{len(self.subset_loss)} subset_loss subsets")
        # Keyed "camera+radar" (sensors in the model's order), the state dict's names.
        self.subset_heads = nn.ModuleDict({self._subset_key(s): h
                                           for s, h in zip(self.subset_loss, subset_heads)})
        if subset_norm_stats and not self.subset_loss:
            raise ValueError("subset_norm_stats needs subset_loss subsets")
        self.subset_stats = nn.ModuleDict({self._subset_key(s): NormStats(self.shared_norms())
                                           for s in self.subset_loss} if subset_norm_stats else {})

    def _subset_key(self, sensors: Sequence[str]) -> str:
        return "+".join(m for m in self.modalities if m in sensors)

    def head_key(self, sensors: Sequence[str]) -> str:
        """Which head decodes a frame with these sensors: a ``subset_heads`` key, or "" for
        ``head``."""
        within = [s for s in self.subset_loss if set(sensors) <= set(s)]
        if not self.subset_heads or not within:
            return ""
        return self._subset_key(min(within, key=len))

    # ------------------------------------------------------------------ normalisation statistics
    def shared_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """The BatchNorm layers every sensor set passes through after the fuser: its context
        network's and the head's (a ``subset_heads`` head sees its own frames only)."""
        return [m for root in (self.fuser.context, self.head) for m in root.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def with_missing_stats(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``state`` (a state dict) with the ``subset_stats`` entries it lacks copied from their
        layers' own statistics in it: a file trained without ``subset_norm_stats`` loads, and
        behaves as before until ``tools/bn_recalibrate.py`` estimates them."""
        state = dict(state)
        shared = {id(m) for m in self.shared_norms()}
        names = [n for n, m in self.named_modules() if id(m) in shared]
        fields_ = {"mean": "running_mean", "var": "running_var", "count": "num_batches_tracked"}
        for key in self.subset_stats:
            for i, name in enumerate(names):
                for ours, theirs in fields_.items():
                    own = f"subset_stats.{key}.{ours}{i}"
                    if own not in state and f"{name}.{theirs}" in state:
                        state[own] = state[f"{name}.{theirs}"]
        return state

    def stats_key(self, sensors: Sequence[str]) -> str:
        """Whose running statistics normalise a frame with these sensors: a ``subset_stats``
        key (the smallest subset holding them), or "" for the layers' own."""
        within = [s for s in self.subset_loss if set(sensors) <= set(s)]
        if not self.subset_stats or not within:
            return ""
        return self._subset_key(min(within, key=len))

    @contextlib.contextmanager
    def norm_stats(self, key: str) -> Iterator[None]:
        """Within the block the shared BatchNorm layers hold the statistics ``key`` names
        (swapped in and out: training updates them in place)."""
        if key == "":
            yield
            return
        bank = self.subset_stats[key]
        bank.swap(self.shared_norms())
        try:
            yield
        finally:
            bank.swap(self.shared_norms())

    def _fuse_and_decode(self, bevs: dict[str, BEVFeatures], present: Tensor
                         ) -> tuple[Tensor, tuple[HeadOutput, ...]]:
        """The fuser and the heads over the batch, each frame normalised with the statistics of
        its sensors (``present``: (B, M) bool on the host): (fused BEV, head maps)."""
        dev = next(iter(bevs.values())).features.device
        keys = [self.stats_key([m for m, p in zip(self.modalities, row) if p])
                for row in present.tolist()]
        if len(set(keys)) == 1:
            with self.norm_stats(keys[0]):
                fused = self.fuser(bevs, host_to_device(present, dev))
                return fused, self.decode_maps(fused, present)
        fused_parts, head_parts, order = [], [], []
        for key in dict.fromkeys(keys):
            frames = [i for i, k in enumerate(keys) if k == key]
            idx = torch.tensor(frames, device=dev)
            part = {m: BEVFeatures(f.features[idx], f.valid[idx]) for m, f in bevs.items()}
            with self.norm_stats(key):
                fused = self.fuser(part, host_to_device(present[frames], dev))
                head_parts.append(self.decode_maps(fused, present[frames]))
            fused_parts.append(fused)
            order += frames
        inverse = torch.argsort(torch.tensor(order)).to(dev)   # back to the batch's order
        return torch.cat(fused_parts)[inverse], _merge_heads(head_parts, inverse)

    # ------------------------------------------------------------------ sensor selection
    def available(self, batch: Batch) -> Tensor:
        """(B, M) bool on the host: the Batch carries this sensor for this frame."""
        return self._host_masks(batch)[0]

    def _host_masks(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """``available`` and the (B, N) camera mask (None without cameras), on the host, read
        from the Batch's device in one copy: the encoders decide from them what to run without
        waiting for the GPU again."""
        b, dev = len(batch), batch.lidar_mask.device
        cam = batch.camera_mask
        n = 0 if cam is None else cam.shape[1]
        flat = torch.cat([torch.zeros(b, 0, dtype=torch.bool, device=dev) if cam is None
                          else cam.bool(), batch.lidar_mask.bool()[:, None],
                          batch.radar_mask.bool()[:, None]], dim=1).cpu()
        cam_host = None if cam is None else flat[:, :n]
        cols = {"camera": torch.zeros(b, dtype=torch.bool) if cam is None else cam_host.any(1),
                "lidar": flat[:, n], "radar": flat[:, n + 1]}
        return torch.stack([cols[m] for m in self.modalities], dim=1), cam_host

    def select(self, batch: Batch, modalities: Sequence[str] | None = None, *,
               available: Tensor | None = None) -> Tensor:
        """(B, M) bool on the host: sensors used per frame (availability x request x dropout);
        ``available`` when the caller has already read it."""
        present = (self.available(batch) if available is None else available).clone()
        if modalities is not None:
            unknown = set(modalities) - set(self.modalities)
            if unknown:
                raise ValueError(f"modalities {sorted(unknown)} not built (have {self.modalities})")
            present &= torch.tensor([m in modalities for m in self.modalities])[None]
        empty = ~present.any(1)
        if empty.any():
            tokens = [batch.tokens[i] for i in torch.nonzero(empty).squeeze(1).tolist()]
            raise ValueError(f"frames {tokens} have none of the sensors {self.modalities} "
                             f"(requested {modalities})")
        if self.training and bool((self._dropout_rates() > 0).any()):
            present = self._drop(present)
        return present

    def _dropout_rates(self) -> Tensor:
        """(M,) dropout probability of each built sensor (``modality_dropout`` may be changed
        between iterations, e.g. by the trainer's ``modality_dropout_start``)."""
        rate = self.modality_dropout
        if isinstance(rate, Mapping):
            return torch.tensor([float(rate.get(m, 0.0)) for m in self.modalities])
        return torch.full((len(self.modalities),), float(rate))

    def _drop(self, present: Tensor) -> Tensor:
        drop = torch.rand(present.shape) < self._dropout_rates()[None]
        kept = present & ~drop
        for i in torch.nonzero(~kept.any(1)).squeeze(1).tolist():
            # Everything dropped: keep one of the frame's sensors, chosen uniformly.
            choices = torch.nonzero(present[i]).squeeze(1)
            kept[i, choices[torch.randint(len(choices), (1,))]] = True
        return kept

    # ------------------------------------------------------------------ forward
    def encode(self, batch: Batch, present: Tensor,
               camera_mask_host: Tensor | None = None) -> dict[str, BEVFeatures]:
        """Run the encoders of the sensors some frame uses (``present``: (B, M) bool on the
        host; ``camera_mask_host``: the Batch's camera mask on the host, if already read)."""
        dev = batch.lidar_mask.device
        present = present.cpu()
        bevs = {}
        # LiDAR first: its sizes depend on the data, so on CUDA it waits for the GPU several
        # times; queued after it, the cameras' and radar's kernels run while the host goes on
        # (the other order leaves the host idle behind the camera CNN at the first wait).
        order = sorted(range(len(self.modalities)), key=lambda i: self.modalities[i] != "lidar")
        for i in order:
            m = self.modalities[i]
            use = present[:, i]
            if not use.any():
                continue
            enc = self.encoders[m]
            if m == "camera":
                if self.image_size is not None:
                    batch = resize_images(batch, self.image_size)
                use_dev = host_to_device(use, dev)
                bevs[m] = enc(batch.images, camera_mask=batch.camera_mask & use_dev[:, None],
                              intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera,
                              img_aug=batch.img_aug,
                              camera_mask_host=None if camera_mask_host is None
                              else camera_mask_host & use[:, None])
            elif m == "lidar":
                bevs[m] = enc(batch.lidar_points, use)
            else:
                bevs[m] = enc(batch.radar_points, batch.radar_fields, use)
        if self.painter is not None and "camera" in bevs and "lidar" in bevs:
            bevs["lidar"], logits = self._paint(batch, bevs["camera"], bevs["lidar"], present)
            bevs["camera"] = replace(bevs["camera"], pixel_logits=logits)
        return {m: bevs[m] for m in self.modalities if m in bevs}

    def _paint(self, batch: Batch, camera: BEVFeatures, lidar: BEVFeatures,
               present: Tensor) -> tuple[BEVFeatures, Tensor | None]:
        """The LiDAR map plus the painter's map of the camera features at the LiDAR points, in
        the frames that use both sensors (``batch`` with the images as the camera encoder took
        them; ``present`` on the host), and the painter's pixel logits (or None)."""
        cams = self._painting_cameras(batch, present)
        pasted, lag = _keyframe_columns(batch)
        paint, logits = self.painter(
            camera.image_features, batch.lidar_points, pasted, time_lag_col=lag,
            intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera, img_aug=batch.img_aug,
            camera_mask=cams)
        return BEVFeatures(lidar.features + paint.to(lidar.features.dtype), lidar.valid,
                           unpainted=lidar.features), logits

    def _painting_cameras(self, batch: Batch, present: Tensor) -> Tensor:
        """(B, N) bool on the Batch's device: the cameras of the frames that use both cameras
        and LiDAR (``present``: (B, M) bool on the host), the ones the painter paints with."""
        col = self.modalities.index
        both = present[:, col("camera")] & present[:, col("lidar")]
        return batch.camera_mask & host_to_device(both, batch.camera_mask.device)[:, None]

    def forward(self, batch: Batch, *, modalities: Sequence[str] | None = None) -> DetectorOutput:
        """Batch -> head maps at the BEV grid resolution (see ``DetectorOutput``).

        On CUDA the host reads the Batch's sensor masks once, here; the encoders, the fuser and
        the head then queue their kernels without waiting for the GPU except where a size
        depends on the data (voxel counts, the sparse convolutions' outputs)."""
        available, camera_mask_host = self._host_masks(batch)
        present = self.select(batch, modalities, available=available)
        bevs = self.encode(batch, present, camera_mask_host)
        fused, heads = self._fuse_and_decode(bevs, present)
        camera = bevs.get("camera")
        subsets = self._subsets(bevs, present) if self.training else ()
        return DetectorOutput(heads=heads, present=present, fused=fused,
                              depth_logits=None if camera is None else camera.depth_logits,
                              subsets=subsets,
                              pixel_logits=None if camera is None else camera.pixel_logits)

    def _subsets(self, bevs: dict[str, BEVFeatures], present: Tensor) -> tuple[SubsetOutput, ...]:
        """The ``subset_loss`` forwards: per subset, the frames it changes, fused from the
        subset's sensors alone (the encoders' maps reused) and decoded."""
        out = []
        dev = next(iter(bevs.values())).features.device
        for subset in self.subset_loss:
            sub = present & torch.tensor([m in subset for m in self.modalities])[None]
            frames = torch.nonzero(sub.any(1) & (sub != present).any(1)).squeeze(1)
            if len(frames) == 0:
                continue
            idx = frames.to(dev)
            # A subset without the cameras takes the LiDAR map without their paint.
            sub_bevs = {m: BEVFeatures((f.features if f.unpainted is None or "camera" in subset
                                        else f.unpainted)[idx], f.valid[idx])
                        for m, f in bevs.items() if m in subset}
            with self.norm_stats(self.stats_key(subset)):
                fused = self.fuser(sub_bevs, sub[frames].to(dev))
                out.append(SubsetOutput(subset, frames, self.decode_maps(fused, sub[frames])))
        return tuple(out)

    def decode_maps(self, fused: Tensor, present: Tensor) -> tuple[HeadOutput, ...]:
        """The head maps of fused BEV features, each frame's from the head of its sensors
        (``present``: (B, M) bool on the host): the ``subset_heads`` head of the smallest
        subset holding all of them, else ``head``."""
        if not self.subset_heads:
            return self.head(fused)
        keys = [self.head_key([m for m, p in zip(self.modalities, row) if p])
                for row in present.tolist()]
        heads = {k: (self.head if k == "" else self.subset_heads[k]) for k in keys}
        if len(heads) == 1:
            return next(iter(heads.values()))(fused)
        dev = fused.device
        parts, order = [], []
        for k, head in heads.items():
            frames = [i for i, key in enumerate(keys) if key == k]
            parts.append(head(fused[torch.tensor(frames, device=dev)]))
            order += frames
        return _merge_heads(parts, torch.argsort(torch.tensor(order)).to(dev))

    def loss(self, outputs: DetectorOutput, batch: Batch) -> dict[str, Tensor]:
        """Weighted loss terms (``loss_heatmap``, ``loss_regression``, ``loss_attribute``, and
        ``loss_depth`` when depth supervision is on); the training objective is their sum."""
        losses = self.head.loss(outputs.heads, batch.gt)
        if self.depth_weight > 0:
            losses["loss_depth"] = self.depth_weight * self._depth_loss(outputs, batch)
        if self.pixel_weight > 0:
            losses["loss_pixel"] = self.pixel_weight * self._pixel_loss(outputs, batch)
        if self.subset_loss and self.training:
            # Present in every training step (0 when dropout left no frame to change), so that
            # the log has the same columns throughout.
            total = outputs.fused.sum() * 0.0
            for sub in outputs.subsets:
                terms = self.head.loss(sub.heads, [batch.gt[i] for i in sub.frames.tolist()],
                                       code_weights=self.subset_code_weights)
                total = total + sum(terms.values())
            losses["loss_subset"] = self.subset_loss_weight * total
        return losses

    def _pixel_loss(self, outputs: DetectorOutput, batch: Batch) -> Tensor:
        """The painter's pixel loss over the cameras of the frames that used cameras and LiDAR
        (0 when there are none)."""
        logits = outputs.pixel_logits
        if logits is None:  # no frame used both sensors (modality dropout)
            return outputs.fused.sum() * 0.0
        if self.image_size is not None:  # the img_aug the painter saw
            batch = resize_images(batch, self.image_size)
        cams = self._painting_cameras(batch, outputs.present)
        pasted, lag = _keyframe_columns(batch)
        with torch.no_grad():
            classes, yaw = pixel_targets(
                batch.lidar_points, pasted, batch.gt, time_lag_col=lag,
                intrinsics=batch.intrinsics, ego_T_camera=batch.ego_T_camera,
                img_aug=batch.img_aug, camera_mask=cams, feature_shape=tuple(logits.shape[-2:]),
                stride=self.painter.stride)
        return pixel_loss(logits, classes, yaw)

    def _depth_loss(self, outputs: DetectorOutput, batch: Batch) -> Tensor:
        """Cross-entropy of the lift's depth against LiDAR, over the cameras this forward used
        in frames that have LiDAR (0 when there are none)."""
        logits = outputs.depth_logits
        if logits is None:  # no frame used its cameras (modality dropout)
            return outputs.fused.sum() * 0.0
        if self.image_size is not None:  # the img_aug the lift saw (a no-op when already sized)
            batch = resize_images(batch, self.image_size)
        dev = logits.device
        used = outputs.present[:, self.modalities.index("camera")].to(dev)
        cams = batch.camera_mask & (used & batch.lidar_mask)[:, None]
        pasted, lag = _keyframe_columns(batch)
        lift = self.encoders["camera"].lift
        with torch.no_grad():
            targets = lidar_depth_targets(
                batch.lidar_points, pasted, time_lag_col=lag, intrinsics=batch.intrinsics,
                ego_T_camera=batch.ego_T_camera, img_aug=batch.img_aug, camera_mask=cams,
                feature_shape=tuple(logits.shape[-2:]), stride=lift.stride,
                depth_bins=lift.depth_bins)
        return depth_loss(logits, targets)

    @torch.no_grad()
    def predict(self, batch: Batch, *, modalities: Sequence[str] | None = None) -> list[Detections]:
        """B Detections (ego frame of each sample), in eval mode semantics (no dropout); with
        ``test_flips``, from the head maps averaged over the frame and its mirrored views."""
        was_training = self.training
        self.eval()
        try:
            first = self.forward(batch, modalities=modalities)
            views = [first.heads]
            for flip in self.test_flips:
                heads = self.forward(flip_batch(batch, flip), modalities=modalities).heads
                views.append(unflip_heads(heads, flip, self.head.half_turn))
            dets = self.head.decode(merge_heads(views))
            if self.refine_velocity and "radar" in self.modalities:
                used = first.present[:, self.modalities.index("radar")].tolist()
                dets = [refine_velocity(d, batch.radar_points[i], batch.radar_fields,
                                        self.head.classes, still_returns=self.still_returns)
                        if used[i] else d
                        for i, d in enumerate(dets)]
            if self.standstill:
                dets = [apply_standstill(d, self.head.classes) for d in dets]
            return dets
        finally:
            self.train(was_training)


def _merge_heads(parts: Sequence[tuple[HeadOutput, ...]], inverse: Tensor
                 ) -> tuple[HeadOutput, ...]:
    """Head maps computed for groups of frames, concatenated and put back in the batch's order
    (``inverse``: the argsort of the groups' frame indices, concatenated)."""
    merged = []
    for group in zip(*parts):      # one class group: its maps from each part's frames
        merged.append(HeadOutput(*(torch.cat([getattr(o, f.name) for o in group])[inverse]
                                   for f in fields(HeadOutput))))
    return tuple(merged)


class NormStats(nn.Module):
    """A second set of running statistics for a list of BatchNorm layers (buffers ``mean<i>``,
    ``var<i>``, ``count<i>``), starting as copies of theirs."""

    def __init__(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        self.size = len(norms)
        for i, bn in enumerate(norms):
            self.register_buffer(f"mean{i}", bn.running_mean.detach().clone())
            self.register_buffer(f"var{i}", bn.running_var.detach().clone())
            self.register_buffer(f"count{i}", bn.num_batches_tracked.detach().clone())

    def swap(self, norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        """Exchange these statistics with the layers' (a second call swaps them back)."""
        if len(norms) != self.size:
            raise ValueError(f"NormStats holds {self.size} layers' statistics, got {len(norms)}")
        for i, bn in enumerate(norms):
            for ours, theirs in ((f"mean{i}", "running_mean"), (f"var{i}", "running_var"),
                                 (f"count{i}", "num_batches_tracked")):
                a, b = getattr(self, ours), getattr(bn, theirs)
                setattr(self, ours, b)
                setattr(bn, theirs, a)


def _keyframe_columns(batch: Batch) -> tuple[Tensor, int | None]:
    """What selects a Batch's measured keyframe LiDAR points: the (B,) count of pasted rows
    (zeros when the Batch has none) and the time lag's column (None: every row is keyframe)."""
    pasted = (batch.lidar_num_pasted if batch.lidar_num_pasted is not None
              else torch.zeros(len(batch), dtype=torch.int64))
    lag = batch.lidar_fields.index("time_lag") if "time_lag" in batch.lidar_fields else None
    return pasted, lag


def build_camera(cfg: ModelConfig) -> CameraEncoder:
    c = cfg.camera
    backbone = ResNetBackbone(stem_channels=c.stem_channels, stage_channels=c.stage_channels,
                              blocks_per_stage=c.blocks_per_stage)
    neck = FPN(in_channels=backbone.out_channels, in_strides=backbone.strides,
               out_channels=c.fpn_channels, out_stride=c.feature_stride)
    lift = DepthLift(in_channels=neck.out_channels, context_channels=c.context_channels,
                     depth_bins=c.depth_bins, stride=c.feature_stride, grid=cfg.grid)
    return CameraEncoder(backbone=backbone, neck=neck, lift=lift, out_channels=c.out_channels,
                         pixel_mean=c.pixel_mean, pixel_std=c.pixel_std)


def build_lidar(cfg: ModelConfig) -> LidarEncoder:
    c, grid = cfg.lidar, cfg.grid
    down = 2 ** (len(c.channels) - 1)
    voxel = (grid.cell_size / down, grid.cell_size / down, c.voxel_z)
    backbone = SparseBackbone3D(in_channels=c.point_features + 3, channels=c.channels,
                                algo=c.sparse_algo)
    depth = int(round((grid.z_range[1] - grid.z_range[0]) / c.voxel_z))
    for _ in range(len(c.channels) - 1):
        depth = (depth + 1) // 2  # a stride-2, pad-1, kernel-3 conv gives ceil(n / 2)
    collapse = HeightCollapse(in_channels=backbone.out_channels, depth=depth,
                              out_channels=c.out_channels)
    return LidarEncoder(grid=grid, voxel_size=voxel, point_features=c.point_features,
                        max_points_per_voxel=c.max_points_per_voxel, max_voxels=c.max_voxels,
                        backbone=backbone, collapse=collapse)


def build_radar(cfg: ModelConfig) -> RadarEncoder:
    c = cfg.radar
    return RadarEncoder(grid=cfg.grid, point_fields=c.point_fields,
                        hidden_channels=c.hidden_channels, out_channels=c.out_channels,
                        max_abs_velocity=c.max_abs_velocity, rcs_scale=c.rcs_scale,
                        time_lag_scale=c.time_lag_scale)


def build_model(cfg: ModelConfig) -> FusionDetector:
    """The one place a ``ModelConfig`` becomes modules."""
    builders = {"camera": build_camera, "lidar": build_lidar, "radar": build_radar}
    encoders = {m: builders[m](cfg) for m in MODALITIES if m in cfg.modalities}
    f = cfg.fusion
    fuser = AttentionFuser(in_channels={m: e.out_channels for m, e in encoders.items()},
                           channels=f.channels, heads=f.heads, context_blocks=f.context_blocks,
                           context_scales=f.context_scales, modality_bias=f.modality_bias)
    h = cfg.head

    def build_head() -> CenterHead:
        return CenterHead(
            in_channels=fuser.out_channels, grid=cfg.grid, classes=cfg.classes,
            class_groups=h.class_groups, shared_channels=h.shared_channels,
            head_channels=h.head_channels, min_overlap=h.min_overlap, min_radius=h.min_radius,
            max_objects=h.max_objects, heatmap_weight=h.heatmap_weight,
            regression_weight=h.regression_weight, attribute_weight=h.attribute_weight,
            code_weights=h.code_weights, score_threshold=h.score_threshold, top_k=h.top_k,
            max_detections=h.max_detections, nms_radius=h.nms_radius, half_turn=h.half_turn,
            refine_window=h.refine_window)

    head = build_head()
    subset_heads = [build_head() for _ in f.subset_loss] if f.subset_heads else []
    painter = None
    if cfg.camera.paint_channels > 0 and {"camera", "lidar"} <= set(encoders):
        painter = PointPainter(grid=cfg.grid, in_channels=cfg.camera.fpn_channels,
                               hidden_channels=cfg.camera.paint_channels,
                               num_classes=len(cfg.classes) if cfg.camera.pixel_weight > 0 else 0,
                               out_channels=encoders["lidar"].out_channels,
                               stride=cfg.camera.feature_stride)
    return FusionDetector(grid=cfg.grid, encoders=encoders, fuser=fuser, head=head,
                          image_size=cfg.camera.image_size if "camera" in encoders else None,
                          modality_dropout=f.modality_dropout,
                          depth_weight=cfg.camera.depth_weight, test_flips=cfg.test_flips,
                          refine_velocity=cfg.radar.refine_velocity,
                          still_returns=cfg.radar.still_returns,
                          standstill=cfg.standstill,
                          subset_loss=f.subset_loss, subset_loss_weight=f.subset_loss_weight,
                          subset_code_weights=f.subset_code_weights, subset_heads=subset_heads,
                          subset_norm_stats=f.subset_norm_stats, painter=painter,
                          pixel_weight=cfg.camera.pixel_weight if painter is not None else 0.0)
