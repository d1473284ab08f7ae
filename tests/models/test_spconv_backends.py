"""The LiDAR backbone's two sparse-convolution implementations (spconv, spconv-triton) against a
dense-convolution reference: same parameters, same outputs."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from perception.models.detector import build_lidar
from perception.models.lidar.backbone import SparseBackbone3D, spconv_backend, spconv_module


def _dense_reference(backbone: SparseBackbone3D, x) -> torch.Tensor:
    """What the backbone computes, with dense conv3d on the voxel grid: a submanifold conv is a
    dense conv read at the input's active sites; a strided sparse conv is a dense strided conv
    read wherever its window holds an active site. BatchNorm (eval) and ReLU act at active sites
    only; everything else stays 0. spconv stores weights as (out, kz, ky, kx, in)."""
    dense = x.dense()                                             # (B, C, D, H, W)
    active = (dense.abs().sum(1, keepdim=True) > 0).float()
    for stage in backbone.stages:
        for conv, bn, _relu in stage:
            w = conv.weight.permute(0, 4, 1, 2, 3)
            if conv.subm:
                dense = F.conv3d(dense, w, padding=conv.padding)
            else:
                dense = F.conv3d(dense, w, stride=conv.stride, padding=conv.padding)
                ones = torch.ones(1, 1, *conv.kernel_size, dtype=dense.dtype, device=dense.device)
                active = (F.conv3d(active, ones, stride=conv.stride, padding=conv.padding) > 0).float()
            dense = F.relu(F.batch_norm(dense, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                        False, 0.0, bn.eps)) * active
    return dense


def _sparse_input(shape=(16, 24, 24), channels=5, n=300, batch=2, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    d, h, w = shape
    idx = torch.stack([torch.randint(0, batch, (n,), generator=g), torch.randint(0, d, (n,), generator=g),
                       torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)], 1)
    idx = torch.unique(idx, dim=0).int()
    feats = torch.randn(len(idx), channels, generator=g)
    return feats.to(device), idx.to(device), list(shape), batch


def _backbone(seed=0):
    torch.manual_seed(seed)
    bb = SparseBackbone3D(in_channels=5, channels=(8, 16, 16), blocks_per_stage=2)
    for m in bb.modules():          # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return bb.eval()


def _check_against_reference(device: str):
    bb = _backbone().to(device)
    feats, idx, shape, batch = _sparse_input(device=device)
    x = spconv_module().SparseConvTensor(feats, idx, shape, batch)
    with torch.no_grad():
        got = bb(x).dense()
        want = _dense_reference(bb, x)
    assert got.shape == want.shape and want.abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_backbone_equals_dense_reference_on_cpu(monkeypatch):
    pytest.importorskip("spconv")
    monkeypatch.setenv("PERCEPTION_SPCONV", "spconv")
    _check_against_reference("cpu")


def test_spconv_forward_logs_no_torch_fx_notice(monkeypatch, caplog):
    """torch 2.13 logs a deprecation notice about its own is_fx_tracing() when spconv builds a
    SparseConvTensor; it would open every training and eval log, so the backbone drops it."""
    pytest.importorskip("spconv")
    import torch.fx._symbolic_trace as fx_trace

    monkeypatch.setenv("PERCEPTION_SPCONV", "spconv")
    if not hasattr(getattr(fx_trace, "is_fx_tracing_warning", None), "cache_clear"):
        pytest.skip("this torch has no once-per-process is_fx_tracing notice")
    fx_trace.is_fx_tracing_warning.cache_clear()        # logged once per process otherwise
    with caplog.at_level(logging.WARNING):
        _check_against_reference("cpu")
    assert not [r for r in caplog.records if "is_fx_tracing" in r.getMessage()]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["spconv", "spconv_triton"])
def test_backbone_equals_dense_reference_on_cuda(monkeypatch, backend):
    pytest.importorskip(backend)
    monkeypatch.setenv("PERCEPTION_SPCONV", backend)
    _check_against_reference("cuda")


def test_spconv_triton_builds_the_same_parameters_and_loads_spconv_weights(monkeypatch, kit):
    pytest.importorskip("spconv")
    pytest.importorskip("spconv_triton")
    cfg = kit.tiny_config(("lidar",))
    monkeypatch.setenv("PERCEPTION_SPCONV", "spconv")
    torch.manual_seed(0)
    a = build_lidar(cfg)
    monkeypatch.setenv("PERCEPTION_SPCONV", "spconv_triton")
    b = build_lidar(cfg)
    assert (a.backbone.backend, b.backbone.backend) == ("spconv", "spconv_triton")
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)
    b.load_state_dict(sa, strict=True)      # a checkpoint trained with spconv loads as is
    # On CPU spconv-triton cannot run: the error says what to install instead.
    batch = kit.make_batch(grid=kit.grid, batch_size=1)
    with pytest.raises(RuntimeError, match="CUDA tensors only.*spconv-cu120"):
        b(batch.lidar_points, torch.tensor([True]))


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("PERCEPTION_SPCONV", "nope")
    with pytest.raises(ValueError, match="PERCEPTION_SPCONV"):
        spconv_backend()
    monkeypatch.delenv("PERCEPTION_SPCONV")
    pytest.importorskip("spconv")
    assert spconv_backend() == "spconv"      # the compiled one first when it imports


def test_spconv_triton_autotuning_keeps_the_first_candidates(monkeypatch):
    pytest.importorskip("spconv_triton")
    from triton.runtime.autotuner import Autotuner

    from perception.models.lidar.backbone import limit_spconv_triton_autotuning, spconv_module

    from spconv_triton.pytorch._impl import gemm

    tuner = gemm._gather_gemm_kernel
    assert isinstance(tuner, Autotuner)
    try:
        assert limit_spconv_triton_autotuning(0) == 0
        full = list(tuner.configs)
        assert len(full) > 4
        monkeypatch.setenv("PERCEPTION_SPCONV", "spconv_triton")
        monkeypatch.setenv("PERCEPTION_SPCONV_TRITON_CONFIGS", "2")
        spconv_module()                                   # applies the variable
        assert tuner.configs == full[:2]
        assert limit_spconv_triton_autotuning(2) > 5      # every kernel, not just the GEMM
        assert tuner.configs == full[:2]                  # idempotent: not the first 2 of 2
        monkeypatch.delenv("PERCEPTION_SPCONV_TRITON_CONFIGS")
        spconv_module()
        assert tuner.configs == full[:4]                  # the default
        tuner.configs = full[:1]
        spconv_module()                                   # unchanged variable: no walk again
        assert tuner.configs == full[:1]                  # (the forward calls it every frame)
        monkeypatch.setenv("PERCEPTION_SPCONV_TRITON_CONFIGS", "four")
        with pytest.raises(ValueError, match="PERCEPTION_SPCONV_TRITON_CONFIGS='four'"):
            spconv_module()
    finally:
        limit_spconv_triton_autotuning(0)
    assert tuner.configs == full
