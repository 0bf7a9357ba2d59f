"""The fast renderer: flat batches of samples through the field's fast path, summed where they are.

Samples are evaluated in one flat batch across rays and objects (``net.ray_inputs`` builds their MLP
inputs from per-ray camera frames, so no per-sample matrix products). The fine pass evaluates only its
new samples and merges them with the coarse ones by depth (exact: the MLP is shared between passes and
deterministic per sample). Per-ray sums are taken in evaluation order with the fine weights scattered
back there, so no per-sample value is ever gathered into depth order; the D-wide feature head is applied
once per ray to the composited ``relu(hidden)``. Equal to :mod:`featurenerf.nerf.render_reference` up to
float rounding (tests/test_fine_reuse.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from featurenerf.nerf.conditioning import Conditioning
from featurenerf.nerf.render_occupancy import render_bound
from featurenerf.nerf.render_passes import (
    RayQuery,
    Samples,
    assemble,
    coarse_samples,
    fine_samples,
    mean_residual,
    still_visible,
)
from featurenerf.rendering.compositing import compositing_weights

if TYPE_CHECKING:
    from featurenerf.nerf.model import FeatureNeRFNet


@dataclass
class FastRays:
    """Flat rays o, d (R, 3) with their conditioning and per-ray camera frames (``net.ray_frames``)."""

    cond: Conditioning
    frames: dict[str, Tensor]
    o: Tensor
    d: Tensor

    def points(self, z: Tensor, index: Tensor | None) -> Tensor:
        """World positions of the samples z (R, N): all (R·N, 3), or those at flat positions ``index``."""
        if index is None:
            return (self.o[:, None] + z[..., None] * self.d[:, None]).reshape(-1, 3)
        ray = torch.div(index, z.shape[1], rounding_mode="floor")
        return self.o[ray] + z.reshape(-1)[index, None] * self.d[ray]


#: Per-sample values kept (composited per ray) for each output that needs one beyond rgb and coords.
_KEEP = (("relu_hidden", "features"), ("hidden", "hidden"))


def evaluate(
    net: FeatureNeRFNet, rays: FastRays, z: Tensor, keep: tuple[str, ...], alive: Tensor | None = None
) -> Samples:
    """Field at the samples z (R, N) of ``rays``; with ``alive`` (R, N) bool, only those samples (in one
    flat batch across rays and objects).

    ``coords`` in the result is the residual of the coordinate head against the true sample position.
    """
    n_rays, n = z.shape
    index = None if alive is None else alive.reshape(-1).nonzero().squeeze(1)
    values = net.field(rays.cond, net.ray_inputs(rays.cond, rays.frames, z, index), "render", keep)
    values["coords"] = values["coords"] - rays.points(
        z, index
    )  # L_coord's residual against the true position
    sigma = values.pop("sigma")
    if index is None:
        sigma = sigma.reshape(n_rays, n)
    else:
        sigma = sigma.new_zeros(n_rays * n).index_put((index,), sigma).reshape(n_rays, n)
    return Samples(values, index, sigma)


def evaluate_marching(
    net: FeatureNeRFNet,
    rays: FastRays,
    z: Tensor,
    far: Tensor,
    keep: tuple[str, ...],
    inside: Tensor | None,
    stop: float,
) -> Samples:
    """Coarse samples marched in ``net.render_segments`` depth segments; after each, rays whose
    transmittance fell below ``stop`` are not evaluated any further (their later samples get zero
    density, which changes the render by less than ``stop`` per ray)."""
    n_rays, n = z.shape
    deltas = torch.cat([z[:, 1:] - z[:, :-1], (far[:, None] - z[:, -1:]).clamp_min(0)], dim=-1)
    trans = z.new_ones(n_rays)
    sigma = z.new_zeros(n_rays, n)
    values: dict[str, list[Tensor]] = {}
    index: list[Tensor] = []
    bounds = torch.linspace(0, n, net.render_segments + 1).round().long().tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        alive = torch.zeros_like(z, dtype=torch.bool)
        alive[:, lo:hi] = (trans > stop)[:, None]
        if inside is not None:
            alive &= inside
        part = evaluate(net, rays, z, keep, alive)
        sigma = sigma + part.sigma
        for k, v in part.values.items():
            values.setdefault(k, []).append(v)
        index.append(part.index)
        # Same product as compositing_weights, so the stop decision matches the final weights.
        trans = trans * (1.0 - (1.0 - torch.exp(-sigma[:, lo:hi] * deltas[:, lo:hi])) + 1e-10).prod(-1)
    return Samples({k: torch.cat(v) for k, v in values.items()}, torch.cat(index), sigma)


def weighted_sums(samples: Samples, weights: list[Tensor], keep: tuple[str, ...]) -> list[dict[str, Tensor]]:
    """``Σ_i w_i v_i`` per ray of the sample values, for each weight list (one (R, N) tensor per pass).

    Values every pass needs (rgb, the coordinate residual, and those in ``keep``) are summed in one
    ``bmm`` for all passes when every sample was evaluated, and with ``index_add`` over the evaluated
    samples otherwise.
    """
    names = ("rgb", "coords", *keep)
    n_rays, n = weights[0].shape
    out: list[dict[str, Tensor]] = [{} for _ in weights]
    if samples.index is None:
        stacked = torch.stack(weights, dim=1)  # (R, passes, N): one read of the values for all passes
        for name in names:
            v = samples.values[name]
            summed = torch.bmm(stacked.to(v.dtype), v.reshape(n_rays, n, -1))
            for k in range(len(weights)):
                out[k][name] = summed[:, k]
        return out
    ray = torch.div(samples.index, n, rounding_mode="floor")
    for k, w in enumerate(weights):
        wk = w.reshape(-1)[samples.index]
        for name in names:
            v = samples.values[name] * wk[:, None]
            out[k][name] = v.new_zeros(n_rays, v.shape[-1]).index_add_(0, ray, v)
    return out


def _fine_alive(net, o, d, z_c, z_new, z_f, order, far, w_c, bound, stop) -> Tensor:
    """Which new fine samples are evaluated when skipping: a non-empty interval to the next sample
    (deterministic depth-guided samples coincide; all but one have weight exactly 0), inside the bound,
    in front of the early-stop depth."""
    gaps = torch.cat([z_f[:, 1:] - z_f[:, :-1], (far[:, None] - z_f[:, -1:]).clamp_min(0)], -1)
    alive = torch.empty_like(gaps).scatter_(1, order, gaps)[:, z_c.shape[1] :] > 0
    if bound is not None:
        alive &= bound.contains(o[:, None] + z_new[..., None] * d[:, None])
    if stop > 0:
        alive &= still_visible(w_c, z_c, z_new, stop)
    return alive


def render_fast(
    net: FeatureNeRFNet, query: RayQuery, passes: tuple[str, ...]
) -> dict[str, dict[str, Tensor]]:
    """Fast coarse/fine rendering of the rays (B, R, 3) of ``query``, computing the coarse pass's outputs
    only when ``passes`` names it. Returns pass → name → (B, R, ...)."""
    outputs, skip_empty, how = query.outputs, query.skip_empty, query.how
    b, r, _ = query.origins.shape
    n_rays = b * r
    o, d = query.origins.reshape(n_rays, 3), query.dirs.reshape(n_rays, 3)
    obj = torch.arange(b, device=o.device).repeat_interleave(r)  # object of each ray
    near, far = o.new_full((n_rays,), net.near), o.new_full((n_rays,), net.far)
    cond = net.prepare(query.cond)
    rays = FastRays(cond, net.ray_frames(cond, o, d, obj), o, d)
    keep = tuple(k for k, want in _KEEP if want in outputs)
    bound = render_bound(net, cond, skip_empty)  # the occupancy grid when cond has one
    stop = net.stop_transmittance if skip_empty else 0.0

    z_c = coarse_samples(net, near, far, how)
    inside_c = None if bound is None else bound.contains(o[:, None] + z_c[..., None] * d[:, None])
    if stop > 0:
        coarse = evaluate_marching(net, rays, z_c, far, keep, inside_c, stop)
    else:
        coarse = evaluate(net, rays, z_c, keep, inside_c)
    w_c = compositing_weights(z_c, coarse.sigma, far)
    z_new = fine_samples(net, w_c, (w_c * z_c).sum(-1), near, far, how)
    z_f, order = torch.cat([z_c, z_new], dim=-1).sort(dim=-1)
    if net.reuse_coarse:
        alive = None
        if skip_empty:
            alive = _fine_alive(net, o, d, z_c, z_new, z_f, order, far, w_c, bound, stop)
        new = evaluate(net, rays, z_new, keep, alive)
        sigma_f = torch.cat([coarse.sigma, new.sigma], dim=-1).gather(1, order)
        w_f = compositing_weights(z_f, sigma_f, far)
        # Fine weights back in evaluation order, so values are summed where they are (no gathers).
        w_fc, w_fn = torch.zeros_like(w_f).scatter(1, order, w_f).split([net.n_coarse, z_new.shape[1]], dim=1)
        # The coarse values serve both passes: one read of them for both weight sets.
        pass_weights = {"coarse": w_c, "fine": w_fc} if "coarse" in passes else {"fine": w_fc}
        sums = dict(zip(pass_weights, weighted_sums(coarse, list(pass_weights.values()), keep)))
        fine_new = weighted_sums(new, [w_fn], keep)[0]
        sums["fine"] = {k: v + fine_new[k] for k, v in sums["fine"].items()}
        fine_parts = (coarse, new)
    else:
        alive = None
        if skip_empty and bound is not None:
            alive = bound.contains(o[:, None] + z_f[..., None] * d[:, None])
        fine = evaluate(net, rays, z_f, keep, alive)
        w_f = compositing_weights(z_f, fine.sigma, far)
        sums = {"fine": weighted_sums(fine, [w_f], keep)[0]}
        if "coarse" in passes:
            sums["coarse"] = weighted_sums(coarse, [w_c], keep)[0]
        fine_parts = (fine,)
    for name, squared in (("coords_mean", False), ("coords_sq", True)):
        if name in outputs:  # unweighted, over every evaluated sample of the pass
            sums["fine"][name] = mean_residual(*fine_parts, squared=squared)
            if "coarse" in sums:
                sums["coarse"][name] = mean_residual(coarse, squared=squared)

    def finish(w: Tensor, z: Tensor, s: dict[str, Tensor]) -> dict[str, Tensor]:
        if "features" in outputs:  # the linear feature head, once per ray
            s = {**s, "features": net.layout.feature_head(net.mlp.lin_out, s["relu_hidden"], w.sum(-1))}
        res = assemble(outputs, w, z, s, net.background_value)
        return {k: v.reshape(b, r, *v.shape[1:]) for k, v in res.items()}

    out = {"fine": finish(w_f, z_f, sums["fine"])}
    if "coarse" in passes:
        out = {"coarse": finish(w_c, z_c, sums["coarse"]), **out}
    return out
