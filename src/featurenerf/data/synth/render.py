"""Cameras and an exact ray-cast renderer for :mod:`featurenerf.data.synth` shapes.

Cameras follow featurenerf's convention (OpenCV axes, camera-to-world; see
:mod:`featurenerf.geometry.cameras`): each sits on a sphere of radius :data:`RADIUS` and looks at the
origin with world +z as "up", so image +y (down) points roughly toward world -z, as in real SRN cars.
The focal length copies SRN's field of view: f = 525 at 512 px, i.e. ``525 / 512 * size``.
"""

from __future__ import annotations

import numpy as np

from featurenerf.data.synth.primitives import Box, bounds
from featurenerf.data.synth.shapes import Shape

RADIUS = 1.3
SRN_FOCAL_PER_PIXEL = 525.0 / 512.0
#: Elevation band (degrees) cameras are drawn from: the upper hemisphere, clear of the pole (where
#: "up" is undefined) and of the horizon.
ELEVATION_RANGE = {"toycar": (5.0, 75.0), "toychair": (5.0, 75.0)}

_LIGHT = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
_AMBIENT, _SUN, _HEADLIGHT = 0.3, 0.5, 0.2


def look_at(position: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world ``(4, 4)`` for a camera at ``position`` looking at the origin.

    Columns: right = forward x up, down = forward x right, forward = -position / |position|; for a camera
    looking along +x this gives right = -y, down = -z (checked against real SRN poses).
    """
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))  # world up = +z
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, position
    return c2w


def sample_cameras(category: str, views: int, rng: np.random.Generator) -> np.ndarray:
    """``views`` poses ``(V, 4, 4)`` at radius :data:`RADIUS`, uniform by area over the elevation band."""
    lo, hi = np.radians(ELEVATION_RANGE[category])
    azimuth = rng.uniform(0.0, 2 * np.pi, size=views)
    elevation = np.arcsin(rng.uniform(np.sin(lo), np.sin(hi), size=views))
    pos = RADIUS * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=-1
    )
    return np.stack([look_at(p) for p in pos])


def focal_for(size: int) -> float:
    """SRN's focal length in pixels at an image side of ``size``."""
    return SRN_FOCAL_PER_PIXEL * size


def camera_rays(c2w: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the pixel centres (``j + 0.5``) of one ``size`` x ``size`` view: origins, unit dirs (S*S, 3)."""
    f, c = focal_for(size), size / 2
    coords = np.arange(size) + 0.5
    u, v = np.meshgrid(coords, coords, indexing="xy")  # v varies along rows
    d_cam = np.stack([(u - c) / f, (v - c) / f, np.ones_like(u)], axis=-1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], d.shape), d


def render_view(shape: Shape, c2w: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one view: RGBA ``(S, S, 4)`` uint8 on white (alpha = object mask) and part labels ``(S, S)`` uint8.

    Each pixel is one ray through its centre; the nearest primitive hit gives both its colour (Lambertian:
    ambient + a fixed sun + a headlight, so no face is black) and its exact part label.
    """
    origins, dirs = camera_rays(c2w, size)
    # Only rays through the object's bounding box can hit anything (about a third of a view).
    lo, hi = bounds(list(shape.primitives))
    bbox = Box((lo + hi) / 2, (hi - lo) / 2 + 1e-6, 0, np.zeros(3))
    candidates = np.flatnonzero(np.isfinite(bbox.intersect(origins, dirs)[0]))
    o, d = origins[candidates], dirs[candidates]
    t_best = np.full(len(d), np.inf)
    n_best = np.zeros_like(d)
    i_best = np.full(len(d), -1)
    for i, prim in enumerate(shape.primitives):
        t, n = prim.intersect(o, d)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        n_best[closer] = n[closer]
        i_best[closer] = i
    best_n = np.zeros_like(dirs)
    best_i = np.full(len(dirs), -1)
    best_n[candidates], best_i[candidates] = n_best, i_best
    hit = best_i >= 0
    colours = np.array([p.colour for p in shape.primitives])
    labels_of = np.array([p.label for p in shape.primitives], dtype=np.uint8)
    shade = (
        _AMBIENT
        + _SUN * np.clip(best_n @ _LIGHT, 0, None)
        + _HEADLIGHT * np.clip(-(best_n * dirs).sum(1), 0, None)
    )
    rgb = np.ones((len(dirs), 3))
    rgb[hit] = np.clip(colours[best_i[hit]] * shade[hit, None], 0, 1)
    rgba = np.empty((len(dirs), 4), dtype=np.uint8)
    rgba[:, :3] = np.round(rgb * 255).astype(np.uint8)
    rgba[:, 3] = np.where(hit, 255, 0)
    labels = np.where(hit, labels_of[np.maximum(best_i, 0)], 0).astype(np.uint8)
    return rgba.reshape(size, size, 4), labels.reshape(size, size)


def sample_points(shape: Shape, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About ``count`` labelled surface points, uniform by area, minus those buried inside another primitive.

    Returns xyz ``(N, 3)`` float32 and labels ``(N,)`` uint8, with N <= ``count``.
    """
    prims = shape.primitives
    areas = np.array([p.area() for p in prims])
    per_prim = rng.multinomial(count, areas / areas.sum())
    xyz, labels = [], []
    for i, (prim, n) in enumerate(zip(prims, per_prim)):
        pts = prim.sample_surface(int(n), rng)
        buried = np.zeros(len(pts), dtype=bool)
        for j, other in enumerate(prims):
            if j != i:
                buried |= other.contains(pts)
        xyz.append(pts[~buried])
        labels.append(np.full(int((~buried).sum()), prim.label, dtype=np.uint8))
    return np.concatenate(xyz).astype(np.float32), np.concatenate(labels)
