"""pixelNeRF's residual MLP with image-feature injection and source-view pooling."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """``x + fc1(relu(fc0(relu(x))))`` with ``fc1`` zero-initialised, so each block starts as identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc0 = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.fc0.weight, a=0, mode="fan_in")
        nn.init.zeros_(self.fc0.bias)
        nn.init.zeros_(self.fc1.weight)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc1(torch.relu(self.fc0(torch.relu(x))))


class ResnetMLP(nn.Module):
    """The field network: ``lin_in``, ``n_blocks`` residual blocks, ``lin_out``.

    The image feature enters additively before each of the first ``n_inject`` blocks through its own
    linear layer; with several source views, the hidden state is averaged over views before block
    ``combine_layer`` (the views are independent before that).

    Args:
        d_in: point input width (39 positional + 3 view direction = 42).
        d_latent: image-feature width (512 for the full ResNet-34 encoder).
        d_hidden: block width (512).
        d_out: output width (4 + feature_dim + 3 for FeatureNeRF's widened output layer).
    """

    def __init__(
        self,
        d_in: int = 42,
        d_latent: int = 512,
        d_hidden: int = 512,
        d_out: int = 4,
        n_blocks: int = 5,
        n_inject: int = 3,
        combine_layer: int = 3,
    ) -> None:
        super().__init__()
        if not (n_inject <= combine_layer <= n_blocks):
            raise ValueError("need n_inject <= combine_layer <= n_blocks")
        self.combine_layer = combine_layer
        self.lin_in = nn.Linear(d_in, d_hidden)
        self.lin_z = nn.ModuleList([nn.Linear(d_latent, d_hidden) for _ in range(n_inject)])
        self.blocks = nn.ModuleList([ResidualBlock(d_hidden) for _ in range(n_blocks)])
        self.lin_out = nn.Linear(d_hidden, d_out)
        for lin in [self.lin_in, self.lin_out, *self.lin_z]:
            nn.init.kaiming_normal_(lin.weight, a=0, mode="fan_in")
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            x: (B, V, P, d_in) encoded points per source view.
            latent: (B, V, P, d_latent) image features of the points in each source view.
        Returns:
            out (B, P, d_out) and hidden (B, P, d_hidden), the last residual block's output (the
            paper's internal feature ``v_NeRF``).
        """
        h = self.lin_in(x)
        for i, block in enumerate(self.blocks):
            if i == self.combine_layer:
                h = h.mean(dim=1, keepdim=True)
            if i < len(self.lin_z):
                h = h + self.lin_z[i](latent)
            h = block(h)
        if self.combine_layer >= len(self.blocks):
            h = h.mean(dim=1, keepdim=True)
        h = h.squeeze(1)
        return self.lin_out(torch.relu(h)), h
