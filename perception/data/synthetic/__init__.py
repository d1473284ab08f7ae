"""Synthetic nuScenes-format world generator.

``generate(out_dir, SynthConfig(...))`` writes a complete nuScenes-format dataset (13 tables,
samples/, sweeps/, maps/) that the devkit's ``NuScenes`` loads and ``DetectionEval`` evaluates;
``summarize(dataroot, version)`` measures any nuScenes-format dataset (synthetic or real).

Modules: geometry.py (what sensors see), world.py + layout.py + actors.py (the scenario),
lidar.py / radar.py / camera.py (sensor models), rig.py (sensor placement), writer.py (one scene
to files and tables), generate.py (all scenes, in parallel), info.py (summary).
"""
from perception.data.synthetic.generate import SynthConfig, generate
from perception.data.synthetic.info import format_summary, summarize

__all__ = ["SynthConfig", "generate", "summarize", "format_summary"]
