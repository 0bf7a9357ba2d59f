"""Where to evaluate the field along each ray (pixelNeRF's coarse/fine scheme).

All samplers take ray parameters ``z`` in the units of unit-length ray directions (distance from the
camera centre), return ``(R, n)`` tensors, and take one :class:`Sampling` that says where the samples go:
``Sampling(perturb=True, generator=g)`` draws the jitter from ``g`` (training); ``Sampling(noise=...)``
passes it pre-drawn (:class:`SampleNoise`: evaluation renders draw it from a fixed seed for the whole
image, so they follow the training distribution, are reproducible and do not depend on how the image is
split into chunks); the default :data:`MIDPOINTS` gives the deterministic midpoints (and ``n`` copies of
the coarse depth for the depth-guided samples)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SampleNoise:
    """Pre-drawn randomness of one perturbed coarse/fine sampling, per ray.

    Attributes:
        stratified: (..., n_coarse) uniform jitter inside each stratum.
        importance: (..., n_fine) uniform inverse-CDF positions.
        depth: (..., n_fine_depth) standard normal offsets around the coarse depth.
    """

    stratified: Tensor
    importance: Tensor
    depth: Tensor

    @classmethod
    def draw(
        cls,
        shape: tuple[int, ...],
        counts: tuple[int, int, int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> SampleNoise:
        """Noise for rays of ``shape`` and (n_coarse, n_fine, n_fine_depth) samples, drawn from
        ``generator`` in the order (and with the flat shapes) a perturbed render draws it, so a render
        with this noise equals a ``perturb=True`` render with a generator in the same state."""
        rays = 1
        for n in shape:
            rays *= n
        device = generator.device if generator is not None else None
        kw = dict(generator=generator, dtype=dtype, device=device)
        n_c, n_f, n_d = counts
        stratified = torch.rand((rays, n_c), **kw)
        importance = torch.rand((rays, n_f), **kw)
        depth = torch.randn((rays, n_d), **kw)
        return cls(*(t.reshape(*shape, -1) for t in (stratified, importance, depth)))

    def select(self, index: tuple | slice) -> SampleNoise:
        """The noise of the rays ``index`` (any tensor index over the leading ray dimensions)."""
        return SampleNoise(self.stratified[index], self.importance[index], self.depth[index])

    def flat(self) -> SampleNoise:
        """Every field as (R, n)."""
        return SampleNoise(
            *(t.reshape(-1, t.shape[-1]) for t in (self.stratified, self.importance, self.depth))
        )

    def to(self, device: torch.device | str) -> SampleNoise:
        return SampleNoise(self.stratified.to(device), self.importance.to(device), self.depth.to(device))


@dataclass(frozen=True)
class Sampling:
    """Where the samplers place their samples: jittered with fresh draws from ``generator`` (``perturb``,
    training), jittered with pre-drawn ``noise`` (evaluation; one row per ray, flat as the rays), or, by
    default, at the deterministic midpoints."""

    perturb: bool = False
    generator: torch.Generator | None = None
    noise: SampleNoise | None = None

    def draws(self, field: str, like: Tensor, n: int, normal: bool = False) -> Tensor | None:
        """One sampler's randomness for ``like.shape[0]`` rays × ``n``: the pre-drawn ``noise`` field
        (``stratified``, ``importance``, ``depth``) when given, fresh uniform (or standard ``normal``)
        draws from ``generator`` when ``perturb``, otherwise None (the sampler's deterministic placement).
        In ``like``'s dtype and on its device."""
        if self.noise is not None:
            return getattr(self.noise, field).to(like.dtype)
        if not self.perturb:
            return None
        draw = torch.randn if normal else torch.rand
        return draw((like.shape[0], n), device=like.device, dtype=like.dtype, generator=self.generator)


#: The deterministic placement (stratum midpoints; no jitter).
MIDPOINTS = Sampling()


def _between(near: Tensor, far: Tensor, t: Tensor) -> Tensor:
    """Depths at fractions t (R, n) of each ray's ``[near, far]`` (R,)."""
    return near[:, None] * (1.0 - t) + far[:, None] * t


def stratified_samples(near: Tensor, far: Tensor, n: int, how: Sampling = MIDPOINTS) -> Tensor:
    """One sample in each of ``n`` equal strata of ``[near, far]``.

    Args:
        near, far: (R,) per-ray bounds.
        how: uniform jitter inside each stratum (drawn, or ``noise.stratified`` (R, n) in [0, 1));
            by default the stratum's midpoint.
    Returns:
        (R, n) increasing sample depths.
    """
    steps = torch.arange(n, device=near.device, dtype=near.dtype) / n
    jitter = how.draws("stratified", near, n)
    if jitter is None:
        jitter = torch.full((near.shape[0], n), 0.5, device=near.device, dtype=near.dtype)
    return _between(near, far, steps + jitter / n)


def importance_samples(
    weights: Tensor, near: Tensor, far: Tensor, n: int, how: Sampling = MIDPOINTS
) -> Tensor:
    """Inverse-CDF samples from the piecewise-constant density given by coarse weights over the
    coarse strata (pixelNeRF's fine sampling: the coarse pass's ``K`` equal strata of ``[near, far]``
    are the bins; each bin is sampled uniformly).

    Args:
        weights: (R, K) coarse compositing weights (treated as constants: no gradient flows back).
        near, far: (R,).
        n: samples per ray.
        how: uniform inverse-CDF positions (drawn, or ``noise.importance`` (R, n)); by default the
            evenly spaced ones.
    Returns:
        (R, n) sample depths (unsorted).
    """
    k = weights.shape[-1]
    w = weights.detach() + 1e-5  # every bin stays reachable, as in pixelNeRF
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)  # (R, K + 1), from 0 to 1
    u = how.draws("importance", w, n)
    if u is None:
        u = ((torch.arange(n, device=w.device, dtype=w.dtype) + 0.5) / n).expand(w.shape[0], n)
    u = u.contiguous()
    bins = torch.searchsorted(cdf, u, right=True).clamp(1, k) - 1  # (R, n) in [0, K-1]
    lo = torch.gather(cdf, 1, bins)
    hi = torch.gather(cdf, 1, bins + 1)
    within = ((u - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)  # position inside the bin
    return _between(near, far, (bins.to(w.dtype) + within) / k)


def depth_guided_samples(
    depth: Tensor, near: Tensor, far: Tensor, n: int, std: float, how: Sampling = MIDPOINTS
) -> Tensor:
    """Samples around the coarse expected depth (pixelNeRF's ``n_fine_depth``), clamped to the bounds.

    Args:
        depth: (R,) coarse expected depth (no gradient flows back).
        std: standard deviation of the Gaussian around ``depth``.
        how: standard normal offsets (drawn, or ``noise.depth`` (R, n)); by default none.
    Returns:
        (R, n); with the default ``how``, ``n`` copies of the depth itself.
    """
    z = depth.detach()[:, None].expand(-1, n)
    offsets = how.draws("depth", depth, n, normal=True)
    if offsets is not None:
        z = z + offsets * std
    return torch.minimum(torch.maximum(z, near[:, None]), far[:, None])
