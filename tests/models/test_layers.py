"""The shared layers: the GroupNorm whose CUDA path is a plain reduction equals nn.GroupNorm."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perception.models.layers import GroupNorm, group_norm_by_reduction


@pytest.mark.parametrize("groups,shape", [(1, (2, 8, 5, 7)), (4, (3, 8, 6, 6)), (8, (1, 8, 9)),
                                          (2, (2, 4, 3, 3, 3))])
def test_reduction_equals_torch_group_norm(groups, shape):
    g = torch.Generator().manual_seed(groups)
    x = torch.randn(shape, generator=g) * 3 + 1
    w = torch.randn(shape[1], generator=g)
    b = torch.randn(shape[1], generator=g)
    want = F.group_norm(x, groups, w, b, 1e-5)
    torch.testing.assert_close(group_norm_by_reduction(x, groups, w, b, 1e-5), want,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(group_norm_by_reduction(x, groups, None, None, 1e-5),
                               F.group_norm(x, groups, None, None, 1e-5), rtol=1e-5, atol=1e-5)


def test_gradients_match():
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    got = torch.autograd.grad(group_norm_by_reduction(x, 3, w, b, 1e-5), (x, w, b), gy)
    want = torch.autograd.grad(F.group_norm(x, 3, w, b, 1e-5), (x, w, b), gy)
    for a, e in zip(got, want):
        torch.testing.assert_close(a.to(e.dtype), e)


def test_half_input_is_normalised_in_float32():
    x = (torch.randn(1, 4, 16, 16) * 200).half()
    y = group_norm_by_reduction(x, 1, None, None, 1e-5)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.group_norm(x.float(), 1, None, None, 1e-5))


def test_module_keeps_nn_group_norm_parameters_and_cpu_path():
    ours, theirs = GroupNorm(2, 6), nn.GroupNorm(2, 6)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 5, 5)
    assert torch.equal(ours(x), theirs(x))            # CPU: nn.GroupNorm's own kernel


@pytest.mark.cuda
def test_module_on_cuda_equals_nn_group_norm():
    ours, theirs = GroupNorm(1, 32).cuda(), nn.GroupNorm(1, 32).cuda()
    x = torch.randn(2, 32, 90, 90, device="cuda")
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16):
        a, b = ours(x.half()), theirs(x.half())
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
