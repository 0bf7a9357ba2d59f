"""Novel-view PSNR / SSIM as pixelNeRF reports them: uint8 images, scikit-image's SSIM (7x7 uniform window)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from featurenerf.image_metrics import psnr_uint8, quantize_uint8, ssim_uint8


def _pair(seed: int, size: tuple[int, int] = (24, 31)):
    """A smooth image (structure for SSIM to see) and a noisy, shifted copy, (1, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(6 * xx + 3 * yy)])[None]
    noisy = (base + 0.08 * torch.randn(base.shape, generator=g)).clamp(0, 1)
    return noisy, base


def _as_uint8(img: torch.Tensor) -> np.ndarray:
    return quantize_uint8(img)[0].permute(1, 2, 0).numpy().astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_agrees_with_scikit_image(seed):
    pred, truth = _pair(seed)
    want = structural_similarity(_as_uint8(pred), _as_uint8(truth), channel_axis=-1, data_range=255)
    assert ssim_uint8(pred, truth).item() == pytest.approx(want, abs=1e-4)
    assert ssim_uint8(truth, truth).item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_agrees_with_scikit_image_and_quantises():
    pred, truth = _pair(3)
    want = peak_signal_noise_ratio(_as_uint8(truth), _as_uint8(pred), data_range=255)
    assert psnr_uint8(pred, truth).item() == pytest.approx(want, abs=1e-4)
    # Quantisation is part of the metric: on 8-bit truth, an error below half a grey level disappears
    # (identical uint8 images: the floored MSE of 1e-10, not the 56 dB of the float error).
    grid = quantize_uint8(truth).float() / 255
    same = 10 * np.log10(255**2 / 1e-10)
    assert psnr_uint8(grid + 0.4 / 255, grid).item() == pytest.approx(same, abs=1e-6)
    # By hand: every pixel off by exactly 5 grey levels -> 10 log10(255^2 / 25).
    flat = torch.full((1, 3, 8, 8), 100 / 255)
    assert psnr_uint8(flat + 5 / 255, flat).item() == pytest.approx(10 * np.log10(255**2 / 25), abs=1e-9)


def test_batches_are_per_image():
    a, b = _pair(4)
    c, d = _pair(5)
    batch = ssim_uint8(torch.cat([a, c]), torch.cat([b, d]))
    assert batch.shape == (2,)
    assert batch[1].item() == pytest.approx(ssim_uint8(c, d).item(), abs=1e-12)
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_uint8(torch.rand(1, 3, 6, 9), torch.rand(1, 3, 6, 9))
