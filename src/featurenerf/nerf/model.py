"""The generalizable feature field: pixelNeRF's backbone with FeatureNeRF's two extra heads (plain torch).

Heads. FeatureNeRF's feature vector ``v`` (teacher width ``D``) and canonical coordinate ``x̂`` (3) are
*extra output channels* of the MLP's final linear layer (``4 + D + 3`` outputs), not separate branches:
both read the same 512-d last-block activation, so the distilled semantics shape the shared trunk (which is
what makes the internal feature ``v_NeRF`` semantic), and one GEMM serves all heads. Outputs are always
returned by name (``rgb``, ``sigma``, ``features``, ``coords``, ``hidden``), never as packed channels.

Conditioning. :meth:`FeatureNeRFNet.encode` turns source images into an explicit :class:`Conditioning`
object that every query takes as an argument; the network keeps no per-object state.

Fast field evaluation (``fast_field``, on by default; exact up to float rounding). pixelNeRF samples the
512-channel encoder map at every point and sends it through one linear layer per injected block. Bilinear
sampling is linear with weights that sum to one, so the injection layers (and the biases that are added
at the same place) can be applied to the map *once* (:meth:`FeatureNeRFNet.prepare`; a 64×64 map has
4096 cells against 12k–1.5M points per object) and the result sampled with one weighted gather
(``embedding_bag``, channels-last, no transposes). Likewise the feature head is linear, so rendering
composites ``relu(hidden)`` per ray and applies the 512→D head once per ray instead of once per sample.
This removes 3 of the 13 large GEMMs per point and the 512×D head from the per-sample work. Along rays,
the camera-frame inputs of a sample ``o + z d`` are ``o_cam + z d_cam`` from per-ray frames
(:meth:`FeatureNeRFNet.ray_frames`), so no per-sample matrix product is needed. ``fast_field = False``
runs pixelNeRF's per-point way (``grid_sample`` + per-point injection); tests and benchmarks compare
the two. A subclass that overrides :meth:`FeatureNeRFNet.query` is rendered through it (the reference
way).

Rendering (coarse/fine marching, exact fine-pass reuse, empty-space skipping, chunked images) lives in
:mod:`featurenerf.nerf.renderer`, which takes this network as an argument; ``render_rays``,
``render_image`` and ``render_features`` here delegate to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from featurenerf.compiled import is_compiled
from featurenerf.geometry.cameras import (
    project_points,
    rotate_to_camera,
    uv_to_grid,
    world_to_camera_points,
)
from featurenerf.nerf import renderer
from featurenerf.nerf.conditioning import BilinearGather, Conditioning, FieldInputs, bilinear_taps, per_view
from featurenerf.nerf.config import NetConfig
from featurenerf.nerf.encoder import build_encoder
from featurenerf.nerf.encoding import PositionalEncoding
from featurenerf.nerf.heads import OutputLayout
from featurenerf.nerf.mlp import ResnetMLP
from featurenerf.nerf.renderer import RENDERABLE
from featurenerf.rendering.bounds import Box, Sphere

__all__ = ["RENDERABLE", "Conditioning", "FeatureNeRFNet", "NetConfig", "bilinear_taps"]

#: Points per block of the field without autograd on a CPU (GPUs take ``chunk * 16``): a block's
#: activations (16k x 128 floats) then stay in cache between layers. Rendering the toy model's field
#: at 100k points on one thread took 0.63-0.69 s in float32 with 8-16k-point blocks against 0.94 s with
#: 64k, and 0.33 against 0.36-0.40 s in bf16.
CPU_FIELD_BLOCK = 16384


def _default_dirs(xyz: Tensor) -> Tensor:
    """+z for every point: the view direction used when a caller has none."""
    dirs = torch.zeros_like(xyz)
    dirs[..., 2] = 1.0
    return dirs


class FeatureNeRFNet(nn.Module):
    """pixelNeRF backbone + FeatureNeRF heads, built from a :class:`~featurenerf.nerf.config.NetConfig`
    (every default the paper's value).

    Args:
        config: the hyper-parameters (field and renderer); ``None`` for the defaults.
        **overrides: :class:`~featurenerf.nerf.config.NetConfig` fields replacing ``config``'s:
            ``FeatureNeRFNet(d_hidden=64)`` is ``FeatureNeRFNet(NetConfig(d_hidden=64))``. A name that is
            not a field is a ``TypeError``.

    Attributes:
        config: the config the net was built from.
        feature_dim, d_hidden, n_coarse, n_fine, n_fine_depth, depth_std, near, far, reuse_coarse,
            scene_radius, stop_transmittance, occupancy_resolution, chunk, use_viewdirs: the config's values
            the renderer reads
            (settable: the benchmarks and tests switch ``reuse_coarse`` per render).
        background_value: 1.0 for a white background, 0.0 for black.
        fast_field: evaluate the field the fast way (module docstring); ``False`` is pixelNeRF's per-point
            way, kept as the reference for tests and benchmarks. Not a config field: it never changes
            results beyond float rounding.
        render_segments: depth segments the coarse pass is marched in when rendering with early
            termination.
    """

    def __init__(self, config: NetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or NetConfig(), **overrides)
        self.config = config
        self.feature_dim = config.feature_dim
        self.layout = OutputLayout(config.feature_dim)
        self.encoder = build_encoder(
            config.encoder, num_layers=config.encoder_layers, weights=config.encoder_weights
        )
        self.posenc = PositionalEncoding(config.num_freqs, config.freq_factor)
        self.use_viewdirs = config.use_viewdirs
        d_in = self.posenc.d_out + (3 if config.use_viewdirs else 0)
        self.mlp = ResnetMLP(
            d_in=d_in,
            d_latent=self.encoder.out_channels * (2 if config.global_feature else 1),
            d_hidden=config.d_hidden,
            d_out=self.layout.width,
            n_blocks=config.n_blocks,
            n_inject=config.n_inject,
            combine_layer=config.combine_layer,
        )
        # The density output starts as a thin uniform fog (zero weights, bias 1): with the usual random
        # init, sigma = w . relu(h) has one sign for nearly every point (relu(h) >= 0 and is correlated
        # across points), so about half of all initialisations have zero density everywhere, the relu
        # passes no gradient and training never starts. Colour, features and coordinates keep the
        # random init.
        with torch.no_grad():
            self.mlp.lin_out.weight[3].zero_()
            self.mlp.lin_out.bias[3] = 1.0
        self.d_hidden = config.d_hidden
        self.n_coarse, self.n_fine, self.n_fine_depth = config.n_coarse, config.n_fine, config.n_fine_depth
        self.depth_std = config.depth_std
        self.near, self.far = config.near, config.far
        self.background_value = 1.0 if config.background == "white" else 0.0
        self.reuse_coarse = config.reuse_coarse
        self.scene_radius = config.scene_radius
        self.stop_transmittance = config.stop_transmittance
        self.occupancy_resolution = config.occupancy_resolution
        self.chunk = config.chunk
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
        taking the keys that are :class:`~featurenerf.nerf.config.NetConfig` fields and ignoring the rest."""
        return cls(NetConfig.from_mapping(hparams, **overrides))

    # ------------------------------------------------------------------ encoding
    def encode(self, images: Tensor, poses: Tensor, focal: Tensor, c: Tensor) -> Conditioning:
        """Encode each source view once.

        Args:
            images: (B, V, 3, H, W) in [0, 1]. poses: (B, V, 4, 4) camera-to-world.
            focal, c: (B, 2) or (B, V, 2) intrinsics in pixels of these images.
        """
        b, v, _, h, w = images.shape
        feats = self.encoder(rearrange(images, "b v c h w -> (b v) c h w"))
        if self.config.global_feature:
            # The view's mean code beside each cell's own: a point sees the whole image, not only its
            # neighbourhood (pixelNeRF's global encoder option).
            feats = torch.cat([feats, feats.mean((-2, -1), keepdim=True).expand_as(feats)], dim=1)
        feats = rearrange(feats, "(b v) c h w -> b v c h w", b=b)
        return Conditioning(feats, poses, per_view(focal, v), per_view(c, v), (h, w))

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
        injected = tuple(
            torch.addmm(mlp.injection_bias(i), rows, lin.weight.t()) for i, lin in enumerate(mlp.lin_z)
        )
        return dataclasses.replace(cond, injected=injected)

    def fast_rendering(self) -> bool:
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
    ) -> FieldInputs:
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
        return FieldInputs(flat(x), flat(rows), flat(weights), cam.shape[1])

    def _first_rows(self, cond: Conditioning, obj: Tensor) -> Tensor:
        """(N, V) first table row of each source view's map of objects ``obj`` (N,)."""
        v = cond.poses.shape[1]
        h, w = cond.features.shape[-2:]
        return (obj[:, None] * v + torch.arange(v, device=obj.device)) * (h * w)

    def _point_inputs(self, cond: Conditioning, xyz: Tensor, dirs: Tensor | None, obj: Tensor) -> FieldInputs:
        """Fast-path inputs of P free points xyz (P, 3) with directions (P, 3) of objects ``obj`` (P,)."""
        poses = cond.poses[obj]  # (P, V, 4, 4): each point with its object's source cameras
        pts = xyz[:, None]
        cam = world_to_camera_points(pts, poses)
        rot = rotate_to_camera(pts, poses)
        dirs_cam = rotate_to_camera(dirs[:, None], poses) if self.use_viewdirs else None
        return self._camera_inputs(
            cond, cam, rot, dirs_cam, cond.focal[obj], cond.c[obj], self._first_rows(cond, obj)
        )

    def ray_frames(self, cond: Conditioning, o: Tensor, d: Tensor, obj: Tensor) -> dict[str, Tensor]:
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

    def ray_inputs(
        self, cond: Conditioning, frames: dict[str, Tensor], z: Tensor, index: Tensor | None
    ) -> FieldInputs:
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

        :meth:`ResnetMLP.trunk` with each injection a weighted gather from the prepared maps.
        """
        dt = injected[0].dtype  # bf16 under autocast: the trunk's in-place ops need one dtype
        if torch.compiler.is_compiling():
            weights = weights.to(dt)
            sampled = [F.embedding_bag(rows, t, per_sample_weights=weights, mode="sum") for t in injected]
        else:
            sampled = list(BilinearGather.apply(rows, weights.to(dt), *injected))

        def pool(h: Tensor) -> Tensor:  # rows are ordered (view, point)
            return h.reshape(views, -1, h.shape[-1]).mean(0) if views > 1 else h

        return self.mlp.trunk(x, sampled.__getitem__, pool)

    def _trunk_impl(self):
        # model.compile: the LightningModule compiles ``self.mlp``; compile the fast trunk along with it.
        if is_compiled(self.mlp):
            if self._compiled_trunk is None:
                self._compiled_trunk = torch.compile(self._trunk)
            return self._compiled_trunk
        return self._trunk

    def field(
        self, cond: Conditioning, inputs: FieldInputs, heads: str = "full", keep: Iterable[str] = ()
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
        if inputs.x.device.type == "cpu":
            block = min(block, CPU_FIELD_BLOCK)
        n = inputs.num_points
        if n > block and not torch.is_grad_enabled():
            parts = [self.field(cond, inputs.block(s, s + block), heads, keep) for s in range(0, n, block)]
            return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        x, rows, weights = inputs.x, inputs.rows, inputs.weights
        h = self._trunk_impl()(x, rows, weights, cond.injected, cond.poses.shape[1])
        if heads == "hidden":
            return {"hidden": h}
        r = torch.relu(h)
        if heads == "full":
            return {**self.layout.split(self.mlp.lin_out(r)), "hidden": h}
        # Per-sample heads only: the D-wide feature head is applied per ray after compositing.
        res = self.layout.per_sample(r, self.mlp.lin_out)
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
            out = self.field(cond, self._point_inputs(cond, xyz.reshape(-1, 3), dirs, obj), "full")
            return {k: v.reshape(b, p, *v.shape[1:]) for k, v in out.items()}
        if viewdirs is None and self.use_viewdirs:
            viewdirs = _default_dirs(xyz)
        x, latent = self._mlp_inputs(cond, xyz, viewdirs)
        out, hidden = self.mlp(x, latent)
        return {**self.layout.split(out), "hidden": hidden}

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
            hidden = self.field(cond, inputs, "hidden")["hidden"].reshape(b, n, -1)
            return hidden[0] if squeeze else hidden
        outs = [
            self.query(cond, part, None if viewdirs is None else viewdirs[:, i : i + part.shape[1]])["hidden"]
            for i, part in zip(range(0, xyz.shape[1], self.chunk * 16), xyz.split(self.chunk * 16, dim=1))
        ]
        hidden = torch.cat(outs, dim=1)
        return hidden[0] if squeeze else hidden

    # ------------------------------------------------------------------ rendering (nerf/renderer.py)
    # The renderer's functions as methods (this net is their field): ``net.render_rays(cond, origins,
    # dirs, outputs, perturb, skip_empty, generator)`` and ``net.render_image(cond, pose, focal, c,
    # height, width, outputs, skip_empty, chunk, jitter_seed)``, ``net.with_occupancy(cond, rays)``; see
    # their docstrings.
    render_rays = renderer.render_rays
    render_image = renderer.render_image
    with_occupancy = renderer.with_occupancy

    def render_features(
        self, cond: Conditioning, pose: Tensor, focal: Tensor, c: Tensor, height: int, width: int
    ) -> Tensor:
        """The internal feature ``v_NeRF`` volume-rendered with the fine weights: (B, H, W, d_hidden)."""
        return self.render_image(cond, pose, focal, c, height, width, outputs=("hidden",))["hidden"]
