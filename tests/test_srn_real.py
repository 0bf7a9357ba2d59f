"""featurenerf's camera convention against a real SRN car (``shared/data/srn_cars_real``).

These are the facts the whole pipeline rests on: SRN pose files are OpenCV-style camera-to-world matrices
used unchanged, the intrinsics are read as ``f cx cy`` / ``H W``, and the cameras look at the object
centre from radius ~1.3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featurenerf.data.srn import list_objects, load_image_and_mask, load_poses
from featurenerf.geometry.cameras import project_points, rays_from_pixels

ROOT = Path(__file__).resolve().parents[2] / "shared/data/srn_cars_real"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"real SRN sample not found at {ROOT}")


@pytest.fixture(scope="module")
def record():
    records = list_objects(ROOT, "test")
    assert [r.name for r in records] == ["example1"]
    return records[0]


def test_intrinsics_are_read_as_srn_writes_them(record):
    intr = record.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.height, intr.width) == (
        525.0,
        525.0,
        256.0,
        256.0,
        512,
        512,
    )
    focal, centre = intr.at_size(128, 128)
    assert focal.tolist() == [131.25, 131.25] and centre.tolist() == [64.0, 64.0]
    # The per-view 3x3 K files agree with intrinsics.txt.
    for rgb in record.rgb_paths:
        k = np.array(
            [float(t) for t in (record.directory / "intrinsics" / f"{rgb.stem}.txt").read_text().split()]
        )
        np.testing.assert_allclose(k.reshape(3, 3), [[525, 0, 256], [0, 525, 256], [0, 0, 1]])
    assert Image.open(record.rgb_paths[0]).size == (512, 512)


def test_every_camera_looks_at_the_object_centre(record):
    poses = load_poses(record).double()
    assert poses.shape == (6, 4, 4)
    focal, centre = (t.double() for t in record.intrinsics.at_size(512, 512))
    origin = torch.zeros(3, dtype=torch.float64)
    for c2w in poses:
        rot = c2w[:3, :3]
        torch.testing.assert_close(rot.T @ rot, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
        assert torch.det(rot).item() == pytest.approx(1.0, abs=1e-5)
        assert c2w[:3, 3].norm().item() == pytest.approx(1.3, abs=0.05)
        uv, depth = project_points(origin, c2w, focal, centre)
        assert depth.item() == pytest.approx(1.3, abs=0.05)  # in front: +z is forward, no axis flip needed
        assert (uv - 256).abs().max().item() < 0.05 * 512  # near the image centre
        o, d = rays_from_pixels(centre, c2w, focal, centre)
        closest = o + ((origin - o) @ d) * d
        assert closest.norm().item() < 0.1


def test_image_axes_world_up_is_image_up_and_origin_within_the_car(record):
    poses = load_poses(record).double()
    focal, centre = (t.double() for t in record.intrinsics.at_size(512, 512))
    up = torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64)  # world +z is up for SRN cars
    for view, c2w in enumerate(poses):
        (u0, v0), _ = project_points(torch.zeros(3, dtype=torch.float64), c2w, focal, centre)
        (u1, v1), _ = project_points(up, c2w, focal, centre)
        assert v1 < v0 - 10  # +y is down in the image (OpenCV), so "up" has a smaller row
        # These files carry alpha = 255 everywhere; the mask comes from the white background instead.
        _, mask = load_image_and_mask(record.rgb_paths[view])
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert cols.min() < u0 < cols.max() and rows.min() < v0 < rows.max()  # the centre is within the car
        # The silhouette's centre of mass is near the projected origin (within 15% of the image).
        assert abs(cols.double().mean() - u0) < 0.15 * 512 and abs(rows.double().mean() - v0) < 0.15 * 512
