"""nerf/fused_block.py: the in-place residual block equals autograd's, values and every gradient."""

from __future__ import annotations

import pytest
import torch

from featurenerf.nerf.fused_block import fused_blocks_apply, residual_block


def _reference(h, extra, w0, b0, w1):
    return h + torch.relu(torch.relu(h) @ w0.t() + b0) @ w1.t() + extra


@pytest.mark.parametrize("extra_rows", [True, False])
def test_block_equals_autograd_values_and_gradients(extra_rows):
    g = torch.Generator().manual_seed(0)
    n, d, inner = 300, 24, 40
    dt = torch.float64

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dt) * scale).requires_grad_()

    args = [
        rnd(n, d),
        rnd(n, d) if extra_rows else rnd(d),
        rnd(inner, d, scale=0.3),
        rnd(inner),
        rnd(d, inner, scale=0.3),
    ]
    twins = [a.detach().clone().requires_grad_() for a in args]
    grad_out = torch.randn(n, d, generator=g, dtype=dt)
    ours, ref = residual_block(*args), _reference(*twins)
    ours.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(args, twins):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    # Both ReLUs must be active and inactive somewhere, or the masks would go untested.
    inner_pre = torch.relu(twins[0]) @ twins[2].t() + twins[3]
    assert 0.1 < (twins[0] > 0).double().mean() < 0.9 and 0.1 < (inner_pre > 0).double().mean() < 0.9


def test_only_eager_cpu_float32_training_uses_it():
    x = torch.zeros(2, 2)
    assert fused_blocks_apply(x)
    assert not fused_blocks_apply(x.double())
    with torch.no_grad():
        assert not fused_blocks_apply(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_blocks_apply(x)


def test_training_trunk_runs_through_it(monkeypatch):
    import featurenerf.nerf.model as model_mod

    calls = []
    real = model_mod.residual_block
    monkeypatch.setattr(model_mod, "residual_block", lambda *a: calls.append(1) or real(*a))
    net = model_mod.FeatureNeRFNet(feature_dim=4, encoder_layers=1, d_hidden=16, n_coarse=4, n_fine=2,
                                   n_fine_depth=2)  # fmt: skip
    images, poses = torch.rand(1, 1, 3, 32, 32), torch.eye(4).expand(1, 1, 4, 4).clone()
    poses[..., 2, 3] = 1.3
    cond = net.encode(images, poses, torch.full((1, 2), 30.0), torch.full((1, 2), 16.0))
    out = net.render_rays(
        cond, torch.zeros(1, 8, 3) + torch.tensor([0, 0, 1.3]), -torch.eye(3)[2].expand(1, 8, 3)
    )
    assert calls and len(calls) % len(net.mlp.blocks) == 0
    out["fine"]["rgb"].sum().backward()  # and its backward runs
    assert net.mlp.blocks[0].fc0.weight.grad is not None
