"""Annotation readers and derived 2D keypoints on a hand-built object with hand-computed answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featurenerf.data.annotations import (
    Meta,
    derive_keypoints_2d,
    load_keypoints_3d,
    load_object_mask,
    load_part_map,
    load_points,
    read_meta,
)
from featurenerf.data.srn import DataError, read_object

META = {
    "category": "thing",
    "part_names": ["background", "a", "b"],
    "keypoint_names": ["centre", "side", "missing", "far", "outside"],
    "near": 0.5,
    "far": 3.0,
    "background": "white",
}
# Camera at (0, 0, -2) looking along world +z (identity rotation), f = 20, c = (8, 8), 16 x 16 pixels.
POSE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]]
KEYPOINTS = [[0, 0, 0], [0.4, 0.2, 0], None, [-0.4, -0.4, 0.5], [2, 0, 0]]


def _patch(centre, n=5, spacing=0.01) -> np.ndarray:
    """A small square grid of points in the z = const plane around ``centre``."""
    g = (np.arange(n) - n // 2) * spacing
    xx, yy = np.meshgrid(g, g)
    return np.stack([xx.ravel(), yy.ravel(), np.zeros(n * n)], axis=1) + centre


def _make(root: Path, parts: np.ndarray | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(META))
    obj = root / "thing_train" / "obj"
    for sub in ("rgb", "pose", "parts"):
        (obj / sub).mkdir(parents=True)
    rgba = np.full((16, 16, 4), 255, np.uint8)
    rgba[:8, :, 3] = 0  # top half transparent
    Image.fromarray(rgba).save(obj / "rgb" / "000000.png")
    (obj / "pose" / "000000.txt").write_text(" ".join(str(v) for row in POSE for v in row))
    (obj / "intrinsics.txt").write_text("20. 8. 8. 0.\n0. 0. 0.\n1.\n16 16\n")
    if parts is None:
        parts = np.ones((16, 16), np.uint8)
        parts[10, 12] = 2  # the pixel under keypoint "side" (u, v) = (12, 10) shows part b
    Image.fromarray(parts).save(obj / "parts" / "000000.png")
    (obj / "keypoints.json").write_text(json.dumps({"xyz": KEYPOINTS}))
    xyz = np.concatenate(
        [
            _patch([0, 0, 0]),  # around "centre" (part a)
            _patch([0.4, 0.2, 0]),  # around "side" (part b)
            _patch([-0.4, -0.4, 0.5]),  # around "far" (part a) ...
            _patch([-0.32, -0.32, 0]),  # ... hidden by this patch, on the same line of sight at depth 2
        ]
    ).astype(np.float32)
    labels = np.repeat([1, 2, 1, 1], 25).astype(np.int64)
    np.savez(obj / "points.npz", xyz=xyz, labels=labels)
    return obj


@pytest.fixture
def record(tmp_path):
    return read_object(_make(tmp_path / "data"), "train")


def test_read_meta(tmp_path, record):
    meta = read_meta(record.directory.parent.parent)
    assert meta == Meta("thing", ("background", "a", "b"), tuple(META["keypoint_names"]), 0.5, 3.0, "white")
    with pytest.raises(DataError, match=r"meta\.json: missing"):
        read_meta(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for broken, message in [
        ("{", "malformed JSON"),
        (json.dumps({**META, "part_names": ["a", "b"]}), "part_names\\[0\\] must be 'background'"),
        (json.dumps({k: v for k, v in META.items() if k != "far"}), "missing key\\(s\\) far"),
        (json.dumps({**META, "background": "grey"}), "background must be"),
    ]:
        (bad / "meta.json").write_text(broken)
        with pytest.raises(DataError, match=message):
            read_meta(bad)


def test_part_map_mask_keypoints_points(record):
    parts = load_part_map(record, 0)
    assert (
        parts.dtype == torch.int64 and parts.shape == (16, 16) and parts[10, 12] == 2 and parts.sum() == 257
    )
    # Halving with nearest neighbour: output pixel i's centre (i + 0.5) * 2 falls on the edge between input
    # pixels 2i and 2i + 1; "nearest-exact" takes 2i + 1, so the map is every second pixel from 1.
    small = load_part_map(record, 0, size=8)
    assert torch.equal(small, parts[1::2, 1::2])
    mask = load_object_mask(record, 0)
    assert mask.dtype == torch.bool and mask[:8].sum() == 0 and mask[8:].all()
    assert load_object_mask(record, 0, size=4).tolist() == [[False] * 4] * 2 + [[True] * 4] * 2
    kp = load_keypoints_3d(record)
    assert kp.shape == (5, 3) and torch.isnan(kp[2]).all()
    assert torch.equal(
        kp[[0, 1, 3, 4]], torch.tensor([KEYPOINTS[i] for i in (0, 1, 3, 4)], dtype=torch.float32)
    )
    xyz, labels = load_points(record)
    assert xyz.shape == (100, 3) and labels.dtype == torch.int64 and labels.tolist().count(2) == 25


def test_mask_falls_back_to_parts_without_alpha(record):
    rgb = record.rgb_paths[0]
    Image.open(rgb).convert("RGB").save(rgb)
    assert load_object_mask(record, 0).all()  # the part map has no background pixel


def test_derived_keypoints_hand_computed(record):
    uv, visible = derive_keypoints_2d(record, 0, 16)
    # uv = f * (x, y) / z + c with z = depth = z_world + 2.
    expected = torch.tensor([[8, 8], [12, 10], [float("nan")] * 2, [8 - 20 * 0.4 / 2.5] * 2, [28, 8]])
    torch.testing.assert_close(uv, expected, equal_nan=True)
    # centre: visible; side: on part b as its own points say; missing: null; far: behind the patch at
    # depth 2; outside: projects off the image.
    assert visible.tolist() == [True, True, False, False, False]
    uv32, visible32 = derive_keypoints_2d(record, 0, 32)  # another size: coordinates scale by 2
    torch.testing.assert_close(uv32[[0, 1, 3]], 2 * expected[[0, 1, 3]])
    assert visible32.tolist() == [True, True, False, False, False]


def test_keypoint_over_another_part_is_hidden(tmp_path):
    record = read_object(_make(tmp_path / "d", parts=np.ones((16, 16), np.uint8)), "train")
    _, visible = derive_keypoints_2d(record, 0, 16)
    assert visible.tolist() == [True, False, False, False, False]  # "side" (part b) is covered by part a


def test_missing_annotations_name_the_file(tmp_path):
    obj = _make(tmp_path / "e")
    for name in ("keypoints.json", "points.npz"):
        (obj / name).unlink()
    record = read_object(obj, "train")
    with pytest.raises(DataError, match=r"keypoints\.json: missing"):
        load_keypoints_3d(record)
    with pytest.raises(DataError, match=r"points\.npz: missing"):
        load_points(record)
    (obj / "parts" / "000000.png").unlink()
    with pytest.raises(DataError, match=r"parts/000000\.png: missing"):
        load_part_map(record, 0)
    (obj / "keypoints.json").write_text(json.dumps({"xyz": [[1, 2]]}))
    with pytest.raises(DataError, match="malformed keypoint row 0"):
        load_keypoints_3d(record)
