"""Frames -> :class:`Batch`: the collate function DataLoaders use (defined with the structures)."""
from perception.structures.batch import Batch, collate, points_with_batch_index

__all__ = ["Batch", "collate", "points_with_batch_index"]
