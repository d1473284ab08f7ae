"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so the safe
``torch.load(weights_only=True)`` reads it):

    {"format": 1, "iteration": int, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "scaler": ... or None, "rng": {...}, "config": resolved config as plain data}

Atomic means a reader (or a crash at any moment) sees either the old file or the complete new
one, never a torn file: the bytes go to ``NAME.tmp`` in the same folder, are fsynced, then
``os.replace`` swaps them in. ``latest.pt`` is a hard link to the newest ``iter_N.pt`` (a second
``os.replace``), falling back to a copy where the filesystem has no hard links.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
LATEST = "latest.pt"
_ITER_RE = re.compile(r"^iter_(\d+)\.pt$")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _link_latest(src: Path) -> Path:
    dst = src.with_name(LATEST)
    tmp = src.with_name(f".{LATEST}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def save_checkpoint(state: dict, work_dir: str | os.PathLike, iteration: int,
                    keep: int = 0) -> Path:
    """Write ``iter_{iteration}.pt`` and point ``latest.pt`` at it; prune old ``iter_*.pt``.

    Args:
        state: the checkpoint dict (see the module docstring).
        keep: how many ``iter_N.pt`` files to keep, newest first (0 = all).
    Returns:
        The path of ``iter_{iteration}.pt``.
    """
    work_dir = Path(work_dir)
    path = atomic_save(state, work_dir / f"iter_{iteration}.pt")
    _link_latest(path)
    if keep > 0:
        for old in list_checkpoints(work_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(work_dir: str | os.PathLike) -> list[Path]:
    """``iter_N.pt`` files of a work dir, oldest (smallest N) first."""
    found = []
    for p in Path(work_dir).glob("iter_*.pt"):
        m = _ITER_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint (``weights_only=True``) and check its format."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a perception checkpoint of format {FORMAT}")
    return state


def model_state(path_or_state) -> dict:
    """The model's state_dict from a checkpoint path or dict (or a bare state_dict)."""
    state = path_or_state
    if not isinstance(state, dict):
        state = torch.load(path_or_state, map_location="cpu", weights_only=True)
    return state["model"] if "model" in state and "format" in state else state


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                 half: bool = True) -> Path:
    """A training checkpoint -> a weights-only model file to ship or share.

    Keeps the model's state (floating tensors in float16 when ``half``: half the size, and
    ``load_state_dict`` casts them back to the model's float32), the training config and the
    iteration; drops the optimizer, schedule and RNG state. ``model_state`` and
    ``perception eval --checkpoint`` read the result like any checkpoint.
    """
    ck = load_checkpoint(checkpoint)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
             for k, v in ck["model"].items()}
    return atomic_save({"format": FORMAT, "kind": "model", "model": state,
                        "config": ck["config"], "iteration": ck["iteration"],
                        "torch_version": ck.get("torch_version"), "half": half}, out)


# ---------------------------------------------------------------------------------------------
# RNG state, as plain data (weights_only-loadable)
# ---------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Python, numpy, torch CPU and (when present) CUDA generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    out = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return out


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
