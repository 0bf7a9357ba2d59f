"""Render-time empty-space skipping: what is evaluated, what is skipped, and what it costs in accuracy.

Geometry used throughout: the camera sits at (0, 0, -1.3) looking along +z; near/far 0.8/1.8 and 8
coarse samples put the coarse samples of the axial ray at world z = -0.4375, -0.3125, ..., +0.4375
(stratum midpoints 0.8 + (i + 0.5)/8 minus 1.3).
"""

from __future__ import annotations

import pytest
import torch

from featurenerf.nerf.model import FeatureNeRFNet
from featurenerf.rendering.bounds import Box, Sphere

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4, near=0.8, far=1.8)


class Counter:
    """Points per field evaluation (wraps the fast path's input builder on the instance)."""

    def __init__(self, net: FeatureNeRFNet) -> None:
        self.calls: list[int] = []
        orig = net._camera_inputs

        def wrapped(cond, cam, *args):
            self.calls.append(cam.shape[0])
            return orig(cond, cam, *args)

        net._camera_inputs = wrapped

    @property
    def total(self) -> int:
        return sum(self.calls)


def _setup(density_bias: float = 1.0, rays: int = 6, axial: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    net = FeatureNeRFNet(feature_dim=2, **TINY).double().eval()
    with torch.no_grad():
        net.mlp.lin_out.bias[3] = density_bias
    poses = torch.eye(4, dtype=torch.float64)[None, None].clone()
    poses[..., 2, 3] = -1.3
    img = torch.rand(1, 1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    focal = torch.full((1, 2), 16.0, dtype=torch.float64)
    c = torch.full((1, 2), 8.0, dtype=torch.float64)
    with torch.no_grad():
        cond = net.encode(img, poses, focal, c)
    origins = torch.zeros(1, rays, 3, dtype=torch.float64)
    origins[..., 2] = -1.3
    if axial:
        dirs = torch.zeros(1, rays, 3, dtype=torch.float64)
        dirs[..., 2] = 1.0
    else:
        g = torch.Generator().manual_seed(1)
        dirs = torch.randn(1, rays, 3, generator=g, dtype=torch.float64) * 0.15
        dirs[..., 2] = 1.0
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return net, cond, origins, dirs


def _render(net, cond, origins, dirs, skip: bool):
    with torch.no_grad():
        return net.render_rays(cond, origins, dirs, ("rgb", "depth", "opacity", "features"), skip_empty=skip)


def test_bounds_contain_hand_computed_points():
    pts = torch.tensor(
        [[0.0, 0.0, 0.0], [0.3, 0.4, 0.0], [0.31, 0.4, 0.0], [0.5, -0.5, 0.5], [0.5, 0.0, 0.51]]
    )
    assert Sphere(0.5).contains(pts).tolist() == [True, True, False, False, False]
    assert Box().contains(pts).tolist() == [True, True, True, True, False]
    assert Sphere(0.1, center=(0.3, 0.4, 0.0)).contains(pts).tolist() == [False, True, True, False, False]
    with pytest.raises(ValueError, match="radius"):
        Sphere(0.0)
    with pytest.raises(ValueError, match="lo < hi"):
        Box((0, 0, 0), (1, -1, 1))


def test_skipping_with_an_all_containing_bound_is_exact_and_drops_coincident_samples():
    net, cond, origins, dirs = _setup(axial=False)
    net.scene_radius, net.stop_transmittance = 10.0, 0.0
    full = _render(net, cond, origins, dirs, skip=False)
    counter = Counter(net)
    skipped = _render(net, cond, origins, dirs, skip=True)
    for name in full["fine"]:
        torch.testing.assert_close(skipped["fine"][name], full["fine"][name], rtol=1e-10, atol=1e-12)
    # Deterministic depth-guided samples are 4 copies of one depth: 3 have a zero interval (weight exactly
    # 0) and are not evaluated. Per ray: 8 coarse + 4 importance + 1 depth-guided.
    assert counter.total == origins.shape[1] * (8 + 4 + 1)


def test_samples_outside_the_bound_never_reach_the_mlp():
    net, cond, origins, dirs = _setup()
    net.scene_bound, net.stop_transmittance = Sphere(0.3), 0.0
    counter = Counter(net)
    out = _render(net, cond, origins, dirs, skip=True)
    # Axial coarse samples at |z| = 0.0625 and 0.1875 are inside radius 0.3; 0.3125 and 0.4375 are not.
    assert counter.calls[0] == origins.shape[1] * 4
    assert torch.isfinite(out["fine"]["rgb"]).all()


def test_rays_that_miss_the_bound_are_background_and_cost_nothing():
    net, cond, origins, _ = _setup(density_bias=5.0)
    dirs = torch.tensor([1.0, 0.0, 0.2], dtype=torch.float64)
    dirs = (dirs / dirs.norm()).expand_as(origins)  # passes x = 0.78 .. 1.76 in [near, far]: outside
    net.scene_bound, net.stop_transmittance = Sphere(0.3), 1e-3
    counter = Counter(net)
    out = _render(net, cond, origins, dirs, skip=True)
    assert counter.total == 0
    assert (out["fine"]["opacity"] == 0).all()
    assert (out["fine"]["rgb"] == net.background_value).all()
    assert (out["fine"]["features"] == 0).all()
    # Exhaustive rendering of the same rays does see the (dense) field there.
    assert (_render(net, cond, origins, dirs, skip=False)["fine"]["opacity"] > 0.5).all()


def test_rays_stop_once_transmittance_is_negligible():
    # Density ~50 everywhere: after the first coarse segment (2 samples of length 0.125) the
    # transmittance is ~exp(-12.5) < 1e-3, so segments 2-4 are never evaluated.
    net, cond, origins, dirs = _setup(density_bias=50.0, axial=False)
    net.scene_radius, net.stop_transmittance = 10.0, 1e-3
    full = _render(net, cond, origins, dirs, skip=False)
    counter = Counter(net)
    early = _render(net, cond, origins, dirs, skip=True)
    r = origins.shape[1]
    assert counter.calls[0] == 2 * r  # first coarse segment only
    assert counter.calls[1:4] == [0, 0, 0]  # later segments: every ray already stopped
    # The skipped light is below the threshold: colour changes by at most stop * |value - background|.
    err = (early["fine"]["rgb"] - full["fine"]["rgb"]).abs().max()
    assert err <= 1e-3
    torch.testing.assert_close(early["fine"]["opacity"], full["fine"]["opacity"], rtol=0, atol=1e-3)


def test_training_never_skips():
    net, cond, origins, dirs = _setup(density_bias=50.0)
    net.scene_bound, net.stop_transmittance = Sphere(0.3), 1e-3
    counter = Counter(net)
    net.render_rays(cond, origins, dirs, ("rgb",), perturb=True, generator=torch.Generator().manual_seed(0))
    assert counter.total == origins.shape[1] * (8 + 4 + 4)


def test_render_image_uses_skipping_and_matches_exhaustive_on_a_sparse_field():
    # Default field (small density): with the bound holding every sample, skipping changes nothing.
    net, cond, _, _ = _setup()
    net.scene_radius, net.stop_transmittance = 10.0, 1e-4
    pose = torch.eye(4, dtype=torch.float64)[None].clone()
    pose[:, 2, 3] = -1.3
    focal, c = torch.full((1, 2), 8.0, dtype=torch.float64), torch.full((1, 2), 4.0, dtype=torch.float64)
    with torch.no_grad():
        a = net.render_image(cond, pose, focal, c, 8, 8, skip_empty=True)
        b = net.render_image(cond, pose, focal, c, 8, 8, skip_empty=False)
    torch.testing.assert_close(a["rgb"], b["rgb"], rtol=0, atol=1e-4)
