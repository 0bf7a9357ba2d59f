"""The reference renderer: pixelNeRF's way, through ``net.query`` (``fast_field = False``, or a field
that overrides ``query``). Per-sample values are gathered into depth order and composited pass by pass;
the fast renderer is tested and benchmarked against it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from featurenerf.nerf.conditioning import Conditioning
from featurenerf.nerf.render_occupancy import render_bound
from featurenerf.nerf.render_passes import (
    RayQuery,
    coarse_samples,
    composite_reference,
    fine_samples,
    still_visible,
)

if TYPE_CHECKING:
    from featurenerf.nerf.model import FeatureNeRFNet


def query_rays(
    net: FeatureNeRFNet,
    cond: Conditioning,
    origins: Tensor,
    dirs: Tensor,
    z: Tensor,
    alive: Tensor | None = None,
) -> dict[str, Tensor]:
    """Field values at samples z (B, R, N) along rays (B, R, 3). With ``alive`` (B, R, N) bool, only
    those samples are evaluated (others get zero density and zero values)."""
    b, r, n = z.shape
    xyz = origins[:, :, None] + z[..., None] * dirs[:, :, None]
    vd = dirs[:, :, None].expand(-1, -1, n, -1)
    if alive is None:
        raw = net.query(cond, xyz.reshape(b, r * n, 3), vd.reshape(b, r * n, 3))
        return {k: v.reshape(b, r, n, *v.shape[2:]) for k, v in raw.items()}
    out: dict[str, list[Tensor]] = {}
    for i in range(b):  # per object: the number of live samples differs
        idx = alive[i].reshape(-1).nonzero().squeeze(1)
        raw = net.query(cond.select(i), xyz[i].reshape(1, -1, 3)[:, idx], vd[i].reshape(1, -1, 3)[:, idx])
        for k, v in raw.items():
            full = v.new_zeros((r * n, *v.shape[2:]))
            full[idx] = v[0]
            out.setdefault(k, []).append(full.reshape(r, n, *v.shape[2:]))
    return {k: torch.stack(v) for k, v in out.items()}


def _inside(
    net: FeatureNeRFNet, cond: Conditioning, origins: Tensor, dirs: Tensor, z: Tensor, skip_empty: bool
) -> Tensor | None:
    """Samples z (B, R, N) inside the scene bound (or in occupied cells of ``cond``'s occupancy grid) when
    skipping empty space, else None (all)."""
    bound = render_bound(net, cond, skip_empty)
    if bound is None:
        return None
    return bound.contains(origins[:, :, None] + z[..., None] * dirs[:, :, None])


def _merge_by_depth(raw_c: dict[str, Tensor], raw_new: dict[str, Tensor], order: Tensor) -> dict[str, Tensor]:
    """Coarse and new fine values (B, R, N|M, ...) merged into depth order (``order`` (B, R, N + M))."""
    raw_f = {}
    for k in raw_c:
        merged = torch.cat([raw_c[k], raw_new[k]], dim=2)
        idx = order.reshape(*order.shape, *([1] * (merged.dim() - 3))).expand_as(merged)
        raw_f[k] = merged.gather(2, idx)
    return raw_f


def render_reference(net: FeatureNeRFNet, query: RayQuery) -> dict[str, dict[str, Tensor]]:
    """Coarse and fine rendering of the rays (B, R, 3) of ``query`` the reference way.
    Returns pass → name → (B, R, ...)."""
    cond, origins, dirs, outputs = query.cond, query.origins, query.dirs, query.outputs
    skip_empty, how = query.skip_empty, query.how
    b, r, _ = origins.shape
    flat = b * r
    near, far = origins.new_full((flat,), net.near), origins.new_full((flat,), net.far)

    def composite_pass(z: Tensor, raw: dict[str, Tensor], names: tuple[str, ...]):
        xyz = origins[:, :, None] + z[..., None] * dirs[:, :, None]
        flat_raw = {k: v.reshape(flat, *v.shape[2:]) for k, v in raw.items()}
        return composite_reference(net, z.reshape(flat, -1), flat_raw, xyz.reshape(flat, -1, 3), far, names)

    z_c = coarse_samples(net, near, far, how).reshape(b, r, -1)
    raw_c = query_rays(net, cond, origins, dirs, z_c, _inside(net, cond, origins, dirs, z_c, skip_empty))
    coarse, w_c = composite_pass(z_c, raw_c, tuple(dict.fromkeys((*outputs, "depth"))))
    z_new = fine_samples(net, w_c, coarse["depth"], near, far, how).reshape(b, r, -1)
    if net.reuse_coarse:
        alive_new = _inside(net, cond, origins, dirs, z_new, skip_empty)
        if skip_empty and net.stop_transmittance > 0:
            visible = still_visible(w_c.reshape(b, r, -1), z_c, z_new, net.stop_transmittance)
            alive_new = visible if alive_new is None else alive_new & visible
        raw_new = query_rays(net, cond, origins, dirs, z_new, alive_new)
        z_f, order = torch.cat([z_c, z_new], dim=-1).sort(dim=-1)
        raw_f = _merge_by_depth(raw_c, raw_new, order)
    else:
        z_f, _ = torch.cat([z_c, z_new], dim=-1).sort(dim=-1)
        raw_f = query_rays(net, cond, origins, dirs, z_f, _inside(net, cond, origins, dirs, z_f, skip_empty))
    fine, _ = composite_pass(z_f, raw_f, outputs)

    def unflat(d: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.reshape(b, r, *v.shape[1:]) for k, v in d.items() if k in outputs}

    return {"coarse": unflat(coarse), "fine": unflat(fine)}
