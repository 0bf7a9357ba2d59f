"""Evaluation renders sample like training: jittered strata, random inverse-CDF positions and distinct
depth-guided samples, from a fixed seed (reproducible, independent of chunking)."""

from __future__ import annotations

import torch

from featurenerf.nerf.model import FeatureNeRFNet
from featurenerf.nerf.renderer import SampleNoise, eval_noise
from featurenerf.rendering.sampling import (
    Sampling,
    depth_guided_samples,
    importance_samples,
    stratified_samples,
)

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4, near=0.8, far=1.8)


def test_pre_drawn_noise_is_used_as_given():
    near, far = torch.tensor([1.0]), torch.tensor([3.0])
    jitter = torch.tensor([[0.0, 0.5, 0.25, 1.0]])
    eps = torch.tensor([[-1.0, 0.0, 2.0, 200.0]])
    u = torch.tensor([[0.1, 0.75]])
    # Each sampler reads its own field; perturb is off, so nothing is drawn.
    given = Sampling(noise=SampleNoise(stratified=jitter, importance=u, depth=eps))
    # Strata of width 0.5 from 1: jitter 0, 0.5, 0.25, 1 → 1.0, 1.75, 2.125, 3.0.
    z = stratified_samples(near, far, 4, given)
    torch.testing.assert_close(z, torch.tensor([[1.0, 1.75, 2.125, 3.0]]))
    # Depth 1.5, std 0.01, offsets -1, 0, 2, 200 (1.5 + 2 = 3.5 clamps to far = 3).
    z = depth_guided_samples(torch.tensor([1.5]), near, far, 4, std=0.01, how=given)
    torch.testing.assert_close(z, torch.tensor([[1.49, 1.5, 1.52, 3.0]]))
    # Uniform weights over 2 bins of [1, 3]: the CDF is linear, so u maps to 1 + 2 u.
    z = importance_samples(torch.ones(1, 2), near, far, 2, given)
    torch.testing.assert_close(z, torch.tensor([[1.2, 2.5]]), rtol=1e-4, atol=1e-4)


def _scene(rays: int = 5):
    torch.manual_seed(0)
    net = FeatureNeRFNet(feature_dim=2, **TINY).double().eval()
    with torch.no_grad():  # dense enough that the coarse depth lies inside [near, far] (no clamping)
        net.mlp.lin_out.bias[3] = 5.0
    poses = torch.eye(4, dtype=torch.float64)[None, None].clone()
    poses[..., 2, 3] = -1.3
    img = torch.rand(1, 1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    focal, c = torch.full((1, 2), 16.0, dtype=torch.float64), torch.full((1, 2), 8.0, dtype=torch.float64)
    with torch.no_grad():
        cond = net.encode(img, poses, focal, c)
    g = torch.Generator().manual_seed(1)
    origins = torch.zeros(1, rays, 3, dtype=torch.float64)
    origins[..., 2] = -1.3
    dirs = torch.randn(1, rays, 3, generator=g, dtype=torch.float64) * 0.1
    dirs[..., 2] = 1.0
    return net, cond, poses[:, 0], focal, c, origins, dirs / dirs.norm(dim=-1, keepdim=True)


def test_noise_render_equals_a_training_render_with_the_same_seed():
    """Same numbers, drawn in the same order: evaluation uses exactly the training sample distribution."""
    net, cond, *_, origins, dirs = _scene()
    with torch.no_grad():
        train = net.render_rays(cond, origins, dirs, perturb=True, generator=torch.Generator().manual_seed(5))
        noise = SampleNoise.draw((1, 5), (8, 4, 4), torch.Generator().manual_seed(5), torch.float64)
        evaluated = net.render_rays(cond, origins, dirs, noise=noise)
        plain = net.render_rays(cond, origins, dirs)
    for p in ("coarse", "fine"):
        for k in train[p]:
            torch.testing.assert_close(evaluated[p][k], train[p][k], rtol=0, atol=0)
    assert not torch.allclose(plain["fine"]["depth"], train["fine"]["depth"])


def test_render_image_draws_distinct_depth_guided_samples_from_a_seed():
    net, cond, pose, focal, c, *_ = _scene()
    seen: list[torch.Tensor] = []
    orig = net._camera_inputs

    def counting(cond_, cam, *args):
        seen.append(cam.shape[0])
        return orig(cond_, cam, *args)

    net._camera_inputs = counting
    with torch.no_grad():
        deterministic = net.render_image(cond, pose, focal, c, 3, 3, skip_empty=True, jitter_seed=None)
        n_det = sum(seen)
        seen.clear()
        a = net.render_image(cond, pose, focal, c, 3, 3, skip_empty=True, jitter_seed=0)
        n_jit = sum(seen)
        b = net.render_image(cond, pose, focal, c, 3, 3, skip_empty=True, jitter_seed=0, chunk=2)
        other = net.render_image(cond, pose, focal, c, 3, 3, skip_empty=True, jitter_seed=1)
    # 9 rays, no scene bound: midpoints evaluate 8 coarse + 4 importance + 1 of the 4 coinciding
    # depth-guided samples (the other 3 have zero-length intervals); jittered ones are all distinct.
    assert n_det == 9 * (8 + 4 + 1)
    assert n_jit == 9 * (8 + 4 + 4)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-12, atol=1e-12)  # seeded, chunk-independent
    assert not torch.allclose(other["depth"], a["depth"])
    assert not torch.allclose(deterministic["depth"], a["depth"])
    # The image's noise is eval_noise for its rays, in pixel order.
    noise = eval_noise(net, (1, 9), 0, pose)
    assert noise.stratified.shape == (1, 9, 8) and noise.depth.shape == (1, 9, 4)
    assert len({round(v, 12) for v in noise.depth[0, 0].tolist()}) == 4
