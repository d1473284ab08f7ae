"""Synthetic nuScenes-format world generator.

``generate(out_dir, SynthConfig(...))`` writes a complete nuScenes-format dataset (13 tables,
samples/, sweeps/, maps/) that the devkit's ``NuScenes`` loads and ``DetectionEval`` evaluates;
``summarize(dataroot, version)`` measures any nuScenes-format dataset (synthetic or real).

Importing this package is cheap: the names below are resolved on first use (PEP 562), so the
devkit and the sensor models load only when a dataset is generated or summarized.
"""
from __future__ import annotations

__all__ = ["SynthConfig", "generate", "summarize", "format_summary"]

_LAZY = {"SynthConfig": "generate", "generate": "generate", "summarize": "info",
         "format_summary": "info"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
