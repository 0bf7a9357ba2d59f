"""Property tests: projection inverts unprojection; samples are sorted and in bounds; weights are a
sub-probability distribution."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featurenerf.geometry.cameras import (
    camera_to_world_points,
    project_points,
    rays_from_pixels,
    world_to_camera_points,
)
from featurenerf.rendering.compositing import compositing_weights
from featurenerf.rendering.sampling import (
    Sampling,
    depth_guided_samples,
    importance_samples,
    stratified_samples,
)

PROPERTY = settings(max_examples=50, deadline=None)

coord = st.floats(-5.0, 5.0, allow_nan=False)
quaternion = st.tuples(*[st.floats(-1.0, 1.0, allow_nan=False)] * 4).filter(
    lambda q: sum(x * x for x in q) > 1e-2
)


def rotation_from_quaternion(q: tuple[float, float, float, float]) -> torch.Tensor:
    """A rotation matrix (float64) from any non-zero quaternion (w, x, y, z)."""
    w, x, y, z = (torch.tensor(q, dtype=torch.float64) / torch.tensor(q, dtype=torch.float64).norm()).tolist()
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )


def make_c2w(q, t) -> torch.Tensor:
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = rotation_from_quaternion(q)
    c2w[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return c2w


@PROPERTY
@given(
    q=quaternion,
    t=st.tuples(coord, coord, coord),
    u=st.floats(0.0, 128.0),
    v=st.floats(0.0, 128.0),
    depth=st.floats(0.1, 10.0),
    f=st.floats(50.0, 300.0),
)
def test_project_unproject_roundtrip(q, t, u, v, depth, f):
    c2w = make_c2w(q, t)
    focal = torch.tensor([f, 1.1 * f], dtype=torch.float64)
    c = torch.tensor([64.0, 60.0], dtype=torch.float64)
    # Unproject by hand: camera point ((u - cx) / fx * depth, (v - cy) / fy * depth, depth).
    p_cam = torch.tensor([(u - 64.0) / f * depth, (v - 60.0) / (1.1 * f) * depth, depth], dtype=torch.float64)
    p_world = camera_to_world_points(p_cam, c2w)
    uv, z = project_points(p_world, c2w, focal, c)
    torch.testing.assert_close(uv, torch.tensor([u, v], dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(z, torch.tensor(depth, dtype=torch.float64))
    torch.testing.assert_close(world_to_camera_points(p_world, c2w), p_cam)
    # The same point lies on the pixel's ray at distance |p_cam| (unit directions: z is distance).
    o, d = rays_from_pixels(torch.tensor([u, v], dtype=torch.float64), c2w, focal, c)
    torch.testing.assert_close(o + d * p_cam.norm(), p_world)


near_far = st.tuples(st.floats(0.0, 5.0), st.floats(0.01, 5.0)).map(lambda a: (a[0], a[0] + a[1]))


def assert_in_bounds(z: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> None:
    assert (z >= near[:, None]).all() and (z <= far[:, None]).all(), (z, near, far)


def assert_sorted(z: torch.Tensor) -> None:
    assert (z[:, 1:] >= z[:, :-1]).all(), z


@PROPERTY
@given(bounds=near_far, n=st.integers(1, 64), seed=st.integers(0, 2**31 - 1), perturb=st.booleans())
def test_stratified_sorted_and_in_bounds(bounds, n, seed, perturb):
    near, far = torch.tensor([bounds[0]] * 3), torch.tensor([bounds[1]] * 3)
    z = stratified_samples(near, far, n, Sampling(perturb, torch.Generator().manual_seed(seed)))
    assert z.shape == (3, n)
    assert_sorted(z)
    assert_in_bounds(z, near, far)


@PROPERTY
@given(
    bounds=near_far,
    weights=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=32),
    n=st.integers(1, 32),
    seed=st.integers(0, 2**31 - 1),
)
def test_importance_and_merged_sorted_and_in_bounds(bounds, weights, n, seed):
    drawn = Sampling(perturb=True, generator=torch.Generator().manual_seed(seed))
    near, far = torch.tensor([bounds[0]] * 2), torch.tensor([bounds[1]] * 2)
    w = torch.tensor([weights, weights[::-1]])
    # Deterministic inverse-CDF samples are monotone in u, hence sorted.
    z_det = importance_samples(w, near, far, n)
    assert_sorted(z_det)
    assert_in_bounds(z_det, near, far)
    # The full fine set: coarse strata + importance + depth-guided, sorted as the renderer does.
    coarse = stratified_samples(near, far, w.shape[1], drawn)
    fine = importance_samples(w, near, far, n, drawn)
    around = depth_guided_samples((near + far) / 2 + 0.3 * (far - near), near, far, 4, std=0.5, how=drawn)
    assert_in_bounds(fine, near, far)
    assert_in_bounds(around, near, far)
    merged, _ = torch.sort(torch.cat([coarse, fine, around], dim=-1), dim=-1)
    assert merged.shape == (2, w.shape[1] + n + 4)
    assert_sorted(merged)
    assert_in_bounds(merged, near, far)


@PROPERTY
@given(
    sigma=st.lists(st.floats(0.0, 1e4), min_size=1, max_size=32),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=32, max_size=32),
    extra=st.floats(-1.0, 3.0),
)
def test_weights_nonnegative_and_sum_at_most_one(sigma, gaps, extra):
    n = len(sigma)
    z = 0.5 + torch.cumsum(torch.tensor(gaps[:n]), 0)[None]  # sorted, repeated depths allowed
    far = z[:, -1] + extra  # also a far before the last sample
    w = compositing_weights(z, torch.tensor([sigma]), far)
    assert torch.isfinite(w).all()
    assert (w >= 0).all()
    assert (w.sum(-1) <= 1.0 + 1e-6).all()
