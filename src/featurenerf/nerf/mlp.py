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


def _relu_grad_(grad: Tensor, activation: Tensor) -> Tensor:
    """``grad *= activation > 0`` in place (``activation`` is a ReLU output, or its input)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0.0, grad_input=grad)


class _InPlaceBlock(torch.autograd.Function):
    """A residual block's values and gradients with the element-wise work done in place.

    ``out = h + relu(relu(h) @ w0.T + b0) @ w1.T + extra`` for h (N, d); ``extra`` is (N, d) (the next
    injection, fc1's bias folded in) or (d,) (fc1's bias). Autograd would make an out-of-place tensor for
    each ReLU mask and bias broadcast; on a CPU each is one more pass over an (N, d) activation. Saves
    what autograd saves (``relu(h)`` and the inner activation)."""

    @staticmethod
    def forward(ctx, h: Tensor, extra: Tensor, w0: Tensor, b0: Tensor, w1: Tensor) -> Tensor:
        r = torch.relu(h)
        a = torch.ops.aten._add_relu_(torch.mm(r, w0.t()), b0)
        out = torch.add(h, extra).addmm_(a, w1.t())
        ctx.save_for_backward(r, a, w0, w1)
        ctx.extra_rows = extra.dim() == 2
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        r, a, w0, w1 = ctx.saved_tensors
        g = g.contiguous()
        need_h, need_extra, need_w0, need_b0, need_w1 = ctx.needs_input_grad
        dw1 = torch.mm(g.t(), a) if need_w1 else None
        ga = _relu_grad_(torch.mm(g, w1), a)
        dw0 = torch.mm(ga.t(), r) if need_w0 else None
        db0 = ga.sum(0) if need_b0 else None
        gh = _relu_grad_(torch.mm(ga, w0), r).add_(g) if need_h else None
        grad_extra = None if not need_extra else (g if ctx.extra_rows else g.sum(0))
        return gh, grad_extra, dw0, db0, dw1


def _eager_cpu_float32(h: Tensor) -> bool:
    """Eager float32 on a CPU: where the hand-fused block paths apply (autocast, torch.compile and CUDA
    handle these costs themselves)."""
    return (
        h.device.type == "cpu"
        and h.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _in_place_applies(h: Tensor) -> bool:
    """Eager float32 training on a CPU: the in-place autograd function."""
    return torch.is_grad_enabled() and _eager_cpu_float32(h)


def _inference_applies(h: Tensor) -> bool:
    """Eager float32 evaluation without gradients on a CPU (renders, task loops): the inner layer's bias
    and ReLU are one in-place pass (``F.linear`` would first copy the bias into its output, then ``relu_``
    would read it all again). Bit-identical; 12-14 % faster on a (20000, 128) block alone, within noise
    on a whole trained-toy render on a busy machine."""
    return not torch.is_grad_enabled() and _eager_cpu_float32(h)


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
        it becomes the accumulator of fc1's GEMM, so the residual and the injection cost no extra pass.

        Eager float32 training on a CPU runs the same values through :class:`_InPlaceBlock` (gradients
        masked in place: fewer passes over main memory, about 3.5 % of an srn_cars step)."""
        d = h.shape[-1]
        flat = h.reshape(-1, d)
        if _in_place_applies(flat):
            e = self.fc1.bias if extra is None else extra.reshape(-1, d)
            out = _InPlaceBlock.apply(flat.contiguous(), e, self.fc0.weight, self.fc0.bias, self.fc1.weight)
            return out.reshape(h.shape)
        if _inference_applies(flat):  # renders: the same passes without autograd's bookkeeping
            a = torch.ops.aten._add_relu_(torch.mm(torch.relu(flat), self.fc0.weight.t()), self.fc0.bias)
            base = flat + self.fc1.bias if extra is None else extra.reshape(-1, d).add_(flat)
            return base.addmm_(a, self.fc1.weight.t()).reshape(h.shape)
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
