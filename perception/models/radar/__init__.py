"""Radar branch: PointNet-style per-point encoder scattered to BEV, raw Doppler passed through."""
from perception.models.radar.encoder import RAW_CHANNELS, RadarEncoder

__all__ = ["RAW_CHANNELS", "RadarEncoder"]
