"""pixelNeRF's residual block as one autograd function that does its element-wise work in place (CPU).

Autograd runs ``h + fc1(relu(fc0(relu(h)))) + extra`` with an out-of-place tensor per step: the
``threshold_backward`` results, the bias broadcast that ``addmm`` copies into its output, the separate
ReLU pass after it. On a CPU each is one more pass through main memory over a (N, 512) activation.
:class:`ResidualBlockFunction` computes the same values and gradients with the masks applied in place on
the gradients the GEMMs just produced, and fc0's bias and ReLU applied in one pass (``_add_relu_``). It
saves what autograd saves (``relu(h)`` and the inner activation).

Measured on the srn_cars training step (2-core CPU, fp32, interleaved in one process, 6 rounds):
4.06 s -> 3.98 s per step. Used by :meth:`FeatureNeRFNet._trunk` for eager CPU float32 training only:
under autocast, ``torch.compile`` or on a GPU the plain ops are as good (inductor and the CUDA allocator
deal with the same costs).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _relu_grad_(grad: Tensor, activation: Tensor) -> Tensor:
    """``grad *= activation > 0`` in place (``activation`` is a ReLU output, or its input)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0.0, grad_input=grad)


class ResidualBlockFunction(torch.autograd.Function):
    """``out = h + relu(relu(h) @ w0.T + b0) @ w1.T + extra`` for h (N, d), w0 (d_inner, d), b0
    (d_inner,), w1 (d, d_inner); ``extra`` is (N, d) (the next block's image-feature injection, with
    fc1's bias folded in) or (d,) (fc1's bias alone)."""

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


def residual_block(h: Tensor, extra: Tensor, w0: Tensor, b0: Tensor, w1: Tensor) -> Tensor:
    """One residual block (see :class:`ResidualBlockFunction`): h (N, d), extra (N, d) or (d,) → (N, d)."""
    return ResidualBlockFunction.apply(h.contiguous(), extra, w0, b0, w1)


def fused_blocks_apply(h: Tensor) -> bool:
    """Whether :func:`residual_block` serves the trunk: eager CPU float32 training."""
    return (
        torch.is_grad_enabled()
        and h.device.type == "cpu"
        and h.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )
