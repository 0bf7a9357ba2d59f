"""pixelNeRF's residual MLP with image-feature injection and source-view pooling: the one trunk.

Both ways of evaluating the field run :meth:`ResnetMLP.trunk`; they differ only in where each block's
image feature comes from. :meth:`ResnetMLP.forward` (pixelNeRF's per-point way) applies the injection
layers to the per-point image features; the fast field (:mod:`featurenerf.nerf.model`) applies them to
the encoder maps once and gathers the results. Either way an injection arrives with the bias that is
added at the same place folded in (:meth:`ResnetMLP.injection_bias`), and is added inside the previous
block's last GEMM (the residual is that GEMM's accumulator, not a separate pass over memory).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
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

    def forward(self, h: Tensor, extra: Tensor | None = None) -> Tensor:
        """``h + fc1(relu(fc0(relu(h))))`` for h (..., d); with ``extra`` (same shape: the next block's
        injection, fc1's bias folded in), ``extra`` takes the place of fc1's bias and is overwritten:
        it becomes the accumulator of fc1's GEMM, so the residual and the injection cost no extra pass."""
        d = h.shape[-1]
        flat = h.reshape(-1, d)
        dt = h.dtype  # bf16 under autocast: the in-place ops below need one dtype
        a = F.linear(torch.relu(flat), self.fc0.weight.to(dt), self.fc0.bias.to(dt)).relu_()
        base = flat + self.fc1.bias.to(dt) if extra is None else extra.reshape(-1, d).add_(flat)
        return base.addmm_(a, self.fc1.weight.t().to(dt)).reshape(h.shape)


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

    def injection_bias(self, i: int) -> Tensor:
        """Injection ``i``'s bias plus the bias added at the same place (the input layer's before block
        0, block ``i - 1``'s last bias before block ``i``): (d_hidden,)."""
        before = self.lin_in.bias if i == 0 else self.blocks[i - 1].fc1.bias
        return self.lin_z[i].bias + before

    def trunk(self, x: Tensor, inject: Callable[[int], Tensor], pool: Callable[[Tensor], Tensor]) -> Tensor:
        """Input layer and residual blocks: x (..., d_in) → hidden (..., d_hidden).

        ``inject(i)`` gives injection ``i`` (..., d_hidden) shaped like the input rows, a fresh tensor
        with :meth:`injection_bias` folded in (it is added to in place). ``pool`` averages the hidden
        state over source views (before block ``combine_layer``).
        """
        if len(self.lin_z):
            h = inject(0)
            dt = h.dtype
            h.reshape(-1, h.shape[-1]).addmm_(
                x.reshape(-1, x.shape[-1]).to(dt), self.lin_in.weight.t().to(dt)
            )
        else:
            h = self.lin_in(x)
        for i, block in enumerate(self.blocks):
            if i == self.combine_layer:
                h = pool(h)
            h = block(h, inject(i + 1) if i + 1 < len(self.lin_z) else None)
        if self.combine_layer >= len(self.blocks):
            h = pool(h)
        return h

    def forward(self, x: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """pixelNeRF's per-point way.

        Args:
            x: (B, V, P, d_in) encoded points per source view.
            latent: (B, V, P, d_latent) image features of the points in each source view.
        Returns:
            out (B, P, d_out) and hidden (B, P, d_hidden), the last residual block's output (the
            paper's internal feature ``v_NeRF``).
        """

        def inject(i: int) -> Tensor:
            return F.linear(latent, self.lin_z[i].weight, self.injection_bias(i))

        h = self.trunk(x, inject, lambda t: t.mean(dim=1, keepdim=True)).squeeze(1)
        return self.lin_out(torch.relu(h)), h
