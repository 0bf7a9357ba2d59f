"""Exactness of the fast paths: fine-pass reuse and the fast field equal pixelNeRF's way, values and gradients.

Everything runs in float64 so "equal" means equal to rounding (1e-9 relative), not "close".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featurenerf.geometry.cameras import uv_to_grid
from featurenerf.nerf.model import FeatureNeRFNet, bilinear_taps

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4)
OUTPUTS = ("rgb", "depth", "opacity", "features", "coords", "hidden")


def _net(feature_dim: int = 4, seed: int = 0) -> FeatureNeRFNet:
    torch.manual_seed(seed)
    net = FeatureNeRFNet(feature_dim=feature_dim, **TINY).double()
    with torch.no_grad():  # non-trivial weights everywhere (fc1 and biases start at zero)
        for p in net.mlp.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        net.mlp.lin_out.bias[3] = 1.0  # some density on every ray
    return net


def _scene(b: int = 2, views: int = 2, rays: int = 12, size: int = 16):
    """Cameras on -z looking along +z (two source views, shifted sideways) and rays towards the origin."""
    g = torch.Generator().manual_seed(0)
    poses = torch.eye(4, dtype=torch.float64).repeat(b, views, 1, 1)
    poses[..., 2, 3] = -1.3
    poses[:, 1:, 0, 3] = 0.3
    images = torch.rand(b, views, 3, size, size, generator=g, dtype=torch.float64)
    focal = torch.full((b, 2), float(size), dtype=torch.float64)
    c = torch.full((b, 2), size / 2, dtype=torch.float64)
    origins = torch.zeros(b, rays, 3, dtype=torch.float64)
    origins[..., 2] = -1.3
    dirs = torch.randn(b, rays, 3, generator=g, dtype=torch.float64) * 0.2
    dirs[..., 2] = 1.0
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return (images, poses, focal, c), origins, dirs


def _render_with_grads(net, scene, origins, dirs, fast: bool, reuse: bool):
    net.fast_field, net.reuse_coarse = fast, reuse
    net.zero_grad()
    cond = net.encode(*scene)
    out = net.render_rays(
        cond, origins, dirs, OUTPUTS, perturb=True, generator=torch.Generator().manual_seed(7)
    )
    # A loss that touches every output of both passes.
    loss = sum((v * torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape)).sum()
               for p in out.values() for v in p.values())  # fmt: skip
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("fast", [False, True], ids=["reference-field", "fast-field"])
def test_fine_reuse_equals_naive_96_sample_pass(fast):
    """Evaluating only the 32 new fine samples and merging by depth == re-evaluating all sorted samples."""
    net = _net()
    scene, origins, dirs = _scene()
    naive, g_naive = _render_with_grads(net, scene, origins, dirs, fast, reuse=False)
    reuse, g_reuse = _render_with_grads(net, scene, origins, dirs, fast, reuse=True)
    for p in ("coarse", "fine"):
        for name in OUTPUTS:
            torch.testing.assert_close(reuse[p][name], naive[p][name], rtol=1e-9, atol=1e-10)
    assert g_reuse.keys() == g_naive.keys() and len(g_naive) > 40  # encoder and MLP weights
    for name, g in g_naive.items():
        torch.testing.assert_close(g_reuse[name], g, rtol=1e-8, atol=1e-10, msg=name)


def test_fast_field_equals_pixelnerf_way_values_and_gradients():
    """Projected injection maps + one gather + per-ray feature head == grid_sample + per-point layers."""
    net = _net()
    scene, origins, dirs = _scene()
    ref, g_ref = _render_with_grads(net, scene, origins, dirs, fast=False, reuse=False)
    fast, g_fast = _render_with_grads(net, scene, origins, dirs, fast=True, reuse=True)
    for p in ("coarse", "fine"):
        for name in OUTPUTS:
            torch.testing.assert_close(fast[p][name], ref[p][name], rtol=1e-9, atol=1e-10)
    for name, g in g_ref.items():
        torch.testing.assert_close(g_fast[name], g, rtol=1e-8, atol=1e-10, msg=name)


def test_fast_query_and_point_features_match_reference():
    net = _net(feature_dim=3)
    scene, _, _ = _scene()
    cond = net.encode(*scene)
    xyz = torch.rand(2, 300, 3, dtype=torch.float64) - 0.5  # 300 >= 8*8 map cells: the fast way is used
    net.fast_field = True
    fast, fast_pf = net.query(cond, xyz), net.point_features(cond, xyz)
    net.fast_field = False
    ref, ref_pf = net.query(cond, xyz), net.point_features(cond, xyz)
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(fast_pf, ref_pf, rtol=1e-9, atol=1e-10)
    # A prepared conditioning keeps working per object.
    net.fast_field = True
    one = net.point_features(net.prepare(cond).select(1), xyz[1])
    torch.testing.assert_close(one, ref_pf[1], rtol=1e-9, atol=1e-10)


def test_no_grad_blocks_and_render_image_match_reference():
    net = _net()
    net.chunk = 5  # point blocks of 80 under no_grad: several blocks per call
    scene, _, _ = _scene(b=1)
    with torch.no_grad():
        cond = net.encode(*scene)
        pose = scene[1][:, 0]
        args = (cond, pose, scene[2], scene[3], 6, 6, OUTPUTS[:5] + ("hidden",))
        net.fast_field = True
        fast = net.render_image(*args, skip_empty=False)
        net.fast_field = False
        ref = net.render_image(*args, skip_empty=False)
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("map_size", [(4, 4), (3, 5)])
def test_bilinear_taps_equal_grid_sample_with_border_padding(map_size):
    g = torch.Generator().manual_seed(0)
    h, w = map_size
    hgt, wid = 12, 20
    fmap = torch.randn(1, 6, h, w, generator=g, dtype=torch.float64)
    # Inside, on pixel centres, on the border and far outside (border padding clamps).
    uv = torch.rand(50, 2, generator=g, dtype=torch.float64) * torch.tensor([wid, hgt]) * 1.6 - 4
    uv = torch.cat([uv, torch.tensor([[0.5, 0.5], [wid - 0.5, hgt - 0.5], [wid / 2, hgt / 2], [-1e6, 1e6]])])
    expected = F.grid_sample(
        fmap,
        uv_to_grid(uv, wid, hgt)[None, :, None],
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[0, :, :, 0].T
    rows, weights = bilinear_taps(uv, (hgt, wid), (h, w), torch.zeros(len(uv), dtype=torch.long))
    table = fmap[0].permute(1, 2, 0).reshape(h * w, 6)
    got = F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(uv), dtype=torch.float64))


def test_bilinear_taps_hand_computed():
    # A 2x2 map over a 4x4 image: cell centres at pixel coordinates 1 and 3. u=2, v=1 is halfway between
    # the centres of cells (0,0) and (0,1): two taps of weight 0.5 (the others zero).
    rows, weights = bilinear_taps(torch.tensor([[2.0, 1.0]]), (4, 4), (2, 2), torch.tensor([10]))
    assert rows.tolist() == [[10, 11, 12, 13]]
    assert weights.tolist() == [[0.5, 0.5, 0.0, 0.0]]
