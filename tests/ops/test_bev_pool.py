"""bev_pool: every backend equals a dense by-hand pooling; gradients agree; gradcheck."""
import pytest
import torch

from perception.ops.bev_pool import BEVPoolGeometry, bev_pool, cached_geometry
from perception.structures.grid import BEVGrid

GRID = BEVGrid(x_range=(-4, 4), y_range=(-3, 3), z_range=(-2, 2), cell_size=1.0, voxel_z=4.0)


def frustum(b=2, n=2, d=5, h=3, w=4, seed=0, spread=5.0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(b, n, d, h, w, 3, generator=g, dtype=torch.float64) * 2 - 1
    return (pts * torch.tensor([spread, spread * 0.8, 2.5], dtype=torch.float64)).float()


def inputs(shape, c, seed=1, dtype=torch.float64):
    b, n, d, h, w = shape
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(b, n, d, h, w, generator=g, dtype=dtype)
    feats = torch.randn(b, n, h, w, c, generator=g, dtype=dtype)
    return depth.requires_grad_(), feats.requires_grad_()


def dense_pool(depth, feats, pts, grid):
    """The definition, with loops over cells: sum of depth * feature of the points in each cell."""
    b, n, d, h, w, _ = pts.shape
    c = feats.shape[-1]
    out = torch.zeros(b, c, *grid.shape, dtype=feats.dtype)
    flat = pts.reshape(b, -1, 3)
    for bi in range(b):
        keep = grid.in_range_3d(flat[bi])
        cells = grid.xy_to_cell(flat[bi])
        prod = (depth[bi].unsqueeze(-1) * feats[bi].unsqueeze(1)).reshape(-1, c)
        for p in torch.nonzero(keep).squeeze(1).tolist():
            r, col = cells[p].tolist()
            out[bi, :, r, col] += prod[p]
    return out


def test_geometry_layout():
    pts = frustum()
    geom = BEVPoolGeometry.build(pts, GRID)
    keep = GRID.in_range_3d(pts.reshape(-1, 3))
    assert geom.num_points == int(keep.sum())
    assert torch.all(geom.cell[1:] >= geom.cell[:-1])
    assert int(geom.intervals[:, 2].sum()) == geom.num_points
    assert torch.equal(geom.feat_idx[geom.feat_order].sort().values, geom.feat_idx[geom.feat_order])


@pytest.mark.parametrize("backend", ["reference", "csr"])
def test_forward_matches_definition(backend):
    pts = frustum()
    depth, feats = inputs(pts.shape[:5], 6)
    geom = BEVPoolGeometry.build(pts, GRID)
    out = bev_pool(depth, feats, geom, backend=backend)
    assert out.shape == (2, 6, 6, 8)
    torch.testing.assert_close(out, dense_pool(depth.detach(), feats.detach(), pts, GRID))


def test_edge_cases_empty_and_one_cell():
    # Everything out of range: zeros, and zero gradients.
    pts = frustum() + 100.0
    depth, feats = inputs(pts.shape[:5], 3)
    geom = BEVPoolGeometry.build(pts, GRID)
    assert geom.num_points == 0
    for backend in ("reference", "csr"):
        out = bev_pool(depth, feats, geom, backend=backend)
        assert torch.count_nonzero(out) == 0
        out.sum().backward()
    # Everything in one cell: that cell holds sum over points, others are zero.
    pts = torch.full((1, 2, 3, 2, 2, 3), 0.5)
    depth, feats = inputs(pts.shape[:5], 4)
    geom = BEVPoolGeometry.build(pts, GRID)
    out = bev_pool(depth, feats, geom, backend="csr")
    expect = (depth.detach()[0].unsqueeze(-1) * feats.detach()[0].unsqueeze(1)).sum((0, 1, 2, 3))
    torch.testing.assert_close(out[0, :, 3, 4], expect)
    assert torch.count_nonzero(out) == 4


def test_csr_backward_matches_reference():
    pts = frustum(seed=3)
    depth, feats = inputs(pts.shape[:5], 5)
    geom = BEVPoolGeometry.build(pts, GRID)
    g = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    ref = torch.autograd.grad(bev_pool(depth, feats, geom, backend="reference"), [depth, feats], g)
    got = torch.autograd.grad(bev_pool(depth, feats, geom, backend="csr"), [depth, feats], g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


def test_csr_takes_bfloat16_under_cpu_autocast():
    """Training with train.cpu_bf16 hands the pooling bfloat16 depth and features (torch's
    sparse matmul has none): it pools them in float32 and returns gradients in bfloat16."""
    pts = frustum(seed=5)
    depth, feats = inputs(pts.shape[:5], 4, dtype=torch.float32)
    geom = BEVPoolGeometry.build(pts, GRID)
    d16 = depth.detach().bfloat16().requires_grad_()
    f16 = feats.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bev_pool(d16, f16, geom, backend="csr")
    assert out.dtype == torch.float32
    expect = bev_pool(d16.detach().float(), f16.detach().float(), geom, backend="reference")
    torch.testing.assert_close(out, expect)
    out.sum().backward()
    assert d16.grad.dtype == torch.bfloat16 and f16.grad.dtype == torch.bfloat16
    assert torch.count_nonzero(d16.grad) > 0 and torch.count_nonzero(f16.grad) > 0


@pytest.mark.parametrize("backend", ["csr", "reference"])
def test_gradcheck(backend):
    pts = frustum(b=1, n=2, d=3, h=2, w=3, seed=4, spread=3.0)
    depth, feats = inputs(pts.shape[:5], 3)
    geom = BEVPoolGeometry.build(pts, GRID)
    assert geom.num_points > 10
    assert torch.autograd.gradcheck(lambda a, b: bev_pool(a, b, geom, backend=backend),
                                    (depth, feats))


def test_cached_geometry_reuses_and_distinguishes():
    pts = frustum(seed=5)
    g1 = cached_geometry(pts, GRID)
    assert cached_geometry(pts.clone(), GRID) is g1
    assert cached_geometry(pts + 0.5, GRID) is not g1
    assert cached_geometry(pts, GRID, key="calib-a") is cached_geometry(pts, GRID, key="calib-a")


def test_shape_mismatch_is_refused():
    pts = frustum()
    geom = BEVPoolGeometry.build(pts, GRID)
    depth, feats = inputs((2, 2, 4, 3, 4), 3)
    with pytest.raises(ValueError):
        bev_pool(depth, feats, geom)


@pytest.mark.parametrize("seed", [0, 7])
def test_triton_matches_reference_forward_and_backward(seed, interpreted):
    mod = interpreted("perception.ops.bev_pool")
    pts = frustum(seed=seed)
    depth, feats = inputs(pts.shape[:5], 5, dtype=torch.float32, seed=seed)
    geom = BEVPoolGeometry.build(pts, GRID)
    g = torch.randn(2, 5, 6, 8)
    out = mod.bev_pool_triton(depth, feats, geom)
    ref = bev_pool(depth, feats, geom, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(out, [depth, feats], g)
    exp = torch.autograd.grad(ref, [depth, feats], g)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_triton_empty_and_one_cell(interpreted):
    mod = interpreted("perception.ops.bev_pool")
    for pts in (frustum() + 100.0, torch.full((1, 2, 3, 2, 2, 3), 0.5)):
        depth, feats = inputs(pts.shape[:5], 4, dtype=torch.float32)
        geom = BEVPoolGeometry.build(pts, GRID)
        out = mod.bev_pool_triton(depth, feats, geom)
        torch.testing.assert_close(out, bev_pool(depth, feats, geom, backend="reference"))


@pytest.mark.cuda
def test_cuda_matches_reference():
    pts = frustum(seed=9)
    depth, feats = inputs(pts.shape[:5], 70, dtype=torch.float32)
    geom = BEVPoolGeometry.build(pts.cuda(), GRID)
    dc = depth.detach().cuda().requires_grad_()
    fc = feats.detach().cuda().requires_grad_()
    out = bev_pool(dc, fc, geom)
    ref = bev_pool(depth, feats, BEVPoolGeometry.build(pts, GRID), backend="reference")
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [dc, fc], g.cuda())
    exp = torch.autograd.grad(ref, [depth, feats], g)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


def test_find_geometry_looks_up_without_points():
    from perception.ops.bev_pool import find_geometry

    pts = frustum(seed=9)
    assert find_geometry("calib-find", pts.shape, GRID, pts.device) is None
    g = cached_geometry(pts, GRID, key="calib-find")
    assert find_geometry("calib-find", pts.shape, GRID, "cpu") is g
    assert find_geometry("calib-find", (1, *pts.shape[1:]), GRID, "cpu") is None
