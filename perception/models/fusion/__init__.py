"""Fusion: per-cell attention over the modalities present (masked), then spatial context."""
from perception.models.fusion.fuser import AttentionFuser

__all__ = ["AttentionFuser"]
