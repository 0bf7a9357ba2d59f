"""What the task loops render the fields in (``--tasks.render_precision``); matching is always float32.

Rendering the fields is most of an evaluation's time, and where the hardware multiplies bf16 natively
the field runs 2-2.5x as fast under bf16 autocast (a whole evaluation of the study: 14-25 % faster on
an AVX-512 BF16 CPU, the rest being matching, data and the encoder). Label matching is not rendering:
cosine nearest neighbours in bf16 pick other neighbours (the 2D teacher's 3D part mIoU, which no
training touches, read 34.8 % in bf16 and 37.5 % in float32 on the same pairs), so descriptors leave
the autocast region as float32 and are matched in float32. Against float32 on the study's checkpoints,
bf16 moved the 3D rows by at most 0.8 points and PSNR by at most 0.05 dB (`featurenerf results compare`);
on one checkpoint, the 2D keypoint rows (few keypoints a pair) moved by up to 2.5 points.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

#: ``--tasks.render_precision`` choices.
RENDER_PRECISIONS = ("auto", "32", "bf16")


def render_dtype(precision: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of the evaluation renders (``None``: float32) and why, in words.

    Args:
        precision: ``auto``, ``32`` or ``bf16`` (``--tasks.render_precision``).
        device: the evaluated model's device (``auto`` asks whether it multiplies bf16 natively, as
            ``trainer.precision: auto`` does; see :func:`featurenerf.precision.auto_precision`).
    """
    if precision == "32":
        return None, "float32 (--tasks.render_precision 32)"
    if precision == "bf16":
        return torch.bfloat16, "bf16 autocast (--tasks.render_precision bf16)"
    from featurenerf.precision import auto_precision

    choice, reason = auto_precision("cuda" if device.type == "cuda" else "cpu")
    if choice == "bf16-mixed":
        return torch.bfloat16, f"bf16 autocast (render_precision auto: {reason})"
    return None, f"float32 (render_precision auto: {reason})"


def rendering(net: nn.Module, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The context a field's evaluation renders run in: autocast to ``dtype`` on the net's device, or
    plain float32 for ``None``.

    Only rendering goes through it: descriptors leave it as float32 and are matched in float32 (under
    bf16 the cosine matmuls of label transfer pick other nearest neighbours)."""
    if dtype is None:
        return contextlib.nullcontext()
    device = next(net.parameters()).device
    return torch.autocast(device.type, dtype=dtype)
