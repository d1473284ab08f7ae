"""Training loop: schedule, atomic checkpoints, and exact resume (bitwise, on CPU)."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from perception.engine.checkpoint import (
    atomic_save,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from perception.engine.train import LRSchedule, train


def _optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)


@pytest.mark.parametrize("kind", ["onecycle", "cosine"])
def test_schedule_warms_up_then_decays(kind):
    s = LRSchedule(_optimizer(), kind=kind, lr=1e-3, max_iters=100, warmup=0.2, final_div=1e3)
    lrs = [s.lr_at(i) for i in range(101)]
    assert lrs[0] == pytest.approx(1e-3 / 25)
    assert lrs[20] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[100] == pytest.approx(1e-6)
    assert all(a <= b + 1e-15 for a, b in zip(lrs[:20], lrs[1:21]))      # rising
    assert all(a >= b - 1e-15 for a, b in zip(lrs[20:], lrs[21:]))       # then falling
    # The schedule drives the optimizer and survives a state round trip.
    for _ in range(37):
        s.step()
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(lrs[37])
    s2 = LRSchedule(_optimizer(), kind=kind, lr=1e-3, max_iters=100, warmup=0.2, final_div=1e3)
    s2.load_state_dict(s.state_dict())
    assert s2.optimizer.param_groups[0]["lr"] == s.optimizer.param_groups[0]["lr"]
    if kind == "cosine":
        assert lrs[10] == pytest.approx(1e-3 / 25 + (1e-3 - 1e-3 / 25) * 0.5)
    else:
        assert lrs[10] == pytest.approx(1e-3 / 25 + (1e-3 - 1e-3 / 25) * 0.5 * (1 - math.cos(math.pi / 2)))


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = atomic_save({"a": torch.ones(3)}, tmp_path / "x.pt")
    real_save = torch.save

    def broken(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError("disk full")          # fails after writing part of the bytes

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))


def test_save_checkpoint_latest_and_pruning(tmp_path):
    for it in (2, 4, 6, 8):
        save_checkpoint({"format": 1, "iteration": it}, tmp_path, it, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_6.pt", "iter_8.pt"]
    assert load_checkpoint(tmp_path / "latest.pt")["iteration"] == 8
    assert not list(tmp_path.glob(".*tmp"))


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("time", "data_time")}
                for r in csv.DictReader(f)]


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_is_bitwise_identical(tmp_path, ekit, nusc):
    """4 iterations straight == 2 + resume + 2 (data order, augmentation with GT paste, CBGS,
    modality dropout, depth supervision, AdamW, schedule, RNG); the resumed half even loads in a
    worker process."""
    data = ekit.tiny_experiment()
    cfg = ekit.make_config(data)
    straight = train(cfg, tmp_path / "a", progress=False, nusc=nusc)
    assert straight.iteration == 4 and straight.checkpoint.name == "iter_4.pt"

    first = train(cfg, tmp_path / "b", stop_after=2, progress=False, nusc=nusc)
    assert first.iteration == 2
    data["data"]["num_workers"] = 1     # allowed to change on resume; must not change results
    second = train(ekit.make_config(data), tmp_path / "b", resume=True, progress=False, nusc=nusc)
    assert second.iteration == 4

    a = load_checkpoint(tmp_path / "a" / "latest.pt")
    b = load_checkpoint(tmp_path / "b" / "latest.pt")
    for key in ("model", "optimizer", "scheduler", "rng", "iteration"):
        _assert_same(a[key], b[key], key)
    assert a["optimizer"]["state"], "the optimizer took steps"
    # The intermediate checkpoints agree too, and the logs read as one run.
    _assert_same(load_checkpoint(tmp_path / "a" / "iter_2.pt")["model"],
                 load_checkpoint(tmp_path / "b" / "iter_2.pt")["model"], "iter_2")
    rows_a, rows_b = _rows(tmp_path / "a" / "log.csv"), _rows(tmp_path / "b" / "log.csv")
    assert [r["iteration"] for r in rows_b] == ["1", "2", "3", "4"]
    assert rows_a == rows_b
    assert any(float(r["loss_depth"]) > 0 for r in rows_a), "the cameras got depth targets"
    # Training moved the parameters away from their initialisation.
    assert straight.losses and all(math.isfinite(v) for v in straight.losses.values())


@pytest.fixture
def dropout_rates(monkeypatch):
    """The rates each training iteration's modality dropout drew with, appended as it draws
    (iterations without dropout draw nothing)."""
    from perception.models.detector import FusionDetector

    rates = []
    drop = FusionDetector._drop

    def spy(self, present):
        rates.append(self.modality_dropout)
        return drop(self, present)

    monkeypatch.setattr(FusionDetector, "_drop", spy)
    return rates


def test_modality_dropout_starts_after_its_share_of_the_run(tmp_path, ekit, nusc, dropout_rates):
    """fusion.modality_dropout_start = 0.5 of 4 iterations: iterations 1-2 use every sensor,
    3-4 drop at the configured rate, also across a resume between iterations 3 and 4."""
    data = ekit.tiny_experiment(checkpoint_interval=1)
    data["model"]["fusion"]["modality_dropout_start"] = 0.5
    train(ekit.make_config(data), tmp_path, stop_after=3, progress=False, nusc=nusc)
    assert dropout_rates == [0.3]
    train(ekit.make_config(data), tmp_path, resume=True, progress=False, nusc=nusc)
    assert dropout_rates == [0.3, 0.3]
    data["model"]["fusion"]["modality_dropout_start"] = 1.0
    with pytest.raises(ValueError, match="modality_dropout_start"):
        ekit.make_config(data)


def test_modality_dropout_late_phase_takes_over_at_its_share(tmp_path, ekit, nusc, dropout_rates):
    """modality_dropout_start 0.25 and late {lidar: 0.9} from 0.75 of 4 iterations: iteration 1
    uses every sensor, 2-3 the usual rate, 4 the late rates (the other sensors unchanged), also
    across a resume before the late phase."""
    data = ekit.tiny_experiment(checkpoint_interval=1)
    data["model"]["fusion"].update(modality_dropout_start=0.25, modality_dropout_late={"lidar": 0.9},
                                   modality_dropout_late_start=0.75)
    train(ekit.make_config(data), tmp_path, stop_after=2, progress=False, nusc=nusc)
    assert dropout_rates == [0.3]
    train(ekit.make_config(data), tmp_path, resume=True, progress=False, nusc=nusc)
    assert dropout_rates == [0.3, 0.3, {"camera": 0.3, "lidar": 0.9, "radar": 0.3}]
    # The late phase is part of the recipe: a resume may not change it.
    data["model"]["fusion"]["modality_dropout_late"] = {"lidar": 0.5}
    with pytest.raises(ValueError, match="model.fusion.modality_dropout_late"):
        train(ekit.make_config(data), tmp_path, resume=True, progress=False, nusc=nusc)


def test_camera_model_takes_lidar_as_depth_target_only(tmp_path, ekit, nusc):
    """A camera-only model with depth supervision loads LiDAR (the target) but pastes no objects
    (they would exist in the point clouds only); without it, LiDAR is not loaded at all."""
    from perception.engine.train import build_train_dataset

    data = ekit.tiny_experiment()
    data["model"]["modalities"] = ["camera"]
    ds, _ = build_train_dataset(ekit.make_config(data), tmp_path, nusc=nusc, verbose=False)
    frame, base = ds[(5, 1)], ds.base[5]
    assert frame.lidar is not None and frame.lidar.num_pasted == 0 and not frame.radars
    assert len(frame.gt) == len(base.gt) and len(frame.cameras) == 6
    assert not any(tmp_path.iterdir()), "no GT-paste database for a model that cannot use it"
    data["model"]["camera"]["depth_weight"] = 0.0
    ds, _ = build_train_dataset(ekit.make_config(data), tmp_path, nusc=nusc, verbose=False)
    assert ds.base[5].lidar is None


def test_resume_refuses_a_changed_config(tmp_path, ekit, nusc):
    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    train(ekit.make_config(data), tmp_path, progress=False, nusc=nusc)
    data["train"]["lr"] = 5e-3
    with pytest.raises(ValueError, match="train.lr"):
        train(ekit.make_config(data), tmp_path, resume=True, progress=False, nusc=nusc)
    with pytest.raises(FileNotFoundError):
        train(ekit.make_config(data), tmp_path / "empty", resume=True, progress=False, nusc=nusc)
    # A checkpoint from before an option existed resumes when the option is at its default.
    data["train"]["lr"] = 1e-3
    ck = load_checkpoint(tmp_path / "latest.pt")
    del ck["config"]["model"]["fusion"]["modality_dropout_start"]
    atomic_save(ck, tmp_path / "latest.pt")
    assert train(ekit.make_config(data), tmp_path, resume=True, progress=False,
                 nusc=nusc).iteration == 1
    data["model"]["fusion"]["modality_dropout_start"] = 0.5
    with pytest.raises(ValueError, match="model.fusion.modality_dropout_start"):
        train(ekit.make_config(data), tmp_path, resume=True, progress=False, nusc=nusc)
    # What only predict() reads may change (here on a run that has already ended).
    data["model"]["fusion"]["modality_dropout_start"] = 0.0
    data["model"].setdefault("radar", {})["refine_velocity"] = True
    assert train(ekit.make_config(data), tmp_path, resume=True, progress=False,
                 nusc=nusc).iteration == 1


def test_init_from_starts_from_another_runs_weights(tmp_path, ekit, nusc):
    """``train.init_from``: at learning rate 0 the run ends with exactly the parameters of the
    file it started from (a training checkpoint or an exported one; BatchNorm statistics move on
    with the frames; a head for the LiDAR-free frames the file lacks starts from its head); a
    missing file or another architecture is a clear error naming the file."""
    from perception.cli import main

    data = ekit.tiny_experiment(max_iters=2, checkpoint_interval=2)
    data["data"]["augment"]["paste"]["counts"] = {}
    train(ekit.make_config(data), tmp_path / "a", progress=False, nusc=nusc)
    source = load_checkpoint(tmp_path / "a" / "latest.pt")
    assert main(["export", str(tmp_path / "a" / "latest.pt"), "--out",
                 str(tmp_path / "a.pt")]) == 0
    for i, init in enumerate((tmp_path / "a" / "latest.pt", tmp_path / "a.pt")):
        data["train"].update(init_from=str(init), lr=0.0, max_iters=1, seed=1)
        train(ekit.make_config(data), tmp_path / f"b{i}", progress=False, nusc=nusc)
        ck = load_checkpoint(tmp_path / f"b{i}" / "latest.pt")
        assert ck["iteration"] == 1 and ck["config"]["train"]["init_from"] == str(init)
        for name, value in source["model"].items():
            if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue
            expected = value.half().to(value.dtype) if i and value.is_floating_point() else value
            assert torch.equal(ck["model"][name], expected), name
    # Without it, the same run starts elsewhere.
    data["train"]["init_from"] = None
    train(ekit.make_config(data), tmp_path / "c", progress=False, nusc=nusc)
    fresh = load_checkpoint(tmp_path / "c" / "latest.pt")["model"]
    assert any(not torch.equal(fresh[k], v) for k, v in source["model"].items()
               if v.is_floating_point())

    # A model with a head for the LiDAR-free frames (fusion.subset_heads) and statistics of
    # their own (subset_norm_stats), from a file without them: that head starts from the file's
    # head, the statistics from the layers'.
    data["train"].update(init_from=str(tmp_path / "a.pt"), lr=0.0)
    data["model"]["fusion"].update(subset_loss=[["camera", "radar"]], subset_heads=True,
                                   subset_norm_stats=True)
    train(ekit.make_config(data), tmp_path / "f", progress=False, nusc=nusc)
    both = load_checkpoint(tmp_path / "f" / "latest.pt")["model"]
    heads = [k for k in source["model"] if k.startswith("head.")
             and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert heads
    for name in heads:
        expected = source["model"][name].half().to(source["model"][name].dtype)
        assert torch.equal(both[name], expected), name
        assert torch.equal(both["subset_heads.camera+radar." + name[5:]], expected), name
    counts = [v for k, v in both.items() if k.startswith("subset_stats.camera+radar.count")]
    assert counts and all(int(c) >= int(source["model"]["head.shared.1.num_batches_tracked"])
                          for c in counts)
    for key in ("subset_loss", "subset_heads", "subset_norm_stats"):
        del data["model"]["fusion"][key]

    data["train"]["init_from"] = str(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        train(ekit.make_config(data), tmp_path / "d", progress=False, nusc=nusc)
    data["train"]["init_from"] = str(tmp_path / "a.pt")
    data["model"]["head"]["head_channels"] = 8
    with pytest.raises(ValueError, match=r"(?s)a\.pt holds another architecture.*size mismatch"):
        train(ekit.make_config(data), tmp_path / "e", progress=False, nusc=nusc)


def test_init_partial_starts_a_fusion_model_from_a_single_sensor_model(tmp_path, ekit, nusc):
    """``train.init_partial``: a fusion model from a LiDAR model's file, at learning rate 0,
    ends with that file's LiDAR encoder, fuser and head (the LiDAR row of the per-modality
    embedding), while the camera and radar encoders start fresh; without ``init_partial`` the
    same file is an error, and so is one of other layer widths even with it."""
    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    data["model"]["modalities"] = ["lidar"]
    train(ekit.make_config(data), tmp_path / "lidar", progress=False, nusc=nusc)
    source = load_checkpoint(tmp_path / "lidar" / "latest.pt")["model"]

    data["model"]["modalities"] = ["camera", "lidar", "radar"]
    data["train"].update(init_from=str(tmp_path / "lidar" / "latest.pt"), init_partial=True,
                         lr=0.0, seed=1)
    train(ekit.make_config(data), tmp_path / "fusion", progress=False, nusc=nusc)
    fused = load_checkpoint(tmp_path / "fusion" / "latest.pt")["model"]
    shared = [k for k in source if k in fused and k != "fuser.embed"
              and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(k.startswith("encoders.lidar.") for k in shared)
    assert any(k.startswith("head.") for k in shared)
    for name in shared:
        assert torch.equal(fused[name], source[name]), name
    assert torch.equal(fused["fuser.embed"][1], source["fuser.embed"][0])
    assert not torch.equal(fused["fuser.embed"][0], source["fuser.embed"][0])
    assert any(k.startswith("encoders.camera.") for k in fused)
    assert not any(k.startswith(("encoders.camera.", "encoders.radar.")) for k in source)
    # The same fusion run from scratch (same seed): its LiDAR path is not the file's, its
    # camera and radar encoders are the warm run's (those started fresh).
    data["train"].update(init_from=None, init_partial=False)
    train(ekit.make_config(data), tmp_path / "scratch", progress=False, nusc=nusc)
    scratch = load_checkpoint(tmp_path / "scratch" / "latest.pt")["model"]
    assert any(not torch.equal(scratch[k], source[k]) for k in shared)
    fresh = [k for k in fused if k.startswith(("encoders.camera.", "encoders.radar."))
             and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert fresh and all(torch.equal(fused[k], scratch[k]) for k in fresh)

    data["train"].update(init_from=str(tmp_path / "lidar" / "latest.pt"))
    with pytest.raises(ValueError, match="holds another architecture"):
        train(ekit.make_config(data), tmp_path / "strict", progress=False, nusc=nusc)
    data["train"]["init_partial"] = True
    data["model"]["head"]["head_channels"] = 8
    with pytest.raises(ValueError, match=r"latest\.pt has tensors of other shapes.*head\."):
        train(ekit.make_config(data), tmp_path / "wide", progress=False, nusc=nusc)

    # A two-sensor file whose config lists its sensors in another order than the model holds
    # them: the embedding's rows still go by sensor (camera, then LiDAR).
    data["model"]["head"]["head_channels"] = 16
    data["model"]["modalities"] = ["lidar", "camera"]
    data["train"].update(init_from=None, init_partial=False, lr=2e-4)
    train(ekit.make_config(data), tmp_path / "camera_lidar", progress=False, nusc=nusc)
    # Rows told apart (a fresh channel_logits is zeros, and one step may leave it so).
    ck = load_checkpoint(tmp_path / "camera_lidar" / "latest.pt")
    logits = ck["model"]["fuser.channel_logits"]
    ck["model"]["fuser.channel_logits"] = torch.arange(logits.numel()).view_as(logits) + 1.0
    torch.save(ck, tmp_path / "camera_lidar" / "latest.pt")
    pair = ck["model"]
    data["model"]["modalities"] = ["camera", "lidar", "radar"]
    data["train"].update(init_from=str(tmp_path / "camera_lidar" / "latest.pt"),
                         init_partial=True, lr=0.0)
    train(ekit.make_config(data), tmp_path / "fusion2", progress=False, nusc=nusc)
    rows = load_checkpoint(tmp_path / "fusion2" / "latest.pt")["model"]
    for name in ("fuser.embed", "fuser.channel_logits"):
        assert torch.equal(rows[name][:2], pair[name]), name
    # A bare state dict does not say whose rows those are.
    torch.save(pair, tmp_path / "bare.pt")
    data["train"]["init_from"] = str(tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare\.pt is a bare state dict.*fuser\.embed"):
        train(ekit.make_config(data), tmp_path / "fusion3", progress=False, nusc=nusc)


def test_init_encoders_start_one_sensor_from_another_file(tmp_path, ekit, nusc):
    """``train.init_encoders``: beside ``init_from`` (the LiDAR model's file, partial), the
    camera encoder starts as a camera model's; at learning rate 0 both survive the run. A file
    without that encoder, a sensor the model lacks and an unknown sensor are errors."""
    from perception.models.config import TrainConfig

    data = ekit.tiny_experiment(max_iters=1, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    for name, sensors in (("lidar", ["lidar"]), ("camera", ["camera"])):
        data["model"]["modalities"] = sensors
        train(ekit.make_config(data), tmp_path / name, progress=False, nusc=nusc)
    lidar = load_checkpoint(tmp_path / "lidar" / "latest.pt")["model"]
    camera = load_checkpoint(tmp_path / "camera" / "latest.pt")["model"]

    data["model"]["modalities"] = ["camera", "lidar", "radar"]
    data["train"].update(init_from=str(tmp_path / "lidar" / "latest.pt"), init_partial=True,
                         init_encoders={"camera": str(tmp_path / "camera" / "latest.pt")},
                         lr=0.0, seed=1)
    train(ekit.make_config(data), tmp_path / "fusion", progress=False, nusc=nusc)
    fused = load_checkpoint(tmp_path / "fusion" / "latest.pt")["model"]

    def weights(state, prefix):
        return [k for k in state if k.startswith(prefix)
                and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]

    cam, lid = weights(camera, "encoders.camera."), weights(lidar, "encoders.lidar.")
    assert cam and lid
    assert all(torch.equal(fused[k], camera[k]) for k in cam)
    assert all(torch.equal(fused[k], lidar[k]) for k in lid)

    data["train"]["init_encoders"] = {"camera": str(tmp_path / "lidar" / "latest.pt")}
    with pytest.raises(ValueError, match=r"latest\.pt holds no camera encoder"):
        train(ekit.make_config(data), tmp_path / "e1", progress=False, nusc=nusc)
    data["model"]["modalities"] = ["lidar"]
    data["train"].update(init_from=None, init_partial=False,
                         init_encoders={"camera": str(tmp_path / "camera" / "latest.pt")})
    with pytest.raises(ValueError, match="the model has no camera encoder"):
        train(ekit.make_config(data), tmp_path / "e2", progress=False, nusc=nusc)
    with pytest.raises(ValueError, match="unknown sensors"):
        TrainConfig(init_encoders={"sonar": "x.pt"})


def test_a_non_finite_loss_stops_the_run_and_names_the_samples(tmp_path, ekit, nusc,
                                                              monkeypatch):
    """A NaN loss at iteration 2 stops training there, with an error
    naming the iteration, the frames and each loss term; the checkpoint of iteration 1 stays."""
    from perception.models.detector import FusionDetector

    calls = []
    real_loss = FusionDetector.loss

    def poisoned(self, out, batch):
        losses = real_loss(self, out, batch)
        calls.append(batch.tokens)
        if len(calls) == 2:
            losses["loss_heatmap"] = losses["loss_heatmap"] * float("nan")
        return losses

    monkeypatch.setattr(FusionDetector, "loss", poisoned)
    data = ekit.tiny_experiment(max_iters=3, checkpoint_interval=1)
    data["data"]["augment"]["paste"]["counts"] = {}
    with pytest.raises(FloatingPointError) as err:
        train(ekit.make_config(data), tmp_path, progress=False, nusc=nusc)
    msg = str(err.value)
    assert "non-finite loss nan at iteration 2" in msg
    assert str(calls[1]) in msg and "loss_heatmap nan" in msg and "loss_regression" in msg
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_1.pt"]
    assert load_checkpoint(tmp_path / "latest.pt")["iteration"] == 1


def test_export_keeps_the_model_in_half_the_space(tmp_path, ekit, nusc):
    """`perception export`: fp16 weights + config, no optimizer; the model built from it predicts
    what the training checkpoint's model predicts (to fp16 rounding)."""
    from perception.cli import main
    from perception.engine.checkpoint import model_state
    from perception.engine.latency import frame_batch
    from perception.models import build_model

    data = ekit.tiny_experiment(max_iters=2, checkpoint_interval=2)
    data["data"]["augment"]["paste"]["counts"] = {}
    cfg = ekit.make_config(data)
    train(cfg, tmp_path / "run", progress=False, nusc=nusc)
    ck = tmp_path / "run" / "latest.pt"
    assert main(["export", str(ck), "--out", str(tmp_path / "model.pt")]) == 0
    exported = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "optimizer" not in exported and "rng" not in exported
    assert exported["config"] == load_checkpoint(ck)["config"] and exported["iteration"] == 2
    floats = [v for v in exported["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert (tmp_path / "model.pt").stat().st_size < 0.6 * ck.stat().st_size

    batch = frame_batch(cfg, str(ekit.dataroot))
    outs = []
    for source in (ck, tmp_path / "model.pt"):
        model = build_model(cfg.model)
        model.load_state_dict(model_state(source))
        model.eval()
        with torch.no_grad():
            outs.append(model(batch).heads[0].heatmap)
    torch.testing.assert_close(outs[0], outs[1], atol=2e-2, rtol=2e-2)
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")]) == 2


def test_cpu_bf16_trains_in_bfloat16_with_float32_losses(tmp_path, ekit, nusc, monkeypatch):
    """train.cpu_bf16: the dense convolutions run in bfloat16 (the head's maps), while the sparse
    LiDAR backbone, BEV pooling and every loss term stay float32, and the weights stay float32;
    the run ends with finite losses."""
    from perception.engine.train import cpu_has_native_bf16
    from perception.models.detector import FusionDetector

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
    seen = []
    real_loss = FusionDetector.loss

    def spy(self, out, batch):
        losses = real_loss(self, out, batch)
        seen.append((out.heads[0].heatmap.dtype, {k: v.dtype for k, v in losses.items()}))
        return losses

    monkeypatch.setattr(FusionDetector, "loss", spy)
    data = ekit.tiny_experiment(max_iters=2, checkpoint_interval=2, cpu_bf16=True)
    result = train(ekit.make_config(data), tmp_path, progress=False, nusc=nusc)
    assert [heat for heat, _ in seen] == [torch.bfloat16] * 2
    assert all(set(d.values()) == {torch.float32} for _, d in seen)
    assert result.losses and all(math.isfinite(v) for v in result.losses.values())
    model = load_checkpoint(tmp_path / "latest.pt")["model"]
    assert {v.dtype for v in model.values() if v.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize("machine, avx512_bf16, amx, expected", [
    ("x86_64", False, False, False),   # AVX-512 alone: oneDNN would emulate bfloat16
    ("x86_64", True, False, True), ("x86_64", False, True, True), ("aarch64", False, False, True)])
def test_native_bf16_needs_avx512_bf16_or_amx_on_x86(monkeypatch, machine, avx512_bf16, amx,
                                                     expected):
    """oneDNN says bfloat16 is supported on every AVX-512 CPU, also where it only emulates it;
    on x86 the CPU must have AVX512-BF16 or AMX; elsewhere oneDNN's word stands."""
    import platform

    import perception.engine.train as train_mod

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert train_mod.cpu_has_native_bf16() is expected
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert train_mod.cpu_has_native_bf16() is False


def test_cpu_bf16_without_native_support_warns_and_stays_float32(monkeypatch):
    import perception.engine.train as train_mod

    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        ctx = train_mod.cpu_autocast(True)
    with ctx:
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32
    with train_mod.cpu_autocast(False):
        assert not torch.is_autocast_enabled("cpu")
