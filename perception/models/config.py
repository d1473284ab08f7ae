"""Schemas of the model (and the room for the experiment around it): frozen dataclasses that the
YAML files in ``configs/`` map onto one to one (``perception.config.load_config``).

Units: metres, seconds, pixels. The BEV raster is defined once, in ``ModelConfig.grid``, and every
stage reads it from there (the LiDAR voxel xy size is derived from it, never repeated).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

from perception.structures.grid import BEVGrid
from perception.structures.labels import DETECTION_CLASSES

MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar")
FLIPS: tuple[str, ...] = ("x", "y", "xy")   # test-time flips (ModelConfig.test_flips)
# ModelConfig fields that only change what ``predict`` does after training (no weights, no
# effect on the loss): a resumed run may change them, and a checkpoint trained with other values
# is still the model its config describes.
INFERENCE_ONLY: tuple[str, ...] = ("test_flips", "radar.refine_velocity",
                                   "radar.still_returns", "temporal_velocity", "temporal_still",
                                   "temporal_score", "temporal_confirm", "standstill",
                                   "face_motion")


def check_flips(flips: Sequence[str], grid: BEVGrid | None = None) -> tuple[str, ...]:
    """Validate a list of flips (and that ``grid`` is symmetric about the ego origin along the
    mirrored axes, without which mirrored cells do not line up). Returns it as a tuple."""
    flips = tuple(flips)
    bad = [f for f in flips if f not in FLIPS]
    if bad or len(set(flips)) != len(flips):
        raise ValueError(f"test_flips must be distinct values of {FLIPS}, got {list(flips)}")
    if grid is not None:
        for axis, rng in (("x", grid.x_range), ("y", grid.y_range)):
            if any(axis in f for f in flips) and rng[0] != -rng[1]:
                raise ValueError(f"test_flips {list(flips)} mirror {axis}, which needs a grid "
                                 f"symmetric about 0 along {axis}: {axis}_range is {list(rng)}")
    return flips


@dataclass(frozen=True)
class CameraConfig:
    """Camera branch: ResNet-style CNN + FPN -> depth-distribution lift -> ``ops.bev_pool``.

    Attributes:
        image_size: (H, W) pixels the network takes; batches of another size are resized by
            ``camera.transforms.resize_images`` (which updates ``img_aug``).
        stem_channels: channels of the stride-2 stem.
        stage_channels: one residual stage each, every stage halves the resolution (first stage
            at stride 4 after the stem).
        blocks_per_stage: residual blocks per stage.
        fpn_channels: channels of the FPN output.
        feature_stride: stride (pixels) of the FPN level that is lifted; must be one of the
            stage strides (4, 8, 16, ...).
        depth_bins: (min, max, step) metres of the categorical depth distribution; the bin
            centres are ``min + (i + 0.5) * step``.
        context_channels: channels of the lifted feature (what lands in BEV).
        out_channels: channels of the camera BEV map after the BEV conv.
        pixel_mean, pixel_std: RGB normalisation on [0, 255] values.
        depth_weight: weight of the depth supervision from LiDAR (``camera.depth``: cross-entropy
            of the lift's depth distribution against the nearest keyframe LiDAR point per feature
            pixel); 0 turns it off. When > 0, training loads LiDAR even for a model without a
            LiDAR input (as a target only; it is never the camera model's input).
        paint_channels: in a model with cameras and LiDAR, > 0 paints the camera features onto
            the keyframe LiDAR points and adds a map of them (a painter this many channels
            wide) to the LiDAR BEV map (``camera.paint``); 0 turns it off. Ignored by models
            without both sensors.
        pixel_weight: with ``paint_channels``, > 0 adds the painter's pixel head (per camera
            feature pixel: the class of what the LiDAR point there lies in, and that box's yaw
            relative to the ray), paints its outputs too and trains it with this weight
            (``loss_pixel``); 0: off.
    """

    image_size: tuple[int, int] = (128, 352)
    stem_channels: int = 32
    stage_channels: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    fpn_channels: int = 64
    feature_stride: int = 8
    depth_bins: tuple[float, float, float] = (1.0, 52.0, 1.0)
    context_channels: int = 32
    out_channels: int = 64
    pixel_mean: tuple[float, float, float] = (123.7, 116.3, 103.5)
    pixel_std: tuple[float, float, float] = (58.4, 57.1, 57.4)
    depth_weight: float = 0.0
    paint_channels: int = 0
    pixel_weight: float = 0.0

    def __post_init__(self):
        if self.paint_channels < 0:
            raise ValueError(f"camera.paint_channels must be >= 0 (0: off), got "
                             f"{self.paint_channels}")
        if self.pixel_weight < 0 or (self.pixel_weight > 0 and self.paint_channels == 0):
            raise ValueError(f"camera.pixel_weight must be >= 0 and needs paint_channels > 0, "
                             f"got {self.pixel_weight} with paint_channels "
                             f"{self.paint_channels}")

    @property
    def num_depth_bins(self) -> int:
        lo, hi, step = self.depth_bins
        n = (hi - lo) / step
        if hi <= lo or step <= 0 or abs(n - round(n)) > 1e-6:
            raise ValueError(f"depth_bins {self.depth_bins}: need a whole number of bins")
        return int(round(n))


@dataclass(frozen=True)
class LidarConfig:
    """LiDAR branch: ``ops.voxelize`` -> mean voxel feature -> spconv backbone -> height collapse.

    Attributes:
        voxel_z: voxel height, metres. The voxel xy size is ``grid.cell_size / 2 ** (len(channels)
            - 1)``: every stage after the first halves x, y and z so that the last stage lands
            exactly on the BEV grid.
        point_features: number of leading point columns used (x, y, z, intensity, time_lag).
        max_points_per_voxel, max_voxels: hard voxelization caps (per frame).
        channels: sparse stage channels; stage 0 is submanifold at full resolution.
        out_channels: channels of the LiDAR BEV map.
        sparse_algo: "auto" = Native on CPU, MaskImplicitGemm on CUDA (chosen at forward time).
    """

    voxel_z: float = 0.25
    point_features: int = 5
    max_points_per_voxel: int = 10
    max_voxels: int = 60_000
    channels: tuple[int, ...] = (16, 32, 64)
    out_channels: int = 128
    sparse_algo: Literal["auto", "native", "implicit_gemm"] = "auto"


@dataclass(frozen=True)
class RadarConfig:
    """Radar branch: per-point MLP (PointNet) -> max-pool per BEV cell -> BEV conv.

    Attributes:
        point_fields: radar columns the encoder reads (names from ``RADAR_FIELDS``); the cell
            offset of x, y is added. Compensated velocity is also passed straight through to the
            BEV map as a per-cell mean so that the head can read it without learning to.
        hidden_channels: widths of the per-point MLP.
        out_channels: channels of the radar BEV map (the raw velocity/count channels included).
        max_abs_velocity: m/s; velocities are divided by it (a scale, not a clip).
        rcs_scale, time_lag_scale: factors on the RCS (dBsm) and time lag (s) inputs.
        refine_velocity: after decoding, set each vehicle's velocity (and front/back heading)
            from the Doppler of its radar returns (``perception.models.radar.velocity``; no
            weights, so it can be switched on or off for a trained model).
        still_returns: with ``refine_velocity``, > 0: a vehicle or cycle whose box holds no
            moving radar return and at least this many static ones seen along its heading
            stands (velocity 0, a moving attribute its family's still one); 0: off
            (``perception.models.radar.velocity``).
    The defaults bring every input to order 1 (RCS std ~7 dBsm -> ~0.7, velocities up to
    ~15 m/s -> ~3, lags up to ~0.5 s -> ~1): with RCS raw beside velocities / 20 (std ~0.15) the
    per-point MLP learned from RCS long before velocity could count (docs/results.md).
    """

    point_fields: tuple[str, ...] = ("z", "rcs", "vx_comp", "vy_comp", "time_lag")
    hidden_channels: tuple[int, ...] = (32, 64)
    out_channels: int = 64
    max_abs_velocity: float = 5.0
    rcs_scale: float = 0.1
    time_lag_scale: float = 2.0
    refine_velocity: bool = False
    still_returns: int = 0

    def __post_init__(self):
        if self.still_returns < 0:
            raise ValueError(f"radar.still_returns must be >= 0 (0: off), got "
                             f"{self.still_returns}")


@dataclass(frozen=True)
class FusionConfig:
    """BEV attention fuser.

    Attributes:
        channels: common channel count of the fused BEV.
        heads: attention heads of the per-cell modality attention.
        context_blocks: residual 3x3 conv blocks per level of the spatial context network.
        context_scales: levels of that network (each halves the resolution and doubles the
            channels; 1 = all blocks at the grid resolution). The grid's size must be divisible
            by ``2 ** (context_scales - 1)``.
        modality_dropout: per-frame probability, in training, of dropping each modality
            (at least one always stays), so the fuser never relies on any one sensor: one
            probability for every sensor, or a mapping sensor -> probability (sensors it does
            not name are never dropped), e.g. ``{camera: 0.25, lidar: 0.25, radar: 0.5}``.
        modality_dropout_start: fraction of ``train.max_iters`` trained with every sensor
            before modality dropout starts (0: dropout from the first iteration).
        modality_dropout_late: rates for the end of the run, from ``modality_dropout_late_start``
            on: a mapping overrides the sensors it names (``{lidar: 0.5}``: LiDAR dropped in
            half the frames, the others as before), a number sets every sensor; None (default):
            no late phase: a run learns with a sensor's usual share early and practises
            without it late (docs/results.md has what it measured).
        modality_dropout_late_start: fraction of ``train.max_iters`` at which the late rates
            take over (after ``modality_dropout_start``).
        subset_loss: sensor subsets trained on every frame besides the frame's own sensors:
            in training, each frame that uses a sensor outside a subset and one inside it is
            fused again from the subset's sensors alone (the encoders run once) and decoded by
            the same head, its loss added as ``loss_subset``. ``[[camera, radar]]`` trains the
            LiDAR-missing path on every frame instead of only the frames LiDAR dropout drops.
        subset_loss_weight: weight of ``loss_subset`` (each subset's head loss, summed).
        subset_code_weights: the 10 regression channel weights of the subset passes' loss
            (``head.code_weights``' layout); None (default): the head's own. Zeros for sin
            and cos leave heading to each frame's own pass (its sensors after dropout).
        subset_heads: give each ``subset_loss`` subset a head of its own (same architecture as
            ``head``), which decodes every frame whose sensors all lie in the subset: its
            subset pass, a frame dropout left without the others, a test without them
            (``[[camera, radar]]``: every frame without LiDAR). The main head then learns only
            from frames with LiDAR. ``train.init_from`` a file without them starts each from
            the file's head.
        subset_norm_stats: the BatchNorm layers after the fuser (its context network and the
            heads) keep running statistics of their own for each ``subset_loss`` subset,
            gathered from the frames whose sensors all lie in it (its subset passes, frames
            dropout left within it) and used for such frames at test time; the usual
            statistics then describe only the frames with a sensor outside every subset.
            Without it the subset passes (one per frame) pull the usual statistics halfway
            towards the features of frames without LiDAR, which every frame is then
            normalised with at test time (docs/results.md, "BatchNorm statistics per sensor
            set"). A file trained without them gets them from ``tools/bn_recalibrate.py``.
        modality_bias: a learned preference per sensor and attention head, added to the fuser's
            per-cell attention logits (zero at a fresh start). With ``train.init_favour`` a
            fusion model started from a model of fewer sensors (``train.init_partial``) begins
            as (nearly) that model: the attention and the channel weights favour its sensors,
            and the others can gain weight as training finds them useful (docs/training.md).
    """

    channels: int = 128
    heads: int = 4
    context_blocks: int = 2
    context_scales: int = 1
    modality_dropout: float | dict[str, float] = 0.25
    modality_dropout_start: float = 0.0
    modality_dropout_late: float | dict[str, float] | None = None
    modality_dropout_late_start: float = 0.875
    subset_loss: tuple[tuple[str, ...], ...] = ()
    subset_loss_weight: float = 1.0
    subset_code_weights: tuple[float, ...] | None = None
    subset_heads: bool = False
    subset_norm_stats: bool = False
    modality_bias: bool = False

    def __post_init__(self):
        _check_dropout_rates("fusion.modality_dropout", self.modality_dropout)
        for subset in self.subset_loss:
            unknown = sorted(set(subset) - set(MODALITIES))
            if not subset or unknown or len(set(subset)) != len(subset):
                raise ValueError(f"fusion.subset_loss entry {list(subset)} must name distinct "
                                 f"sensors of {list(MODALITIES)}"
                                 + (f" (unknown: {unknown})" if unknown else ""))
        if not self.subset_loss_weight > 0:
            raise ValueError("fusion.subset_loss_weight must be > 0, got "
                             f"{self.subset_loss_weight}")
        if self.subset_code_weights is not None and (
                len(self.subset_code_weights) != 10
                or not all(w >= 0 for w in self.subset_code_weights)):
            raise ValueError("fusion.subset_code_weights needs 10 weights >= 0 (dx, dy, z, "
                             "log l, log w, log h, sin, cos, vx, vy), got "
                             f"{list(self.subset_code_weights)}")
        if self.subset_heads and not self.subset_loss:
            raise ValueError("fusion.subset_heads needs fusion.subset_loss subsets to give heads")
        if self.subset_norm_stats and not self.subset_loss:
            raise ValueError("fusion.subset_norm_stats needs fusion.subset_loss subsets to keep "
                             "statistics for")
        if not 0.0 <= self.modality_dropout_start < 1.0:
            raise ValueError("fusion.modality_dropout_start is a fraction of train.max_iters in "
                             f"[0, 1), got {self.modality_dropout_start}")
        if self.modality_dropout_late is not None:
            _check_dropout_rates("fusion.modality_dropout_late", self.modality_dropout_late)
            if not self.modality_dropout_start < self.modality_dropout_late_start < 1.0:
                raise ValueError(
                    "fusion.modality_dropout_late_start is a fraction of train.max_iters after "
                    f"modality_dropout_start ({self.modality_dropout_start}) and below 1, got "
                    f"{self.modality_dropout_late_start}")

    def dropout_at(self, iteration: int, max_iters: int) -> float | dict[str, float]:
        """The modality dropout rates of training iteration ``iteration`` (0-based) of
        ``max_iters``: 0 before ``modality_dropout_start``, the late rates from
        ``modality_dropout_late_start`` on, ``modality_dropout`` between."""
        if iteration < int(round(self.modality_dropout_start * max_iters)):
            return 0.0
        late = self.modality_dropout_late
        if late is None or iteration < int(round(self.modality_dropout_late_start * max_iters)):
            return self.modality_dropout
        if not isinstance(late, dict):
            return float(late)
        base = self.modality_dropout
        rates = dict(base) if isinstance(base, dict) else {m: float(base) for m in MODALITIES}
        return {**rates, **late}


def _check_dropout_rates(key: str, rates) -> None:
    """A probability, or a mapping of known sensors to probabilities."""
    if isinstance(rates, dict):
        unknown = sorted(set(rates) - set(MODALITIES))
        if unknown:
            raise ValueError(f"{key} names unknown sensors {unknown}; sensors are "
                             f"{list(MODALITIES)}")
    else:
        rates = {"every sensor": rates}
    for sensor, p in rates.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{key} ({sensor}) is a probability, got {p}")


@dataclass(frozen=True)
class HeadConfig:
    """CenterPoint-style head.

    Attributes:
        class_groups: tuples of class names, one heatmap head per group.
        shared_channels: channels of the shared conv.
        head_channels: channels of each group's conv.
        min_overlap, min_radius: Gaussian heatmap radius from the box footprint (cells).
        max_objects: per frame, for target buffers.
        loss weights: heatmap, regression (per-channel weights in ``code_weights``), attribute.
        code_weights: weights of the 10 regression channels
            (dx, dy, z, log l, log w, log h, sin, cos, vx, vy); velocity is coded in units of
            5 m/s (``heads.targets.VELOCITY_SCALE``), so 1.0 there is 0.2 per m/s.
        score_threshold, top_k, max_detections: decoding.
        nms_radius: per group, circle-NMS distance (metres); 0 disables NMS for that group
            (CenterPoint keeps peaks only for large classes).
        half_turn: classes whose heading is coded modulo a half turn, sin and cos of twice the
            yaw (``heads.targets``): what looks the same turned round (barriers: the devkit
            scores their AOE modulo pi). Each must fill its class group. Changes what the
            weights mean: a checkpoint decodes right only with the value it trained with.
        refine_window: per class, the half-width (metres) of the square window around a
            detection's peak cell over which its centre and heading are averaged, weighted by
            the class's heatmap (``heads.decode.refine_codes``); rounded down to whole cells,
            0 or absent: the peak cell's own. Decoding only: any checkpoint, no retraining.
    """

    class_groups: tuple[tuple[str, ...], ...] = (
        ("car",), ("truck", "construction_vehicle"), ("bus", "trailer"), ("barrier",),
        ("motorcycle", "bicycle"), ("pedestrian", "traffic_cone"),
    )
    shared_channels: int = 64
    head_channels: int = 64
    min_overlap: float = 0.1
    min_radius: int = 2
    max_objects: int = 500
    heatmap_weight: float = 1.0
    regression_weight: float = 0.25
    attribute_weight: float = 0.2
    code_weights: tuple[float, ...] = (1.0,) * 10
    score_threshold: float = 0.1
    top_k: int = 500
    max_detections: int = 300
    nms_radius: tuple[float, ...] = (2.0, 3.5, 3.2, 1.0, 0.9, 0.4)
    half_turn: tuple[str, ...] = ()
    refine_window: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """The whole detector. ``modalities`` selects which encoders are built.

    ``test_flips``: flip test-time augmentation at prediction (``FusionDetector.predict``, so
    ``perception eval`` and the demo): besides the frame itself the detector also runs on its
    mirror images ``"x"`` (x -> -x), ``"y"`` and ``"xy"`` listed here and averages the head maps
    (``perception.models.tta``); each view costs one more forward. Empty: off. Training never
    uses it. Needs a grid symmetric about the ego origin along the mirrored axes.

    ``temporal_velocity``: over a sequence (``perception eval``), each detection of a moving
    class matched to the previous keyframe's detections of its scene gives its velocity (and
    front/back, a pedestrian's heading) where it clearly moves and the network or radar said
    otherwise (``perception.models.temporal``). Uses past frames only; no weights.

    ``temporal_still``: over a sequence, a detection of a moving class that stood still since
    the previous keyframe (displacement below half its class's ``MIN_SPEED``) while the network
    gives it a speed (more than 1 m/s off) gets velocity 0 and, where its attribute is the
    moving one, its family's still attribute (``perception.models.temporal.still_from_previous``).

    ``temporal_score``: in [0, 1], 0 off. Over a sequence, a detection found again within 1 m of
    where a previous keyframe's detection of its class was gets the score
    ``1 - (1 - s) (1 - temporal_score * s_prev)`` (``perception.models.temporal``).

    ``temporal_confirm``: m/s, 0 off. The two rules above look three keyframes back where they
    can: a displacement below three times its class's floor makes an object moving only where
    the displacement before it agrees within this many m/s, and the still rule tests the mean
    of the two displacements (``perception.models.temporal``, ``confirm``).

    ``standstill``: ``predict`` ends by making each detection of a vehicle, cycle or pedestrian
    stand (velocity 0, its family's still attribute) below its family's moving speed and move
    (the moving attribute) at or above it (``perception.models.standstill``). No weights.

    ``face_motion``: the last step of inference (after the temporal rules): a vehicle, cycle or
    pedestrian at or above its family's moving speed faces its velocity, yaw = atan2(vy, vx)
    (``perception.models.standstill.face_motion``). No weights.
    """

    grid: BEVGrid = field(default_factory=BEVGrid)
    modalities: tuple[str, ...] = MODALITIES
    classes: tuple[str, ...] = DETECTION_CLASSES
    camera: CameraConfig = field(default_factory=CameraConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    radar: RadarConfig = field(default_factory=RadarConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    test_flips: tuple[str, ...] = ()
    temporal_velocity: bool = False
    temporal_still: bool = False
    temporal_score: float = 0.0
    temporal_confirm: float = 0.0
    standstill: bool = False
    face_motion: bool = False

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if not self.modalities or unknown:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, "
                             f"got {self.modalities}")
        grouped = [c for g in self.head.class_groups for c in g]
        if sorted(grouped) != sorted(self.classes):
            raise ValueError(f"head.class_groups {self.head.class_groups} must cover the classes "
                             f"{self.classes} exactly once")
        if len(self.head.nms_radius) != len(self.head.class_groups):
            raise ValueError("head.nms_radius needs one entry per class group")
        unknown = sorted(set(self.head.half_turn) - set(self.classes))
        if unknown:
            raise ValueError(f"head.half_turn {unknown} are not among the classes {self.classes}")
        unknown = sorted(set(self.head.refine_window) - set(self.classes))
        if unknown:
            raise ValueError(f"head.refine_window {unknown} are not among the classes "
                             f"{self.classes}")
        bad = {c: r for c, r in self.head.refine_window.items() if not r >= 0}
        if bad:
            raise ValueError(f"head.refine_window needs half-widths >= 0 (metres), got {bad}")
        from perception.models.heads.targets import half_turn_groups
        half_turn_groups(self.head.class_groups, tuple(self.head.half_turn))   # mixed: raises
        check_flips(self.test_flips, self.grid)
        if not 0.0 <= self.temporal_score <= 1.0:
            raise ValueError(f"temporal_score must be in [0, 1], got {self.temporal_score}")
        if not self.temporal_confirm >= 0.0:
            raise ValueError(f"temporal_confirm must be >= 0 (m/s; 0 off), got "
                             f"{self.temporal_confirm}")
        for subset in self.fusion.subset_loss:
            if not set(subset) < set(self.modalities):
                raise ValueError(f"fusion.subset_loss entry {list(subset)} must be a proper subset "
                                 f"of model.modalities {list(self.modalities)}")


@dataclass(frozen=True)
class GlobalAugmentConfig:
    """Global BEV augmentation, applied to every sensor, the GT boxes and the camera extrinsics
    alike (``perception.data.augment``).

    Attributes:
        rotation: (min, max) radians, uniform rotation about ego +z.
        scale: (min, max) uniform scale factor (points, box centres and sizes, velocities).
        flip_x: probability of mirroring x -> -x.
        flip_y: probability of mirroring y -> -y.
        translation_std: (x, y, z) metres, std of a Gaussian translation (0 = none).
    """

    rotation: tuple[float, float] = (-0.3925, 0.3925)
    scale: tuple[float, float] = (0.95, 1.05)
    flip_x: float = 0.5
    flip_y: float = 0.5
    translation_std: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ImageAugmentConfig:
    """Per-camera image augmentation to the network's ``camera.image_size``, recorded in
    ``img_aug`` so the lift stays exact.

    Attributes:
        scale: (min, max) factor on the resize that makes the image cover the network size.
        crop_y: (min, max) vertical crop anchor: 0 keeps the top rows, 1 the bottom ones.
        crop_x: (min, max) horizontal crop anchor (0.5 = centred).
        flip: probability of a horizontal flip.
        rotation: (min, max) radians, in-plane rotation about the image centre.
        flip_with_bev: flip every image exactly when the global BEV transform mirrors the scene
            (one of ``flip_x``, ``flip_y``), instead of with probability ``flip``. The pixels
            then show the mirrored scene as a (virtual) rigid camera would see it, so what an
            object's appearance says of its heading agrees with its mirrored box; with
            independent flips it is the mirror image of the truth in half the camera views
            (``perception.data.augment``, "Mirrors and the cameras"). Off in the configs: the
            fusion model retrained with it scored the same (docs/results.md).
    """

    scale: tuple[float, float] = (0.94, 1.11)
    crop_y: tuple[float, float] = (0.8, 1.0)
    crop_x: tuple[float, float] = (0.0, 1.0)
    flip: float = 0.5
    rotation: tuple[float, float] = (-0.0942, 0.0942)
    flip_with_bev: bool = False


@dataclass(frozen=True)
class PasteConfig:
    """Ground-truth copy-paste for LiDAR and radar (SECOND's "GT sampling").

    Attributes:
        counts: class name -> how many objects of that class a frame should hold after pasting
            (only the missing ones are pasted); empty = off.
        min_lidar_points: database entries need at least this many LiDAR points.
        radar_margin: metres added around a box when collecting its radar returns (radar
            returns scatter around the surface, often just outside the annotated box).
        database: path of the database file (built from the training split when missing);
            relative paths are under the work dir.
        fade: fraction of ``train.max_iters``, at the end of training, without pasting
            (TransFusion's "fade strategy"): pasted objects exist only in the point clouds, and
            the training classes' pasted copies carry their source frames' motion, so the last
            iterations show the model only real scenes, where every sensor agrees. 0: paste to
            the end.
    """

    counts: dict[str, int] = field(default_factory=dict)
    min_lidar_points: int = 5
    radar_margin: float = 0.5
    database: str = "gt_database.pt"
    fade: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.fade < 1.0:
            raise ValueError(f"data.augment.paste.fade is a fraction of train.max_iters in [0, 1), "
                             f"got {self.fade}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; ``enabled: false`` turns all of it off."""

    enabled: bool = True
    global_bev: GlobalAugmentConfig = field(default_factory=GlobalAugmentConfig)
    image: ImageAugmentConfig = field(default_factory=ImageAugmentConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)


@dataclass(frozen=True)
class DataConfig:
    """Where the frames come from and how training sees them.

    Attributes:
        root, version: the nuScenes-format dataset (``perception train --dataroot/--version``
            override them).
        train_split, val_split: devkit split names.
        lidar_sweeps, radar_sweeps: sweeps aggregated per frame (keyframe included).
        cbgs: class-balanced grouping and sampling (CenterPoint): frames re-drawn so that every
            class is seen about equally often.
        num_workers: DataLoader worker processes (0 = load in the training process).
        augment: training augmentation.
    """

    root: str = "data/synthetic/mini"
    version: str = "v1.0-mini"
    train_split: str = "mini_train"
    val_split: str = "mini_val"
    lidar_sweeps: int = 1
    radar_sweeps: int = 1
    cbgs: bool = False
    num_workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (``perception.engine.train``).

    Attributes:
        batch_size: frames per iteration.
        max_iters: iterations of the run (the schedule spans exactly these).
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decoupled weight decay (not applied to norms and biases).
        betas: AdamW betas.
        schedule: "onecycle" (cosine ramp from ``lr / 25`` up to ``lr`` over the warm-up, then
            cosine anneal to ``lr / final_div``) or "cosine" (linear ramp from ``lr / 25``,
            then the same cosine decay).
        warmup: fraction of ``max_iters`` spent warming up.
        final_div: final lr = lr / final_div (both schedules).
        grad_clip: max global gradient norm (0 = no clipping).
        amp: mixed precision (float16 autocast + gradient scaling); CUDA only, ignored on CPU.
        cpu_bf16: on CPU, bfloat16 autocast (no gradient scaling: bfloat16 has float32's
            range). Only where the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere
            training warns and stays in float32. The sparse LiDAR backbone, BEV pooling and the
            losses stay in float32 (docs/training.md, "bfloat16 on CPU").
        seed: seeds weights, data order and augmentation.
        deterministic: ask torch for deterministic kernels (slower on CUDA).
        checkpoint_interval: write ``iter_N.pt`` and ``latest.pt`` every N iterations (and at
            the end).
        keep_checkpoints: how many ``iter_N.pt`` to keep (0 = all).
        log_interval: iterations per CSV row / progress line.
        init_from: weights to start from instead of a random initialisation: a training
            checkpoint or an exported model file of the same architecture (a fine-tune, or a
            second phase with other losses). Only the model's weights are read; the optimizer,
            schedule and data order start afresh from ``seed``. ``--resume`` ignores it (the
            checkpoint it resumes holds the weights). None = random initialisation.
        init_partial: ``init_from`` a model of other sensors: the tensors it shares with this
            one by name and shape are loaded (per-modality rows by sensor name), the rest
            start fresh (e.g. a fusion model whose LiDAR path, fuser and head start as the
            LiDAR model's). False = every tensor must match.
        init_favour: with ``init_partial``, from a file of fewer sensors than the model: the
            fuser's per-sensor logits (``fuser.channel_logits`` and, with
            ``fusion.modality_bias``, the attention's) start this much higher for the file's
            sensors than for the fresh ones, so that the fused feature starts as (nearly) the
            file's model's and the fresh encoders' noise does not dilute it (5: the file's
            sensor takes ~99 % of each channel's weight beside two fresh ones). 0 = no
            preference (every sensor weighted alike at the start).
        init_encoders: sensor -> file: after ``init_from`` (or instead of it), that sensor's
            encoder (``encoders.<sensor>.*``) starts as the file's, e.g. a fusion model's camera
            network from the camera model's first phase while ``init_from`` gives the LiDAR
            path. The file must hold that encoder, of the same shapes. Empty = none.
    """

    batch_size: int = 1
    max_iters: int = 1000
    lr: float = 2e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    warmup: float = 0.1
    final_div: float = 1e3
    grad_clip: float = 35.0
    amp: bool = True
    cpu_bf16: bool = False
    seed: int = 0
    deterministic: bool = True
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    log_interval: int = 10
    init_from: str | None = None
    init_partial: bool = False
    init_favour: float = 0.0
    init_encoders: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.batch_size < 1 or self.max_iters < 1:
            raise ValueError("batch_size and max_iters must be >= 1")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of max_iters in [0, 1), got {self.warmup}")
        if self.checkpoint_interval < 1 or self.log_interval < 1:
            raise ValueError("checkpoint_interval and log_interval must be >= 1")
        if self.init_favour < 0 or (self.init_favour and not self.init_partial):
            raise ValueError("train.init_favour must be >= 0 and needs train.init_partial "
                             f"(a start from a file of fewer sensors), got {self.init_favour}"
                             f" with init_partial {self.init_partial}")
        unknown = set(self.init_encoders) - set(MODALITIES)
        if unknown:
            raise ValueError(f"train.init_encoders: unknown sensors {sorted(unknown)} "
                             f"(sensors: {list(MODALITIES)})")


@dataclass(frozen=True)
class ExperimentConfig:
    """What a config file in ``configs/`` describes: model, data and training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
