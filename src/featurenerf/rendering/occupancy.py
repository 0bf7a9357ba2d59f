"""Occupancy grids: a coarse, per-object map of where the field has density (render time only).

After ``encode`` the field of each object is fixed, so its density can be evaluated once on a coarse
grid over the scene bound, thresholded and dilated; a render then evaluates only the samples that fall
in occupied cells. The grid depends on the object alone (world space, not the camera), so every frame of
an orbit reuses one grid. Training never uses a grid: it would cut gradients of samples in cells that the
current weights call empty.

The anchor is nerfacc's occupancy estimator (a binary grid over an AABB, cells occupied where the density
exceeds a threshold, queried at sample positions; a batched variant keeps one grid per scene). nerfacc
refreshes its grid with an EMA during training and marches fixed-size steps through it with CUDA kernels;
a conditioned field is fixed once encoded, so here the grid is built once from dense evaluations, and the
samples stay those of the stratified/importance sampler (so a render with the grid differs from the
exhaustive one only by the samples it drops).

Exactness. A sample in an empty cell is given zero density; its true density was below ``threshold``
wherever the grid looked, so each skipped interval of length ``δ`` loses at most ``1 - exp(-threshold δ)``
of alpha and a ray that crosses a total empty length ``L`` differs by at most ``1 - exp(-threshold L)`` in
opacity. Density is only looked at on a lattice (``subsamples`` points per cell and axis), so a thin
surface could fall between lattice points: ``dilation`` grows the occupied set by whole cells to cover
that. Samples outside the bound are empty as before.

A grid works wherever a scene bound does: :meth:`OccupancyGrid.contains` has the bound's signature, and
:func:`march` is the segment-by-segment evaluation with early ray termination by transmittance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from featurenerf.rendering.bounds import Box, Sphere

#: (B, P, 3) world points → (B, P) non-negative density; one row per object.
DensityFn = Callable[[Tensor], Tensor]


def bound_box(bound: Sphere | Box) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The axis-aligned box ``(lo, hi)`` that holds a scene bound."""
    if isinstance(bound, Box):
        return tuple(bound.lo), tuple(bound.hi)
    if isinstance(bound, Sphere):
        return tuple(c - bound.radius for c in bound.center), tuple(c + bound.radius for c in bound.center)
    raise TypeError(f"occupancy grid: bound must be a Sphere or a Box, got {type(bound).__name__}")


@dataclass(frozen=True)
class GridCost:
    """What building a grid took: ``points`` density evaluations (all objects) in ``seconds``."""

    points: int
    seconds: float


@dataclass(frozen=True)
class OccupancyGrid:
    """Binary occupancy of B objects over the box of a scene bound.

    Attributes:
        occupied: (B, n, n, n) bool, indexed (object, x, y, z) — cell ``i`` along an axis covers
            ``[lo + i h, lo + (i + 1) h)`` with ``h = (hi - lo) / n``.
        bound: the scene bound; points outside it are empty whatever the grid says.
        lo, hi: the box the cells tile.
        cost: how long building it took.
    """

    occupied: Tensor
    bound: Sphere | Box
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    cost: GridCost

    @property
    def batch_size(self) -> int:
        return self.occupied.shape[0]

    @property
    def resolution(self) -> int:
        return self.occupied.shape[1]

    @property
    def occupied_fraction(self) -> float:
        """Share of cells that are occupied, over all objects."""
        return self.occupied.float().mean().item()

    def select(self, index: int) -> OccupancyGrid:
        """The grid of object ``index`` alone (batch of 1); a batch-1 grid serves every object."""
        if self.batch_size == 1:
            return self
        return OccupancyGrid(self.occupied[index : index + 1], self.bound, self.lo, self.hi, self.cost)

    @classmethod
    def build(
        cls,
        density: DensityFn,
        bound: Sphere | Box,
        batch_size: int = 1,
        resolution: int = 64,
        threshold: float = 0.01,
        dilation: int = 1,
        subsamples: int = 1,
        chunk: int = 65536,
        device: torch.device | str = "cpu",
        within: Tensor | None = None,
    ) -> OccupancyGrid:
        """Evaluate ``density`` on a lattice over the bound's box and keep cells above ``threshold``.

        Args:
            density: (B, P, 3) → (B, P) density of each of the ``batch_size`` objects.
            resolution: cells per axis (``resolution³`` cells per object).
            threshold: density at or below which a lattice point counts as empty (see the module
                docstring for the error this allows).
            dilation: occupied cells grow by this many cells in every direction (26-neighbourhood).
            subsamples: lattice points per cell and axis (at ``(i + (k + 0.5) / s) h``); a cell is
                occupied when any of its ``subsamples³`` points is.
            chunk: lattice points per ``density`` call and object (memory stays bounded).
            within: (B, resolution, resolution, resolution) bool, the cells to look at (e.g. a coarser
                grid's occupied cells, :func:`upsample`); the others are empty without an evaluation.
                The points of every object's cells are evaluated for all objects (one batch).
        Returns:
            the grid; ``grid.cost`` holds the number of evaluations and the time they took.
        """
        if resolution < 1 or subsamples < 1 or dilation < 0 or chunk < 1:
            raise ValueError(
                "occupancy grid: resolution, subsamples and chunk must be >= 1 and dilation >= 0, got "
                f"resolution={resolution} subsamples={subsamples} chunk={chunk} dilation={dilation}"
            )
        lo, hi = bound_box(bound)
        m = resolution * subsamples
        axes = [torch.linspace(a, b, 2 * m + 1, device=device)[1::2] for a, b in zip(lo, hi)]  # centres
        lattice = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, 3)
        inside = bound.contains(lattice[0])
        if within is not None:
            look = within.to(device).any(0)  # union over objects: one batch of points for all
            for axis in range(3):
                look = look.repeat_interleave(subsamples, dim=axis)
            inside &= look.reshape(-1)
        points = lattice[:, inside].expand(batch_size, -1, -1)  # only points the bound can hold
        start = time.perf_counter()
        with torch.no_grad():
            parts = [density(part) for part in points.split(chunk, dim=1)] if points.shape[1] else []
            sigma = torch.cat(parts, dim=1) if parts else points.new_zeros(batch_size, 0)
        seconds = time.perf_counter() - start
        full = sigma.new_zeros(batch_size, m**3)
        full[:, inside] = sigma.to(full.dtype)
        above = rearrange(full > threshold, "b (x y z) -> b x y z", x=m, y=m, z=m).float()
        # A cell is occupied when any of its lattice points is: max over each s×s×s block.
        occ = F.max_pool3d(above[:, None], subsamples) if subsamples > 1 else above[:, None]
        if dilation > 0:
            occ = F.max_pool3d(occ, 2 * dilation + 1, stride=1, padding=dilation)
        cost = GridCost(points=points.shape[0] * points.shape[1], seconds=seconds)
        return cls(occ[:, 0] > 0, bound, lo, hi, cost)

    def cell_index(self, xyz: Tensor) -> tuple[Tensor, Tensor]:
        """(..., 3) points → (..., 3) long cell indices (clamped) and (...) bool "inside the box"."""
        lo, hi = xyz.new_tensor(self.lo), xyz.new_tensor(self.hi)
        f = (xyz - lo) / (hi - lo) * self.resolution
        in_box = ((f >= 0) & (f <= self.resolution)).all(-1)
        return f.floor().long().clamp(0, self.resolution - 1), in_box

    def contains(self, xyz: Tensor) -> Tensor:
        """(L, ..., 3) points → (L, ...) bool: inside the bound and in an occupied cell.

        The leading dimension is object-major: ``L`` is a multiple of the batch size and consecutive
        blocks of ``L / B`` rows belong to consecutive objects, so both (B, R, N, 3) samples and rays
        flattened over objects as (B·R, N, 3) are looked up in their own object's grid. A batch-1 grid
        serves any ``L``.
        """
        b = self.batch_size
        if xyz.shape[0] % b:
            raise ValueError(
                f"occupancy grid of {b} objects: leading dimension {xyz.shape[0]} is not a multiple"
            )
        shape = xyz.shape[:-1]
        pts = xyz.reshape(b, -1, 3)
        idx, in_box = self.cell_index(pts)
        n = self.resolution
        flat = (idx[..., 0] * n + idx[..., 1]) * n + idx[..., 2]
        occ = torch.gather(self.occupied.reshape(b, -1), 1, flat)
        return (occ & in_box & self.bound.contains(pts)).reshape(shape)


def upsample(occupied: Tensor, factor: int) -> Tensor:
    """(B, n, n, n) cells → (B, f n, f n, f n): each cell's ``factor³`` sub-cells (they tile it exactly)."""
    for axis in (1, 2, 3):
        occupied = occupied.repeat_interleave(factor, dim=axis)
    return occupied


def march(
    z: Tensor,
    far: Tensor,
    alive: Tensor | None,
    evaluate: Callable[[Tensor], Tensor],
    segments: int = 4,
    stop: float = 1e-4,
) -> tuple[Tensor, Tensor]:
    """Evaluate sorted ray samples segment by segment, dropping rays once their light is spent.

    After each of ``segments`` depth segments, a ray whose transmittance fell to ``stop`` or below is not
    evaluated any further (its later samples get zero density, which changes its render by at most
    ``stop``). The transmittance product is the one :func:`~featurenerf.rendering.compositing.
    compositing_weights` uses, so the decision matches the final weights.

    Args:
        z: (R, N) sorted sample depths; far: (R,) where the last interval ends.
        alive: (R, N) bool, samples that may be evaluated at all (e.g. :meth:`OccupancyGrid.contains`),
            or ``None`` for all.
        evaluate: (R, N) bool mask → (R, N) density, zero where the mask is False. Called once per
            segment that has live samples; a caller that needs other values collects them itself.
        stop: transmittance threshold; 0 marches every live sample.
    Returns:
        sigma (R, N) and evaluated (R, N) bool, the samples ``evaluate`` was asked for.
    """
    n_rays, n = z.shape
    deltas = torch.cat([z[:, 1:] - z[:, :-1], (far[:, None] - z[:, -1:]).clamp_min(0)], dim=-1)
    trans = z.new_ones(n_rays)
    sigma = z.new_zeros(n_rays, n)
    evaluated = torch.zeros_like(z, dtype=torch.bool)
    bounds = torch.linspace(0, n, max(segments, 1) + 1).round().long().tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        mask = torch.zeros_like(evaluated)
        mask[:, lo:hi] = (trans > stop)[:, None]
        if alive is not None:
            mask &= alive
        if mask.any():
            sigma = sigma + evaluate(mask) * mask
            evaluated |= mask
        trans = trans * (1.0 - (1.0 - torch.exp(-sigma[:, lo:hi] * deltas[:, lo:hi])) + 1e-10).prod(-1)
    return sigma, evaluated
