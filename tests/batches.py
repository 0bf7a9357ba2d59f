"""A tiny synthetic training batch shared by the model tests: cameras on -z looking at the origin."""

from __future__ import annotations

import torch


def camera_batch(b: int = 2, size: int = 16, rays: int = 12, feature_dim: int = 5, seed: int = 0):
    """``(batch, ray_batch)`` as :meth:`FeatureNeRF.compute_losses` takes them: ``b`` objects with one
    ``size``-px source view each and ``rays`` target rays per object."""
    g = torch.Generator().manual_seed(seed)
    poses = torch.eye(4).repeat(b, 1, 1, 1)
    poses[..., 2, 3] = -1.3  # camera on -z looking along +z at the origin
    batch = {
        "src_images": torch.rand(b, 1, 3, size, size, generator=g),
        "src_poses": poses,
        "focal": torch.full((b, 2), float(size)),
        "c": torch.full((b, 2), size / 2),
    }
    origins = torch.zeros(b, rays, 3)
    origins[..., 2] = -1.3
    dirs = torch.randn(b, rays, 3, generator=g) * 0.2
    dirs[..., 2] = 1.0
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    ray_batch = {
        "origins": origins,
        "dirs": dirs,
        "rgb": torch.rand(b, rays, 3, generator=g),
        "teacher": torch.randn(b, rays, feature_dim, generator=g),
    }
    return batch, ray_batch
