"""The training data stream: an endless, seeded, resumable sequence of ``(index, seed,
position)`` keys.

Position ``p`` of the stream (the p-th frame training consumes) is a pure function of
``(seed, p)``: epoch ``e = p // epoch_length`` is a permutation drawn from ``(seed, e)``, and the
per-sample augmentation seed is drawn from ``(seed, p)``. So resuming at iteration ``i`` is just
starting the stream at ``p = i * batch_size``, whatever the DataLoader prefetched before the
interruption, and a sample's augmentation does not depend on which worker loads it.

CBGS (class-balanced grouping and sampling, Zhu et al. 2019, as used by CenterPoint): each epoch
re-draws frames so that every class present in the split gets the same number of draws: for class
c, whose objects appear in the frames F_c, draw ``floor(N / K)`` frames from F_c with replacement,
where N = sum_c |F_c| and K the number of classes present. Rare classes are then seen about as
often as cars; frames without any object drop out.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch


def frame_classes(dataset) -> list[np.ndarray]:
    """Per frame, the class indices of its GT objects (unique), read without loading sensors.

    Works for ``NuScenesDataset`` (its per-sample records); other datasets are loaded frame by
    frame (slow, but only once).
    """
    records = getattr(dataset, "records", None)
    if records is not None:
        return [np.unique(np.asarray(r.gt.get("labels", []), dtype=np.int64)) for r in records]
    out = []
    for i in range(len(dataset)):
        gt = dataset[i].gt
        out.append(np.zeros(0, np.int64) if gt is None else np.unique(gt.labels.numpy()))
    return out


def cbgs_indices(classes_per_frame: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One CBGS epoch (see the module docstring), in class order (shuffle afterwards).

    Args:
        classes_per_frame: per frame, its class indices.
        rng: the epoch's generator.
    Returns:
        (L,) int64 frame indices, L = K * floor(N / K).
    """
    by_class: dict[int, list[int]] = {}
    for i, cls in enumerate(classes_per_frame):
        for c in np.asarray(cls).tolist():
            by_class.setdefault(int(c), []).append(i)
    if not by_class:
        raise ValueError("CBGS needs frames with ground truth; no frame has an object")
    total = sum(len(v) for v in by_class.values())
    per_class = total // len(by_class)
    draws = [rng.choice(np.asarray(by_class[c]), size=per_class, replace=True)
             for c in sorted(by_class)]
    return np.concatenate(draws).astype(np.int64)


class TrainSampler(torch.utils.data.Sampler):
    """Endless ``(index, seed, position)`` stream starting at position ``start``.

    Args:
        size: frames in the dataset.
        seed: the run's seed.
        start: stream position to start at (``iteration * batch_size`` when resuming).
        classes_per_frame: enables CBGS (from :func:`frame_classes`); None = plain shuffling.
    """

    def __init__(self, size: int, seed: int, start: int = 0,
                 classes_per_frame: Sequence[np.ndarray] | None = None):
        if size < 1:
            raise ValueError("the training split is empty")
        self.size, self.seed, self.start = int(size), int(seed), int(start)
        self.classes_per_frame = classes_per_frame
        self.epoch_length = len(self.epoch(0))

    def epoch(self, e: int) -> np.ndarray:
        """(L,) frame indices of epoch ``e`` in the order they are used."""
        rng = np.random.default_rng([self.seed, e])
        if self.classes_per_frame is None:
            return rng.permutation(self.size)
        return rng.permutation(cbgs_indices(self.classes_per_frame, rng))

    def sample_seed(self, position: int) -> int:
        """The augmentation seed of stream position ``position``."""
        return int(np.random.SeedSequence([self.seed, 1, position]).generate_state(1)[0])

    def keys(self, start: int, count: int) -> list[tuple[int, int, int]]:
        """``count`` keys from position ``start`` (what iterating yields, as a list)."""
        it = self._iter_from(start)
        return [next(it) for _ in range(count)]

    def _iter_from(self, position: int) -> Iterator[tuple[int, int, int]]:
        e, offset = divmod(position, self.epoch_length)
        while True:
            order = self.epoch(e)
            for i in range(offset, len(order)):
                yield int(order[i]), self.sample_seed(position), position
                position += 1
            e, offset = e + 1, 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return self._iter_from(self.start)
