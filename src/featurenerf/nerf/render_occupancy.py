"""Occupancy grids of conditioned objects: built once after ``encode``, used by every render that skips.

A conditioned field is fixed once its source views are encoded, so its density can be looked at once on
a coarse lattice over the scene bound (:class:`~featurenerf.rendering.occupancy.OccupancyGrid`: cells
above :data:`THRESHOLD`, dilated by :data:`DILATION` cells). :func:`with_occupancy` stores that grid in
the :class:`~featurenerf.nerf.conditioning.Conditioning`; a render that skips empty space then uses it in
place of the scene bound (:func:`render_bound`), so only samples in occupied cells reach the MLP and the
coarse pass still stops early by transmittance. The grid is world-space, so every view of the object (an
orbit's frames, a task's target views) reuses it.

Training renders (``skip_empty=False``) never look at the grid: their gradients stay exact. A render of few
rays does not build one (:func:`grid_pays`): the lattice would cost more than the samples it saves.

nerfacc's occupancy estimator is the anchor (binary grid over an AABB, one grid per scene, thresholded
density); it needs CUDA and refreshes its grid during training, so it is not used here: the grid is built
from dense evaluations of the fixed conditioned field, on any device.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from featurenerf.nerf.conditioning import Conditioning
from featurenerf.rendering.bounds import Box, Sphere
from featurenerf.rendering.occupancy import GridCost, OccupancyGrid, bound_box, upsample

if TYPE_CHECKING:
    from featurenerf.nerf.model import FeatureNeRFNet

#: Density at or below which a lattice point counts as empty. A skipped stretch of length L loses at
#: most ``1 - exp(-THRESHOLD L)`` of opacity (rays cross at most ``far - near`` = 1 world unit in SRN).
THRESHOLD = 0.01
#: Occupied cells grow by this many cells in every direction: a thin surface between lattice points is
#: still covered.
DILATION = 1
#: The coarsest lattice looked at over the whole bound: a finer grid (twice, four times ... as fine) is
#: evaluated only inside the occupied cells of the grid half as fine, level by level. So a 64³ grid costs
#: about a 32³ one plus its occupied share of the 64³ lattice, and it can only miss what the 32³ grid
#: misses.
BASE_RESOLUTION = 32


def lattice_points(bound: Sphere | Box, resolution: int) -> int:
    """Lattice points of a ``resolution``³ grid over ``bound`` that lie in it (about)."""
    lo, hi = bound_box(bound)
    volume = 1.0
    for a, b in zip(lo, hi):
        volume *= b - a
    inside = (4 / 3 * torch.pi * bound.radius**3 / volume) if isinstance(bound, Sphere) else 1.0
    return int(resolution**3 * inside)


def levels(resolution: int) -> list[int]:
    """The grid resolutions a build looks at, coarsest first (:data:`BASE_RESOLUTION`)."""
    out = [resolution]
    while out[-1] % 2 == 0 and out[-1] // 2 >= BASE_RESOLUTION:
        out.append(out[-1] // 2)
    return out[::-1]


def build_cost(bound: Sphere | Box, resolution: int) -> int:
    """Density evaluations a grid is expected to cost per object: the coarsest level's lattice, and an
    eighth of each finer one (the occupied share of a level is 8-11 % on the trained toy cars)."""
    first, *finer = levels(resolution)
    return lattice_points(bound, first) + sum(lattice_points(bound, r) // 8 for r in finer)


def samples_per_ray(net: FeatureNeRFNet) -> int:
    """Samples an exhaustive render evaluates per ray (coarse + new fine ones, or all sorted ones)."""
    fine = net.n_fine + net.n_fine_depth
    return net.n_coarse + fine if net.reuse_coarse else 2 * net.n_coarse + fine


def grid_pays(net: FeatureNeRFNet, rays: int | None) -> bool:
    """Whether building the net's grid is worth it for ``rays`` rays per object (``None``: always, e.g.
    an orbit that reuses it): when the render would evaluate at least as many samples as the build
    (:func:`build_cost`)."""
    bound = net.scene_bound
    if not isinstance(bound, (Sphere, Box)) or net.occupancy_resolution < 1:
        return False  # no bound (or one a grid cannot tile), or no grid asked for
    return rays is None or rays * samples_per_ray(net) >= build_cost(bound, net.occupancy_resolution)


def object_density(net: FeatureNeRFNet, cond: Conditioning, xyz: Tensor) -> Tensor:
    """Density (B, P) of the B objects of ``cond`` at world points xyz (B, P, 3), seen along +z.

    The fast path evaluates only the per-sample heads (no feature head); the density does not depend on
    the view direction more than the dilation covers on trained toy and SRN models (see the benchmark's
    exactness rows).
    """
    b, p = xyz.shape[:2]
    xyz = xyz.to(cond.features.dtype)  # the lattice is float32; the net may not be
    if not net.fast_rendering():
        return net.query(cond, xyz)["sigma"]
    flat = xyz.reshape(-1, 3)
    dirs = torch.zeros_like(flat)
    dirs[:, 2] = 1.0
    obj = torch.arange(b, device=xyz.device).repeat_interleave(p)
    inputs = net._point_inputs(cond, flat, dirs, obj)
    return net.field(cond, inputs, "render")["sigma"].reshape(b, p)


def build_grid(net: FeatureNeRFNet, cond: Conditioning, resolution: int | None = None) -> OccupancyGrid:
    """The occupancy grid of the objects of ``cond`` over ``net.scene_bound`` (which must be set).

    Args:
        resolution: cells per axis (default ``net.occupancy_resolution``).
    Returns:
        a (B, n, n, n) grid; ``grid.cost`` holds the density evaluations and the seconds they took (all
        levels, :data:`BASE_RESOLUTION`).
    """
    bound = net.scene_bound
    if bound is None:
        raise ValueError("occupancy grid: the model has no scene bound (model.scene_radius) to build it in")
    resolution = net.occupancy_resolution if resolution is None else resolution
    if net.fast_rendering():
        cond = net.prepare(cond)
    grid, points, seconds = None, 0, 0.0
    for res in levels(resolution):  # coarsest first
        within = None if grid is None else upsample(grid.occupied, res // grid.resolution)
        with torch.no_grad():
            grid = OccupancyGrid.build(
                lambda xyz: object_density(net, cond, xyz),
                bound,
                batch_size=cond.batch_size,
                resolution=res,
                threshold=THRESHOLD,
                dilation=DILATION,
                chunk=net.chunk * 16,
                device=cond.features.device,
                within=within,
            )
        points, seconds = points + grid.cost.points, seconds + grid.cost.seconds
    return dataclasses.replace(grid, cost=GridCost(points, seconds))


def with_occupancy(net: FeatureNeRFNet, cond: Conditioning, rays: int | None = None) -> Conditioning:
    """``cond`` with its occupancy grid, built when the net has one configured (``occupancy_resolution``
    > 0 and a scene bound) and it pays for ``rays`` rays per object (:func:`grid_pays`; ``None``: the
    caller reuses it, always build). Returns ``cond`` itself when it already has a grid or none is built.
    """
    if cond.occupancy is not None or not grid_pays(net, rays):
        return cond
    if net.fast_rendering():
        cond = net.prepare(cond)  # the grid and the renders share the injected maps
    return dataclasses.replace(cond, occupancy=build_grid(net, cond))


def render_bound(
    net: FeatureNeRFNet, cond: Conditioning, skip_empty: bool
) -> Sphere | Box | OccupancyGrid | None:
    """Where a render may find density: nothing known without skipping (training), else the
    conditioning's occupancy grid, else the net's scene bound."""
    if not skip_empty:
        return None
    return cond.occupancy if cond.occupancy is not None else net.scene_bound
