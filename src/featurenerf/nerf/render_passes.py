"""What the fast and the reference renderer share: the output names, the fine samples, early stopping,
and :func:`assemble`, the one place a pass's named outputs are built from weights and per-ray sums."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from featurenerf.rendering.compositing import composite, compositing_weights
from featurenerf.rendering.sampling import (
    SampleNoise,
    Sampling,  # re-exported: the renderer imports it from here
    depth_guided_samples,
    importance_samples,
    stratified_samples,
)

if TYPE_CHECKING:
    from featurenerf.nerf.conditioning import Conditioning
    from featurenerf.nerf.model import FeatureNeRFNet

#: Names :func:`render_rays` can return per pass. ``coords`` is the colour-weighted ray sum of the
#: canonical-coordinate residual x̂ − x; ``coords_mean`` its unweighted mean over the pass's samples (the
#: release's L_coord reads this one); ``coords_sq`` the unweighted mean of its square (``pointwise``).
RENDERABLE = ("rgb", "depth", "opacity", "features", "coords", "hidden", "coords_mean", "coords_sq")


@dataclass
class Samples:
    """Field values at the evaluated samples of an (R, N) grid of ray samples.

    ``values`` hold one row per evaluated sample (S, ...); ``index`` (S,) gives each row's flat position
    in the (R, N) grid, or is ``None`` when every sample was evaluated, in order. ``sigma`` is dense
    (R, N) with zero density where nothing was evaluated.
    """

    values: dict[str, Tensor]
    index: Tensor | None
    sigma: Tensor


def mean_residual(*parts: Samples, squared: bool = False) -> Tensor:
    """[coords_mean] Unweighted per-ray mean (R, 3) of the coordinate residual ``values["coords"]`` over
    the evaluated samples of one pass, given as one or more parts (the fast fine pass: the coarse samples
    and the new ones). Every sample counts in training; render-time skipping leaves out skipped ones.
    ``squared``: [coords_sq] the mean of the squared residual instead (per axis)."""
    total: Tensor | None = None
    count: Tensor | None = None
    for part in parts:
        n_rays, n = part.sigma.shape
        res = part.values["coords"]
        if squared:
            res = res.pow(2)
        if part.index is None:
            t, c = res.reshape(n_rays, n, 3).sum(1), res.new_full((n_rays,), float(n))
        else:
            ray = torch.div(part.index, n, rounding_mode="floor")
            t = res.new_zeros(n_rays, 3).index_add_(0, ray, res)
            c = torch.bincount(ray, minlength=n_rays).to(res.dtype)
        total, count = (t, c) if total is None else (total + t, count + c)
    assert total is not None and count is not None, "mean_residual needs at least one part"
    return total / count.clamp_min(1)[:, None]


def check_outputs(outputs: Iterable[str]) -> tuple[str, ...]:
    """``outputs`` as a tuple, refusing names not in :data:`RENDERABLE` (ValueError)."""
    outputs = tuple(outputs)
    for name in outputs:
        if name not in RENDERABLE:
            raise ValueError(f"unknown output {name!r}; expected some of {', '.join(RENDERABLE)}")
    return outputs


def assemble(
    outputs: tuple[str, ...], w: Tensor, z: Tensor, sums: dict[str, Tensor], background: float
) -> dict[str, Tensor]:
    """The named outputs of one pass, from its weights w (R, N) at depths z (R, N) and the per-ray sums
    ``Σ_i w_i v_i`` of the sample values (``sums``: ``rgb`` (R, 3), and ``features``, ``coords`` (the
    canonical-coordinate residual against the true sample position), ``hidden`` where requested; and
    ``coords_mean``, the residual's unweighted mean over the pass's samples, not a weighted sum).

    ``features`` are not normalised by opacity (``v̂ = Σ w v``, the paper's); ``rgb`` gets the background
    behind the remaining transmittance. Returns name → (R, C) or (R,).
    """
    opacity = w.sum(-1)
    res: dict[str, Tensor] = {}
    for name in outputs:
        if name == "rgb":
            res["rgb"] = sums["rgb"] + (1.0 - opacity[:, None]) * background
        elif name == "depth":
            res["depth"] = (w * z).sum(-1)
        elif name == "opacity":
            res["opacity"] = opacity
        else:  # features, coords, hidden (composited), coords_mean/_sq: the per-ray values themselves
            res[name] = sums[name]
    return res


@dataclass(frozen=True)
class RayQuery:
    """What one :func:`featurenerf.nerf.renderer.render_rays` call asks of the fast or the reference
    renderer: rays ``origins``, ``dirs`` (B, R, 3) seen through ``cond``, the ``outputs`` named (from
    :data:`RENDERABLE`), whether empty space is skipped, and where the samples go."""

    cond: Conditioning
    origins: Tensor
    dirs: Tensor
    outputs: tuple[str, ...]
    skip_empty: bool
    how: Sampling


def coarse_samples(net: FeatureNeRFNet, near: Tensor, far: Tensor, how: Sampling) -> Tensor:
    """The coarse pass's stratified samples (R, n_coarse) for bounds near, far (R,)."""
    return stratified_samples(near, far, net.n_coarse, how)


def fine_samples(
    net: FeatureNeRFNet, w_c: Tensor, depth_c: Tensor, near: Tensor, far: Tensor, how: Sampling
) -> Tensor:
    """The fine pass's new samples (R, n_fine + n_fine_depth): importance samples from the coarse
    weights w_c (R, N), then samples around the coarse depth depth_c (R,)."""
    importance = importance_samples(w_c, near, far, net.n_fine, how)
    around = depth_guided_samples(depth_c, near, far, net.n_fine_depth, net.depth_std, how)
    return torch.cat([importance, around], dim=-1)


def eval_noise(net: FeatureNeRFNet, shape: tuple[int, ...], seed: int, like: Tensor) -> SampleNoise:
    """Seeded jitter for evaluation renders of rays of ``shape``: the training sample distribution
    (jittered strata, random inverse-CDF positions, distinct depth-guided samples), reproducible and,
    drawn once per image, independent of chunking. Drawn on the CPU (same numbers on every device) in
    ``like``'s dtype and moved to its device."""
    g = torch.Generator().manual_seed(seed)
    counts = (net.n_coarse, net.n_fine, net.n_fine_depth)
    return SampleNoise.draw(shape, counts, g, like.dtype).to(like.device)


def still_visible(w_c: Tensor, z_c: Tensor, z_new: Tensor, stop: float) -> Tensor:
    """Fine samples in front of the depth where the coarse transmittance drops below ``stop``.

    The coarse pass already estimates transmittance along each ray; samples behind the point where it
    is negligible cannot change the render by more than the threshold, so they are not evaluated.
    w_c, z_c: (..., N) coarse weights and depths; z_new: (..., M) → (..., M) bool.
    """
    trans_after = 1.0 - w_c.cumsum(-1)  # transmittance after each coarse sample
    dead = trans_after < stop
    # depth of the first coarse sample after which the ray is opaque (far when never)
    first = torch.where(dead, z_c, torch.full_like(z_c, float("inf"))).amin(-1, keepdim=True)
    return z_new <= first


def composite_reference(
    net: FeatureNeRFNet, z: Tensor, raw: dict[str, Tensor], xyz: Tensor, far: Tensor, outputs: tuple[str, ...]
) -> tuple[dict[str, Tensor], Tensor]:
    """One pass the reference way: z (R, N); per-sample raw values (R, N, ...); xyz (R, N, 3).
    Returns the named outputs and the weights (R, N)."""
    w = compositing_weights(z, raw["sigma"], far)
    sums = {"rgb": composite(w, raw["rgb"])}
    for name in ("features", "hidden"):
        if name in outputs:
            sums[name] = composite(w, raw[name])
    if "coords" in outputs:
        # Residual of the canonical-coordinate head against the true sample position, averaged along
        # the ray with the colour weights (zero on a perfect prediction).
        sums["coords"] = composite(w, raw["coords"] - xyz)
    if "coords_mean" in outputs:
        # [coords_mean] unweighted mean of the residual over the pass's samples (release L_coord).
        sums["coords_mean"] = (raw["coords"] - xyz).mean(-2)
    if "coords_sq" in outputs:
        # [coords_sq] unweighted mean of the squared residual: every sample's own coordinate error.
        sums["coords_sq"] = (raw["coords"] - xyz).pow(2).mean(-2)
    return assemble(outputs, w, z, sums, net.background_value), w
