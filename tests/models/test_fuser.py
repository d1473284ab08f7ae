import pytest
import torch

from perception.models.fusion import AttentionFuser
from perception.models.fusion.context import BEVContext
from perception.models.outputs import BEVFeatures


def _bevs(b=2, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda c: BEVFeatures(torch.randn(b, c, h, w, generator=g), torch.ones(b, h, w, dtype=torch.bool))
    return {"camera": mk(4), "lidar": mk(6), "radar": mk(3)}


def _fuser():
    torch.manual_seed(0)
    f = AttentionFuser(in_channels={"camera": 4, "lidar": 6, "radar": 3}, channels=8, heads=2,
                       context_blocks=1)
    return f.eval()


def test_absent_modality_is_masked_not_zero_filled():
    fuser, bevs = _fuser(), _bevs()
    present = torch.tensor([[True, False, True], [True, True, True]])
    out = fuser(bevs, present)
    # Changing the absent sensor's features must not change frame 0 at all.
    bevs2 = dict(bevs, lidar=BEVFeatures(bevs["lidar"].features * 7 + 3, bevs["lidar"].valid))
    out2 = fuser(bevs2, present)
    torch.testing.assert_close(out[0], out2[0])
    assert not torch.allclose(out[1], out2[1])
    # Same frame computed without passing lidar at all: identical.
    only = {k: v for k, v in bevs.items() if k != "lidar"}
    torch.testing.assert_close(fuser(only, present)[0], out[0])


def test_cells_without_any_valid_modality_are_zero_and_gradients_flow():
    fuser = _fuser().train()
    bevs = _bevs()
    valid = torch.ones(2, 6, 5, dtype=torch.bool)
    valid[:, :, :2] = False
    bevs = {"camera": BEVFeatures(bevs["camera"].features.requires_grad_(), valid),
            "lidar": BEVFeatures(bevs["lidar"].features, valid)}
    out = fuser(bevs, torch.tensor([[True, True, False]] * 2))
    assert (out[:, :, :, :2] == 0).all() and out[:, :, :, 2:].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(bevs["camera"].features.grad).all()
    assert fuser.k.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("scales", [1, 2, 3])
def test_context_levels_keep_the_grid_and_all_learn(scales):
    torch.manual_seed(0)
    ctx = BEVContext(8, blocks=2, scales=scales)
    x = torch.randn(2, 8, 16, 12)
    y = ctx(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for k, level in enumerate(ctx.levels):
        # Every level gets a gradient (its first block's last BN: the blocks start as identities),
        # so the coarse levels reach the output.
        assert level[0].bn2.weight.grad.abs().sum() > 0, k
    # A coarse level sees further: a change far from a cell reaches it only with more scales.
    # (Blocks start as identities; give every BN a unit scale so that the convs count.)
    for m in ctx.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    ctx.eval()
    with torch.no_grad():
        a = ctx(x)
        x2 = x.clone()
        x2[:, :, 0, 0] += 10.0
        b = ctx(x2)
    reach = (a - b).abs().sum(dim=(0, 1)) > 1e-6
    assert reach[0, 0] and reach[:5, :5].all()
    if scales == 1:
        assert not reach[6:, 6:].any()   # 4 convs: a 9 x 9 neighbourhood at most
    else:
        assert reach[6:, 6:].any()


def test_context_rejects_an_indivisible_grid():
    with pytest.raises(ValueError, match="divisible by 4"):
        BEVContext(8, blocks=1, scales=3)(torch.randn(1, 8, 30, 30))


def test_channel_weights_renormalise_over_the_modalities_present():
    fuser = _fuser()
    with torch.no_grad():
        # Channels 0-3 prefer the camera strongly, 4-7 LiDAR; radar never.
        fuser.channel_logits.zero_()
        fuser.channel_logits[0, :4] = 1.0
        fuser.channel_logits[1, 4:] = 1.0
        fuser.channel_logits[2] = -1.0
    tokens = torch.randn(2, 3, 8, 6, 5)
    vmask = torch.ones(2, 3, 1, 6, 5)
    base = fuser.channel_mean(tokens, vmask, [0, 1, 2])
    torch.testing.assert_close(base[:, :4], tokens[:, 0, :4], atol=1e-3, rtol=0)
    torch.testing.assert_close(base[:, 4:], tokens[:, 1, 4:], atol=1e-3, rtol=0)
    # Without the camera at a cell (and in a frame with radar only), its channels fall to what is
    # there: LiDAR wins over radar, and radar alone is taken whole.
    vmask[:, 0, :, :, :2] = 0
    base = fuser.channel_mean(tokens, vmask, [0, 1, 2])
    torch.testing.assert_close(base[:, :, :, :2], tokens[:, 1, :, :, :2], atol=1e-3, rtol=0)
    only_radar = fuser.channel_mean(tokens[:, 2:], vmask[:, 2:], [2])
    torch.testing.assert_close(only_radar, tokens[:, 2])
    # A preference far stronger than float can express (exp(-200)) for a sensor absent at a cell
    # still leaves the present ones their weights there, in float16 too.
    with torch.no_grad():
        fuser.channel_logits[1] = 20.0
    vmask = torch.ones(2, 3, 1, 6, 5)
    vmask[:, 1, :, :, :2] = 0
    half = fuser.channel_mean(tokens.half(), vmask.half(), [0, 1, 2])
    cam_radar = fuser.channel_mean(tokens[:, [0, 2]], vmask[:, [0, 2]], [0, 2])
    assert half.dtype == torch.float16
    torch.testing.assert_close(half[..., :2].float(), cam_radar[..., :2], atol=5e-3, rtol=5e-3)
    torch.testing.assert_close(half[..., 2:].float(), tokens[:, 1, :, :, 2:], atol=5e-3, rtol=5e-3)
    # No valid modality: exactly zero, with finite gradients.
    logits = fuser.channel_logits
    none = fuser.channel_mean(tokens, torch.zeros_like(vmask), [0, 1, 2])
    assert (none == 0).all()
    fuser.channel_mean(tokens, vmask, [0, 1, 2]).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_zero_channel_logits_are_the_masked_mean_and_one_modality_has_none():
    fuser = _fuser()
    tokens, vmask = torch.randn(2, 3, 8, 6, 5), (torch.rand(2, 3, 1, 6, 5) > 0.3).float()
    expect = (tokens * vmask).sum(1) / vmask.sum(1).clamp(min=1)
    torch.testing.assert_close(fuser.channel_mean(tokens, vmask, [0, 1, 2]), expect)
    single = AttentionFuser(in_channels={"lidar": 6}, channels=8, heads=2, context_blocks=1)
    assert single.channel_logits is None and "channel_logits" not in single.state_dict()
