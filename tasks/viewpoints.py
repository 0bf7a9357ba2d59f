"""Camera geometry of evaluation pairs: is view k the same camera for two objects, how far apart two views are.

Poses are camera-to-world ``(V, 4, 4)`` in featurenerf's convention (OpenCV axes, see
:mod:`featurenerf.geometry.cameras`), so a camera's viewing direction is the third column of its rotation.
Cross-instance pairs must compare the same camera (pixelNeRF-style features live in the input camera's
frame); cross-view pairs are described by the angle between the two viewing directions (the baseline).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from featurenerf.data.srn import ObjectRecord, load_poses

#: Two poses are the same camera when their rotations differ by at most this (per entry) and their
#: centres by at most this fraction of the camera's distance from the origin. Generous against poses
#: written as float32 text (SRN), far below any real difference between two viewpoints.
SAME_CAMERA_TOL = 1e-3


def viewing_directions(poses: np.ndarray) -> np.ndarray:
    """Unit viewing directions ``(V, 3)`` (camera +z in world axes) of camera-to-world poses ``(V, 4, 4)``."""
    fwd = np.asarray(poses, dtype=np.float64)[..., :3, 2]
    return fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles in degrees ``(V, W)`` between the viewing directions of poses ``a`` (V, 4, 4) and ``b`` (W, 4, 4)."""
    cos = viewing_directions(a) @ viewing_directions(b).T
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def same_camera(a: np.ndarray, b: np.ndarray, tol: float = SAME_CAMERA_TOL) -> bool:
    """Whether two camera-to-world poses ``(4, 4)`` are the same camera (see :data:`SAME_CAMERA_TOL`)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rot = np.abs(a[:3, :3] - b[:3, :3]).max()
    scale = max(float(np.linalg.norm(a[:3, 3])), float(np.linalg.norm(b[:3, 3])), 1e-9)
    centre = float(np.linalg.norm(a[:3, 3] - b[:3, 3])) / scale
    return bool(rot <= tol and centre <= tol)


class PoseCache:
    """Poses of a split's objects, read once each and only when asked for (a split can hold thousands).

    Args:
        records: the objects.
        loader: ``record -> (V, 4, 4)`` poses (default: :func:`featurenerf.data.srn.load_poses`).
    """

    def __init__(
        self, records: list[ObjectRecord], loader: Callable[[ObjectRecord], torch.Tensor] = load_poses
    ) -> None:
        self.records = {r.name: r for r in records}
        self.loader = loader
        self._poses: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        """Poses ``(V, 4, 4)`` float64 of object ``name``."""
        if name not in self._poses:
            self._poses[name] = np.asarray(self.loader(self.records[name]), dtype=np.float64)
        return self._poses[name]


def summarize_angles(angles: list[float]) -> dict[str, float] | None:
    """``{"min", "median", "max"}`` of angles in degrees (rounded to 0.01), or None for none."""
    if not angles:
        return None
    a = np.asarray(angles, dtype=np.float64)
    return {k: round(float(f(a)), 2) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))}
