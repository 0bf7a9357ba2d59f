"""The occupancy grid in the model's renders: built once per conditioning, used by every inference render
(images, task pixels, orbits, the render command), never by training.

The known scene: a tiny real net whose density is replaced by an analytic one, a ball of radius
:data:`BALL_R` around :data:`BALL_C` with density :data:`BALL_SIGMA` and zero elsewhere (colour and
features stay the net's). The source camera of ``camera_batch`` has identity rotation, so the fast field's
position input (its first three columns) is the world point, which the override reads.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from batches import camera_batch

from featurenerf.nerf.model import FeatureNeRFNet
from featurenerf.rendering.bounds import Sphere
from featurenerf.rendering.occupancy import OccupancyGrid

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=16, n_fine=4, n_fine_depth=4)
BALL_C = (0.15, 0.0, 0.05)
BALL_R = 0.25
BALL_SIGMA = 30.0


def ball_density(xyz: torch.Tensor) -> torch.Tensor:
    """(..., 3) → (...): BALL_SIGMA inside the ball, 0 elsewhere."""
    inside = (xyz - xyz.new_tensor(BALL_C)).norm(dim=-1) <= BALL_R
    return inside.to(xyz.dtype) * BALL_SIGMA


class BallScene:
    """Makes ``net`` a ball of density (fast field: ``net.field``; reference way: ``net.query``) and
    records every world point the renderer asks the density of."""

    def __init__(self, net: FeatureNeRFNet) -> None:
        self.points: list[torch.Tensor] = []
        field, query = net.field, net.query

        def ball_field(cond, inputs, heads="full", keep=()):
            out = field(cond, inputs, heads, keep)
            if "sigma" in out:
                xyz = inputs.x[:, :3]  # one source view with identity rotation: the world point
                self.points.append(xyz.detach())
                out["sigma"] = ball_density(xyz)
            return out

        def ball_query(cond, xyz, viewdirs=None):
            out = query(cond, xyz, viewdirs)
            self.points.append(xyz.reshape(-1, 3).detach())
            return {**out, "sigma": ball_density(xyz)}

        net.field, net.query = ball_field, ball_query

    def seen(self) -> torch.Tensor:
        out = torch.cat(self.points) if self.points else torch.zeros(0, 3)
        self.points.clear()
        return out


def _scene(fast: bool = True, b: int = 1, dtype: torch.dtype = torch.float64, **kw):
    torch.manual_seed(0)
    net = FeatureNeRFNet(feature_dim=3, scene_radius=0.8, **{**TINY, **kw}).to(dtype).eval()
    net.fast_field = fast
    batch, _ = camera_batch(b=b, size=16)
    batch = {k: v.to(dtype) for k, v in batch.items()}
    scene = BallScene(net)
    with torch.no_grad():
        cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    # Target camera: 1.3 from the origin, off the source axis, looking at the origin.
    from featurenerf.orbit import spherical_camera

    pose = spherical_camera(1.3, 25.0, 60.0).to(dtype)[None].expand(b, -1, -1)
    focal = torch.full((b, 2), 14.0, dtype=dtype)
    c = torch.full((b, 2), 8.0, dtype=dtype)
    return net, scene, cond, (pose, focal, c)


def _distance(xyz: torch.Tensor) -> torch.Tensor:
    return (xyz - xyz.new_tensor(BALL_C)).norm(dim=-1)


@pytest.mark.parametrize(
    "fast, stop, res",
    [(True, 0.0, 32), (False, 0.0, 32), (True, 1e-4, 32), (False, 1e-4, 32), (True, 0.0, 64)],
)
def test_no_sample_lands_in_the_empty_region_and_the_image_is_unchanged(fast, stop, res):
    net, scene, cond, (pose, focal, c) = _scene(fast, occupancy_resolution=res, stop_transmittance=stop)
    outputs = ("rgb", "depth", "opacity", "features", "hidden")
    with torch.no_grad():
        exhaustive = net.render_image(cond, pose, focal, c, 16, 16, outputs, skip_empty=False)
        all_samples = scene.seen()
        grid_cond = net.with_occupancy(cond)  # rays=None: always built
        grid = grid_cond.occupancy
        assert grid is not None and grid.resolution == res and cond.occupancy is None
        scene.seen()  # the lattice points of the build
        with_grid = net.render_image(grid_cond, pose, focal, c, 16, 16, outputs, skip_empty=True)
        grid_samples = scene.seen()
    # A sample in an occupied cell lies within 1.5 cells (its own half cell plus the dilation) per axis
    # of a lattice point inside the ball; nothing beyond that was evaluated.
    h = 1.6 / res
    reach = BALL_R + 1.5 * h * math.sqrt(3)
    assert (_distance(all_samples) > reach).float().mean() > 0.5  # the region exists and rays cross it
    assert grid_samples.shape[0] > 0 and _distance(grid_samples).max() <= reach + 1e-9
    assert grid_samples.shape[0] < 0.5 * all_samples.shape[0]
    # The skipped samples had zero density: the image is the exhaustive one (to float64 rounding, or
    # within the early-termination tolerance).
    for k in outputs:
        scale = max(1.0, float(exhaustive[k].abs().max()))  # hidden is not bounded by 1
        tol = 1e-9 if stop == 0 else 10 * stop * scale
        torch.testing.assert_close(with_grid[k], exhaustive[k], atol=tol, rtol=0)
    assert exhaustive["opacity"].max() > 0.99 and exhaustive["opacity"].min() < 0.01  # ball and background


def test_a_fine_grid_looks_only_inside_the_coarse_grid_and_finds_the_same_cells():
    from featurenerf.nerf.render_occupancy import DILATION, THRESHOLD, build_grid
    from featurenerf.rendering.occupancy import upsample

    net, scene, cond, _ = _scene(occupancy_resolution=64)
    with torch.no_grad():
        fine = build_grid(net, cond)  # 32³ everywhere, then 64³ inside its occupied cells
        sigma = lambda xyz: ball_density(xyz.double())  # noqa: E731
        plain = OccupancyGrid.build(sigma, net.scene_bound, 1, 64, THRESHOLD, DILATION)
        coarse = OccupancyGrid.build(sigma, net.scene_bound, 1, 32, THRESHOLD, DILATION)
    assert torch.equal(fine.occupied, plain.occupied)  # a solid ball: nothing for the coarse level to miss
    assert fine.cost.points < coarse.cost.points + 0.25 * plain.cost.points
    assert fine.cost.points == coarse.cost.points + scene_points(coarse, plain)
    assert torch.equal(upsample(coarse.occupied, 2) | fine.occupied, upsample(coarse.occupied, 2))
    # Nothing occupied at the coarse level: the fine level evaluates nothing.
    calls = []
    empty = OccupancyGrid.build(
        lambda x: calls.append(x) or x[..., 0] * 0,
        net.scene_bound,
        1,
        8,
        within=torch.zeros(1, 8, 8, 8, dtype=torch.bool),
    )
    assert not calls and empty.cost.points == 0 and not empty.occupied.any()


def scene_points(coarse: OccupancyGrid, plain: OccupancyGrid) -> int:
    """Lattice points of the 64³ level that lie in the bound and in the coarse grid's occupied cells."""
    n = plain.resolution
    axis = torch.linspace(-0.8, 0.8, 2 * n + 1)[1::2]
    lattice = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    from featurenerf.rendering.occupancy import upsample

    look = upsample(coarse.occupied, 2)[0].reshape(-1)
    return int((plain.bound.contains(lattice) & look).sum())


def test_render_image_builds_a_grid_when_it_pays_and_not_otherwise(monkeypatch):
    builds = []
    build = OccupancyGrid.build.__func__

    def counting(cls, *args, **kw):
        builds.append(kw["resolution"])
        return build(cls, *args, **kw)

    monkeypatch.setattr(OccupancyGrid, "build", classmethod(counting))
    net, scene, cond, (pose, focal, c) = _scene(occupancy_resolution=8)
    with torch.no_grad():
        net.render_image(cond, pose, focal, c, 16, 16, skip_empty=True)  # 256 rays x 24 samples > 268 points
        assert builds == [8]
        scene.seen()
        net.occupancy_resolution = 64  # about 34k density evaluations for 6k samples: not worth it
        net.render_image(cond, pose, focal, c, 16, 16, skip_empty=True)
        net.occupancy_resolution = 0  # off
        net.render_image(cond, pose, focal, c, 16, 16, skip_empty=True)
        net.occupancy_resolution, net.scene_radius = 8, None  # no bound: no grid
        net.render_image(cond, pose, focal, c, 16, 16, skip_empty=True)
        net.scene_radius = 0.8
        net.render_image(cond, pose, focal, c, 16, 16, skip_empty=False)  # no skipping: no grid
    assert builds == [8]


def test_a_batch_of_objects_gets_one_grid_each():
    net, scene, cond, (pose, focal, c) = _scene(b=2, occupancy_resolution=16)
    with torch.no_grad():
        grid_cond = net.with_occupancy(cond)
    grid = grid_cond.occupancy
    assert grid.batch_size == 2 and 0 < grid.occupied_fraction < 0.3
    assert torch.equal(grid_cond.select(1).occupancy.occupied[0], grid.occupied[1])
    assert grid.cost.points > 0 and grid.cost.seconds >= 0


def test_training_never_uses_the_grid(monkeypatch):
    """A training forward pass (gradients on) neither builds nor consults a grid, even with a conditioning
    that carries one, so its gradients are those of the exhaustive render."""
    from featurenerf.module import FeatureNeRF

    torch.manual_seed(0)
    model = FeatureNeRF(
        feature_dim=5, scene_radius=0.8, stop_transmittance=1e-3, occupancy_resolution=8, **TINY
    )
    batch, rays = camera_batch(b=2, size=16)

    def refuse(*args, **kw):
        raise AssertionError("the occupancy grid was used by a training pass")

    monkeypatch.setattr(OccupancyGrid, "build", classmethod(refuse))
    monkeypatch.setattr(OccupancyGrid, "contains", refuse)
    losses = model.compute_losses(batch, rays)
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.net.mlp.parameters() if p.requires_grad)
    # An all-empty grid on the conditioning changes nothing when empty space is not skipped.
    monkeypatch.undo()
    cond = model.net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    with torch.no_grad():
        full = OccupancyGrid.build(
            lambda x: x[..., 0] * 0 + 1, model.net.scene_bound, batch_size=2, resolution=4
        )
    empty = OccupancyGrid(torch.zeros_like(full.occupied), full.bound, full.lo, full.hi, full.cost)
    g = torch.Generator().manual_seed(3)
    plain = model.net.render_rays(cond, rays["origins"], rays["dirs"], perturb=True, generator=g)
    g = torch.Generator().manual_seed(3)
    gridded = dataclasses.replace(cond, occupancy=empty)
    out = model.net.render_rays(gridded, rays["origins"], rays["dirs"], perturb=True, generator=g)
    for p in ("coarse", "fine"):
        for k, v in plain[p].items():
            torch.testing.assert_close(out[p][k], v)
    assert plain["fine"]["opacity"].min() > 0  # the empty grid would have made it zero


def test_an_orbit_builds_one_grid_for_all_its_frames(monkeypatch, capsys):
    from featurenerf.commands.render import render_orbit
    from featurenerf.orbit import orbit

    builds = []
    build = OccupancyGrid.build.__func__
    monkeypatch.setattr(
        OccupancyGrid, "build", classmethod(lambda cls, *a, **kw: builds.append(1) or build(cls, *a, **kw))
    )
    net, scene, cond, (pose, focal, c) = _scene(dtype=torch.float32, occupancy_resolution=16)
    poses = orbit(pose[0], 3)
    res = render_orbit(net, cond, poses, focal[0], c[0], 12, 12, feature=None, desc="render")
    assert builds == [1]
    assert "render: occupancy grid 16x16x16" in capsys.readouterr().err
    net.occupancy_resolution = 0
    plain = render_orbit(net, cond, poses, focal[0], c[0], 12, 12, feature=None, progress=False)
    assert builds == [1]
    torch.testing.assert_close(res.rgb, plain.rgb, atol=1e-5, rtol=0)


def test_task_pixels_use_one_grid_per_call(monkeypatch):
    from featurenerf.tasks.descriptors import PosedView, render_pixels

    builds = []
    build = OccupancyGrid.build.__func__
    monkeypatch.setattr(
        OccupancyGrid, "build", classmethod(lambda cls, *a, **kw: builds.append(1) or build(cls, *a, **kw))
    )
    net, scene, cond, (pose, focal, c) = _scene(occupancy_resolution=8)
    image = torch.rand(3, 16, 16, dtype=torch.float64)
    view = PosedView("obj", 0, image, torch.ones(16, 16, dtype=torch.bool), pose[0], focal[0], c[0])
    uv = torch.rand(300, 2, dtype=torch.float64) * 16
    with torch.no_grad():
        out = render_pixels(net, cond, view, uv, ("rgb", "features"), chunk=64)
        assert builds == [1]
        scene.seen()
        net.occupancy_resolution = 0
        plain = render_pixels(net, cond, view, uv, ("rgb", "features"), chunk=64)
    for k in out:
        torch.testing.assert_close(out[k], plain[k], atol=1e-3, rtol=0)


def test_grid_select_keeps_a_batch_one_grid():
    g = OccupancyGrid.build(lambda x: x[..., 0] * 0 + 1, Sphere(0.5), resolution=4)
    assert g.select(3) is g


def test_a_validation_run_builds_one_grid_per_conditioning_view(monkeypatch):
    """The tasks' renders share grids: the part task's target rendered from a source, another target from
    that source and the novel view from it use one build; another conditioning view gets its own. The
    descriptors equal a render that builds its own grid."""
    from featurenerf.tasks.descriptors import Descriptors, PosedView, encode_view, pixel_uv, render_pixels

    builds = []
    build = OccupancyGrid.build.__func__
    monkeypatch.setattr(
        OccupancyGrid, "build", classmethod(lambda cls, *a, **kw: builds.append(1) or build(cls, *a, **kw))
    )
    net, _, _, (pose, focal, c) = _scene(occupancy_resolution=8, dtype=torch.float32)
    batch, _ = camera_batch(b=1, size=16)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 3:13] = True
    src = PosedView(
        "a", 0, batch["src_images"][0, 0], mask, batch["src_poses"][0, 0], batch["focal"][0], batch["c"][0]
    )
    trg = PosedView("a", 1, torch.rand(3, 16, 16), mask, pose[0], focal[0], c[0])
    other = PosedView("b", 1, trg.image, mask, pose[0], focal[0], c[0])
    d = Descriptors({"model": net}, ["featurenerf", "featurenerf_v"])
    with torch.no_grad():
        first = d.foreground("featurenerf_v", trg, src)
        d.foreground("featurenerf_v", other, src)
        novel = d.condition("model", src, 16 * 16)
        assert builds == [1] and novel.occupancy is d.grids[("model", src.key, 16)]
        d.foreground("featurenerf", trg, trg)
        assert builds == [1, 1]
        alone = render_pixels(net, encode_view(net, src), trg, pixel_uv(trg.foreground_ij()), ("features",))
    torch.testing.assert_close(
        first, torch.nn.functional.normalize(alone["features"], dim=-1), rtol=0, atol=0
    )
    d.clear()
    assert not d.grids
