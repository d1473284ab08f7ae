"""Rotated BEV IoU against shapely; NMS backends give the reference's kept set exactly."""
import math

import pytest
import torch

from perception.ops.nms import (circle_nms, circle_nms_keep, nms_bev, paired_iou_bev,
                                pairwise_iou_bev)
from perception.structures.boxes import Boxes3D

BACKENDS = ["reference", "fast"]


def rand_boxes(n, extent=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = torch.zeros(n, 9)
    b[:, :2] = torch.rand(n, 2, generator=g) * extent - extent / 2
    b[:, 3] = torch.rand(n, generator=g) * 3 + 1
    b[:, 4] = torch.rand(n, generator=g) * 1.5 + 0.5
    b[:, 5] = 1.5
    b[:, 6] = torch.rand(n, generator=g) * 2 * math.pi - math.pi
    return b


def params(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _shapely_iou(a, b):
    geom = pytest.importorskip("shapely.geometry")

    def poly(p):
        x, y, l, w, r = p
        c, s = math.cos(r), math.sin(r)
        return geom.Polygon([(x + c * u * l / 2 - s * v * w / 2, y + s * u * l / 2 + c * v * w / 2)
                             for u, v in ((1, -1), (1, 1), (-1, 1), (-1, -1))])

    pa, pb = poly(a), poly(b)
    inter = pa.intersection(pb).area
    return inter / (pa.area + pb.area - inter)


def test_iou_matches_shapely_on_random_pairs():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([4, 4, 4, 2, 2 * math.pi], dtype=torch.float64)
    shift = torch.tensor([0, 0, 0.5, 0.5, -math.pi], dtype=torch.float64)
    a = torch.rand(300, 5, generator=g, dtype=torch.float64) * scale + shift
    b = torch.rand(300, 5, generator=g, dtype=torch.float64) * scale + shift
    ours = paired_iou_bev(a, b)
    ref = torch.tensor([_shapely_iou(x.tolist(), y.tolist()) for x, y in zip(a, b)],
                       dtype=torch.float64)
    assert (ref > 0).sum() > 100
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("other, expect", [
    ([1, 2, 4, 2, 0.3], 1.0),                       # identical
    ([1, 2, 4, 2, 0.3 + math.pi], 1.0),             # same footprint, opposite heading
    ([1, 2, 2, 4, 0.3 + math.pi / 2], 1.0),         # same footprint, l and w swapped
    ([1, 2, 4, 2, 0.3 + math.pi / 2], 1 / 3),       # a cross
    ([1 + 4 * math.cos(0.3), 2 + 4 * math.sin(0.3), 4, 2, 0.3], 0.0),  # touching end to end
    ([1 + 2 * math.cos(0.3), 2 + 2 * math.sin(0.3), 4, 2, 0.3], 1 / 3),  # half overlap
    ([1, 2, 2, 2, 0.3], 0.5),                       # contained, sharing two edges
    ([30, 2, 4, 2, 0.3], 0.0),                      # far apart
])
def test_iou_degenerate_cases(other, expect):
    got = paired_iou_bev(params([[1, 2, 4, 2, 0.3]]), params([other]))
    # 1e-7: the shifted centres carry cos/sin rounding (shapely agrees to 1e-15 with us).
    assert got.item() == pytest.approx(expect, abs=1e-7)


def test_iou_axis_aligned_shared_edges():
    sq = params([[0, 0, 2, 2, 0]])
    cases = {(2, 0, 2, 2): 0.0, (1, 0, 2, 2): 1 / 3, (1, 1, 2, 2): 1 / 7, (0, 0, 1, 1): 0.25,
             (0.5, 0, 1, 2): 0.5}
    for (x, y, l, w), expect in cases.items():
        assert paired_iou_bev(sq, params([[x, y, l, w, 0]])).item() == pytest.approx(expect)


def test_pairwise_is_symmetric_with_unit_diagonal():
    p = rand_boxes(40)[:, [0, 1, 3, 4, 6]].double()
    m = pairwise_iou_bev(p, p)
    torch.testing.assert_close(m, m.t(), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.diagonal(m), torch.ones(40, dtype=torch.float64))


def _brute_nms(boxes, scores, labels, thr):
    """Textbook greedy with Python loops: the definition the fast paths must reproduce."""
    p = boxes[:, [0, 1, 3, 4, 6]].double()
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        ok = True
        for k in keep:
            if labels[k] == labels[i] and paired_iou_bev(p[k:k + 1], p[i:i + 1]).item() > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("backend", BACKENDS)
def test_nms_matches_brute_force(backend):
    b = rand_boxes(40, extent=6.0, seed=1)
    s = torch.rand(40, generator=torch.Generator().manual_seed(2))
    lab = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(3))
    got = nms_bev(Boxes3D(b), s, lab, 0.1, backend=backend)
    assert got.tolist() == _brute_nms(b, s, lab, 0.1)


def test_equal_scores_tie_break_by_index():
    b = rand_boxes(3)
    b[:] = b[0]  # three identical boxes
    s = torch.tensor([0.5, 0.9, 0.9])
    for backend in BACKENDS:
        assert nms_bev(b, s, None, 0.5, backend=backend).tolist() == [1]
        assert circle_nms(b, s, None, 1.0, backend=backend).tolist() == [1]
    s = torch.full((3,), 0.7)
    assert nms_bev(b, s, None, 0.5).tolist() == [0]
    # Different classes never suppress each other; order stays score then index.
    assert nms_bev(b, s, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def nms_cases():
    g = torch.Generator().manual_seed(5)
    many = rand_boxes(150, extent=12.0, seed=6)
    scores = torch.rand(150, generator=g)
    scores[::4] = 0.5  # ties
    return {
        "random": (many, scores, torch.randint(0, 4, (150,), generator=g)),
        "no_labels": (many, scores, None),
        "empty": (torch.zeros(0, 9), torch.zeros(0), torch.zeros(0, dtype=torch.int64)),
        "single": (many[:1], scores[:1], None),
        "all_equal_scores": (many[:60], torch.full((60,), 0.3), None),
    }


@pytest.mark.parametrize("case", list(nms_cases()))
@pytest.mark.parametrize("backend", ["fast"])
def test_fast_equals_reference(case, backend):
    b, s, lab = nms_cases()[case]
    for thr in (0.0, 0.2, 0.7):
        assert torch.equal(nms_bev(b, s, lab, thr, backend=backend),
                           nms_bev(b, s, lab, thr, backend="reference"))
    for radius in (1.0, [0.5, 1.0, 2.0, 4.0]):
        if lab is None and not isinstance(radius, float):
            continue
        assert torch.equal(circle_nms(b, s, lab, radius, backend=backend),
                           circle_nms(b, s, lab, radius, backend="reference"))


def test_max_out_and_circle_semantics():
    xy = torch.tensor([[0.0, 0.0], [0.9, 0.0], [1.1, 0.0], [5.0, 5.0]])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert circle_nms(xy, s, None, 1.0).tolist() == [0, 2, 3]  # 0.9 m <= 1 m, 1.1 m > 1 m
    assert circle_nms(xy, s, None, 1.0, max_out=2).tolist() == [0, 2]
    lab = torch.tensor([0, 1, 1, 0])
    assert circle_nms(xy, s, lab, [0.1, 5.0]).tolist() == [0, 1, 3]


@pytest.mark.parametrize("case", list(nms_cases()))
def test_triton_equals_reference(case, interpreted):
    mod = interpreted("perception.ops.nms")
    b, s, lab = nms_cases()[case]
    if b.shape[0] > 32:  # the interpreter is slow: a prefix keeps ties and overlaps
        b, s, lab = b[:32], s[:32], (lab[:32] if lab is not None else None)
    for thr in (0.05, 0.3):
        assert torch.equal(mod.nms_bev_triton(b, s, lab, thr),
                           nms_bev(b, s, lab, thr, backend="reference"))
    radius = 1.5 if lab is None else [0.5, 1.0, 2.0, 4.0]
    assert torch.equal(mod.circle_nms_triton(b, s, lab, radius),
                       circle_nms(b, s, lab, radius, backend="reference"))


def test_triton_degenerate_boxes(interpreted):
    mod = interpreted("perception.ops.nms")
    base = [1, 2, 0, 4, 2, 1.5, 0.3, 0, 0]
    rows = [base, base[:6] + [0.3 + math.pi, 0, 0], [1, 2, 0, 2, 4, 1.5, 0.3 + math.pi / 2, 0, 0],
            [1, 2, 0, 2, 2, 1.5, 0.3, 0, 0], [1 + 4 * math.cos(0.3), 2 + 4 * math.sin(0.3), 0, 4, 2,
                                              1.5, 0.3, 0, 0]]
    b = torch.tensor(rows)
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    # Not 0.0: the end-to-end pair touches within float32 rounding, so its IoU is ~1e-8 in the
    # float64 reference and 0 in the float32 kernel; any threshold above rounding agrees.
    for thr in (0.1, 0.4, 0.6):
        assert torch.equal(mod.nms_bev_triton(b, s, None, thr),
                           nms_bev(b, s, None, thr, backend="reference"))


@pytest.mark.cuda
@pytest.mark.parametrize("case", list(nms_cases()))
def test_cuda_equals_reference(case):
    b, s, lab = nms_cases()[case]
    lab_c = lab.cuda() if lab is not None else None
    for thr in (0.0, 0.3):
        assert torch.equal(nms_bev(b.cuda(), s.cuda(), lab_c, thr).cpu(),
                           nms_bev(b, s, lab, thr, backend="reference"))
    radius = 1.5 if lab is None else [0.5, 1.0, 2.0, 4.0]
    assert torch.equal(circle_nms(b.cuda(), s.cuda(), lab_c, radius).cpu(),
                       circle_nms(b, s, lab, radius, backend="reference"))


def _keep_expected(b, s, lab, radius, valid):
    """circle_nms on the valid candidates alone, as flags over all of them."""
    idx = torch.nonzero(valid).squeeze(1)
    kept = circle_nms(b[idx], s[idx], None if lab is None else lab[idx], radius,
                      backend="reference")
    flags = torch.zeros(len(s), dtype=torch.bool)
    flags[idx[kept]] = True
    return flags


def keep_cases():
    g = torch.Generator().manual_seed(11)
    for name, (b, s, lab) in nms_cases().items():
        n = len(s)
        radius = 1.5 if lab is None else [0.5, 1.0, 2.0, 4.0]
        yield name + "-all", (b, s, lab, radius, None)
        yield name + "-random", (b, s, lab, radius, torch.rand(n, generator=g) < 0.6)
        yield name + "-none", (b, s, lab, radius, torch.zeros(n, dtype=torch.bool))
        # The decoder's case: a score threshold, so the valid boxes lead the visiting order.
        yield name + "-threshold", (b, s, lab, radius, s > 0.4)


@pytest.mark.parametrize("case", [k for k, _ in keep_cases()])
@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_circle_nms_keep_is_circle_nms_on_the_valid_boxes(case, backend):
    b, s, lab, radius, valid = dict(keep_cases())[case]
    got = circle_nms_keep(b, s, lab, radius, valid, backend=backend)
    expect = _keep_expected(b, s, lab, radius,
                            torch.ones(len(s), dtype=torch.bool) if valid is None else valid)
    assert got.dtype == torch.bool and torch.equal(got, expect)


@pytest.mark.parametrize("case", [k for k, _ in keep_cases()])
def test_circle_nms_keep_triton_equals_reference(case, interpreted):
    mod = interpreted("perception.ops.nms")
    b, s, lab, radius, valid = dict(keep_cases())[case]
    if b.shape[0] > 32:  # the interpreter is slow
        b, s = b[:32], s[:32]
        lab = lab[:32] if lab is not None else None
        valid = valid[:32] if valid is not None else None
    expect = _keep_expected(b, s, lab, radius,
                            torch.ones(len(s), dtype=torch.bool) if valid is None else valid)
    assert torch.equal(mod.circle_nms_keep_triton(b, s, lab, radius, valid), expect)


def test_greedy_flags_host_fallback_honours_valid(interpreted, monkeypatch):
    # Above _GREEDY_MAX boxes the greedy pass runs on the host; the flags must be the same.
    mod = interpreted("perception.ops.nms")
    b, s, lab = nms_cases()["random"]
    b, s, lab = b[:40], s[:40], lab[:40]
    valid = torch.rand(40, generator=torch.Generator().manual_seed(3)) < 0.5
    fast = mod.circle_nms_keep_triton(b, s, lab, 2.0, valid)
    xy, ss, sl, sv = _sets(n=20)
    sets = mod.circle_nms_keep_triton(xy, ss, sl, 1.0, sv)
    monkeypatch.setattr(mod, "_GREEDY_MAX", 8)
    assert torch.equal(mod.circle_nms_keep_triton(b, s, lab, 2.0, valid), fast)
    assert torch.equal(fast, _keep_expected(b, s, lab, 2.0, valid))
    assert torch.equal(mod.circle_nms_keep_triton(xy, ss, sl, 1.0, sv), sets)


@pytest.mark.cuda
@pytest.mark.parametrize("case", [k for k, _ in keep_cases()])
def test_circle_nms_keep_cuda_equals_reference(case):
    b, s, lab, radius, valid = dict(keep_cases())[case]
    cuda = (lambda t: None if t is None else t.cuda())
    got = circle_nms_keep(b.cuda(), s.cuda(), cuda(lab), radius, cuda(valid))
    expect = _keep_expected(b, s, lab, radius,
                            torch.ones(len(s), dtype=torch.bool) if valid is None else valid)
    assert got.is_cuda and torch.equal(got.cpu(), expect)


def _sets(n_sets=3, n=30, seed=21):
    """S independent sets: random centres (close pairs, ties), labels, validity; one set empty of
    valid boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n_sets, n, 2, generator=g) * 8.0
    xy[:, 1::3] = xy[:, ::3][:, :xy[:, 1::3].shape[1]] + 0.3      # near-duplicates
    s = torch.rand(n_sets, n, generator=g)
    s[:, ::5] = 0.5                                                    # ties
    lab = torch.randint(0, 3, (n_sets, n), generator=g)
    valid = torch.rand(n_sets, n, generator=g) < 0.7
    valid[-1] = False
    return xy, s, lab, valid


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_circle_nms_keep_on_sets_is_per_set(backend):
    xy, s, lab, valid = _sets()
    radius = [0.5, 1.0, 2.0]
    got = circle_nms_keep(xy, s, lab, radius, valid, backend=backend)
    assert got.shape == s.shape
    for i in range(len(s)):
        assert torch.equal(got[i], _keep_expected(xy[i], s[i], lab[i], radius, valid[i]))


def test_circle_nms_keep_triton_on_sets_is_per_set(interpreted):
    mod = interpreted("perception.ops.nms")
    xy, s, lab, valid = _sets(n=20)
    for radius in (1.0, [0.5, 1.0, 2.0]):
        got = mod.circle_nms_keep_triton(xy, s, lab, radius, valid)
        for i in range(len(s)):
            assert torch.equal(got[i], _keep_expected(xy[i], s[i], lab[i], radius, valid[i]))
    got = mod.circle_nms_keep_triton(xy, s, None, 1.0, None)
    for i in range(len(s)):
        assert torch.equal(got[i], _keep_expected(xy[i], s[i], None, 1.0,
                                                  torch.ones(s.shape[1], dtype=torch.bool)))


@pytest.mark.cuda
def test_circle_nms_keep_cuda_on_sets_is_per_set():
    xy, s, lab, valid = _sets(n_sets=6, n=500)
    radius = torch.tensor([0.5, 1.0, 2.0]).cuda()
    got = circle_nms_keep(xy.cuda(), s.cuda(), lab.cuda(), radius, valid.cuda()).cpu()
    for i in range(len(s)):
        assert torch.equal(got[i], _keep_expected(xy[i], s[i], lab[i], [0.5, 1.0, 2.0], valid[i]))
