"""Occupancy grids: built from a density, looked up per object, and exact against the exhaustive render.

The analytic scene: two boxes of constant density with an empty gap between them inside a unit box
bound, and a smooth colour field; cameras on a circle of radius 1.3 around the origin looking at it,
near/far 0.8/1.8 (the SRN setting). The test renderer is pixelNeRF's two passes (stratified + importance)
from ``featurenerf.rendering``, with the grid and early termination as options.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from featurenerf.rendering.bounds import Box, Sphere
from featurenerf.rendering.compositing import composite, compositing_weights
from featurenerf.rendering.occupancy import OccupancyGrid, march
from featurenerf.rendering.sampling import importance_samples, stratified_samples

BOXES = (((-0.45, -0.3, -0.3), (-0.15, 0.3, 0.3)), ((0.15, -0.2, -0.2), (0.4, 0.2, 0.2)))
BOUND = Box((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
NEAR, FAR = 0.8, 1.8


def density(xyz, boxes=BOXES, value: float = 40.0):
    """(..., 3) → (...): ``value`` inside any of the boxes, 0 elsewhere."""
    inside = torch.zeros(xyz.shape[:-1], dtype=torch.bool)
    for lo, hi in boxes:
        inside |= Box(lo, hi).contains(xyz)
    return inside.to(xyz.dtype) * value


def colour(xyz):
    return torch.sigmoid(torch.stack([3 * xyz[..., 0], 2 * xyz[..., 1] + 1, -4 * xyz[..., 2]], dim=-1))


def gap_distance(xyz):
    """Distance (L∞) from each point to the nearest box: > 0 outside both."""
    d = []
    for lo, hi in BOXES:
        lo, hi = xyz.new_tensor(lo), xyz.new_tensor(hi)
        d.append(torch.maximum(lo - xyz, xyz - hi).clamp_min(0).amax(-1))
    return torch.minimum(*d)


def orbit_rays(angle: float, size: int = 12):
    """Rays (size², 3) of a pinhole camera 1.3 from the origin at ``angle`` around +y, looking at it."""
    eye = torch.tensor([1.3 * math.sin(angle), 0.2, -1.3 * math.cos(angle)], dtype=torch.float64)
    fwd = -eye / eye.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), fwd)
    right = right / right.norm()
    up = torch.linalg.cross(fwd, right)
    s = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 0.9 - 0.45
    v, u = torch.meshgrid(s, s, indexing="ij")
    dirs = fwd + u.reshape(-1, 1) * right + v.reshape(-1, 1) * up
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return eye.expand_as(dirs), dirs


def render(o, d, grid=None, stop=0.0, n_coarse=64, n_fine=32, seen=None):
    """Two-pass render; returns rgb (R, 3) and the number of distinct samples evaluated (a fine-pass
    sample that is a coarse sample counts once, as in the model, which reuses coarse values)."""
    near, far = o.new_full((o.shape[0],), NEAR), o.new_full((o.shape[0],), FAR)
    count = 0

    def field(z, mask, new=None):
        nonlocal count
        xyz = o[:, None] + z[..., None] * d[:, None]
        count += int(mask.sum() if new is None else (mask & new).sum())
        if seen is not None:
            seen.append(xyz[mask])
        return density(xyz) * mask

    def alive(z):
        return None if grid is None else grid.contains(o[:, None] + z[..., None] * d[:, None])

    z_c = stratified_samples(near, far, n_coarse)
    sigma_c, _ = march(z_c, far, alive(z_c), lambda m: field(z_c, m), segments=4, stop=stop)
    w_c = compositing_weights(z_c, sigma_c, far)
    z_f, order = torch.cat([z_c, importance_samples(w_c, near, far, n_fine)], -1).sort(-1)
    new = order >= n_coarse
    sigma_f, _ = march(z_f, far, alive(z_f), lambda m: field(z_f, m, new), segments=4, stop=stop)
    w_f = compositing_weights(z_f, sigma_f, far)
    rgb = composite(w_f, colour(o[:, None] + z_f[..., None] * d[:, None])) + (1 - w_f.sum(-1, keepdim=True))
    return rgb, count


def build(**kw):
    return OccupancyGrid.build(lambda x: density(x), BOUND, **{"resolution": 32, **kw})


def test_grid_marks_the_boxes_and_leaves_the_gap_empty():
    grid = build(dilation=0)
    assert grid.occupied.shape == (1, 32, 32, 32)
    assert grid.cost.points == 32**3 and grid.cost.seconds >= 0
    pts = torch.tensor([[-0.3, 0.0, 0.0], [0.3, 0.1, 0.1], [0.0, 0.0, 0.0], [0.3, 0.45, 0.0], [0.9, 0, 0]])
    assert grid.contains(pts[None])[0].tolist() == [True, True, False, False, False]
    # The two boxes hold 0.3*0.6*0.6 + 0.25*0.4*0.4 = 0.148 of the unit box; cells follow to within an edge.
    assert abs(grid.occupied_fraction - 0.148) < 0.03
    dilated = build(dilation=1)
    assert dilated.occupied.sum() > grid.occupied.sum()
    assert (dilated.occupied | ~grid.occupied).all()  # dilation only adds cells


def test_sphere_bound_and_subsamples():
    grid = OccupancyGrid.build(lambda x: density(x), Sphere(0.5), resolution=16, subsamples=2, dilation=0)
    assert grid.cost.points < (32**3) * 0.6  # only lattice points inside the sphere are evaluated
    assert grid.contains(torch.tensor([[[-0.3, 0.0, 0.0]]]))[0, 0]
    assert not grid.contains(torch.tensor([[[-0.3, 0.3, 0.3]]]))[0, 0]  # in a box but outside the sphere


def test_a_thin_slab_between_lattice_points_is_kept_by_subsamples():
    slab = (((-0.5, -0.5, 0.02), (0.5, 0.5, 0.03)),)  # thinner than a cell, misses the cell centres
    coarse = OccupancyGrid.build(lambda x: density(x, slab), BOUND, resolution=8, dilation=0)
    fine = OccupancyGrid.build(lambda x: density(x, slab), BOUND, resolution=8, dilation=0, subsamples=8)
    p = torch.tensor([[[0.0, 0.0, 0.025]]])
    assert not coarse.contains(p).item() and fine.contains(p).item()


def test_no_sample_lands_in_the_empty_gap_and_the_image_is_unchanged():
    o, d = orbit_rays(0.4)
    exhaustive, n_all = render(o, d)
    seen: list[torch.Tensor] = []
    grid = build(dilation=1)
    fast, n_grid = render(o, d, grid=grid, stop=1e-4, seen=seen)
    cell = 1.0 / 32
    pts = torch.cat(seen)
    # Every evaluated sample is within the dilated cells around a box: never deep in the gap.
    assert (gap_distance(pts) <= 2 * cell + 1e-9).all()
    assert not ((pts[:, 0] > -0.15 + 2.5 * cell) & (pts[:, 0] < 0.15 - 2.5 * cell)).any()
    assert torch.allclose(fast, exhaustive, atol=2e-4)  # only early termination (stop=1e-4) differs
    assert n_grid < 0.3 * n_all
    # Without early termination the grid alone is exact: densities outside the boxes are exactly 0.
    same, _ = render(o, d, grid=grid)
    assert torch.equal(same, exhaustive)


def test_orbit_reuses_one_grid_with_results_identical_to_rebuilding():
    grid = build()
    for angle in (0.0, 1.3, 2.9):
        o, d = orbit_rays(angle, size=8)
        reused, _ = render(o, d, grid=grid, stop=1e-4)
        rebuilt, _ = render(o, d, grid=build(), stop=1e-4)
        assert torch.equal(reused, rebuilt)
        assert torch.allclose(reused, render(o, d)[0], atol=2e-4)


def test_batched_grid_looks_up_each_object_in_its_own_grid():
    def two(x):  # object 0 has only the first box, object 1 only the second
        return torch.stack([density(x[0], BOXES[:1]), density(x[1], BOXES[1:])])

    grid = OccupancyGrid.build(two, BOUND, batch_size=2, resolution=16, dilation=0)
    pts = torch.tensor([[-0.3, 0.0, 0.0], [0.3, 0.0, 0.0]])
    per_object = pts[None, None].expand(2, 3, 2, 3)  # (B, R, N, 3)
    assert grid.contains(per_object)[:, 0, :].tolist() == [[True, False], [False, True]]
    flat = per_object.reshape(6, 2, 3)  # rays flattened over objects, object-major
    assert grid.contains(flat).tolist() == [[True, False]] * 3 + [[False, True]] * 3
    with pytest.raises(ValueError, match="multiple"):
        grid.contains(torch.zeros(3, 2, 3))


def test_march_stops_opaque_rays_and_matches_full_evaluation():
    z = torch.linspace(0.8, 1.8, 16).expand(2, 16).contiguous()
    far = torch.full((2,), 1.8)
    sig = torch.tensor([[0.0] * 4 + [1e3] * 12, [0.0] * 16])
    calls = []
    sigma, evaluated = march(z, far, None, lambda m: (calls.append(m.clone()), sig * m)[1], segments=4)
    assert evaluated[1].all()  # the empty ray is marched to the end
    assert evaluated[0, :8].all() and not evaluated[0, 8:].any()  # stopped after the opaque segment
    w_full = compositing_weights(z, sig, far)
    assert torch.allclose(compositing_weights(z, sigma, far), w_full, atol=1e-4)
    assert len(calls) == 4


def test_bad_settings_are_one_clear_error():
    with pytest.raises(ValueError, match="resolution"):
        build(resolution=0)
    with pytest.raises(TypeError, match="Sphere or a Box"):
        OccupancyGrid.build(lambda x: density(x), object(), resolution=4)


def test_samples_per_ray_report(capsys):
    """Samples per ray with and without the grid on the analytic scene (printed for the report)."""
    o, d = orbit_rays(0.7, size=16)
    _, n_all = render(o, d)
    _, n_grid = render(o, d, grid=build(resolution=64), stop=1e-4)
    rays = o.shape[0]
    print(f"samples/ray: exhaustive {n_all / rays:.1f}, grid {n_grid / rays:.1f}")
    assert n_all / rays == 96
    assert n_grid / rays < 30


def test_grid_is_a_scene_bound_for_the_model_renderer():
    """The hook the renderer uses: a conditioning's grid in place of ``scene_bound`` (objects flattened
    object-major)."""
    from batches import camera_batch

    from featurenerf.nerf.model import FeatureNeRFNet

    torch.manual_seed(0)
    tiny = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4)
    net = FeatureNeRFNet(feature_dim=2, **tiny).eval()
    batch, _ = camera_batch(b=2, size=16)
    with torch.no_grad():
        cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
        pose, focal, c = batch["src_poses"][:, 0], batch["focal"], batch["c"]

        def image(bound):
            if isinstance(bound, OccupancyGrid):
                grid_cond = dataclasses.replace(cond, occupancy=bound)
                return net.render_image(grid_cond, pose, focal, c, 8, 8, outputs=("rgb", "opacity"))
            net.scene_bound = bound
            return net.render_image(cond, pose, focal, c, 8, 8, outputs=("rgb", "opacity"))

        def sigma(x):
            return net.query(cond, x)["sigma"]

        box = Box((-0.5,) * 3, (0.5,) * 3)
        plain = image(box)
        full = OccupancyGrid.build(sigma, box, batch_size=2, resolution=8, threshold=-1.0)
        assert full.occupied.all()
        with_grid = image(full)
        assert torch.allclose(with_grid["rgb"], plain["rgb"], atol=1e-6)
        # Object 1's grid empty: its image is pure background, object 0's is unchanged.
        half = OccupancyGrid(full.occupied.clone(), box, full.lo, full.hi, full.cost)
        half.occupied[1] = False
        out = image(half)
        assert torch.equal(out["opacity"][1], torch.zeros_like(out["opacity"][1]))
        assert torch.allclose(out["rgb"][0], plain["rgb"][0], atol=1e-6)
        assert plain["opacity"][1].min() > 0
