"""The `perception` command end to end on a tiny synthetic world: synth -> info -> render."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import yaml

from perception.cli import main


def test_synth_info_render_and_reuse(tmp_path, capsys):
    out = tmp_path / "world"
    args = ["synth", "--out", str(out), "--scenes", "1", "--duration", "1.6", "--image-size",
            "160x90", "--workers", "1", "--seed", "5", "--set", "actor_density=0.5"]
    assert main(args) == 0
    saved = yaml.safe_load((out / "synthetic_config.yaml").read_text())
    assert saved["seed"] == 5 and saved["image_width"] == 160 and saved["actor_density"] == 0.5
    tables = json.loads((out / "v1.0-mini" / "scene.json").read_text())
    assert [s["name"] for s in tables] == ["scene-0103"]  # one scene: it goes to mini_val

    # Same config: reused, nothing rewritten.
    stamp = (out / "v1.0-mini" / "sample.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args + ["--reuse", "--workers", "2"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "v1.0-mini" / "sample.json").stat().st_mtime_ns == stamp
    # A dataset written before `val_scenes` existed (no such key) is the same dataset.
    del saved["val_scenes"]
    (out / "synthetic_config.yaml").write_text(yaml.safe_dump(saved))
    assert main(args + ["--reuse"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "v1.0-mini" / "sample.json").stat().st_mtime_ns == stamp

    assert main(["info", "--dataroot", str(out), "--version", "v1.0-mini",
                 "--json", str(tmp_path / "info.json")]) == 0
    summary = json.loads((tmp_path / "info.json").read_text())
    assert summary["scenes"] == 1 and summary["samples"] >= 2
    assert "LIDAR_TOP" in capsys.readouterr().out

    assert main(["render", "--dataroot", str(out), "--version", "v1.0-mini", "--split", "mini_val",
                 "--index", "1", "--sweeps", "3", "--out", str(tmp_path / "png")]) == 0
    pngs = list((tmp_path / "png").glob("sample_*.png"))
    assert len(pngs) == 1 and cv2.imread(str(pngs[0])) is not None


def test_bad_config_key_is_a_clear_error(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path / "x"), "--set", "actor_densty=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "actor_densty" in err and "actor_density" in err  # names the bad key and the known ones


def test_render_index_out_of_range(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["synth", "--out", str(out), "--scenes", "1", "--duration", "1.6",
                 "--image-size", "160x90", "--workers", "1"]) == 0
    assert main(["render", "--dataroot", str(out), "--version", "v1.0-mini", "--index", "99",
                 "--out", str(tmp_path / "png")]) == 2
    assert "out of range" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "perception", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0
    for command in ("synth", "info", "render", "train", "eval", "metrics", "bench"):
        assert command in res.stdout
