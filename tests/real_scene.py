"""Where the real nuScenes scene-0916 lies, for every test that reads it: ``<repo>/../shared/data``
or ``$PERCEPTION_SHARED_DATA`` (the folder holding ``nuscenes-scene-0916/``). Tests skip with
:data:`MISSING` where it is absent (:data:`needs_scene` as a mark, :func:`require_scene` in a
fixture). Importable as ``real_scene`` (pytest.ini: ``pythonpath``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PERCEPTION_SHARED_DATA", REPO / ".." / "shared" / "data"))
DATAROOT = (SHARED_DATA / "nuscenes-scene-0916").resolve()
VERSION = "v1.0-mini"
PRESENT = (DATAROOT / VERSION / "sample.json").is_file()
MISSING = (f"nuScenes scene-0916 not found at {DATAROOT} (set PERCEPTION_SHARED_DATA to the folder "
           "holding nuscenes-scene-0916/)")
needs_scene = pytest.mark.skipif(not PRESENT, reason=MISSING)


def require_scene() -> None:
    """Skip the calling test (or fixture) where the scene is absent."""
    if not PRESENT:
        pytest.skip(MISSING)
