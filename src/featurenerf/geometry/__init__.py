"""Cameras, rays and projection. The camera convention is stated once, in :mod:`.cameras`."""

from featurenerf.geometry.cameras import (
    camera_to_world_points,
    pixel_centers,
    project_points,
    rays_from_pixels,
    resize_intrinsics,
    world_to_camera_points,
)

__all__ = [
    "camera_to_world_points",
    "pixel_centers",
    "project_points",
    "rays_from_pixels",
    "resize_intrinsics",
    "world_to_camera_points",
]
