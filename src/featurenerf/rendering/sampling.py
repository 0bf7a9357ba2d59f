"""Where to evaluate the field along each ray (pixelNeRF's coarse/fine scheme).

All functions take ray parameters ``z`` in the units of unit-length ray directions (distance from the
camera centre) and return ``(R, n)`` tensors. ``perturb=False`` gives deterministic samples (used at
evaluation) so renders are reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_samples(
    near: Tensor, far: Tensor, n: int, perturb: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """One sample in each of ``n`` equal strata of ``[near, far]``.

    Args:
        near, far: (R,) per-ray bounds.
        perturb: uniform jitter inside each stratum; otherwise the stratum's midpoint.
    Returns:
        (R, n) increasing sample depths.
    """
    steps = torch.arange(n, device=near.device, dtype=near.dtype) / n
    if perturb:
        jitter = torch.rand((near.shape[0], n), device=near.device, dtype=near.dtype, generator=generator)
    else:
        jitter = torch.full((near.shape[0], n), 0.5, device=near.device, dtype=near.dtype)
    t = steps + jitter / n
    return near[:, None] * (1.0 - t) + far[:, None] * t


def importance_samples(
    weights: Tensor,
    near: Tensor,
    far: Tensor,
    n: int,
    perturb: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inverse-CDF samples from the piecewise-constant density given by coarse weights over the
    coarse strata (pixelNeRF's fine sampling: the coarse pass's ``K`` equal strata of ``[near, far]``
    are the bins; each bin is sampled uniformly).

    Args:
        weights: (R, K) coarse compositing weights (treated as constants: no gradient flows back).
        near, far: (R,).
        n: samples per ray.
    Returns:
        (R, n) sample depths (unsorted).
    """
    k = weights.shape[-1]
    w = weights.detach() + 1e-5  # every bin stays reachable, as in pixelNeRF
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)  # (R, K + 1), from 0 to 1
    if perturb:
        u = torch.rand((w.shape[0], n), device=w.device, dtype=w.dtype, generator=generator)
    else:
        u = ((torch.arange(n, device=w.device, dtype=w.dtype) + 0.5) / n).expand(w.shape[0], n)
    u = u.contiguous()
    bins = torch.searchsorted(cdf, u, right=True).clamp(1, k) - 1  # (R, n) in [0, K-1]
    lo = torch.gather(cdf, 1, bins)
    hi = torch.gather(cdf, 1, bins + 1)
    within = ((u - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)  # position inside the bin
    t = (bins.to(w.dtype) + within) / k
    return near[:, None] * (1.0 - t) + far[:, None] * t


def depth_guided_samples(
    depth: Tensor,
    near: Tensor,
    far: Tensor,
    n: int,
    std: float,
    perturb: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Samples around the coarse expected depth (pixelNeRF's ``n_fine_depth``), clamped to the bounds.

    Args:
        depth: (R,) coarse expected depth (no gradient flows back).
        std: standard deviation of the Gaussian around ``depth``.
    Returns:
        (R, n); without ``perturb``, ``n`` copies of the depth itself.
    """
    z = depth.detach()[:, None].expand(-1, n)
    if perturb:
        noise = torch.randn((depth.shape[0], n), device=depth.device, dtype=depth.dtype, generator=generator)
        z = z + noise * std
    return torch.minimum(torch.maximum(z, near[:, None]), far[:, None])
