"""The one place that states featurenerf's camera convention.

Convention (the SRN files' own, used unchanged everywhere in featurenerf):

* **World** = the object's frame (ShapeNet's normalised object coordinates; objects sit near the origin).
* **Pose** = a 4×4 *camera-to-world* matrix ``c2w``: ``x_world = R @ x_cam + t``.
* **Camera axes are OpenCV's**: +x right, +y down, **+z forward** (the viewing direction). SRN pose files
  are already in this convention (checked against the real car in ``shared/data/srn_cars_real``), so we
  never flip axes on reading. pixelNeRF multiplies poses by ``diag(1, -1, -1, 1)`` because it uses
  OpenGL axes (-z forward); readers of OpenGL-convention formats (NeRF-synthetic ``transforms.json``)
  convert *into* this convention with :func:`opengl_to_opencv`.
* **Pixels**: ``u`` is the column, ``v`` the row; the centre of pixel ``(row i, col j)`` is at
  ``(u, v) = (j + 0.5, i + 0.5)``. With this half-pixel offset the principal point of an SRN view,
  ``cx = cy = W / 2``, is exactly the image centre, and resizing an image by ``s`` scales ``f`` and ``c``
  by exactly ``s`` (:func:`resize_intrinsics`).
* **Intrinsics** are a focal length ``focal = (fx, fy)`` and principal point ``c = (cx, cy)`` in pixels.
* Ray directions are unit length, so a sample's ray parameter ``z`` is its distance from the camera
  centre (not its depth along the optical axis).

All functions broadcast over leading batch dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert a camera-to-world pose with OpenGL axes (y up, -z forward) to OpenCV axes.

    Args:
        c2w: (..., 4, 4) camera-to-world in OpenGL convention.
    Returns:
        (..., 4, 4) camera-to-world in featurenerf's (OpenCV) convention.
    """
    return c2w @ _OPENGL_TO_OPENCV.to(c2w)


def resize_intrinsics(focal: Tensor, c: Tensor, scale: float | tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Intrinsics after resizing the image by ``scale`` (new size / old size), per axis ``(sx, sy)``.

    Because pixel centres sit at half-integers, a resize scales both focal and principal point exactly.
    """
    s = torch.as_tensor(scale, dtype=focal.dtype, device=focal.device)
    return focal * s, c * s


def pixel_centers(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Pixel centres of an image in ``(u, v)`` order.

    Returns:
        (H, W, 2) with ``[i, j] = (j + 0.5, i + 0.5)``.
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def rays_from_pixels(uv: Tensor, c2w: Tensor, focal: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Rays through pixel positions.

    Args:
        uv: (..., 2) pixel positions (``u`` column, ``v`` row; centres at half-integers).
        c2w: (..., 4, 4) camera-to-world poses, broadcastable against ``uv``'s batch shape.
        focal: (..., 2) ``(fx, fy)``; c: (..., 2) ``(cx, cy)``.
    Returns:
        origins (..., 3) and unit directions (..., 3) in world coordinates.
    """
    x = (uv[..., 0] - c[..., 0]) / focal[..., 0]
    y = (uv[..., 1] - c[..., 1]) / focal[..., 1]
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # +z forward (OpenCV)
    d_world = (c2w[..., :3, :3] @ d_cam.unsqueeze(-1)).squeeze(-1)
    d_world = d_world / d_world.norm(dim=-1, keepdim=True)
    origins = c2w[..., :3, 3].expand_as(d_world)
    return origins, d_world


def world_to_camera_points(points: Tensor, c2w: Tensor) -> Tensor:
    """Points from world to camera coordinates: ``R^T (x - t)``.

    Args:
        points: (..., 3); c2w: (..., 4, 4) broadcastable (add singleton dims for point batches).
    Returns:
        (..., 3) camera-frame points (OpenCV axes).
    """
    rot = c2w[..., :3, :3]
    t = c2w[..., :3, 3]
    return ((points - t).unsqueeze(-2) @ rot).squeeze(-2)


def camera_to_world_points(points: Tensor, c2w: Tensor) -> Tensor:
    """Inverse of :func:`world_to_camera_points`: ``R x + t``."""
    return (c2w[..., :3, :3] @ points.unsqueeze(-1)).squeeze(-1) + c2w[..., :3, 3]


def rotate_to_camera(vectors: Tensor, c2w: Tensor) -> Tensor:
    """Directions (or points, rotation only) expressed in the camera's axes: ``R^T v``.

    pixelNeRF feeds the MLP the sample position *rotated* into the source camera frame without the
    translation; this is that rotation.
    """
    return (vectors.unsqueeze(-2) @ c2w[..., :3, :3]).squeeze(-2)


def project_points(points: Tensor, c2w: Tensor, focal: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points into a camera.

    Args:
        points: (..., 3) world points; c2w (..., 4, 4); focal, c: (..., 2); all broadcastable.
    Returns:
        uv (..., 2) pixel positions (centre convention above) and depth (...,) along +z. Points
        behind the camera get depth <= 0; callers decide what that means.
    """
    p = world_to_camera_points(points, c2w)
    z = p[..., 2]
    z_safe = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    uv = p[..., :2] / z_safe.unsqueeze(-1) * focal + c
    return uv, z


def uv_to_grid(uv: Tensor, width: int, height: int) -> Tensor:
    """Pixel positions → ``grid_sample`` coordinates in [-1, 1] for ``align_corners=False``.

    With ``align_corners=False``, -1 and +1 are the outer *edges* of the border pixels, which is the
    half-pixel-centre convention above; it holds at any feature-map resolution that covers the image.
    """
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=uv.dtype, device=uv.device)
    return uv * scale - 1.0
