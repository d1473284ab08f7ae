"""tools/bn_recalibrate.py and tools/bench_train_step.py on a tiny model of the real scene."""
from __future__ import annotations

import math

import pytest
import torch

from perception.engine.checkpoint import load_checkpoint, model_state
from perception.engine.train import cpu_has_native_bf16, train

from tool_scripts import load_tool


def test_bn_recalibrate_reestimates_every_batchnorm(tmp_path, ekit, nusc):
    """The statistics become the average over the given frames (num_batches_tracked = frames),
    the weights stay, and `perception eval` reads the file like an exported model."""
    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    train(ekit.make_config(data), tmp_path / "run", progress=False, nusc=nusc)
    ck = tmp_path / "run" / "latest.pt"
    out = tmp_path / "recal.pt"
    load_tool("bn_recalibrate").main([str(tmp_path / "run" / "config.yaml"), str(ck), str(out),
                                      "--dataroot", str(ekit.dataroot), "--version", ekit.version,
                                      "--split", ekit.split, "--frames", "3", "--threads", "1"])
    before, after = model_state(ck), model_state(out)
    assert load_checkpoint(out)["kind"] == "model" and set(before) == set(after)
    tracked = [k for k in after if k.endswith("num_batches_tracked")]
    assert tracked and all(int(after[k]) == 3 for k in tracked)
    means = [k for k in after if k.endswith("running_mean")]
    assert any(not torch.allclose(before[k], after[k].float(), atol=1e-3) for k in means)
    weights = [k for k in after if k.endswith(".weight")]
    for k in weights:
        torch.testing.assert_close(after[k].float(), before[k].half().float())


def test_bn_recalibrate_after_the_fuser_with_some_sensors(tmp_path, ekit, nusc, capsys):
    """--after-fuser re-estimates the context network's and the head's statistics only (the
    encoders' stay as trained), with the frames' sensors from --modalities; a sensor the model
    lacks is a clear error."""
    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    data["model"]["fusion"]["subset_loss"] = [["camera", "radar"]]
    train(ekit.make_config(data), tmp_path / "run", progress=False, nusc=nusc)
    ck, config = tmp_path / "run" / "latest.pt", str(tmp_path / "run" / "config.yaml")
    common = ["--dataroot", str(ekit.dataroot), "--version", ekit.version, "--split", ekit.split,
              "--frames", "2", "--threads", "1"]
    tool = load_tool("bn_recalibrate")
    outs = {}
    for mods in ("camera,lidar,radar", "camera,radar"):
        outs[mods] = tmp_path / f"{mods.replace(',', '_')}.pt"
        assert tool.main([config, str(ck), str(outs[mods]), *common, "--after-fuser",
                          "--modalities", mods]) == 0
        assert f"({mods})" in capsys.readouterr().out
    before = model_state(ck)
    full, no_lidar = model_state(outs["camera,lidar,radar"]), model_state(outs["camera,radar"])
    tracked = [k for k in full if k.endswith("num_batches_tracked")]
    redone = [k for k in tracked if k.startswith(("fuser.context.", "head."))]
    assert redone and all(int(full[k]) == 2 for k in redone)
    kept = [k for k in tracked if k not in redone]
    assert kept and all(int(full[k]) == int(before[k]) for k in kept)
    for k in kept:
        mean = k.replace("num_batches_tracked", "running_mean")
        torch.testing.assert_close(full[mean].float(), before[mean].half().float())
    means = [k.replace("num_batches_tracked", "running_mean") for k in redone]
    assert any(not torch.allclose(full[k].float(), no_lidar[k].float(), atol=1e-3) for k in means)
    # With statistics per sensor set (a file trained without them): one call estimates both,
    # each from its own frames, and the file records the config that reads them.
    both = tmp_path / "both.pt"
    assert tool.main([config, str(ck), str(both), *common, "--after-fuser",
                      "--set", "model.fusion.subset_norm_stats=true",
                      "--modalities", "camera,lidar,radar", "--modalities", "camera,radar"]) == 0
    saved = load_checkpoint(both)
    assert saved["config"]["model"]["fusion"]["subset_norm_stats"] is True
    assert saved["config"]["train"] == load_checkpoint(ck)["config"]["train"]   # the run's own
    state = model_state(both)
    for i, name in enumerate(redone_means := means):
        torch.testing.assert_close(state[name].float(), full[name].float())
        torch.testing.assert_close(state[f"subset_stats.camera+radar.mean{i}"].float(),
                                   no_lidar[name].float())
    assert len(redone_means) == len([k for k in state if k.startswith("subset_stats.")
                                     and ".mean" in k])
    assert tool.main([config, str(ck), str(tmp_path / "x.pt"), *common,
                      "--modalities", "sonar"]) == 2
    assert "sonar" in capsys.readouterr().err


def test_bench_train_step_reports_both_precisions(tmp_path, ekit, nusc):
    from perception.config import save_config

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
    data = ekit.tiny_experiment()
    save_config(ekit.make_config(data), tmp_path / "tiny.yaml")
    row = load_tool("bench_train_step").bench(tmp_path / "tiny.yaml", str(ekit.dataroot),
                                              ekit.version, ekit.split, frames=2, rounds=1)
    assert row["float32_s"] > 0 and row["bfloat16_s"] > 0
    assert math.isclose(row["speedup"], row["float32_s"] / row["bfloat16_s"], rel_tol=0.02)
