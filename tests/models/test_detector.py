import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from perception.config import config_from_dict, config_to_dict, load_config
from perception.models import ExperimentConfig, FusionDetector, build_model
from perception.models.config import INFERENCE_ONLY
from perception.structures import Detections

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SUBSETS = [s for n in (1, 2, 3) for s in itertools.combinations(("camera", "lidar", "radar"), n)]


def test_fusion_model_runs_every_sensor_subset_at_inference(kit):
    torch.manual_seed(0)
    model = build_model(kit.tiny_config())
    batch = kit.make_batch(grid=kit.grid, batch_size=1)
    model.train()
    model(batch)  # one training pass so BatchNorm statistics are not the init ones
    seen = {}
    for subset in SUBSETS:
        out = model.eval()(batch, modalities=subset)
        assert out.present.tolist() == [[m in subset for m in model.modalities]]
        assert len(out.heads) == 6 and torch.isfinite(out.fused).all()
        seen[subset] = out.fused
        dets = model.predict(batch, modalities=subset)
        assert len(dets) == 1 and isinstance(dets[0], Detections)
    # Different sensors, different features: no subset silently collapses onto another.
    assert not torch.allclose(seen[("camera",)], seen[("camera", "lidar", "radar")])


@pytest.mark.parametrize("modalities", [("camera",), ("lidar",), ("camera", "radar"),
                                        ("camera", "lidar", "radar")])
def test_forward_backward_reaches_every_encoder(kit, modalities):
    torch.manual_seed(0)
    model = build_model(kit.tiny_config(modalities)).train()
    batch = kit.make_batch(grid=kit.grid, batch_size=2)
    out = model(batch)
    losses = model.loss(out, batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for m in modalities:
        grads = [p.grad for p in model.encoders[m].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), m


def test_per_frame_missing_sensors_are_masked(kit):
    torch.manual_seed(0)
    model = build_model(kit.tiny_config()).eval()
    batch = kit.make_batch(grid=kit.grid, batch_size=2)
    batch = replace(batch, lidar_mask=torch.tensor([False, True]),
                    lidar_points=[torch.zeros(0, 5), batch.lidar_points[1]],
                    camera_mask=torch.tensor([[True, True], [False, False]]))
    out = model(batch)
    assert out.present.tolist() == [[True, False, True], [False, True, True]]
    # Frame 0 without LiDAR equals the same frame run alone with camera + radar.
    torch.testing.assert_close(model(_frame(batch, 0), modalities=("camera", "radar")).fused[0],
                               out.fused[0], atol=1e-5, rtol=1e-5)


def _frame(batch, i: int):
    """Frame ``i`` of ``batch`` as a batch of one."""
    s = slice(i, i + 1)
    return replace(batch, tokens=batch.tokens[s], lidar_points=batch.lidar_points[s],
                   lidar_mask=batch.lidar_mask[s], radar_points=batch.radar_points[s],
                   radar_mask=batch.radar_mask[s], images=batch.images[s],
                   camera_mask=batch.camera_mask[s], intrinsics=batch.intrinsics[s],
                   ego_T_camera=batch.ego_T_camera[s], img_aug=batch.img_aug[s],
                   gt=batch.gt[s], timestamps=batch.timestamps[s])


def test_frame_without_any_requested_sensor_is_an_error(kit):
    model = build_model(kit.tiny_config(("lidar",))).eval()
    batch = kit.make_batch(grid=kit.grid, batch_size=1)
    batch = replace(batch, lidar_mask=torch.tensor([False]))
    with pytest.raises(ValueError, match="none of the sensors"):
        model(batch)
    with pytest.raises(ValueError, match="not built"):
        model(kit.make_batch(grid=kit.grid), modalities=("radar",))


def test_modality_dropout_keeps_at_least_one_sensor(kit):
    model = build_model(kit.tiny_config())
    model.modality_dropout = 0.9
    torch.manual_seed(0)
    present = torch.ones(500, 3, dtype=torch.bool)
    present[::2, 0] = False
    kept = model._drop(present)
    assert kept.any(1).all() and not (kept & ~present).any()
    frac = kept.float().mean(0)
    assert (frac < 0.5).all() and (frac > 0.05).all()


def test_modality_dropout_per_sensor(kit):
    """A mapping gives each sensor its own rate (unnamed sensors: never dropped); equal rates
    draw exactly what the single number draws."""
    model = build_model(kit.tiny_config())
    present = torch.ones(2000, 3, dtype=torch.bool)
    model.modality_dropout = {"radar": 0.6}
    torch.manual_seed(0)
    kept = model._drop(present)
    assert kept[:, :2].all()                      # camera, lidar: rate 0
    assert 0.55 < 1 - kept[:, 2].float().mean() < 0.65
    model.modality_dropout = 0.3
    torch.manual_seed(1)
    single = model._drop(present)
    model.modality_dropout = {"camera": 0.3, "lidar": 0.3, "radar": 0.3}
    torch.manual_seed(1)
    assert torch.equal(model._drop(present), single)


def test_modality_dropout_config():
    """The YAML mapping and a --set override reach the model; unknown sensors and rates outside
    [0, 1] are errors naming the field."""
    path = CONFIGS / "synthetic" / "fusion.yaml"
    cfg = load_config(path, ExperimentConfig,
                      ["model.fusion.modality_dropout={camera: 0.2, lidar: 0.1, radar: 0.5}"])
    assert cfg.model.fusion.modality_dropout == {"camera": 0.2, "lidar": 0.1, "radar": 0.5}
    model = build_model(cfg.model)
    assert model._dropout_rates().tolist() == pytest.approx([0.2, 0.1, 0.5])
    # The YAML's own mapping (the shipped fusion model never drops LiDAR: its subset loss trains
    # every frame without it), camera/lidar/radar order.
    assert build_model(load_config(path, ExperimentConfig).model)._dropout_rates().tolist() == \
        pytest.approx([0.25, 0.0, 0.25])
    scalar = load_config(path, ExperimentConfig, ["model.fusion.modality_dropout=0.25"])
    assert build_model(scalar.model)._dropout_rates().tolist() == pytest.approx([0.25] * 3)
    with pytest.raises(ValueError, match=r"modality_dropout names unknown sensors \['sonar'\]"):
        load_config(path, ExperimentConfig, ["model.fusion.modality_dropout={sonar: 0.5}"])
    with pytest.raises(ValueError, match=r"modality_dropout \(radar\) is a probability"):
        load_config(path, ExperimentConfig, ["model.fusion.modality_dropout={radar: 1.5}"])
    with pytest.raises(ValueError, match=r"modality_dropout \(every sensor\) is a probability"):
        load_config(path, ExperimentConfig, ["model.fusion.modality_dropout=-0.1"])


def test_modality_dropout_phases():
    """dropout_at: no dropout before modality_dropout_start, the usual rates until
    modality_dropout_late_start, then the late ones (a mapping overrides the sensors it names,
    a number sets all); the late phase is checked like the usual rates and must start later."""
    path = CONFIGS / "synthetic" / "fusion.yaml"
    usual = {"camera": 0.25, "lidar": 0.0, "radar": 0.25}
    f = load_config(path, ExperimentConfig, ["model.fusion.modality_dropout_start=0.1",
                                            "model.fusion.modality_dropout_late={lidar: 0.5}",
                                            "model.fusion.modality_dropout_late_start=0.75"]).model.fusion
    assert [f.dropout_at(i, 100) for i in (0, 9)] == [0.0, 0.0]
    assert f.dropout_at(10, 100) == usual and f.dropout_at(74, 100) == usual
    assert f.dropout_at(75, 100) == {**usual, "lidar": 0.5} == f.dropout_at(99, 100)
    f = load_config(path, ExperimentConfig, ["model.fusion.modality_dropout=0.2",
                                            "model.fusion.modality_dropout_late={radar: 0.6}"]).model.fusion
    # Default late start 0.875; a scalar usual rate becomes one entry per sensor.
    assert f.dropout_at(874, 1000) == 0.2
    assert f.dropout_at(875, 1000) == {"camera": 0.2, "lidar": 0.2, "radar": 0.6}
    f = load_config(path, ExperimentConfig, ["model.fusion.modality_dropout_late=0.4"]).model.fusion
    assert f.dropout_at(999, 1000) == 0.4
    # No late phase configured (the shipped config): the usual rates to the end.
    assert load_config(path, ExperimentConfig).model.fusion.dropout_at(999, 1000) == usual
    with pytest.raises(ValueError, match=r"modality_dropout_late names unknown sensors \['sonar'\]"):
        load_config(path, ExperimentConfig, ["model.fusion.modality_dropout_late={sonar: 0.5}"])
    with pytest.raises(ValueError, match=r"modality_dropout_late \(lidar\) is a probability"):
        load_config(path, ExperimentConfig, ["model.fusion.modality_dropout_late={lidar: 2}"])
    with pytest.raises(ValueError, match=r"modality_dropout_late_start .* got 0.1"):
        load_config(path, ExperimentConfig, ["model.fusion.modality_dropout_late=0.5",
                                             "model.fusion.modality_dropout_start=0.2",
                                             "model.fusion.modality_dropout_late_start=0.1"])


def test_subset_loss_trains_the_subset_path_on_the_frames_it_changes(kit):
    """subset_loss [[camera, radar]]: a frame that used LiDAR is fused again without it, and
    those head maps are exactly what a camera + radar forward of that frame gives; its loss
    (``loss_subset``) trains the camera and radar encoders, never the LiDAR one."""
    torch.manual_seed(0)
    cfg = kit.tiny_config()
    cfg = replace(cfg, fusion=replace(cfg.fusion, subset_loss=(("camera", "radar"),),
                                      subset_loss_weight=0.5))
    model = build_model(cfg).train()
    full = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3)
    # Every frame has LiDAR: the subset pass is a camera + radar forward of the same batch
    # (same encoder features, BatchNorm in training mode included).
    sub = model(full).subsets[0]
    assert sub.frames.tolist() == [0, 1]
    for a, b in zip(sub.heads, model(full, modalities=("camera", "radar")).heads):
        torch.testing.assert_close(a.heatmap, b.heatmap, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.regression, b.regression, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.attribute, b.attribute, atol=1e-5, rtol=1e-5)
    batch = replace(full, lidar_mask=torch.tensor([False, True]),
                    lidar_points=[torch.zeros(0, 5), full.lidar_points[1]])
    out = model(batch)
    assert len(out.subsets) == 1                   # frame 0 has no LiDAR: nothing to change
    sub = out.subsets[0]
    assert sub.sensors == ("camera", "radar") and sub.frames.tolist() == [1]
    assert sub.heads[0].heatmap.shape[0] == 1
    losses = model.loss(out, batch)
    expected = 0.5 * sum(model.head.loss(sub.heads, [batch.gt[1]]).values())
    torch.testing.assert_close(losses["loss_subset"], expected)
    assert losses["loss_subset"] > 0
    losses["loss_subset"].backward()
    grads = {m: [p.grad for p in model.encoders[m].parameters()] for m in model.modalities}
    assert all(g is None or not g.any() for g in grads["lidar"])
    for m in ("camera", "radar"):
        assert any(g is not None and g.abs().sum() > 0 for g in grads[m]), m
    # No frame with LiDAR, or none with camera or radar: no subset pass, a zero loss_subset
    # (the log keeps its columns); at inference nothing of the kind.
    out = model(batch, modalities=("camera", "radar"))
    assert out.subsets == () and float(model.loss(out, batch)["loss_subset"].detach()) == 0.0
    assert model(full, modalities=("lidar",)).subsets == ()
    model.eval()
    assert model(batch).subsets == () and "loss_subset" not in model.loss(model(batch), batch)


def test_subset_norm_stats_normalise_each_sensor_set_with_its_own(kit):
    """fusion.subset_norm_stats with subset_loss [[camera, radar]]: the BatchNorm layers after the
    fuser keep a second set of running statistics. In training the subset pass updates it and
    the full pass the layers' own; at test time a frame without LiDAR is normalised with it,
    one with LiDAR with the layers' own, and in a mixed batch each frame gets what it gets
    alone. A state dict without it loads with its statistics copied from the layers'."""
    torch.manual_seed(0)
    cfg = kit.tiny_config()
    cfg = replace(cfg, fusion=replace(cfg.fusion, subset_loss=(("camera", "radar"),),
                                      subset_norm_stats=True, modality_dropout=0.0))
    model = build_model(cfg)
    norms = model.shared_norms()
    assert norms and list(model.subset_stats) == ["camera+radar"]
    assert all(any(m is n for m in model.fuser.context.modules())
               or any(m is n for m in model.head.modules()) for n in norms)
    assert [model.stats_key(s) for s in (("camera",), ("camera", "radar"), ("lidar",),
                                         ("camera", "lidar", "radar"))] == [
        "camera+radar", "camera+radar", "", ""]
    bank = model.subset_stats["camera+radar"]
    own0 = [bn.running_mean.clone() for bn in norms]
    bank0 = [getattr(bank, f"mean{i}").clone() for i in range(len(norms))]
    full = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3)
    model.train()
    model(full)                                   # one full pass, one subset pass
    own1 = [bn.running_mean.clone() for bn in norms]
    bank1 = [getattr(bank, f"mean{i}").clone() for i in range(len(norms))]
    assert all(int(bn.num_batches_tracked) == 1 for bn in norms)
    assert all(int(getattr(bank, f"count{i}")) == 1 for i in range(len(norms)))
    assert any(not torch.allclose(a, b) for a, b in zip(own0, own1))
    assert any(not torch.allclose(a, b) for a, b in zip(bank0, bank1))
    assert any(not torch.allclose(a, b) for a, b in zip(own1, bank1))
    # Running statistics far enough apart that which set normalised a frame shows.
    with torch.no_grad():
        for i in range(len(norms)):
            getattr(bank, f"mean{i}").add_(0.5)
    model.eval()
    batch = replace(full, lidar_mask=torch.tensor([False, True]),
                    lidar_points=[torch.zeros(0, 5), full.lidar_points[1]])
    mixed = model(batch)
    alone = [model(replace(batch, **kit.frame_fields(batch, i))) for i in (0, 1)]
    for frame, out in enumerate(alone):
        for a, b in zip(mixed.heads, out.heads):
            torch.testing.assert_close(a.heatmap[frame:frame + 1], b.heatmap, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixed.fused[frame:frame + 1], out.fused, atol=1e-5, rtol=1e-5)
    # The frame without LiDAR used the bank: with the bank's statistics copied into the layers
    # and the option off, the same frame gives the same maps.
    plain = build_model(replace(cfg, fusion=replace(cfg.fusion, subset_norm_stats=False))).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("subset_stats.")}
    names = [n for n, m in model.named_modules() if any(m is x for x in norms)]
    for i, name in enumerate(names):
        state[f"{name}.running_mean"] = getattr(bank, f"mean{i}")
        state[f"{name}.running_var"] = getattr(bank, f"var{i}")
    plain.load_state_dict(state)
    want = plain(replace(batch, **kit.frame_fields(batch, 0)))
    torch.testing.assert_close(alone[0].heads[0].heatmap, want.heads[0].heatmap,
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[1].heads[0].heatmap,
                              plain(replace(batch, **kit.frame_fields(batch, 1))).heads[0].heatmap)
    # A file without the bank: it loads, its statistics the layers' own.
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("subset_stats.")}
    again = build_model(cfg)
    again.load_state_dict(again.with_missing_stats(old))
    for i, bn in enumerate(again.shared_norms()):
        torch.testing.assert_close(getattr(again.subset_stats["camera+radar"], f"mean{i}"),
                                   bn.running_mean)
    with pytest.raises(RuntimeError, match="subset_stats"):
        build_model(cfg).load_state_dict(old)
    with pytest.raises(ValueError, match="subset_norm_stats needs fusion.subset_loss"):
        replace(cfg.fusion, subset_loss=())


def test_subset_heads_decode_the_frames_without_lidar(kit):
    """fusion.subset_heads with subset_loss [[camera, radar]]: every frame without LiDAR (the
    subset pass, a frame without it in the batch, a test without it) is decoded by the subset's
    own head, the frames with LiDAR by the main head; in a mixed batch each frame's maps are
    what its own head gives alone, and the main head gets no gradient from LiDAR-free frames."""
    torch.manual_seed(0)
    cfg = kit.tiny_config()
    cfg = replace(cfg, fusion=replace(cfg.fusion, subset_loss=(("camera", "radar"),),
                                      subset_heads=True, modality_dropout=0.0))
    model = build_model(cfg).train()
    assert list(model.subset_heads) == ["camera+radar"]
    assert [model.head_key(s) for s in (("camera",), ("radar",), ("camera", "radar"),
                                        ("lidar",), ("camera", "lidar", "radar"))] == [
        "camera+radar", "camera+radar", "camera+radar", "", ""]
    # Distinct weights, so that which head decoded a frame shows in its maps.
    with torch.no_grad():
        for p in model.subset_heads["camera+radar"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    full = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3)
    batch = replace(full, lidar_mask=torch.tensor([False, True]),
                    lidar_points=[torch.zeros(0, 5), full.lidar_points[1]])
    model.eval()
    out = model(batch)
    assert out.present.tolist() == [[True, False, True], [True, True, True]]
    own = [model.subset_heads["camera+radar"](out.fused[:1]), model.head(out.fused[1:])]
    for frame, heads in enumerate(own):
        for a, b in zip(out.heads, heads):
            torch.testing.assert_close(a.heatmap[frame:frame + 1], b.heatmap)
            torch.testing.assert_close(a.regression[frame:frame + 1], b.regression)
    wrong = model.head(out.fused[:1])
    assert not torch.allclose(out.heads[0].heatmap[:1], wrong[0].heatmap)
    assert len(model.predict(batch)) == 2 and len(model.predict(full, modalities=("radar",))) == 2
    # Training: the LiDAR-free frame and the subset pass of the other reach the subset head
    # only; the main head learns from the frame with LiDAR.
    model.train()
    out = model(batch)
    sub = out.subsets[0]
    assert sub.frames.tolist() == [1]
    losses = model.loss(out, batch)
    main = list(model.head.parameters())
    extra = list(model.subset_heads.parameters())
    g_sub = torch.autograd.grad(losses["loss_subset"], main + extra, allow_unused=True,
                                retain_graph=True)
    assert all(g is None or not g.any() for g in g_sub[:len(main)])
    assert any(g is not None and g.abs().sum() > 0 for g in g_sub[len(main):])
    only_free = replace(batch, lidar_mask=torch.tensor([False, False]),
                        lidar_points=[torch.zeros(0, 5)] * 2)
    out = model(only_free)
    g = torch.autograd.grad(sum(model.loss(out, only_free).values()), main, allow_unused=True)
    assert all(x is None or not x.any() for x in g)
    with pytest.raises(ValueError, match="subset_heads needs fusion.subset_loss"):
        replace(cfg.fusion, subset_loss=())


def test_subset_code_weights_weigh_the_subset_passes_regression_only(kit):
    """fusion.subset_code_weights: the subset pass's regression loss uses these channel
    weights (zeros for sin and cos: no heading gradient from the LiDAR-free pass reaches the
    head's heading outputs), the full pass keeps the head's own."""
    torch.manual_seed(0)
    cfg = kit.tiny_config()
    no_yaw = (1.0,) * 6 + (0.0, 0.0) + (1.0, 1.0)
    cfg = replace(cfg, fusion=replace(cfg.fusion, subset_loss=(("camera", "radar"),),
                                      subset_code_weights=no_yaw))
    model = build_model(cfg).train()
    batch = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3)
    out = model(batch)
    losses = model.loss(out, batch)
    sub = out.subsets[0]
    gts = [batch.gt[i] for i in sub.frames.tolist()]
    torch.testing.assert_close(losses["loss_subset"],
                               sum(model.head.loss(sub.heads, gts, code_weights=no_yaw).values()))
    own = model.head.loss(sub.heads, gts)["loss_regression"]
    assert not torch.allclose(
        own, model.head.loss(sub.heads, gts, code_weights=no_yaw)["loss_regression"])
    torch.testing.assert_close(losses["loss_regression"],
                               model.head.loss(out.heads, batch.gt)["loss_regression"])
    # Gradient of the subset loss alone w.r.t. the subset pass's own regression maps.
    regs = [h.regression for h in sub.heads]
    grads = torch.autograd.grad(losses["loss_subset"], regs)
    sin_cos = [6, 7]
    assert all(not g[:, sin_cos].any() for g in grads)
    assert any(g[:, [0, 1, 8, 9]].abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="subset_code_weights needs 10 weights"):
        load_config(CONFIGS / "synthetic" / "fusion.yaml", ExperimentConfig,
                    ["model.fusion.subset_code_weights=[1, 1, 0]"])


def test_subset_loss_config():
    """subset_loss names distinct known sensors forming a proper subset of the model's; the
    errors name the field."""
    path = CONFIGS / "synthetic" / "fusion.yaml"
    cfg = load_config(path, ExperimentConfig, ["model.fusion.subset_loss=[[camera, radar]]"])
    assert cfg.model.fusion.subset_loss == (("camera", "radar"),)
    assert build_model(cfg.model).subset_loss == (("camera", "radar"),)
    for bad, message in [
            ("[[camera, sonar]]", r"entry \['camera', 'sonar'\] .* \(unknown: \['sonar'\]\)"),
            ("[[]]", r"subset_loss entry \[\] must name"),
            ("[[radar, radar]]", r"entry \['radar', 'radar'\] must name distinct"),
            ("[[camera, lidar, radar]]", "must be a proper subset of model.modalities")]:
        with pytest.raises(ValueError, match=message):
            load_config(path, ExperimentConfig, [f"model.fusion.subset_loss={bad}"])
    with pytest.raises(ValueError, match="proper subset of model.modalities"):
        load_config(CONFIGS / "synthetic" / "camera_radar.yaml", ExperimentConfig,
                    ["model.fusion.subset_loss=[[camera, radar]]"])
    with pytest.raises(ValueError, match="subset_loss_weight must be > 0, got 0"):
        load_config(path, ExperimentConfig, ["model.fusion.subset_loss_weight=0"])


def test_overfitting_two_frames_drives_the_loss_down(kit):
    torch.manual_seed(0)
    model = build_model(kit.tiny_config(("lidar", "radar"))).train()
    batch = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = model.loss(model(batch), batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.3 * sum(first.values()), (first, last)
    assert last["loss_heatmap"] < 0.3 * first["loss_heatmap"]
    assert last["loss_regression"] < 0.5 * first["loss_regression"]


def _overfit(model, batch, steps: int, device: str) -> list[float]:
    """Adam on one batch; float16 autocast with a gradient scaler on CUDA (as `perception
    train` does), float32 on CPU. Returns the total loss of each step."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    history = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
            total = sum(model.loss(model(batch), batch).values())
        opt.zero_grad()
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
        history.append(float(total.detach()))
    return history


def test_overfitting_with_every_sensor(kit):
    torch.manual_seed(0)
    model = build_model(kit.tiny_config(("camera", "lidar", "radar"))).train()
    batch = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3)
    history = _overfit(model, batch, 10, "cpu")
    assert history[-1] < 0.2 * history[0], history              # ~0.11 here


@pytest.mark.cuda
def test_training_on_cuda_with_mixed_precision(kit):
    """The whole training step on the GPU: the Triton kernels' backward (bev_pool, the sparse
    backbone), float16 autocast and the gradient scaler. No spconv on the GPU machine: the
    backbone is spconv-triton's there."""
    torch.manual_seed(0)
    model = build_model(kit.tiny_config(("camera", "lidar", "radar"))).cuda().train()
    batch = kit.make_batch(grid=kit.grid, batch_size=2, boxes_per_frame=3, seed=3).to("cuda")
    # 30 steps: the scaler skips the first few while it finds its scale (float32 on CPU: 0.03).
    history = _overfit(model, batch, 30, "cuda")
    assert all(math.isfinite(h) for h in history), history
    assert history[-1] < 0.2 * history[0], history
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.cuda
def test_camera_radar_frame_on_cuda_waits_for_the_gpu_three_times(kit):
    """Each host wait drains the GPU's queue (docs/performance.md). A camera + radar frame, once
    its geometry is cached, waits only to read the sensor masks, the calibration key and the
    number of decoded boxes; the LiDAR branch adds its data-dependent sizes (voxel count, the
    sparse convolutions' outputs), not counted here."""
    import warnings

    model = build_model(kit.tiny_config(("camera", "radar"))).cuda().eval()
    batch = kit.make_batch(grid=kit.grid, batch_size=1, boxes_per_frame=3, seed=3).to("cuda")
    with torch.no_grad():
        model.head.decode(model(batch).heads)                  # compiles, builds the geometry
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dets = model.head.decode(model(batch).heads)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 3, syncs
    assert len(dets) == 1


@pytest.mark.parametrize("name", ["nuscenes/fusion", "synthetic/fusion", "synthetic/lidar",
                                  "synthetic/camera", "synthetic/camera_radar",
                                  "synthetic/camera_lidar"])
def test_shipped_configs_load_and_build(name):
    cfg = load_config(CONFIGS / f"{name}.yaml", ExperimentConfig)
    model = build_model(cfg.model)
    assert isinstance(model, FusionDetector)
    assert model.modalities == tuple(m for m in ("camera", "lidar", "radar")
                                     if m in cfg.model.modalities)
    if name.startswith("synthetic/") and name != "synthetic/fusion":
        fusion = load_config(CONFIGS / "synthetic/fusion.yaml", ExperimentConfig)
        a, b = config_to_dict(cfg), config_to_dict(fusion)
        for d in (a, b):
            # Baselines differ from the fusion model in the sensors, the modality dropout (how
            # often each sensor is hidden in training) and the subset loss (with its statistics)
            # only.
            d["model"].pop("modalities")
            for k in ("modality_dropout", "modality_dropout_late", "modality_dropout_late_start",
                      "subset_loss", "subset_norm_stats"):
                d["model"]["fusion"].pop(k)
        assert a == b


SHIPPED = ("fusion", "lidar", "camera", "camera_radar", "camera_lidar")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_matches_its_config(name):
    """data/checkpoints/synthetic_NAME.pt: at most 15 MB, trained as configs/synthetic/NAME.yaml
    describes the model (so `perception eval configs/synthetic/NAME.yaml --checkpoint ...` and
    `make demo` build the model it was trained as), by the one recipe of tools/train_synthetic.sh
    (same schedule, budget and data for all five; a second phase starts the models with LiDAR
    from the first phase's LiDAR model, the others from their own), and its weights load
    strictly."""
    from perception.engine.checkpoint import model_state

    path = CONFIGS.parent / "data" / "checkpoints" / f"synthetic_{name}.pt"
    assert path.stat().st_size <= 15 * 2**20
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    cfg = load_config(CONFIGS / "synthetic" / f"{name}.yaml", ExperimentConfig)
    ours = config_to_dict(cfg)["model"]

    def same(trained, now, where="model"):
        for k, v in trained.items():
            key = f"{where}.{k}"
            if isinstance(v, dict):
                same(v, now[k], key)
            elif key.removeprefix("model.") not in INFERENCE_ONLY:   # predict-only switches
                assert now[k] == v, f"{key}: checkpoint {v!r}, config {now[k]!r}"
    same(shipped["config"]["model"], ours)
    fusion = torch.load(path.with_name("synthetic_fusion.pt"), map_location="cpu", weights_only=True)
    assert shipped["iteration"] == fusion["iteration"] == shipped["config"]["train"]["max_iters"]
    # Resolved through today's schema: a field added after a run started (its default = what
    # that run did) is not a difference.
    resolved = [config_to_dict(config_from_dict(ExperimentConfig, ck["config"]))
                for ck in (shipped, fusion)]
    starts = [r["train"].pop("init_from") for r in resolved]
    favours = [r["train"].pop("init_favour") for r in resolved]
    for key in ("train", "data"):
        assert resolved[0][key] == resolved[1][key], f"{name}: {key} differs from fusion's"
    if starts[1] is None:       # one phase: every model from scratch
        assert starts[0] is None, f"{name}: started from {starts[0]}, the fusion model fresh"
        assert favours == [0.0, 0.0]
    else:                       # tools/train_synthetic.sh with FIRST=DIR
        first = "lidar" if "lidar" in cfg.model.modalities else name
        assert Path(starts[0]).name == f"synthetic_{first}.pt", starts[0]
        assert Path(starts[0]).parent == Path(starts[1]).parent, (starts, "one first phase")
        assert resolved[0]["train"]["init_partial"]
        # train.init_favour: the models with more sensors than their first-phase file favour
        # its sensors alike; the others have nothing to favour.
        assert favours[0] == (favours[1] if first != name else 0.0), (name, favours)
    model = build_model(cfg.model)
    model.load_state_dict(model_state(path))     # strict: every tensor present, same shapes


def test_init_favour_starts_a_fusion_model_as_the_lidar_model_it_comes_from(kit, tmp_path):
    """``train.init_favour`` with ``fusion.modality_bias``: a fusion model started from a LiDAR
    model's file (``init_partial``) gives that model's head outputs on a frame with LiDAR,
    although its camera and radar encoders are fresh; without the favour, or with it on the
    channel weights only (no attention bias), the fresh sensors change them."""
    from perception.engine.checkpoint import FORMAT
    from perception.engine.train import init_weights

    torch.manual_seed(0)
    lidar = build_model(kit.tiny_config(("lidar",)))
    batch = kit.make_batch(grid=kit.grid, batch_size=1)
    lidar.train()(batch)                        # BatchNorm statistics other than the init ones
    path = tmp_path / "lidar.pt"
    torch.save({"format": FORMAT, "kind": "model", "model": lidar.state_dict(),
                "config": {"model": {"modalities": ["lidar"]}}}, path)
    expected = lidar.eval()(batch).heads

    def gap(favour: float, bias: bool) -> float:
        cfg = kit.tiny_config()
        cfg = replace(cfg, fusion=replace(cfg.fusion, modality_bias=bias))
        torch.manual_seed(1)
        model = build_model(cfg)
        init_weights(model, path, partial=True, favour=favour)
        heads = model.eval()(batch).heads
        return max((a.heatmap - b.heatmap).abs().max().item() for a, b in zip(heads, expected))

    assert gap(40.0, True) < 1e-4
    assert gap(0.0, True) > 1e-2 and gap(0.0, False) > 1e-2
    assert gap(40.0, False) > 1e-2
    # The rows: the file's sensor raised, the fresh ones left at zero.
    cfg = kit.tiny_config()
    model = build_model(replace(cfg, fusion=replace(cfg.fusion, modality_bias=True)))
    init_weights(model, path, partial=True, favour=5.0)
    gain = model.fuser.CHANNEL_LOGIT_GAIN
    for rows in (model.fuser.channel_logits, model.fuser.modality_bias):
        assert torch.allclose(rows[1] * gain, torch.full_like(rows[1], 5.0))
        assert not rows[0].any() and not rows[2].any()


def test_init_favour_needs_a_file_of_fewer_sensors(kit, tmp_path):
    from perception.engine.checkpoint import FORMAT
    from perception.engine.train import init_weights
    from perception.models.config import TrainConfig

    model = build_model(kit.tiny_config())
    path = tmp_path / "same.pt"
    torch.save({"format": FORMAT, "kind": "model", "model": model.state_dict(),
                "config": {"model": {"modalities": ["camera", "lidar", "radar"]}}}, path)
    with pytest.raises(ValueError, match=r"nothing to favour.*same\.pt"):
        init_weights(build_model(kit.tiny_config()), path, partial=True, favour=5.0)
    with pytest.raises(ValueError, match="init_favour.*needs train.init_partial"):
        TrainConfig(init_from=str(path), init_favour=5.0)
    with pytest.raises(ValueError, match="init_favour must be >= 0"):
        TrainConfig(init_from=str(path), init_partial=True, init_favour=-1.0)
    # A file with none of the model's sensors: nothing to favour either.
    camera = build_model(kit.tiny_config(("camera",)))
    torch.save({"format": FORMAT, "kind": "model", "model": camera.state_dict(),
                "config": {"model": {"modalities": ["camera"]}}}, tmp_path / "camera.pt")
    with pytest.raises(ValueError, match=r"nothing to favour.*camera\.pt"):
        init_weights(build_model(kit.tiny_config(("lidar", "radar"))), tmp_path / "camera.pt",
                     partial=True, favour=5.0)
