"""Pictures of label transfer: part maps, keypoints on images, and labelled point clouds (PIL only).

Small images are enlarged (nearest neighbour) to at least :data:`MIN_SIDE` pixels so keypoint markers
and text stay readable on 32-pixel test renders.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

MIN_SIDE = 128


def palette(n: int) -> Tensor:
    """``n`` distinct colours (n, 3) in [0, 1]: evenly spaced hues, alternating lightness."""
    cols = [colorsys.hls_to_rgb(i / max(n, 1), 0.5 if i % 2 == 0 else 0.38, 0.85) for i in range(n)]
    return torch.tensor(cols, dtype=torch.float32).reshape(n, 3)


def label_colours(labels: Tensor, num_labels: int) -> Tensor:
    """(...,) int labels → (..., 3) colours; label 0 (background) is light grey."""
    pal = torch.cat([torch.full((1, 3), 0.85), palette(max(num_labels - 1, 1))])
    return pal.to(labels.device)[labels.clamp(0, len(pal) - 1)]


def enlarge(img: Tensor) -> Tensor:
    """(3, S, S) → nearest-neighbour enlarged to at least :data:`MIN_SIDE` pixels."""
    s = img.shape[-1]
    f = max(1, -(-MIN_SIDE // s))
    return img.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) if f > 1 else img


def paint_parts(image: Tensor, ij: Tensor, labels: Tensor, num_labels: int) -> Tensor:
    """Foreground pixels ``ij`` (N, 2) coloured by ``labels`` (N,) over a faded ``image`` (3, S, S)."""
    out = 0.25 * image.float().cpu() + 0.75
    cols = label_colours(labels.cpu(), num_labels)  # (N, 3)
    ij = ij.cpu()
    out[:, ij[:, 0], ij[:, 1]] = 0.2 * image.float().cpu()[:, ij[:, 0], ij[:, 1]] + 0.8 * cols.T
    return out


def _to_pil(img: Tensor) -> Image.Image:
    arr = (img.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(arr)


def _from_pil(im: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def draw_keypoints(
    image: Tensor,
    points: Sequence[tuple[Tensor, str]],
    ids: Tensor,
    num_ids: int,
    lines: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Keypoints on an (enlarged) image.

    Args:
        image: (3, S, S). points: ``(uv (K, 2) at S, style)`` layers, style ``"dot"`` (filled) or
            ``"ring"``. ids: (K,) keypoint ids (colour). lines: optional ``(from_uv, to_uv)`` joined by
            thin lines (prediction → truth).
    Returns:
        (3, S', S') picture.
    """
    s = image.shape[-1]
    big = enlarge(image)
    f = big.shape[-1] / s
    im = _to_pil(big)
    draw = ImageDraw.Draw(im)
    cols = (palette(max(num_ids, 1)) * 255).round().int()
    r = max(2.0, 0.025 * big.shape[-1])
    if lines is not None:
        for a, b in zip(lines[0].cpu().tolist(), lines[1].cpu().tolist()):
            draw.line([(a[0] * f, a[1] * f), (b[0] * f, b[1] * f)], fill=(90, 90, 90), width=1)
    for uv, style in points:
        for (u, v), k in zip(uv.cpu().tolist(), ids.cpu().tolist()):
            if not (np.isfinite(u) and np.isfinite(v)):
                continue
            c = tuple(cols[k % len(cols)].tolist())
            box = [u * f - r, v * f - r, u * f + r, v * f + r]
            if style == "dot":
                draw.ellipse(box, fill=c, outline=(0, 0, 0))
            else:
                draw.ellipse([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline=c, width=2)
    return _from_pil(im)


def view_rotation(elevation_deg: float = 25.0, azimuth_deg: float = 35.0) -> Tensor:
    """A world → picture rotation (3, 3) for scatter plots: picture x right, y down, z away."""
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    rz = torch.tensor(
        [[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]], dtype=torch.float32
    )
    # Looking along -y tilted down: world z up becomes picture -y (up).
    look = torch.tensor([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float32)
    rx = torch.tensor(
        [[1, 0, 0], [0, np.cos(el), -np.sin(el)], [0, np.sin(el), np.cos(el)]], dtype=torch.float32
    )
    return rx @ look @ rz


def scatter_points(
    xyz: Tensor,
    colours: Tensor,
    size: int = 160,
    rotation: Tensor | None = None,
    extent: float | None = None,
    markers: Sequence[tuple[Tensor, Tensor, str]] = (),
) -> Tensor:
    """Orthographic scatter picture of a coloured point cloud, far points drawn first.

    Args:
        xyz: (N, 3) world points; colours: (N, 3) in [0, 1].
        rotation: world → picture rotation (default :func:`view_rotation`).
        extent: half-width in world units shown (default: fits ``xyz``).
        markers: ``(points (K, 3), colours (K, 3), style)`` drawn on top, style ``"dot"`` or ``"ring"``.
    Returns:
        (3, size, size) picture on white.
    """
    rot = view_rotation() if rotation is None else rotation
    p = xyz.float().cpu() @ rot.T
    if extent is None:
        extent = float(p[:, :2].abs().max()) * 1.1 + 1e-6 if len(p) else 1.0
    to_px = lambda q: (q[:, :2] / extent * 0.5 + 0.5) * size  # noqa: E731
    im = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    order = torch.argsort(p[:, 2], descending=True)
    px = to_px(p)
    cols = (colours.float().cpu().clamp(0, 1) * 255).round().int()
    r = max(1.0, size / 160)
    for i in order.tolist():
        x, y = px[i].tolist()
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(cols[i].tolist()))
    for pts, mcols, style in markers:
        mp = to_px(pts.float().cpu() @ rot.T)
        mc = (mcols.float().cpu().clamp(0, 1) * 255).round().int()
        rr = 3 * r + 1
        for (x, y), c in zip(mp.tolist(), mc.tolist()):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            box = [x - rr, y - rr, x + rr, y + rr]
            if style == "dot":
                draw.ellipse(box, fill=tuple(c), outline=(0, 0, 0))
            else:
                draw.ellipse([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline=tuple(c), width=2)
    return _from_pil(im)
