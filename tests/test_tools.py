"""The diagnostic tools under tools/ (scripts, loaded from their files)."""
from __future__ import annotations

import math

import torch

from tool_scripts import load_tool


def test_probe_regression_summary_per_class():
    probe = load_tool("probe_regression")
    nan = float("nan")
    # class 0: a car moving at 10 m/s predicted at 5 m/s, heading flipped; a parked car predicted
    # at 1 m/s; class 1: one object, unknown velocity.
    target = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 10.0, 0.0],
                           [5.0, 5.0, 0.0, 4.0, 2.0, 1.5, 1.0, 0.0, 0.0],
                           [9.0, 9.0, 0.0, 8.0, 2.5, 3.0, 0.5, nan, nan]], dtype=torch.float64)
    pred = target.clone()
    pred[0, 0] += 0.3
    pred[0, 6] = math.pi
    pred[0, 7] = 5.0
    pred[1, 7:9] = torch.tensor([0.6, 0.8], dtype=torch.float64)
    pred[2, 7:9] = 3.0
    rows = probe.summarize(torch.tensor([0, 0, 1]), target, pred, ("car", "truck", "bus"))
    assert set(rows) == {"car", "truck"}
    car, truck = rows["car"], rows["truck"]
    assert car["objects"] == 2 and car["moving"] == 1
    assert math.isclose(car["centre_err_m"], 0.15)
    assert math.isclose(car["heading_flipped_share"], 0.5)
    assert math.isclose(car["vel_err_moving_mps"], 5.0) and math.isclose(car["vel_err_static_mps"], 1.0)
    assert math.isclose(car["speed_ratio_moving_median"], 0.5)
    assert truck["moving"] == 0 and truck["vel_err_moving_mps"] is None
    assert truck["vel_err_static_mps"] is None          # unknown velocity is neither
    assert "| car | 2 | 1 | 0.15 |" in probe.table(rows)


def test_probe_depth_summary():
    probe = load_tool("probe_depth")
    centres = torch.tensor([1.5, 2.5, 3.5, 4.5])
    targets = torch.tensor([0, 3, 3, 1])
    sure = torch.full((4, 4), -30.0)
    sure[torch.arange(4), targets] = 30.0
    r = probe.summarize(sure, targets, centres)
    assert r["pixels"] == 4 and r["argmax_exact"] == 1.0 and r["ce"] < 1e-9
    assert r["mean_abs_err_m"] < 1e-9 and r["delta_1_25"] == 1.0
    flat = probe.summarize(torch.zeros(4, 4), targets, centres)    # uniform: mean depth 3.0 m
    assert math.isclose(flat["ce"], math.log(4)) and math.isclose(flat["uniform_ce"], math.log(4))
    assert math.isclose(flat["mean_abs_err_m"], (1.5 + 1.5 + 1.5 + 0.5) / 4)
    assert math.isclose(flat["abs_rel"], (1.5 / 1.5 + 1.5 / 4.5 + 1.5 / 4.5 + 0.5 / 2.5) / 4)
    # 3.0 vs 2.5 is within 25 %, 3.0 vs 1.5 and 4.5 are not.
    assert flat["delta_1_25"] == 0.25
    off = sure.roll(2, dims=1)          # the most likely bin two away from the target
    assert probe.summarize(off, targets, centres)["argmax_within_2_bins"] == 1.0
    assert probe.summarize(off, targets, centres)["argmax_exact"] == 0.0
