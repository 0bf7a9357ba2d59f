"""Volume rendering of a field: coarse/fine marching, empty-space skipping, chunked full images.

The field (a :class:`~featurenerf.nerf.model.FeatureNeRFNet`) is an argument; this module owns where it
is evaluated along rays and how the values are composited. Two ways produce the same numbers (tested to
float64 rounding in ``tests/test_fine_reuse.py``):

- the fast way (``net.fast_field``, default): samples are evaluated in one flat batch across rays and
  objects through the field's fast path; per-ray sums are taken where the values are (no gathers into
  depth order), the coarse values serve both passes (exact fine-pass reuse), and the D-wide feature head is
  applied once per ray to the composited ``relu(hidden)``;
- the reference way (``fast_field = False``, or a field that overrides ``query``): pixelNeRF's per-sample
  values gathered into depth order and composited pass by pass through ``net.query``.

Both end in :func:`assemble`, the one place the named outputs (:data:`RENDERABLE`) are built from the
compositing weights and the per-ray sums. Empty-space skipping (render time only, ``skip_empty=True``):
samples outside ``net.scene_bound`` (or, when the conditioning carries one, outside the occupied cells of
its occupancy grid: :mod:`featurenerf.nerf.render_occupancy`) never reach the MLP and have zero density;
the coarse pass is marched
in ``net.render_segments`` depth segments and a ray stops once its transmittance is below
``net.stop_transmittance``; fine samples behind that point, and fine samples with a zero-length interval
(they have exactly zero weight), are not evaluated either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from featurenerf.geometry.cameras import pixel_centers, rays_from_pixels
from featurenerf.nerf.conditioning import Conditioning
from featurenerf.nerf.render_fast import render_fast
from featurenerf.nerf.render_occupancy import with_occupancy
from featurenerf.nerf.render_passes import RENDERABLE, RayQuery, Sampling, assemble, check_outputs, eval_noise
from featurenerf.nerf.render_reference import render_reference
from featurenerf.rendering.sampling import SampleNoise

if TYPE_CHECKING:
    from featurenerf.nerf.model import FeatureNeRFNet

__all__ = [
    "RENDERABLE",
    "SampleNoise",
    "assemble",
    "eval_noise",
    "render_image",
    "render_rays",
    "with_occupancy",
]


def render_rays(
    net: FeatureNeRFNet,
    cond: Conditioning,
    origins: Tensor,
    dirs: Tensor,
    outputs: Iterable[str] = ("rgb", "depth", "opacity", "features", "coords"),
    perturb: bool = False,
    skip_empty: bool = False,
    generator: torch.Generator | None = None,
    passes: tuple[str, ...] = ("coarse", "fine"),
    noise: SampleNoise | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Coarse and fine volume rendering of rays (see :meth:`FeatureNeRFNet.render_rays`).

    Args:
        origins, dirs: (B, R, 3) world rays with unit directions. outputs: names from :data:`RENDERABLE`.
        passes: the passes to return (the fine pass is always computed; "coarse" costs nothing extra on
            the fast way, which shares the coarse values).
        noise: pre-drawn jitter for the B·R rays (any leading shape; e.g. from :func:`eval_noise`), used
            instead of ``perturb``/``generator``.
    Returns:
        pass → name → (B, R, C) or (B, R).
    """
    outputs = check_outputs(outputs)
    if noise is not None:
        noise = noise.flat()
        if noise.stratified.shape[0] != origins.shape[0] * origins.shape[1]:
            raise ValueError(f"noise is for {noise.stratified.shape[0]} rays, got {tuple(origins.shape[:2])}")
    query = RayQuery(cond, origins, dirs, outputs, skip_empty, Sampling(perturb, generator, noise))
    out = render_fast(net, query, passes) if net.fast_rendering() else render_reference(net, query)
    return {p: out[p] for p in ("coarse", "fine") if p in passes}


def render_image(
    net: FeatureNeRFNet,
    cond: Conditioning,
    pose: Tensor,
    focal: Tensor,
    c: Tensor,
    height: int,
    width: int,
    outputs: Iterable[str] = ("rgb", "depth", "opacity"),
    skip_empty: bool = True,
    chunk: int | None = None,
    jitter_seed: int | None = 0,
) -> dict[str, Tensor]:
    """Full views from the fine pass, ``chunk`` rays at a time (memory does not grow with image size).

    Args:
        cond: batch-B conditioning. pose: (B, 4, 4) target camera-to-world.
        focal, c: (B, 2) target intrinsics at ``height`` x ``width``.
        skip_empty: use the render-time empty-space skipping configured on the net: the occupancy grid of
            ``cond`` (built here for this image when ``cond`` has none and ``net.occupancy_resolution``
            asks for one: :func:`~featurenerf.nerf.render_occupancy.with_occupancy`), else the scene bound.
        jitter_seed: samples follow the training distribution with jitter drawn from this seed for the
            whole image (:func:`eval_noise`: reproducible, independent of ``chunk``); ``None`` gives the
            deterministic midpoints (and ``n_fine_depth`` copies of the coarse depth).
    Returns:
        name → (B, H, W, C) or (B, H, W).
    """
    outputs = check_outputs(outputs)
    chunk = chunk or net.chunk
    b = pose.shape[0]
    uv = pixel_centers(height, width, device=pose.device).reshape(1, -1, 2).expand(b, -1, -1)
    origins, dirs = rays_from_pixels(uv, pose[:, None], focal[:, None], c[:, None])
    noise = None if jitter_seed is None else eval_noise(net, (b, height * width), jitter_seed, origins)
    if skip_empty:  # one occupancy grid for the whole image (none when cond has one, or it would not pay)
        cond = with_occupancy(net, cond, height * width)
    if net.fast_rendering():
        cond = net.prepare(cond)  # once for the whole image
    parts: dict[str, list[Tensor]] = {k: [] for k in outputs}
    for start in range(0, height * width, chunk):
        sl = slice(start, start + chunk)
        part = None if noise is None else noise.select((slice(None), sl))
        res = render_rays(
            net, cond, origins[:, sl], dirs[:, sl], outputs, False, skip_empty, None, ("fine",), part
        )
        for k in outputs:
            parts[k].append(res["fine"][k])
    return {k: torch.cat(v, dim=1).reshape(b, height, width, *v[0].shape[2:]) for k, v in parts.items()}
