"""L_coord as the release computes it (unweighted mean over a ray's samples) and the weighted variant,
checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from batches import camera_batch

from featurenerf.module import FeatureNeRF, coord_loss
from featurenerf.nerf.model import FeatureNeRFNet

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4)


def _constant_coords(net: FeatureNeRFNet, value: list[float], density: float = 2.0) -> None:
    """The coordinate head outputs ``value`` everywhere (weights 0, bias = value); some density."""
    d = net.feature_dim
    with torch.no_grad():
        net.mlp.lin_out.weight[4 + d : 7 + d] = 0.0
        net.mlp.lin_out.bias[4 + d : 7 + d] = torch.tensor(value)
        net.mlp.lin_out.bias[3] = density


def test_coord_loss_reductions_by_hand():
    residual = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 3.0]]])  # (B=1, R=2, 3)
    # release: mean over rays and axes of the squares: (1 + 4 + 4 + 0 + 0 + 9) / 6 = 3
    assert coord_loss(residual, "release").item() == pytest.approx(3.0)
    # weighted: squared norm per ray (9 and 9), averaged over rays
    assert coord_loss(residual, "weighted").item() == pytest.approx(9.0)


def test_coords_mean_is_the_unweighted_sample_mean_by_hand():
    """With x̂ = c everywhere, mean_i (x̂ − x_i) = c − (o + z̄ d); deterministic coarse samples are the
    strata midpoints, so z̄ = (near + far) / 2, whatever the density does."""
    torch.manual_seed(0)
    net = FeatureNeRFNet(feature_dim=3, near=0.8, far=1.8, **TINY)
    c = [0.1, -0.2, 0.3]
    _constant_coords(net, c)
    batch, rays = camera_batch(feature_dim=3)
    cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    o, d = rays["origins"], rays["dirs"]
    out = net.render_rays(cond, o, d, ("coords_mean", "coords", "opacity"))
    expect = torch.tensor(c) - (o + 1.3 * d)
    torch.testing.assert_close(out["coarse"]["coords_mean"], expect, rtol=1e-5, atol=1e-6)
    # The weighted average is another quantity: Σ w (c − x) depends on the density along the ray.
    assert not torch.allclose(out["coarse"]["coords"], expect, atol=1e-3)
    # Fine pass: every sample (coarse + importance + depth-guided) counts once. The same numbers from
    # re-evaluating all sorted samples and from pixelNeRF's per-point reference path.
    fine = out["fine"]["coords_mean"]
    net.reuse_coarse = False
    torch.testing.assert_close(net.render_rays(cond, o, d, ("coords_mean",))["fine"]["coords_mean"], fine)
    net.fast_field, net.reuse_coarse = False, True
    ref = net.render_rays(cond, o, d, ("coords_mean",))
    torch.testing.assert_close(ref["fine"]["coords_mean"], fine, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref["coarse"]["coords_mean"], expect, rtol=1e-5, atol=1e-6)
    # c − mean(x) lies on the ray, between near and far: mean depth of 16 samples inside [0.8, 1.8].
    depth = ((torch.tensor(c) - fine - o) * d).sum(-1)
    torch.testing.assert_close(torch.tensor(c) - fine, o + depth[..., None] * d, rtol=1e-5, atol=1e-5)
    assert (depth > 0.8).all() and (depth < 1.8).all()


@pytest.mark.parametrize("kind", ["release", "weighted", "pointwise"])
def test_module_coord_term_by_hand(kind):
    """x̂ = x + δ everywhere (δ constant): release gives mean(δ²) exactly; weighted gives opacity² |δ|²."""

    class Offset(FeatureNeRFNet):
        def query(self, cond, xyz, viewdirs=None):
            out = super().query(cond, xyz, viewdirs)
            out["coords"] = xyz + torch.tensor([0.1, -0.2, 0.3])
            return out

    model = FeatureNeRF(feature_dim=3, coord_loss=kind, **TINY)
    model.net = Offset(feature_dim=3, **TINY)
    with torch.no_grad():
        model.net.mlp.lin_out.bias[3] = 2.0
    batch, rays = camera_batch(feature_dim=3)
    terms = model.compute_losses(batch, rays)
    if kind in ("release", "pointwise"):  # a constant δ: mean of squares = square of the mean
        for p in ("coarse", "fine"):
            assert terms[f"coord_{p}"].item() == pytest.approx((0.01 + 0.04 + 0.09) / 3, rel=1e-5)
    else:
        cond = model.net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
        model.net.eval()
        alpha = model.net.render_rays(
            cond, rays["origins"], rays["dirs"], ("opacity",), perturb=True, generator=model._generator()
        )
        for p in ("coarse", "fine"):
            want = (alpha[p]["opacity"].pow(2) * 0.14).mean().item()
            assert terms[f"coord_{p}"].item() == pytest.approx(want, rel=1e-5)


def test_coord_loss_option_is_checked_and_defaults_to_release():
    assert FeatureNeRF(feature_dim=3, coord_loss="pointwise", **TINY).hparams.coord_loss == "pointwise"
    assert FeatureNeRF(feature_dim=3, **TINY).hparams.coord_loss == "release"
    with pytest.raises(ValueError, match="model.coord_loss"):
        FeatureNeRF(feature_dim=3, coord_loss="median", **TINY)


def test_pointwise_penalises_each_sample_where_release_sees_only_the_ray_mean():
    """x̂ = c (a constant) everywhere: the release's term is |c − mean_i x_i|² per axis, which a constant
    near the ray's middle makes small; the pointwise term is the mean over samples of (c − x_i)², which is
    larger by the samples' variance along the ray: by hand, mean(x_i²) − mean(x_i)² per axis, from the
    coarse samples' positions. Fast and reference paths agree."""
    torch.manual_seed(0)
    net = FeatureNeRFNet(feature_dim=3, near=0.8, far=1.8, **TINY)
    c = torch.tensor([0.1, -0.2, 0.3])
    _constant_coords(net, c.tolist())
    batch, rays = camera_batch(feature_dim=3)
    cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    o, d = rays["origins"], rays["dirs"]
    out = net.render_rays(cond, o, d, ("coords_mean", "coords_sq"))["coarse"]
    z = 0.8 + (torch.arange(8) + 0.5) / 8 * 1.0  # deterministic strata midpoints
    x = o[..., None, :] + z[:, None] * d[..., None, :]  # (B, R, 8, 3)
    by_hand = (c - x).pow(2).mean(-2)
    torch.testing.assert_close(out["coords_sq"], by_hand, rtol=1e-5, atol=1e-6)
    gap = out["coords_sq"] - out["coords_mean"].pow(2)  # = the samples' variance along the ray, per axis
    torch.testing.assert_close(gap, x.var(-2, unbiased=False), rtol=1e-4, atol=1e-6)
    net.fast_field = False
    ref = net.render_rays(cond, o, d, ("coords_sq",))
    torch.testing.assert_close(ref["coarse"]["coords_sq"], out["coords_sq"], rtol=1e-5, atol=1e-6)
    assert ref["fine"]["coords_sq"].shape == out["coords_sq"].shape
