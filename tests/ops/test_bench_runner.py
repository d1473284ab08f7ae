"""`perception bench` keeps what it measured: each entry's result reaches the JSON as soon as it
finishes, and one entry that fails is reported without losing the others (a run on a lent GPU
has one try and a time limit)."""
from __future__ import annotations

import argparse
import json

import pytest

from perception import bench


def _fake_benches(monkeypatch, seen):
    def ok(device, repeats):
        seen.append(("ok", device, repeats))
        return {"ours_ms": 2.0, "baseline_ms": 8.0}

    def broken(device, repeats):
        raise RuntimeError("no kernel for this GPU")

    def later(device, repeats):
        seen.append(("later", device, repeats))
        return {"ours_ms": 1.0, "baseline_ms": 1.5}

    monkeypatch.setattr(bench, "BENCHES", {"voxelize": ok, "bev_pool": broken, "nms": later})


def test_a_failing_entry_is_recorded_and_the_rest_still_run(monkeypatch, tmp_path, capsys):
    seen = []
    _fake_benches(monkeypatch, seen)
    out = tmp_path / "bench.json"
    results = bench.run_bench("cpu", only="voxelize,bev_pool,nms", json_out=str(out), repeats=3)
    assert seen == [("ok", "cpu", 3), ("later", "cpu", 3)]
    assert results["bev_pool"] == {"error": "RuntimeError: no kernel for this GPU"}
    assert bench.failed(results) == ["bev_pool"]
    written = json.loads(out.read_text())
    assert written["voxelize"]["ours_ms"] == 2.0 and written["nms"]["baseline_ms"] == 1.5
    assert written["bev_pool"]["error"].startswith("RuntimeError")
    table = capsys.readouterr().out
    assert "bev_pool   FAILED: RuntimeError: no kernel for this GPU" in table
    assert "voxelize" in table and "4.00" in table                 # 8 / 2: the speedup column


def test_the_json_holds_each_entry_as_soon_as_it_finishes(monkeypatch, tmp_path):
    out = tmp_path / "bench.json"

    def first(device, repeats):
        return {"ours_ms": 3.0, "baseline_ms": None}

    def second(device, repeats):
        # A run stopped here (a time limit) still leaves the first entry on disk.
        on_disk = json.loads(out.read_text())
        assert on_disk["voxelize"] == {"ours_ms": 3.0, "baseline_ms": None}
        assert "nms" not in on_disk
        return {"ours_ms": 1.0, "baseline_ms": 2.0}

    monkeypatch.setattr(bench, "BENCHES", {"voxelize": first, "nms": second})
    bench.run_bench("cpu", only=["voxelize", "nms"], json_out=str(out), repeats=1)
    assert set(json.loads(out.read_text())) == {"machine", "voxelize", "nms"}


def test_the_command_fails_when_an_entry_failed(monkeypatch, tmp_path):
    _fake_benches(monkeypatch, [])
    args = argparse.Namespace(device="cpu", only="voxelize,bev_pool", json_out=None, repeats=1)
    assert bench.main(args) == 1
    args.only = "voxelize,nms"
    assert bench.main(args) == 0


def test_an_unknown_entry_is_refused_before_anything_runs(monkeypatch):
    seen = []
    _fake_benches(monkeypatch, seen)
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.run_bench("cpu", only="voxelize,bevpool")
    assert seen == []
