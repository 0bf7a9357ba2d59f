"""Pictures: image grids and feature maps shown as RGB through a shared PCA (no Lightning, no matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from torch import Tensor

from featurenerf.io import atomic_save_via


def fit_pca(features: Tensor, k: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PCA basis of row vectors: features (N, D) → mean (D,), components (D, k), and the per-component
    low/high percentiles (k,) used to map projections to [0, 1]."""
    x = features.float()
    mean = x.mean(0)
    xc = x - mean
    k_eff = min(k, xc.shape[1], xc.shape[0])
    _, _, v = (
        torch.pca_lowrank(xc, q=k_eff, center=False)
        if xc.shape[0] > 1
        else (None, None, torch.eye(xc.shape[1], device=x.device)[:, :k_eff])
    )
    comps = x.new_zeros(x.shape[1], k)  # on the features' device (validation pictures of a GPU fit)
    comps[:, :k_eff] = v[:, :k_eff]
    proj = xc @ comps
    lo = torch.quantile(proj, 0.01, dim=0)
    hi = torch.quantile(proj, 0.99, dim=0)
    return mean, comps, lo, hi


def apply_pca(features: Tensor, mean: Tensor, comps: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Project (N, D) rows with a fitted PCA to colours (N, 3) in [0, 1]."""
    proj = (features.float() - mean) @ comps
    return ((proj - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def feature_pca_pair(a: Tensor, b: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Two stacks of feature maps (T, D, h, w) coloured with ONE PCA fitted on both, so colours compare.

    Cells where both maps are zero (masked background) stay black. Returns two (T, 3, h, w) tensors.
    """
    t, _, h, w = a.shape
    rows = torch.cat([rearrange(a, "t d h w -> (t h w) d"), rearrange(b, "t d h w -> (t h w) d")])
    fg = rows.norm(dim=1) > 1e-6
    fit_rows = rows[fg] if fg.sum() > 3 else rows
    colours = apply_pca(rows, *fit_pca(fit_rows)) * fg[:, None]
    ca, cb = colours.split(t * h * w)
    as_img = lambda c: rearrange(c, "(t h w) k -> t k h w", t=t, h=h, w=w)  # noqa: E731
    return as_img(ca), as_img(cb)


def to_uint8(img: Tensor) -> np.ndarray:
    """(3, H, W) or (H, W) floats in [0, 1] → uint8 HWC / HW array."""
    x = img.detach().float().clamp(0, 1).cpu()
    if x.dim() == 3:
        x = x.permute(1, 2, 0)
    return (x.numpy() * 255 + 0.5).astype(np.uint8)


def save_png(img: Tensor | np.ndarray, path: Path) -> Path:
    """Write an image atomically; ``img`` is (3, H, W) float in [0, 1] or a uint8 array."""
    arr = to_uint8(img) if isinstance(img, Tensor) else img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_via(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
    return path


def image_grid(
    rows: Sequence[Sequence[Tensor]],
    header: Sequence[str] | None = None,
    pad: int = 2,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile (3, H, W) images (all the same size) into one uint8 picture.

    Args:
        rows: rows of (3, H, W) or (1, H, W) images in [0, 1].
        header: column titles, one line each; a column widens (its images centred) to fit its title, so
            no title is cut off or runs into the next one, and every header is one line high.
        pad: pixels between and around the images.
        row_labels: titles written left of each row (the left margin fits the longest).
    """
    h, w = rows[0][0].shape[-2:]
    ncol = max(len(r) for r in rows)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = draw.textbbox((0, 0), "Ag")[3] + 2
    titles = list(header or [])[:ncol]
    col_w = [max(w, int(draw.textlength(t)) + 2 * pad) for t in titles] + [w] * (ncol - len(titles))
    left = max((int(draw.textlength(t)) for t in row_labels or []), default=-pad) + 2 * pad
    top = line_h if titles else 0
    xs = np.cumsum([left, *(cw + pad for cw in col_w)])  # left edge of each column
    canvas = np.full((top + len(rows) * (h + pad) + pad, int(xs[-1]), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = top + pad + i * (h + pad), int(xs[j]) + (col_w[j] - w) // 2
            canvas[y : y + h, x : x + w] = to_uint8(img.expand(3, -1, -1) if img.shape[0] == 1 else img)
    if titles or row_labels:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for j, title in enumerate(titles):
            draw.text((int(xs[j]) + (col_w[j] - draw.textlength(title)) / 2, 1), title, fill=(0, 0, 0))
        for i, label in enumerate((row_labels or [])[: len(rows)]):
            draw.text((pad, top + pad + i * (h + pad) + (h - line_h) / 2), label, fill=(0, 0, 0))
        canvas = np.asarray(pil)
    return canvas


def save_image_grid(
    rows: Sequence[Sequence[Tensor]],
    path: Path,
    header: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Tile images (see :func:`image_grid`) and write the PNG atomically."""
    return save_png(image_grid(rows, header, row_labels=row_labels), path)


def depth_image(depth: Tensor, mask: Tensor, lo: float, hi: float) -> Tensor:
    """Depth maps (..., H, W) as grey pictures (..., 3, H, W): near ``lo`` white, far ``hi`` dark grey
    (0.25, so the farthest surface still stands out), outside ``mask`` (..., H, W) black."""
    t = ((depth - lo) / max(hi - lo, 1e-8)).clamp(0, 1)
    grey = (1.0 - 0.75 * t) * mask
    return grey.unsqueeze(-3).expand(*grey.shape[:-2], 3, *grey.shape[-2:])


def save_gif(frames: Sequence[np.ndarray], path: Path, fps: float = 8.0) -> Path:
    """Write uint8 HxWx3 frames as an endlessly looping animated GIF, atomically."""
    if not frames:
        raise ValueError("save_gif: no frames")
    images = [Image.fromarray(f) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # GIF stores delays in 1/100 s (8 fps -> 120 ms); browsers slow delays under 20 ms down.
    duration = 10 * max(round(100.0 / fps), 2)
    atomic_save_via(
        path,
        lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
        ),
    )
    return path
