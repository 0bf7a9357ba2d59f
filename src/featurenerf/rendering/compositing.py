"""Volume rendering: densities at sorted samples → compositing weights → rendered values."""

from __future__ import annotations

import torch
from torch import Tensor


def compositing_weights(z: Tensor, sigma: Tensor, far: Tensor) -> Tensor:
    """Alpha-compositing weights ``w_i = T_i (1 - exp(-sigma_i delta_i))``.

    The last interval ends at ``far`` (pixelNeRF's convention), so a ray's weights sum to at most 1
    and the remainder ``1 - sum(w)`` is the background's share.

    Args:
        z: (R, N) sorted sample depths; sigma: (R, N) non-negative densities; far: (R,).
    Returns:
        (R, N) weights.
    """
    deltas = torch.cat([z[:, 1:] - z[:, :-1], (far[:, None] - z[:, -1:]).clamp_min(0.0)], dim=-1)
    alpha = 1.0 - torch.exp(-sigma * deltas)
    # Exclusive cumulative product of (1 - alpha): the light that survives to sample i.
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], dim=-1), dim=-1)
    return alpha * trans[:, :-1]


def composite(weights: Tensor, values: Tensor) -> Tensor:
    """``sum_i w_i v_i`` for any channel count: weights (R, N), values (R, N, C) → (R, C)."""
    return torch.einsum("rn,rnc->rc", weights, values)
