"""Cameras for rendering from one image: the default SRN-like camera and orbits around the world z axis.

Conventions are featurenerf's (OpenCV axes, camera-to-world; see :mod:`featurenerf.geometry.cameras`).
SRN cars and the toy data put cameras on a sphere around the object looking at the origin, with world
+z as "up", and a focal length of 525 px at 512 px (:data:`SRN_FOCAL_PER_PIXEL` times the image side).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: SRN's focal length per pixel of image side (525 px at 512 px); the principal point is the centre.
SRN_FOCAL_PER_PIXEL = 525.0 / 512.0
#: Elevation (degrees above the xy plane) of the default camera.
DEFAULT_ELEVATION = 20.0


def look_at(position: Tensor, target: Tensor | None = None) -> Tensor:
    """Camera-to-world (4, 4) of a camera at ``position`` (3,) looking at ``target`` (default: origin).

    World up is +z, so image "down" (+y, OpenCV) points as close to world -z as the view allows;
    ``right = forward x up``, ``down = forward x right``. Undefined when looking straight along z.
    """
    position = torch.as_tensor(position, dtype=torch.float32)
    target = torch.zeros(3) if target is None else torch.as_tensor(target, dtype=torch.float32)
    forward = target - position
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    if right.norm() < 1e-6:
        raise ValueError("look_at: the camera looks straight along the world z axis; 'up' is undefined")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, position
    return c2w


def spherical_camera(radius: float, elevation_deg: float, azimuth_deg: float = 0.0) -> Tensor:
    """Camera-to-world (4, 4) on a sphere of ``radius`` around the origin, looking at the origin.

    Azimuth is measured in the xy plane from +x toward +y; elevation from the xy plane toward +z.
    """
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    pos = radius * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(pos)


def default_camera(near: float, far: float, elevation_deg: float = DEFAULT_ELEVATION) -> Tensor:
    """The camera assumed for an image without a pose file: (4, 4) camera-to-world.

    SRN-like: at radius ``(near + far) / 2`` (1.3 for SRN cars' 0.8/1.8, the radius SRN renders at),
    looking at the origin from ``elevation_deg`` above the xy plane, azimuth 0 (on the +x axis),
    world up +z.
    """
    return spherical_camera((near + far) / 2, elevation_deg, 0.0)


def default_intrinsics(height: int, width: int) -> tuple[Tensor, Tensor]:
    """SRN's intrinsics at ``height`` x ``width``: focal (2,) = 1.0254 x width (square pixels) and
    principal point (2,) at the image centre ``(W/2, H/2)``."""
    f = SRN_FOCAL_PER_PIXEL * width
    return torch.tensor([f, f]), torch.tensor([width / 2, height / 2])


def rotation_z(angle: Tensor) -> Tensor:
    """Homogeneous rotations (..., 4, 4) by ``angle`` (...,) radians about the world z axis."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(*angle.shape, 4, 4, dtype=angle.dtype)
    rot[..., 0, 0], rot[..., 0, 1] = cos, -sin
    rot[..., 1, 0], rot[..., 1, 1] = sin, cos
    rot[..., 2, 2] = rot[..., 3, 3] = 1.0
    return rot


def orbit(pose: Tensor, frames: int) -> Tensor:
    """``frames`` poses (N, 4, 4) circling the world z axis, starting with ``pose`` (4, 4) itself.

    Frame ``k`` is the input camera rotated by ``2 pi k / N`` about world z (left-multiplied), so each
    keeps the input's distance to the axis, its height (elevation and radius) and its aim relative to
    the axis: a camera that looks at the origin keeps looking at it.
    """
    if frames < 1:
        raise ValueError(f"an orbit needs at least 1 frame, got {frames}")
    angles = torch.arange(frames, dtype=torch.float32) * (2 * math.pi / frames)
    return rotation_z(angles) @ pose.float()


def elevation_radius(pose: Tensor) -> tuple[float, float]:
    """Elevation (degrees) and distance to the origin of a camera's centre, from its (4, 4) pose."""
    t = pose[:3, 3].double()
    radius = float(t.norm())
    return math.degrees(math.asin(max(-1.0, min(1.0, float(t[2]) / max(radius, 1e-12))))), radius
