"""The detector: one encoder per sensor (camera, LiDAR, radar) -> BEV attention fuser ->
CenterPoint head. ``build_model(cfg)`` is the one way a ``ModelConfig`` becomes modules;
see docs/model.md."""
from perception.models.config import (
    MODALITIES,
    CameraConfig,
    DataConfig,
    ExperimentConfig,
    FusionConfig,
    HeadConfig,
    LidarConfig,
    ModelConfig,
    RadarConfig,
    TrainConfig,
)
from perception.models.detector import FusionDetector, build_model
from perception.models.outputs import BEVFeatures, DetectorOutput, HeadOutput

__all__ = ["BEVFeatures", "CameraConfig", "DataConfig", "DetectorOutput", "ExperimentConfig",
           "FusionConfig", "FusionDetector", "HeadConfig", "HeadOutput", "LidarConfig",
           "MODALITIES", "ModelConfig", "RadarConfig", "TrainConfig", "build_model"]
