"""Positional encoding of camera-frame coordinates (pixelNeRF's settings)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """``[x, sin(f_k x), cos(f_k x)]`` with ``f_k = freq_factor * 2^k``, ``k < num_freqs``.

    With 6 frequencies and factor 1.5 (pixelNeRF), 3 inputs give ``3 + 3*2*6 = 39`` outputs.
    """

    def __init__(
        self, num_freqs: int = 6, freq_factor: float = 1.5, include_input: bool = True, d_in: int = 3
    ):
        super().__init__()
        self.include_input = include_input
        self.register_buffer("freqs", freq_factor * 2.0 ** torch.arange(num_freqs), persistent=False)
        self.d_out = d_in * 2 * num_freqs + (d_in if include_input else 0)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_in) → (..., d_out)."""
        scaled = (x[..., None, :] * self.freqs[:, None]).flatten(-2)  # (..., num_freqs * d_in)
        parts = [torch.sin(scaled), torch.cos(scaled)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)
