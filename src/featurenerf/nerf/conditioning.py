"""What a query needs besides the points: the encoded source views, and the fast path's gather.

:class:`Conditioning` is the explicit per-batch state every field query takes (the network keeps none).
:func:`bilinear_taps` and :class:`BilinearGather` are the fast field's sampling of the pre-injected
encoder maps (one weighted gather with the four bilinear taps; see :mod:`featurenerf.nerf.model`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from featurenerf.rendering.occupancy import OccupancyGrid


@dataclass
class Conditioning:
    """What the field knows about one batch of objects: encoded source views and their cameras.

    Attributes:
        features: (B, V, C, h, w) pixel-aligned encoder maps of the V source views.
        poses: (B, V, 4, 4) source camera-to-world matrices (OpenCV axes).
        focal: (B, V, 2) and c: (B, V, 2) source intrinsics in pixels of the encoded images.
        image_size: (H, W) of the source images (the frame ``focal`` and ``c`` refer to).
        injected: set by :meth:`FeatureNeRFNet.prepare`: per injected MLP block, the encoder maps after
            that block's injection layer, channels last, (B·V·h·w, d_hidden) rows ordered (b, v, y, x).
            Valid for the weights it was made with, like ``features``.
        occupancy: an occupancy grid of these B objects (:func:`featurenerf.nerf.render_occupancy.
            with_occupancy`); renders that skip empty space evaluate only samples in its occupied cells.
            Valid for the weights it was made with; training renders never use it.
    """

    features: Tensor
    poses: Tensor
    focal: Tensor
    c: Tensor
    image_size: tuple[int, int]
    injected: tuple[Tensor, ...] | None = None
    occupancy: OccupancyGrid | None = None

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    def select(self, index: int) -> Conditioning:
        """The conditioning of object ``index`` alone (batch of 1)."""
        s = slice(index, index + 1)
        injected = None
        if self.injected is not None:
            b = self.batch_size
            injected = tuple(t.reshape(b, -1, t.shape[-1])[s].reshape(-1, t.shape[-1]) for t in self.injected)
        occupancy = None if self.occupancy is None else self.occupancy.select(index)
        return Conditioning(
            self.features[s], self.poses[s], self.focal[s], self.c[s], self.image_size, injected, occupancy
        )


class BilinearGather(torch.autograd.Function):
    """``embedding_bag`` of several tables with the same taps; one transposed sparse matrix for the backward.

    ``embedding_bag``'s own backward sorts the taps again for every table (with a slow 64-bit sort); here
    the taps are sorted once (32-bit keys) into a (T, P) CSR matrix ``S^T`` and each table's gradient is
    ``S^T @ grad``, a sparse-dense product.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, weights: Tensor, *tables: Tensor) -> tuple[Tensor, ...]:
        ctx.save_for_backward(rows, weights)
        ctx.num_rows = tables[0].shape[0]
        return tuple(F.embedding_bag(rows, t, per_sample_weights=weights, mode="sum") for t in tables)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        rows, weights = ctx.saved_tensors
        n_points = rows.shape[0]
        flat = rows.reshape(-1)
        _, order = torch.sort(flat.int(), stable=True)
        counts = torch.bincount(flat, minlength=ctx.num_rows)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        col = torch.div(order, rows.shape[1], rounding_mode="floor")
        # Sparse products run in fp32/fp64 (there is no bf16 sparse kernel on CPU).
        dt = torch.promote_types(grads[0].dtype, torch.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            st = torch.sparse_csr_tensor(
                crow, col, weights.reshape(-1)[order].to(dt), (ctx.num_rows, n_points), check_invariants=False
            )
        table_grads = tuple(
            None if g is None or not need else (st @ g.to(dt)).to(g.dtype)
            for g, need in zip(grads, ctx.needs_input_grad[2:])
        )
        return (None, None, *table_grads)


@dataclass
class FieldInputs:
    """Fast-path MLP inputs of P points over V source views, rows ordered (view, point): encoded points
    ``x`` (V·P, d_in) and the bilinear taps ``rows``/``weights`` (V·P, 4) into the injection tables."""

    x: Tensor
    rows: Tensor
    weights: Tensor
    views: int

    @property
    def num_points(self) -> int:
        return self.x.shape[0] // self.views

    def block(self, start: int, stop: int) -> FieldInputs:
        """Points ``start:stop`` (of every view)."""
        cut = lambda t: t.reshape(self.views, -1, t.shape[-1])[:, start:stop].reshape(-1, t.shape[-1])  # noqa: E731
        return FieldInputs(cut(self.x), cut(self.rows), cut(self.weights), self.views)


def bilinear_taps(
    uv: Tensor, image_size: tuple[int, int], map_size: tuple[int, int], row_offset: Tensor
) -> tuple[Tensor, Tensor]:
    """Rows and weights of the four bilinear taps of pixel positions in a channels-last map.

    Equivalent to ``grid_sample(..., mode="bilinear", padding_mode="border", align_corners=False)`` of a
    map that covers the image exactly: map cell ``j`` has its centre at image pixel ``(j + 0.5) W / w``.

    Args:
        uv: (..., 2) pixel positions in an ``image_size`` = (H, W) image.
        map_size: (h, w) of the map. row_offset: (...) long, the map's first row in the flat table.
    Returns:
        rows (..., 4) long and weights (..., 4) summing to 1, for ``F.embedding_bag(mode="sum")``.
    """
    (hgt, wid), (h, w) = image_size, map_size
    f = uv * uv.new_tensor([w / wid, h / hgt]) - 0.5  # map-cell coordinates, centres at integers
    top = uv.new_tensor([w - 1, h - 1])
    # Border padding; a point at the camera centre projects to nan/inf and is clamped like grid_sample.
    f = torch.minimum(torch.nan_to_num(f, nan=0.0).clamp_min(0.0), top)
    f0 = f.floor()
    t = f - f0
    i0 = f0.long()
    i1 = torch.minimum(i0 + 1, top.long())
    (x0, y0), (x1, y1), (tx, ty) = i0.unbind(-1), i1.unbind(-1), t.unbind(-1)
    base = row_offset[..., None]
    rows = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1) + base
    weights = torch.stack([(1 - tx) * (1 - ty), tx * (1 - ty), (1 - tx) * ty, tx * ty], dim=-1)
    return rows, weights


def per_view(x: Tensor, views: int) -> Tensor:
    """(B, 2) or (B, V, 2) intrinsics → (B, V, 2)."""
    return x[:, None].expand(-1, views, -1) if x.dim() == 2 else x
