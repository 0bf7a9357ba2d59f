"""The generalizable feature field: pixelNeRF's backbone with FeatureNeRF's two extra heads (plain torch).

Heads. FeatureNeRF's feature vector ``v`` (teacher width ``D``) and canonical coordinate ``x̂`` (3) are
*extra output channels* of the MLP's final linear layer (``4 + D + 3`` outputs), not separate branches:
both read the same 512-d last-block activation, so the distilled semantics shape the shared trunk (which is
what makes the internal feature ``v_NeRF`` semantic), and one GEMM serves all heads. Outputs are always
returned by name (``rgb``, ``sigma``, ``features``, ``coords``, ``hidden``), never as packed channels.

Conditioning. :meth:`FeatureNeRFNet.encode` turns source images into an explicit :class:`Conditioning`
object that every query takes as an argument; the network keeps no per-object state.

Exact fine-pass reuse. The MLP is shared between the coarse and fine passes (FeatureNeRF's setting) and is
a deterministic function of a sample's position and ray direction, so the fine pass only evaluates its new
importance and depth-guided samples and merges them with the coarse samples by depth. This gives the same
values (and gradients) as re-evaluating all sorted samples (``reuse_coarse=False``, the reference way).

Fast field evaluation (``fast_field``, on by default; exact up to float rounding). pixelNeRF samples the
512-channel encoder map at every point and sends it through one linear layer per injected block. Bilinear
sampling is linear with weights that sum to one, so the injection layers (and the biases that are added
at the same place) can be applied to the map *once* (:meth:`FeatureNeRFNet.prepare`; a 64×64 map has
4096 cells against 12k–1.5M points per object) and the result sampled with one weighted gather
(``embedding_bag``, channels-last, no transposes). Likewise the feature head is linear, so rendering
composites ``relu(hidden)`` per ray and applies the 512→D head once per ray instead of once per sample.
This removes 3 of the 13 large GEMMs per point and the 512×D head from the per-sample work. Along rays,
the camera-frame inputs of a sample ``o + z d`` are ``o_cam + z d_cam`` from per-ray frames, so no
per-sample matrix product is needed. ``fast_field = False`` runs pixelNeRF's per-point way
(``grid_sample`` + per-point injection); tests and benchmarks compare the two. A subclass that overrides
:meth:`FeatureNeRFNet.query` is rendered through it (the reference way).

Empty-space skipping (render time only, ``skip_empty=True``; training always evaluates every sample).
Samples outside :attr:`FeatureNeRFNet.scene_bound` (a :class:`~featurenerf.rendering.bounds.Sphere` of
``scene_radius`` by default, or a :class:`~featurenerf.rendering.bounds.Box`) never reach the MLP and
have zero density; a ray that misses the bound is background. The coarse pass is marched in
``render_segments`` depth segments and a ray stops once its transmittance is below
``stop_transmittance``; fine samples behind that point, and fine samples with a zero-length interval
(deterministic depth-guided samples coincide, so all but one of them have exactly zero weight), are not
evaluated either. Only the loop over segments is in Python; the samples that survive are evaluated in
one flat batch across objects.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from featurenerf.geometry.cameras import (
    pixel_centers,
    project_points,
    rays_from_pixels,
    rotate_to_camera,
    uv_to_grid,
    world_to_camera_points,
)
from featurenerf.nerf.encoder import EncoderName, build_encoder
from featurenerf.nerf.encoding import PositionalEncoding
from featurenerf.nerf.fused_block import fused_blocks_apply, residual_block
from featurenerf.nerf.mlp import ResnetMLP
from featurenerf.rendering.bounds import Box, Sphere
from featurenerf.rendering.compositing import composite, compositing_weights
from featurenerf.rendering.sampling import depth_guided_samples, importance_samples, stratified_samples

#: Names :meth:`FeatureNeRFNet.render_rays` can return per pass. ``coords`` is the colour-weighted ray
#: average of the canonical-coordinate residual x̂ − x; ``coords_mean`` its unweighted mean over the
#: pass's samples (the release's L_coord reads this one).
RENDERABLE = ("rgb", "depth", "opacity", "features", "coords", "hidden", "coords_mean")


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
    """

    features: Tensor
    poses: Tensor
    focal: Tensor
    c: Tensor
    image_size: tuple[int, int]
    injected: tuple[Tensor, ...] | None = None

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
        return Conditioning(
            self.features[s], self.poses[s], self.focal[s], self.c[s], self.image_size, injected
        )


class _BilinearGather(torch.autograd.Function):
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
class _Inputs:
    """Fast-path MLP inputs of P points over V source views, rows ordered (view, point): encoded points
    ``x`` (V·P, d_in) and the bilinear taps ``rows``/``weights`` (V·P, 4) into the injection tables."""

    x: Tensor
    rows: Tensor
    weights: Tensor
    views: int

    @property
    def num_points(self) -> int:
        return self.x.shape[0] // self.views

    def block(self, start: int, stop: int) -> _Inputs:
        """Points ``start:stop`` (of every view)."""
        cut = lambda t: t.reshape(self.views, -1, t.shape[-1])[:, start:stop].reshape(-1, t.shape[-1])  # noqa: E731
        return _Inputs(cut(self.x), cut(self.rows), cut(self.weights), self.views)


def _default_dirs(xyz: Tensor) -> Tensor:
    """+z for every point: the view direction used when a caller has none."""
    dirs = torch.zeros_like(xyz)
    dirs[..., 2] = 1.0
    return dirs


@dataclass
class _Samples:
    """Field values at the evaluated samples of an (R, N) grid of ray samples.

    ``values`` hold one row per evaluated sample (S, ...); ``index`` (S,) gives each row's flat position
    in the (R, N) grid, or is ``None`` when every sample was evaluated, in order. ``sigma`` is dense
    (R, N) with zero density where nothing was evaluated.
    """

    values: dict[str, Tensor]
    index: Tensor | None
    sigma: Tensor


def _residual_sum(samples: _Samples, n_rays: int, n: int) -> tuple[Tensor, Tensor]:
    """[coords_mean] Per-ray sum (R, 3) of the coordinate residual over the evaluated samples, and their
    count (R,) (every sample in training; render-time skipping leaves out the skipped ones)."""
    res = samples.values["coords_res"]
    if samples.index is None:
        return res.reshape(n_rays, n, 3).sum(1), res.new_full((n_rays,), float(n))
    ray = torch.div(samples.index, n, rounding_mode="floor")
    total = res.new_zeros(n_rays, 3).index_add_(0, ray, res)
    return total, torch.bincount(ray, minlength=n_rays).to(res.dtype)


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


def _per_view(x: Tensor, views: int) -> Tensor:
    """(B, 2) or (B, V, 2) intrinsics → (B, V, 2)."""
    return x[:, None].expand(-1, views, -1) if x.dim() == 2 else x


class FeatureNeRFNet(nn.Module):
    """pixelNeRF backbone + FeatureNeRF heads. Every default is the paper's value (PAPER.md).

    Args:
        feature_dim: width D of the distilled feature head (the teacher's ``feature_dim``).
        encoder: image encoder trunk: ``"resnet34"`` (the paper's) or ``"efficientnet_lite0"`` (ImageNet
            weights); the MLP's input width follows from it.
        encoder_layers: encoder levels kept (ResNet-34: 4 → 512-channel maps; EfficientNet-Lite0: 4 → 192).
        encoder_weights: ``None`` for the encoder's default initialisation (ResNet-34 random,
            EfficientNet-Lite0 ImageNet), a local state dict of its layout, or ``"random"``.
        d_hidden: MLP width. n_blocks: residual blocks. n_inject: blocks that receive the image feature.
        combine_layer: block before which the hidden state is averaged over source views.
        num_freqs, freq_factor: positional encoding of the camera-frame position.
        use_viewdirs: append the camera-frame view direction to the MLP input.
        n_coarse: stratified samples. n_fine: importance samples. n_fine_depth: samples around the
            coarse expected depth, with standard deviation ``depth_std``.
        near, far: ray bounds in world units.
        background: "white" or "black": the colour composited behind the object.
        reuse_coarse: fine pass evaluates only its new samples (exact; see the module docstring).
        scene_radius: empty-space skipping at render time: samples farther than this from the origin
            get zero density and skip the MLP, rays that miss the sphere are background; ``None`` off.
            (Set :attr:`scene_bound` to a :class:`~featurenerf.rendering.bounds.Box` for a box.)
        stop_transmittance: render-time early ray termination: samples behind the point where the
            transmittance falls below this are not evaluated; 0 turns it off.
        chunk: rays per MLP call when rendering whole images (memory does not grow with image size).

    Attributes (not constructor arguments; they never change results beyond float rounding):
        fast_field: evaluate the field the fast way (module docstring); ``False`` is pixelNeRF's per-point
            way, kept as the reference for tests and benchmarks.
        render_segments: depth segments the coarse pass is marched in when rendering with early
            termination.
    """

    def __init__(
        self,
        feature_dim: int = 384,
        encoder: EncoderName = "resnet34",
        encoder_layers: int = 4,
        encoder_weights: str | None = None,
        d_hidden: int = 512,
        n_blocks: int = 5,
        n_inject: int = 3,
        combine_layer: int = 3,
        num_freqs: int = 6,
        freq_factor: float = 1.5,
        use_viewdirs: bool = True,
        n_coarse: int = 64,
        n_fine: int = 16,
        n_fine_depth: int = 16,
        depth_std: float = 0.01,
        near: float = 0.8,
        far: float = 1.8,
        background: str = "white",
        reuse_coarse: bool = True,
        scene_radius: float | None = None,
        stop_transmittance: float = 0.0,
        chunk: int = 4096,
    ) -> None:
        super().__init__()
        if background not in ("white", "black"):
            raise ValueError(f"background must be 'white' or 'black', got {background!r}")
        if feature_dim < 0:
            raise ValueError(f"feature_dim must be >= 0, got {feature_dim}")
        self.feature_dim = feature_dim
        self.encoder = build_encoder(encoder, num_layers=encoder_layers, weights=encoder_weights)
        self.posenc = PositionalEncoding(num_freqs, freq_factor)
        self.use_viewdirs = use_viewdirs
        d_in = self.posenc.d_out + (3 if use_viewdirs else 0)
        self.mlp = ResnetMLP(
            d_in=d_in,
            d_latent=self.encoder.out_channels,
            d_hidden=d_hidden,
            d_out=4 + feature_dim + 3,
            n_blocks=n_blocks,
            n_inject=n_inject,
            combine_layer=combine_layer,
        )
        # The density output starts as a thin uniform fog (zero weights, bias 1): with the usual random
        # init, sigma = w . relu(h) has one sign for nearly every point (relu(h) >= 0 and is correlated
        # across points), so about half of all initialisations have zero density everywhere, the relu
        # passes no gradient and training never starts. Colour, features and coordinates keep the
        # random init.
        with torch.no_grad():
            self.mlp.lin_out.weight[3].zero_()
            self.mlp.lin_out.bias[3] = 1.0
        self.d_hidden = d_hidden
        self.n_coarse, self.n_fine, self.n_fine_depth = n_coarse, n_fine, n_fine_depth
        self.depth_std = depth_std
        self.near, self.far = near, far
        self.background_value = 1.0 if background == "white" else 0.0
        self.reuse_coarse = reuse_coarse
        self.scene_radius = scene_radius
        self.stop_transmittance = stop_transmittance
        self.chunk = chunk
        self.fast_field = True
        self.render_segments = 4
        self._scene_bound: Sphere | Box | None = None
        self._compiled_trunk = None

    @property
    def scene_bound(self) -> Sphere | Box | None:
        """Where the field may have density at render time: the explicitly set bound, else a sphere of
        ``scene_radius`` around the origin, else ``None`` (no bound)."""
        if self._scene_bound is not None:
            return self._scene_bound
        return None if self.scene_radius is None else Sphere(float(self.scene_radius))

    @scene_bound.setter
    def scene_bound(self, bound: Sphere | Box | None) -> None:
        self._scene_bound = bound

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], **overrides: Any) -> FeatureNeRFNet:
        """Build from a flat mapping (e.g. a checkpoint's or the LightningModule's hyper-parameters),
        taking the keys this constructor accepts and ignoring the rest."""
        accepted = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in {**hparams, **overrides}.items() if k in accepted})

    # ------------------------------------------------------------------ encoding
    def encode(self, images: Tensor, poses: Tensor, focal: Tensor, c: Tensor) -> Conditioning:
        """Encode each source view once.

        Args:
            images: (B, V, 3, H, W) in [0, 1]. poses: (B, V, 4, 4) camera-to-world.
            focal, c: (B, 2) or (B, V, 2) intrinsics in pixels of these images.
        """
        b, v, _, h, w = images.shape
        feats = self.encoder(rearrange(images, "b v c h w -> (b v) c h w"))
        feats = rearrange(feats, "(b v) c h w -> b v c h w", b=b)
        return Conditioning(feats, poses, _per_view(focal, v), _per_view(c, v), (h, w))

    def prepare(self, cond: Conditioning) -> Conditioning:
        """Apply the MLP's injection layers to the encoder maps once (see the module docstring).

        Returns a copy of ``cond`` with :attr:`Conditioning.injected` set (``cond`` itself when already
        prepared). The biases that pixelNeRF adds at the same place as each injection (the input layer's
        before block 0, block ``i - 1``'s last bias before block ``i``) are folded into the maps; the
        fast trunk leaves them out. Differentiable: gradients reach the encoder and the MLP.
        """
        if cond.injected is not None:
            return cond
        mlp = self.mlp
        rows = rearrange(cond.features, "b v c h w -> (b v h w) c")
        folded = [mlp.lin_in.bias] + [mlp.blocks[i - 1].fc1.bias for i in range(1, len(mlp.lin_z))]
        injected = tuple(
            torch.addmm(lin.bias + extra, rows, lin.weight.t()) for lin, extra in zip(mlp.lin_z, folded)
        )
        return dataclasses.replace(cond, injected=injected)

    def _fast_rendering(self) -> bool:
        # A subclass that overrides ``query`` gets the reference renderer, which goes through ``query``.
        return self.fast_field and type(self).query is FeatureNeRFNet.query

    def _use_fast(self, cond: Conditioning, points_per_object: int) -> bool:
        # Preparing costs one GEMM per map cell; worth it once there are at least as many points.
        h, w = cond.features.shape[-2:]
        return self.fast_field and (cond.injected is not None or points_per_object >= h * w)

    # ------------------------------------------------------------------ point queries
    def _mlp_inputs(self, cond: Conditioning, xyz: Tensor, viewdirs: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-source-view MLP inputs for points xyz (B, P, 3): ((B, V, P, d_in), (B, V, P, C))."""
        b, v = cond.poses.shape[:2]
        poses = cond.poses[:, :, None]  # (B, V, 1, 4, 4) broadcasts over points
        uv, _ = project_points(xyz[:, None], poses, cond.focal[:, :, None], cond.c[:, :, None])
        grid = uv_to_grid(uv, cond.image_size[1], cond.image_size[0])  # (B, V, P, 2)
        # Encoder maps cover the image exactly, so align_corners=False keeps pixel centres at j + 0.5.
        latent = F.grid_sample(
            rearrange(cond.features, "b v c h w -> (b v) c h w"),
            rearrange(grid, "b v p t -> (b v) p 1 t"),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        latent = rearrange(latent, "(b v) c p 1 -> b v p c", b=b)
        # Rotation only (no translation), as pixelNeRF: the input is the world point in camera axes.
        x = self.posenc(rotate_to_camera(xyz[:, None], poses))
        if self.use_viewdirs:
            if viewdirs is None:
                raise ValueError("this model uses view directions; pass viewdirs")
            x = torch.cat([x, rotate_to_camera(viewdirs[:, None], poses)], dim=-1)
        return x, latent

    def _camera_inputs(
        self,
        cond: Conditioning,
        cam: Tensor,
        rot: Tensor,
        dirs: Tensor | None,
        focal: Tensor,
        c: Tensor,
        first_row: Tensor,
    ) -> _Inputs:
        """Fast-path MLP inputs from points already in each source camera's frame.

        Args:
            cam: (P, V, 3) points in camera coordinates (for the projection); rot: (P, V, 3) the world
                points rotated into camera axes, without translation (pixelNeRF's position input);
            dirs: (P, V, 3) ray directions in camera axes, or ``None`` without view directions;
            focal, c: (P, V, 2) source intrinsics; first_row: (P, V) each map's first row in the tables.
        """
        depth = cam[..., 2:]
        depth = torch.where(depth.abs() < 1e-8, torch.full_like(depth, 1e-8), depth)  # as project_points
        uv = cam[..., :2] / depth * focal + c
        x = self.posenc(rot)
        if self.use_viewdirs:
            x = torch.cat([x, dirs], dim=-1)
        rows, weights = bilinear_taps(uv, cond.image_size, tuple(cond.features.shape[-2:]), first_row)
        flat = lambda t: rearrange(t, "p v k -> (v p) k")  # noqa: E731
        return _Inputs(flat(x), flat(rows), flat(weights), cam.shape[1])

    def _first_rows(self, cond: Conditioning, obj: Tensor) -> Tensor:
        """(N, V) first table row of each source view's map of objects ``obj`` (N,)."""
        v = cond.poses.shape[1]
        h, w = cond.features.shape[-2:]
        return (obj[:, None] * v + torch.arange(v, device=obj.device)) * (h * w)

    def _point_inputs(self, cond: Conditioning, xyz: Tensor, dirs: Tensor | None, obj: Tensor) -> _Inputs:
        """Fast-path inputs of P free points xyz (P, 3) with directions (P, 3) of objects ``obj`` (P,)."""
        poses = cond.poses[obj]  # (P, V, 4, 4): each point with its object's source cameras
        pts = xyz[:, None]
        cam = world_to_camera_points(pts, poses)
        rot = rotate_to_camera(pts, poses)
        dirs_cam = rotate_to_camera(dirs[:, None], poses) if self.use_viewdirs else None
        return self._camera_inputs(
            cond, cam, rot, dirs_cam, cond.focal[obj], cond.c[obj], self._first_rows(cond, obj)
        )

    def _ray_frames(self, cond: Conditioning, o: Tensor, d: Tensor, obj: Tensor) -> dict[str, Tensor]:
        """Rays (R, 3) of objects ``obj`` (R,) in every source camera's frame, once per render call:
        a sample ``o + z d`` is then ``o_cam + z d_cam`` there (no per-sample matrix products)."""
        poses = cond.poses[obj]  # (R, V, 4, 4)
        return {
            "o_cam": world_to_camera_points(o[:, None], poses),
            "o_rot": rotate_to_camera(o[:, None], poses),
            "d_cam": rotate_to_camera(d[:, None], poses),
            "focal": cond.focal[obj],
            "c": cond.c[obj],
            "first_row": self._first_rows(cond, obj),
        }

    def _ray_inputs(
        self, cond: Conditioning, frames: dict[str, Tensor], z: Tensor, index: Tensor | None
    ) -> _Inputs:
        """Fast-path inputs of the samples z (R, N) of the rays in ``frames``: all of them in order, or
        those at flat positions ``index`` (S,) of the (R, N) grid."""
        n_rays, n = z.shape
        if index is None:
            per_ray = {k: v[:, None].expand(n_rays, n, *v.shape[1:]).flatten(0, 1) for k, v in frames.items()}
            zz = z.reshape(-1, 1, 1)
        else:
            ray = torch.div(index, n, rounding_mode="floor")
            per_ray = {k: v[ray] for k, v in frames.items()}
            zz = z.reshape(-1)[index, None, None]
        d_cam = per_ray["d_cam"]
        return self._camera_inputs(
            cond,
            per_ray["o_cam"] + zz * d_cam,
            per_ray["o_rot"] + zz * d_cam,
            d_cam if self.use_viewdirs else None,
            per_ray["focal"],
            per_ray["c"],
            per_ray["first_row"],
        )

    def _trunk(
        self, x: Tensor, rows: Tensor, weights: Tensor, injected: tuple[Tensor, ...], views: int
    ) -> Tensor:
        """The MLP up to its last residual block, fast way: x (V·P, d_in) → hidden (P, d_hidden).

        Same function as :class:`~featurenerf.nerf.mlp.ResnetMLP` (biases folded into ``injected`` by
        :meth:`prepare`); each injection is a weighted gather fused with the residual add.
        """
        mlp = self.mlp
        dt = injected[0].dtype  # bf16 under autocast: the in-place ops below need one dtype
        if torch.compiler.is_compiling():
            weights = weights.to(dt)
            sampled = [F.embedding_bag(rows, t, per_sample_weights=weights, mode="sum") for t in injected]
        else:
            sampled = list(_BilinearGather.apply(rows, weights.to(dt), *injected))

        def inject(i: int) -> Tensor:
            return sampled[i]

        h = inject(0).addmm_(x.to(dt), mlp.lin_in.weight.t().to(dt))
        fused = fused_blocks_apply(h)
        for i, block in enumerate(mlp.blocks):
            if i == mlp.combine_layer and views > 1:
                h = h.reshape(views, -1, h.shape[-1]).mean(0)
            if fused:  # same function, element-wise work in place (nerf/fused_block.py)
                extra = inject(i + 1) if i + 1 < len(mlp.lin_z) else block.fc1.bias
                h = residual_block(h, extra, block.fc0.weight, block.fc0.bias, block.fc1.weight)
                continue
            a = F.linear(torch.relu(h), block.fc0.weight.to(dt), block.fc0.bias.to(dt)).relu_()
            # h + fc1(a) (+ next injection): the residual is the GEMM's accumulator, not a separate add.
            base = inject(i + 1).add_(h) if i + 1 < len(mlp.lin_z) else h + block.fc1.bias.to(dt)
            h = base.addmm_(a, block.fc1.weight.t().to(dt))
        if mlp.combine_layer >= len(mlp.blocks) and views > 1:
            h = h.reshape(views, -1, h.shape[-1]).mean(0)
        return h

    def _trunk_impl(self):
        # model.compile: the LightningModule compiles ``self.mlp``; compile the fast trunk along with it.
        if hasattr(self.mlp, "_orig_mod"):
            if self._compiled_trunk is None:
                self._compiled_trunk = torch.compile(self._trunk)
            return self._compiled_trunk
        return self._trunk

    def _field(
        self, cond: Conditioning, inputs: _Inputs, heads: str = "full", keep: Iterable[str] = ()
    ) -> dict[str, Tensor]:
        """Fast field at the P points of ``inputs``; values are (P, ...).

        ``heads``: "full" (every output, per point), "hidden" (the last block output only) or "render"
        (rgb, sigma, coords per point; plus ``relu_hidden`` and/or ``hidden`` when named in ``keep``:
        rendering composites them per ray). Without autograd, points go through in bounded blocks so
        memory does not grow with the number of points.
        """
        cond = self.prepare(cond)
        keep = tuple(keep)
        block = self.chunk * 16
        n = inputs.num_points
        if n > block and not torch.is_grad_enabled():
            parts = [self._field(cond, inputs.block(s, s + block), heads, keep) for s in range(0, n, block)]
            return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        x, rows, weights = inputs.x, inputs.rows, inputs.weights
        h = self._trunk_impl()(x, rows, weights, cond.injected, cond.poses.shape[1])
        if heads == "hidden":
            return {"hidden": h}
        r = torch.relu(h)
        lin, d = self.mlp.lin_out, self.feature_dim
        if heads == "full":
            out = F.linear(r, lin.weight, lin.bias)
            return {
                "rgb": torch.sigmoid(out[:, :3]),
                "sigma": torch.relu(out[:, 3]),
                "features": out[:, 4 : 4 + d],
                "coords": out[:, 4 + d : 7 + d],
                "hidden": h,
            }
        # Per-sample heads only: the D-wide feature head is applied per ray after compositing.
        small = F.linear(
            r, torch.cat([lin.weight[:4], lin.weight[4 + d :]]), torch.cat([lin.bias[:4], lin.bias[4 + d :]])
        )
        res = {"rgb": torch.sigmoid(small[:, :3]), "sigma": torch.relu(small[:, 3]), "coords": small[:, 4:7]}
        if "relu_hidden" in keep:
            res["relu_hidden"] = r
        if "hidden" in keep:
            res["hidden"] = h
        return res

    def query(self, cond: Conditioning, xyz: Tensor, viewdirs: Tensor | None = None) -> dict[str, Tensor]:
        """Evaluate the field at world points.

        Args:
            xyz: (B, P, 3) world points; viewdirs: (B, P, 3) unit ray directions (a fixed direction is
                fine for direction-independent outputs; ``None`` uses +z for every point).
        Returns:
            ``rgb`` (B, P, 3) in [0, 1], ``sigma`` (B, P) >= 0, ``features`` (B, P, D), ``coords``
            (B, P, 3) canonical-coordinate prediction, ``hidden`` (B, P, d_hidden) last block output.
        """
        b, p = xyz.shape[:2]
        if self._use_fast(cond, p):
            obj = torch.arange(b, device=xyz.device).repeat_interleave(p)
            dirs = _default_dirs(xyz) if viewdirs is None else viewdirs
            dirs = dirs.reshape(-1, 3)
            out = self._field(cond, self._point_inputs(cond, xyz.reshape(-1, 3), dirs, obj), "full")
            return {k: v.reshape(b, p, *v.shape[1:]) for k, v in out.items()}
        if viewdirs is None and self.use_viewdirs:
            viewdirs = _default_dirs(xyz)
        x, latent = self._mlp_inputs(cond, xyz, viewdirs)
        out, hidden = self.mlp(x, latent)
        d = self.feature_dim
        return {
            "rgb": torch.sigmoid(out[..., :3]),
            "sigma": torch.relu(out[..., 3]),
            "features": out[..., 4 : 4 + d],
            "coords": out[..., 4 + d : 7 + d],
            "hidden": hidden,
        }

    def point_features(self, cond: Conditioning, xyz: Tensor, viewdirs: Tensor | None = None) -> Tensor:
        """The internal feature ``v_NeRF`` at world points: (B, N, 3) → (B, N, d_hidden); (N, 3) with a
        batch-1 conditioning → (N, d_hidden). Not normalised (use ``F.normalize(..., dim=-1)``)."""
        squeeze = xyz.dim() == 2
        if squeeze:
            xyz = xyz[None]
            viewdirs = None if viewdirs is None else viewdirs[None]
        b, n = xyz.shape[:2]
        if self._use_fast(cond, n):
            obj = torch.arange(b, device=xyz.device).repeat_interleave(n)
            dirs = (_default_dirs(xyz) if viewdirs is None else viewdirs).reshape(-1, 3)
            inputs = self._point_inputs(cond, xyz.reshape(-1, 3), dirs, obj)
            hidden = self._field(cond, inputs, "hidden")["hidden"].reshape(b, n, -1)
            return hidden[0] if squeeze else hidden
        outs = [
            self.query(cond, part, None if viewdirs is None else viewdirs[:, i : i + part.shape[1]])["hidden"]
            for i, part in zip(range(0, xyz.shape[1], self.chunk * 16), xyz.split(self.chunk * 16, dim=1))
        ]
        hidden = torch.cat(outs, dim=1)
        return hidden[0] if squeeze else hidden

    # ------------------------------------------------------------------ rendering
    def render_rays(
        self,
        cond: Conditioning,
        origins: Tensor,
        dirs: Tensor,
        outputs: Iterable[str] = ("rgb", "depth", "opacity", "features", "coords"),
        perturb: bool = False,
        skip_empty: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, dict[str, Tensor]]:
        """Coarse and fine volume rendering of rays.

        Args:
            origins, dirs: (B, R, 3) world rays with unit directions.
            outputs: names from :data:`RENDERABLE`.
            perturb: jitter the samples (training); deterministic otherwise.
            skip_empty: render-time empty-space skipping and early termination (:attr:`scene_bound`,
                ``stop_transmittance``; see the module docstring); training never skips.
            generator: random source for ``perturb`` (reproducible, resumable runs).
        Returns:
            ``{"coarse": {...}, "fine": {...}}``, each name mapping to (B, R, C) or (B, R).
        """
        outputs = tuple(outputs)
        for name in outputs:
            if name not in RENDERABLE:
                raise ValueError(f"unknown output {name!r}; expected some of {', '.join(RENDERABLE)}")
        if not self._fast_rendering():
            return self._render_rays_reference(cond, origins, dirs, outputs, perturb, skip_empty, generator)
        return self._render(cond, origins, dirs, outputs, perturb, skip_empty, generator, ("coarse", "fine"))

    def _render(
        self,
        cond: Conditioning,
        origins: Tensor,
        dirs: Tensor,
        outputs: tuple[str, ...],
        perturb: bool,
        skip_empty: bool,
        generator: torch.Generator | None,
        passes: tuple[str, ...],
    ) -> dict[str, dict[str, Tensor]]:
        """Fast rendering (flat samples, composited without gathering per-sample values)."""
        b, r, _ = origins.shape
        n_rays = b * r
        o, d = origins.reshape(n_rays, 3), dirs.reshape(n_rays, 3)
        obj = torch.arange(b, device=o.device).repeat_interleave(r)  # object of each ray
        near = o.new_full((n_rays,), self.near)
        far = o.new_full((n_rays,), self.far)
        cond = self.prepare(cond)
        frames = self._ray_frames(cond, o, d, obj)
        keep = tuple(k for k, want in (("relu_hidden", "features"), ("hidden", "hidden")) if want in outputs)
        bound = self.scene_bound if skip_empty else None
        stop = self.stop_transmittance if skip_empty else 0.0

        z_c = stratified_samples(near, far, self.n_coarse, perturb, generator)
        inside_c = None if bound is None else bound.contains(o[:, None] + z_c[..., None] * d[:, None])
        if stop > 0:
            coarse = self._evaluate_marching(cond, frames, o, d, z_c, far, keep, inside_c, stop)
        else:
            coarse = self._evaluate(cond, frames, o, d, z_c, keep, inside_c)
        w_c = compositing_weights(z_c, coarse.sigma, far)
        depth_c = (w_c * z_c).sum(-1)
        z_new = torch.cat(
            [
                importance_samples(w_c, near, far, self.n_fine, perturb, generator),
                depth_guided_samples(
                    depth_c, near, far, self.n_fine_depth, self.depth_std, perturb, generator
                ),
            ],
            dim=-1,
        )
        z_f, order = torch.cat([z_c, z_new], dim=-1).sort(dim=-1)
        n_c = self.n_coarse
        if self.reuse_coarse:
            alive = None
            if skip_empty:
                # A sample whose interval to the next one is empty has weight exactly 0 (deterministic
                # depth-guided samples coincide): skipping it is exact.
                gaps = torch.cat([z_f[:, 1:] - z_f[:, :-1], (far[:, None] - z_f[:, -1:]).clamp_min(0)], -1)
                alive = torch.empty_like(gaps).scatter_(1, order, gaps)[:, n_c:] > 0
                if bound is not None:
                    alive &= bound.contains(o[:, None] + z_new[..., None] * d[:, None])
                if stop > 0:
                    alive &= self._still_visible(w_c, z_c, z_new)
            new = self._evaluate(cond, frames, o, d, z_new, keep, alive)
            sigma_f = torch.cat([coarse.sigma, new.sigma], dim=-1).gather(1, order)
            w_f = compositing_weights(z_f, sigma_f, far)
            # Fine weights back in evaluation order, so values are summed where they are (no gathers).
            w_fc, w_fn = torch.zeros_like(w_f).scatter(1, order, w_f).split([n_c, z_new.shape[1]], dim=1)
            # The coarse values serve both passes: one read of them for both weight sets.
            pass_weights = {"coarse": w_c, "fine": w_fc} if "coarse" in passes else {"fine": w_fc}
            sums = dict(zip(pass_weights, self._weighted_sums(coarse, list(pass_weights.values()), keep)))
            fine_new = self._weighted_sums(new, [w_fn], keep)[0]
            sums["fine"] = {k: v + fine_new[k] for k, v in sums["fine"].items()}
        else:
            alive = None
            if skip_empty and bound is not None:
                alive = bound.contains(o[:, None] + z_f[..., None] * d[:, None])
            fine = self._evaluate(cond, frames, o, d, z_f, keep, alive)
            w_f = compositing_weights(z_f, fine.sigma, far)
            sums = {"fine": self._weighted_sums(fine, [w_f], keep)[0]}
            if "coarse" in passes:
                sums["coarse"] = self._weighted_sums(coarse, [w_c], keep)[0]

        # [coords_mean] unweighted per-ray mean of x̂ − x over each pass's samples (release L_coord).
        if "coords_mean" in outputs:
            means = {"coarse": _residual_sum(coarse, n_rays, z_c.shape[1])}
            if self.reuse_coarse:
                extra = _residual_sum(new, n_rays, z_new.shape[1])
                means["fine"] = (means["coarse"][0] + extra[0], means["coarse"][1] + extra[1])
            else:
                means["fine"] = _residual_sum(fine, n_rays, z_f.shape[1])
            for name, (total, count) in means.items():
                if name in sums:
                    sums[name]["coords_mean"] = total / count.clamp_min(1)[:, None]

        def finish(w: Tensor, z: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
            opacity = w.sum(-1)
            res: dict[str, Tensor] = {}
            for name in outputs:
                if name == "rgb":
                    res["rgb"] = s["rgb"] + (1.0 - opacity[:, None]) * self.background_value
                elif name == "depth":
                    res["depth"] = (w * z).sum(-1)
                elif name == "opacity":
                    res["opacity"] = opacity
                elif name == "features":
                    # Σ w (W r + b) = W (Σ w r) + b Σ w: the head is linear, so apply it once per ray.
                    head = self.mlp.lin_out
                    wf, bf = head.weight[4 : 4 + self.feature_dim], head.bias[4 : 4 + self.feature_dim]
                    res["features"] = F.linear(s["relu_hidden"], wf) + opacity[:, None] * bf
                elif name == "coords":
                    res["coords"] = s["coords_res"]
                elif name == "coords_mean":
                    res["coords_mean"] = s["coords_mean"]
                elif name == "hidden":
                    res["hidden"] = s["hidden"]
            return {k: v.reshape(b, r, *v.shape[1:]) for k, v in res.items()}

        out = {"fine": finish(w_f, z_f, sums["fine"])}
        if "coarse" in passes:
            out = {"coarse": finish(w_c, z_c, sums["coarse"]), **out}
        return out

    def _evaluate(
        self,
        cond: Conditioning,
        frames: dict[str, Tensor],
        o: Tensor,
        d: Tensor,
        z: Tensor,
        keep: tuple[str, ...],
        alive: Tensor | None = None,
    ) -> _Samples:
        """Field at the samples z (R, N) of rays o, d (R, 3) (``frames`` from :meth:`_ray_frames`); with
        ``alive`` (R, N) bool, only those samples (in one flat batch across rays and objects)."""
        n_rays, n = z.shape
        index = None if alive is None else alive.reshape(-1).nonzero().squeeze(1)
        values = self._field(cond, self._ray_inputs(cond, frames, z, index), "render", keep)
        if index is None:
            xyz = (o[:, None] + z[..., None] * d[:, None]).reshape(-1, 3)
        else:
            ray = torch.div(index, n, rounding_mode="floor")
            xyz = o[ray] + z.reshape(-1)[index, None] * d[ray]
        values["coords_res"] = values.pop("coords") - xyz  # L_coord's residual against the true position
        sigma = values.pop("sigma")
        if index is None:
            sigma = sigma.reshape(n_rays, n)
        else:
            sigma = sigma.new_zeros(n_rays * n).index_put((index,), sigma).reshape(n_rays, n)
        return _Samples(values, index, sigma)

    def _evaluate_marching(
        self,
        cond: Conditioning,
        frames: dict[str, Tensor],
        o: Tensor,
        d: Tensor,
        z: Tensor,
        far: Tensor,
        keep: tuple[str, ...],
        inside: Tensor | None,
        stop: float,
    ) -> _Samples:
        """Coarse samples marched in ``render_segments`` depth segments; after each, rays whose
        transmittance fell below ``stop`` are not evaluated any further (their later samples get zero
        density, which changes the render by less than ``stop`` per ray)."""
        n_rays, n = z.shape
        deltas = torch.cat([z[:, 1:] - z[:, :-1], (far[:, None] - z[:, -1:]).clamp_min(0)], dim=-1)
        trans = z.new_ones(n_rays)
        sigma = z.new_zeros(n_rays, n)
        values: dict[str, list[Tensor]] = {}
        index: list[Tensor] = []
        bounds = torch.linspace(0, n, self.render_segments + 1).round().long().tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            alive = torch.zeros_like(z, dtype=torch.bool)
            alive[:, lo:hi] = (trans > stop)[:, None]
            if inside is not None:
                alive &= inside
            part = self._evaluate(cond, frames, o, d, z, keep, alive)
            sigma = sigma + part.sigma
            for k, v in part.values.items():
                values.setdefault(k, []).append(v)
            index.append(part.index)
            # Same product as compositing_weights, so the stop decision matches the final weights.
            trans = trans * (1.0 - (1.0 - torch.exp(-sigma[:, lo:hi] * deltas[:, lo:hi])) + 1e-10).prod(-1)
        return _Samples({k: torch.cat(v) for k, v in values.items()}, torch.cat(index), sigma)

    @staticmethod
    def _weighted_sums(samples: _Samples, weights: list[Tensor], keep: tuple[str, ...]) -> list[dict]:
        """``Σ_i w_i v_i`` per ray of the sample values, for each weight list (one per pass).

        ``weights`` holds one (R, N) tensor per pass. Values every pass needs (rgb, the
        coordinate residual, and those in ``keep``) are summed in one ``bmm`` for all passes when every
        sample was evaluated, and with ``index_add`` over the evaluated samples otherwise.
        """
        names = ("rgb", "coords_res", *keep)
        ws = weights
        n_rays, n = ws[0].shape
        out: list[dict[str, Tensor]] = [{} for _ in ws]
        if samples.index is None:
            stacked = torch.stack(ws, dim=1)  # (R, passes, N): one read of the values for all passes
            for name in names:
                v = samples.values[name]
                summed = torch.bmm(stacked.to(v.dtype), v.reshape(n_rays, n, -1))
                for k in range(len(ws)):
                    out[k][name] = summed[:, k]
            return out
        ray = torch.div(samples.index, n, rounding_mode="floor")
        for k, w in enumerate(ws):
            wk = w.reshape(-1)[samples.index]
            for name in names:
                v = samples.values[name] * wk[:, None]
                out[k][name] = v.new_zeros(n_rays, v.shape[-1]).index_add_(0, ray, v)
        return out

    # ------------------------------------------------------------------ reference rendering
    def _composite_pass(
        self,
        z: Tensor,
        raw: dict[str, Tensor],
        xyz: Tensor,
        far: Tensor,
        outputs: Iterable[str],
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Composite one pass. z (R, N); raw values (R, N, ...); xyz (R, N, 3). Returns values and weights."""
        w = compositing_weights(z, raw["sigma"], far)
        opacity = w.sum(-1)
        res: dict[str, Tensor] = {}
        for name in outputs:
            if name == "rgb":
                res["rgb"] = composite(w, raw["rgb"]) + (1.0 - opacity[:, None]) * self.background_value
            elif name == "depth":
                res["depth"] = (w * z).sum(-1)
            elif name == "opacity":
                res["opacity"] = opacity
            elif name == "features":
                res["features"] = composite(w, raw["features"])  # v̂ = Σ w v, no opacity normalisation
            elif name == "coords":
                # Residual of the canonical-coordinate head against the true sample position,
                # averaged along the ray with the colour weights (zero on a perfect prediction).
                res["coords"] = composite(w, raw["coords"] - xyz)
            elif name == "coords_mean":
                # [coords_mean] unweighted mean of the residual over the pass's samples (release L_coord).
                res["coords_mean"] = (raw["coords"] - xyz).mean(-2)
            elif name == "hidden":
                res["hidden"] = composite(w, raw["hidden"])
            else:
                raise ValueError(f"unknown output {name!r}; expected some of {', '.join(RENDERABLE)}")
        return res, w

    def _query_rays(
        self, cond: Conditioning, origins: Tensor, dirs: Tensor, z: Tensor, alive: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Field values at samples z (B, R, N) along rays (B, R, 3). With ``alive`` (B, R, N) bool, only
        those samples are evaluated (others get zero density and zero values)."""
        b, r, n = z.shape
        xyz = origins[:, :, None] + z[..., None] * dirs[:, :, None]
        vd = dirs[:, :, None].expand(-1, -1, n, -1)
        if alive is None:
            raw = self.query(cond, xyz.reshape(b, r * n, 3), vd.reshape(b, r * n, 3))
            return {k: v.reshape(b, r, n, *v.shape[2:]) for k, v in raw.items()}
        out: dict[str, Tensor] = {}
        for i in range(b):  # per object: the number of live samples differs
            idx = alive[i].reshape(-1).nonzero().squeeze(1)
            raw = self.query(
                cond.select(i), xyz[i].reshape(1, -1, 3)[:, idx], vd[i].reshape(1, -1, 3)[:, idx]
            )
            for k, v in raw.items():
                full = v.new_zeros((r * n, *v.shape[2:]))
                full[idx] = v[0]
                out.setdefault(k, []).append(full.reshape(r, n, *v.shape[2:]))
        return {k: torch.stack(v) for k, v in out.items()}

    def _alive_samples(self, origins: Tensor, dirs: Tensor, z: Tensor) -> Tensor | None:
        """Samples inside the scene bound (empty-space skipping), or None when there is no bound."""
        bound = self.scene_bound
        if bound is None:
            return None
        return bound.contains(origins[:, :, None] + z[..., None] * dirs[:, :, None])

    def _render_rays_reference(
        self,
        cond: Conditioning,
        origins: Tensor,
        dirs: Tensor,
        outputs: tuple[str, ...],
        perturb: bool,
        skip_empty: bool,
        generator: torch.Generator | None,
    ) -> dict[str, dict[str, Tensor]]:
        """pixelNeRF's way (``fast_field = False``): per-sample values gathered into depth order and
        composited pass by pass. The reference the fast path is tested and benchmarked against."""
        b, r, _ = origins.shape
        flat = b * r
        near = origins.new_full((flat,), self.near)
        far = origins.new_full((flat,), self.far)

        z_c = stratified_samples(near, far, self.n_coarse, perturb, generator).reshape(b, r, -1)
        alive = self._alive_samples(origins, dirs, z_c) if skip_empty else None
        raw_c = self._query_rays(cond, origins, dirs, z_c, alive)
        xyz_c = origins[:, :, None] + z_c[..., None] * dirs[:, :, None]
        flat_raw = {k: v.reshape(flat, *v.shape[2:]) for k, v in raw_c.items()}
        need_depth = tuple(dict.fromkeys((*outputs, "depth")))
        coarse, w_c = self._composite_pass(
            z_c.reshape(flat, -1), flat_raw, xyz_c.reshape(flat, -1, 3), far, need_depth
        )

        z_new = torch.cat(
            [
                importance_samples(w_c, near, far, self.n_fine, perturb, generator),
                depth_guided_samples(
                    coarse["depth"], near, far, self.n_fine_depth, self.depth_std, perturb, generator
                ),
            ],
            dim=-1,
        ).reshape(b, r, -1)
        if self.reuse_coarse:
            alive_new = self._alive_samples(origins, dirs, z_new) if skip_empty else None
            if skip_empty and self.stop_transmittance > 0:
                visible = self._still_visible(w_c.reshape(b, r, -1), z_c, z_new)
                alive_new = visible if alive_new is None else alive_new & visible
            raw_new = self._query_rays(cond, origins, dirs, z_new, alive_new)
            z_all = torch.cat([z_c, z_new], dim=-1)
            z_f, order = z_all.sort(dim=-1)
            raw_f = {}
            for k in raw_c:
                merged = torch.cat([raw_c[k], raw_new[k]], dim=2)
                idx = order.reshape(*order.shape, *([1] * (merged.dim() - 3))).expand_as(merged)
                raw_f[k] = merged.gather(2, idx)
        else:
            z_f, _ = torch.cat([z_c, z_new], dim=-1).sort(dim=-1)
            raw_f = self._query_rays(
                cond, origins, dirs, z_f, self._alive_samples(origins, dirs, z_f) if skip_empty else None
            )
        xyz_f = origins[:, :, None] + z_f[..., None] * dirs[:, :, None]
        flat_raw = {k: v.reshape(flat, *v.shape[2:]) for k, v in raw_f.items()}
        fine, _ = self._composite_pass(
            z_f.reshape(flat, -1), flat_raw, xyz_f.reshape(flat, -1, 3), far, outputs
        )

        def unflat(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.reshape(b, r, *v.shape[1:]) for k, v in d.items() if k in outputs}

        return {"coarse": unflat(coarse), "fine": unflat(fine)}

    def _still_visible(self, w_c: Tensor, z_c: Tensor, z_new: Tensor) -> Tensor:
        """Fine samples in front of the depth where the coarse transmittance drops below the threshold.

        The coarse pass already estimates transmittance along each ray; samples behind the point where it
        is negligible cannot change the render by more than the threshold, so they are not evaluated.
        """
        trans_after = 1.0 - w_c.cumsum(-1)  # transmittance after each coarse sample
        dead = trans_after < self.stop_transmittance
        # depth of the first coarse sample after which the ray is opaque (far when never)
        first = torch.where(dead, z_c, torch.full_like(z_c, float("inf"))).amin(-1, keepdim=True)
        return z_new <= first

    def render_image(
        self,
        cond: Conditioning,
        pose: Tensor,
        focal: Tensor,
        c: Tensor,
        height: int,
        width: int,
        outputs: Iterable[str] = ("rgb", "depth", "opacity"),
        skip_empty: bool = True,
        chunk: int | None = None,
    ) -> dict[str, Tensor]:
        """Render full views (fine pass, deterministic samples), ``chunk`` rays at a time.

        Args:
            cond: batch-B conditioning. pose: (B, 4, 4) target camera-to-world.
            focal, c: (B, 2) target intrinsics at ``height`` x ``width``.
            skip_empty: use the render-time empty-space skipping configured on the model.
        Returns:
            name → (B, H, W, C) or (B, H, W).
        """
        outputs = tuple(outputs)
        chunk = chunk or self.chunk
        b = pose.shape[0]
        uv = pixel_centers(height, width, device=pose.device).reshape(1, -1, 2).expand(b, -1, -1)
        origins, dirs = rays_from_pixels(uv, pose[:, None], focal[:, None], c[:, None])
        fast = self._fast_rendering()
        if fast:
            cond = self.prepare(cond)  # once for the whole image
        parts: dict[str, list[Tensor]] = {k: [] for k in outputs}
        for start in range(0, height * width, chunk):
            sl = slice(start, start + chunk)
            if fast:
                res = self._render(
                    cond, origins[:, sl], dirs[:, sl], outputs, False, skip_empty, None, ("fine",)
                )
            else:
                res = self.render_rays(
                    cond, origins[:, sl], dirs[:, sl], outputs, perturb=False, skip_empty=skip_empty
                )
            for k in outputs:
                parts[k].append(res["fine"][k])
        return {k: torch.cat(v, dim=1).reshape(b, height, width, *v[0].shape[2:]) for k, v in parts.items()}

    def render_features(
        self, cond: Conditioning, pose: Tensor, focal: Tensor, c: Tensor, height: int, width: int
    ) -> Tensor:
        """The internal feature ``v_NeRF`` volume-rendered with the fine weights: (B, H, W, d_hidden)."""
        return self.render_image(cond, pose, focal, c, height, width, outputs=("hidden",))["hidden"]
