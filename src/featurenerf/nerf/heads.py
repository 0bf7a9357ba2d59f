"""The field's output layout: which channels of the MLP's last linear layer are which head.

FeatureNeRF widens pixelNeRF's output layer to ``4 + D + 3`` channels: colour (3, through a sigmoid),
density (1, through a ReLU), the distilled feature ``v`` (D, linear) and the canonical coordinate ``x̂``
(3, linear). This module is the one place those offsets are written; everything else asks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class OutputLayout:
    """Channel layout of the output layer for a feature head of width ``feature_dim`` (D)."""

    feature_dim: int

    @property
    def width(self) -> int:
        """Output channels: 4 + D + 3."""
        return 7 + self.feature_dim

    @property
    def features(self) -> slice:
        """The D feature channels."""
        return slice(4, 4 + self.feature_dim)

    @property
    def coords(self) -> slice:
        """The 3 canonical-coordinate channels."""
        return slice(4 + self.feature_dim, 7 + self.feature_dim)

    def split(self, out: Tensor) -> dict[str, Tensor]:
        """Raw outputs (..., 4 + D + 3) → ``rgb`` (..., 3) in [0, 1], ``sigma`` (...) >= 0, ``features``
        (..., D), ``coords`` (..., 3)."""
        return {
            "rgb": torch.sigmoid(out[..., :3]),
            "sigma": torch.relu(out[..., 3]),
            "features": out[..., self.features],
            "coords": out[..., self.coords],
        }

    def per_sample(self, r: Tensor, head: nn.Linear) -> dict[str, Tensor]:
        """Every head but the features, applied to ``r = relu(hidden)`` (P, d_hidden): ``rgb`` (P, 3),
        ``sigma`` (P,), ``coords`` (P, 3). Rendering applies the linear feature head per ray instead
        (:meth:`feature_head`), after compositing."""
        w, b, c = head.weight, head.bias, self.coords
        small = torch.nn.functional.linear(r, torch.cat([w[:4], w[c]]), torch.cat([b[:4], b[c]]))
        return {"rgb": torch.sigmoid(small[:, :3]), "sigma": torch.relu(small[:, 3]), "coords": small[:, 4:7]}

    def feature_head(self, head: nn.Linear, relu_hidden: Tensor, opacity: Tensor) -> Tensor:
        """Composited features from composited ``relu(hidden)``: ``Σ w (W r + b) = W (Σ w r) + b Σ w``.

        Args:
            relu_hidden: (R, d_hidden) ``Σ_i w_i relu(h_i)`` per ray; opacity: (R,) ``Σ_i w_i``.
        Returns:
            (R, D).
        """
        w, b = head.weight[self.features], head.bias[self.features]
        return torch.nn.functional.linear(relu_hidden, w) + opacity[:, None] * b
