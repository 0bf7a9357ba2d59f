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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
)
from featurenerf.nerf.encoder import ResNetEncoder
from featurenerf.nerf.encoding import PositionalEncoding
from featurenerf.nerf.mlp import ResnetMLP
from featurenerf.rendering.compositing import composite, compositing_weights
from featurenerf.rendering.sampling import depth_guided_samples, importance_samples, stratified_samples

#: Names :meth:`FeatureNeRFNet.render_rays` can return per pass.
RENDERABLE = ("rgb", "depth", "opacity", "features", "coords", "hidden")


@dataclass
class Conditioning:
    """What the field knows about one batch of objects: encoded source views and their cameras.

    Attributes:
        features: (B, V, C, h, w) pixel-aligned encoder maps of the V source views.
        poses: (B, V, 4, 4) source camera-to-world matrices (OpenCV axes).
        focal: (B, V, 2) and c: (B, V, 2) source intrinsics in pixels of the encoded images.
        image_size: (H, W) of the source images (the frame ``focal`` and ``c`` refer to).
    """

    features: Tensor
    poses: Tensor
    focal: Tensor
    c: Tensor
    image_size: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    def select(self, index: int) -> Conditioning:
        """The conditioning of object ``index`` alone (batch of 1)."""
        s = slice(index, index + 1)
        return Conditioning(self.features[s], self.poses[s], self.focal[s], self.c[s], self.image_size)


def _per_view(x: Tensor, views: int) -> Tensor:
    """(B, 2) or (B, V, 2) intrinsics → (B, V, 2)."""
    return x[:, None].expand(-1, views, -1) if x.dim() == 2 else x


class FeatureNeRFNet(nn.Module):
    """pixelNeRF backbone + FeatureNeRF heads. Every default is the paper's value (PAPER.md).

    Args:
        feature_dim: width D of the distilled feature head (the teacher's ``feature_dim``).
        encoder_layers: ResNet-34 levels kept (4 → 512-channel maps).
        encoder_weights: optional local torchvision ``resnet34`` state dict; random init otherwise.
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
        stop_transmittance: render-time early ray termination: samples behind the point where the
            transmittance falls below this are not evaluated; 0 turns it off.
        chunk: rays per MLP call when rendering whole images (memory does not grow with image size).
    """

    def __init__(
        self,
        feature_dim: int = 384,
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
        self.encoder = ResNetEncoder(num_layers=encoder_layers, weights=encoder_weights)
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

    def query(self, cond: Conditioning, xyz: Tensor, viewdirs: Tensor | None = None) -> dict[str, Tensor]:
        """Evaluate the field at world points.

        Args:
            xyz: (B, P, 3) world points; viewdirs: (B, P, 3) unit ray directions (a fixed direction is
                fine for direction-independent outputs; ``None`` uses +z for every point).
        Returns:
            ``rgb`` (B, P, 3) in [0, 1], ``sigma`` (B, P) >= 0, ``features`` (B, P, D), ``coords``
            (B, P, 3) canonical-coordinate prediction, ``hidden`` (B, P, d_hidden) last block output.
        """
        if viewdirs is None and self.use_viewdirs:
            viewdirs = torch.zeros_like(xyz)
            viewdirs[..., 2] = 1.0
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
        outs = [
            self.query(cond, part, None if viewdirs is None else viewdirs[:, i : i + part.shape[1]])["hidden"]
            for i, part in zip(range(0, xyz.shape[1], self.chunk * 16), xyz.split(self.chunk * 16, dim=1))
        ]
        hidden = torch.cat(outs, dim=1)
        return hidden[0] if squeeze else hidden

    # ------------------------------------------------------------------ rendering
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
        """Samples inside the scene sphere (empty-space skipping), or None when skipping is off."""
        if self.scene_radius is None:
            return None
        xyz = origins[:, :, None] + z[..., None] * dirs[:, :, None]
        return xyz.norm(dim=-1) <= self.scene_radius

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
            skip_empty: render-time empty-space skipping and early termination (``scene_radius``,
                ``stop_transmittance``); training never skips.
            generator: random source for ``perturb`` (reproducible, resumable runs).
        Returns:
            ``{"coarse": {...}, "fine": {...}}``, each name mapping to (B, R, C) or (B, R).
        """
        outputs = tuple(outputs)
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
        parts: dict[str, list[Tensor]] = {k: [] for k in outputs}
        for start in range(0, height * width, chunk):
            sl = slice(start, start + chunk)
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
