"""Novel-view PSNR and SSIM as pixelNeRF reports them.

pixelNeRF writes its renders as 8-bit PNGs and scores those against the dataset's 8-bit images with
scikit-image: PSNR with data range 255, and SSIM with scikit-image's defaults (a 7×7 *uniform* window,
sample covariances (normalised by 48 = 7·7 − 1), K1 = 0.01, K2 = 0.03, the border of 3 pixels left out of
the mean, channels averaged). Both functions here quantise to uint8 first and follow those definitions,
per image; tests check them against ``skimage.metrics`` to 1e-4.

Only the interior (H − 6) × (W − 6) positions enter scikit-image's mean, and for those the whole 7×7
window lies inside the image, so an unpadded 7×7 average pool computes exactly the retained local means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: SSIM window side (scikit-image's default ``win_size``).
SSIM_WINDOW = 7
_K1, _K2 = 0.01, 0.03
_RANGE = 255.0


def quantize_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] → the values an 8-bit PNG stores (0..255, rounded), as float64."""
    return torch.round(images.detach().double().clamp(0.0, 1.0) * _RANGE)


def psnr_uint8(pred: Tensor, truth: Tensor) -> Tensor:
    """PSNR in dB per image of ``pred`` and ``truth`` (N, C, H, W) in [0, 1], both quantised to uint8.

    Identical images would give +inf; the MSE is floored at 1e-10 (about 150 dB) so means stay finite.
    """
    p, t = quantize_uint8(pred), quantize_uint8(truth)
    mse = (p - t).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(_RANGE**2 / mse)


def ssim_uint8(pred: Tensor, truth: Tensor) -> Tensor:
    """SSIM per image of ``pred`` and ``truth`` (N, C, H, W) in [0, 1] (H, W >= 7), quantised to uint8.

    scikit-image's ``structural_similarity(p, t, channel_axis=-1, data_range=255)`` on the uint8 images.
    """
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(pred.shape)}"
        )
    x, y = quantize_uint8(pred), quantize_uint8(truth)
    n_px = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n_px / (n_px - 1.0)  # sample covariance, as scikit-image's use_sample_covariance=True

    def mean(v: Tensor) -> Tensor:
        return F.avg_pool2d(v, SSIM_WINDOW, stride=1)  # (N, C, H - 6, W - 6): the interior windows

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (_K1 * _RANGE) ** 2, (_K2 * _RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(2).mean(2).mean(1)  # per channel over the interior, then over channels
