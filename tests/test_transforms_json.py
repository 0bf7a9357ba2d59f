"""transforms.json objects read back exactly like the SRN object they were written from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from featurenerf.data.check import check_dataset
from featurenerf.data.formats import detect_format, list_objects_any
from featurenerf.data.srn import DataError, list_objects, load_image, load_poses
from featurenerf.data.transforms_json import read_transforms_object, write_transforms_object
from featurenerf.geometry.cameras import pixel_centers, project_points, rays_from_pixels


@pytest.fixture(scope="module")
def converted(toy_root, tmp_path_factory) -> tuple[Path, Path]:
    """The toy dataset's train objects rewritten as transforms.json objects in a second root."""
    out = tmp_path_factory.mktemp("transforms")
    for record in list_objects(toy_root, "train"):
        write_transforms_object(record, out / "toycar_train" / record.name)
    return toy_root, out


def test_both_readers_agree_on_poses_intrinsics_rays_and_images(converted):
    srn_root, tf_root = converted
    srn_records = list_objects(srn_root, "train")
    tf_records = list_objects_any(tf_root, "train")
    assert [r.name for r in tf_records] == [r.name for r in srn_records] and len(srn_records) == 4
    for a, b in zip(srn_records, tf_records):
        assert b.extra["format"] == "transforms" and b.num_views == a.num_views == 5
        assert b.intrinsics == a.intrinsics
        pa, pb = load_poses(a), load_poses(b)
        torch.testing.assert_close(pb, pa, atol=1e-6, rtol=0)
        torch.testing.assert_close(load_poses(b, [3, 1]), pa[[3, 1]], atol=1e-6, rtol=0)
        uv = pixel_centers(32, 32)
        for view in range(a.num_views):
            fa, ca = a.intrinsics.at_size(32, 32)
            fb, cb = b.intrinsics.at_size(32, 32)
            oa, da = rays_from_pixels(uv, pa[view], fa, ca)
            ob, db = rays_from_pixels(uv, pb[view], fb, cb)
            torch.testing.assert_close(ob, oa, atol=1e-6, rtol=0)
            torch.testing.assert_close(db, da, atol=1e-6, rtol=0)
            assert torch.equal(load_image(b.rgb_paths[view]), load_image(a.rgb_paths[view]))


def test_formats_are_detected_and_checked(converted):
    srn_root, tf_root = converted
    assert detect_format(srn_root) == "srn"
    assert detect_format(tf_root) == "transforms"
    assert [r.name for r in list_objects_any(srn_root, "train", "toycar", None)] == [
        r.name for r in list_objects(srn_root, "train")
    ]
    assert check_dataset(tf_root) == []
    with pytest.raises(DataError, match="no objects"):
        detect_format(tf_root / "toycar_train")


def _nerf_synthetic_object(directory: Path, angle_x: float, c2w_gl: list[list[float]]) -> None:
    from PIL import Image

    (directory / "train").mkdir(parents=True)
    Image.new("RGBA", (40, 20)).save(directory / "train" / "r_0.png")
    frames = [{"file_path": "./train/r_0", "rotation": 0.0, "transform_matrix": c2w_gl}]
    (directory / "transforms.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))


def test_nerf_synthetic_camera_angle_and_opengl_axes(tmp_path):
    # An OpenGL camera at (0, 0, 2) with identity rotation looks down world -z with world +y up.
    c2w_gl = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
    obj = tmp_path / "lego_test" / "lego"
    _nerf_synthetic_object(obj, angle_x=math.pi / 2, c2w_gl=c2w_gl)
    record = read_transforms_object(obj, "test")
    assert record.rgb_paths == (obj / "train" / "r_0.png",)
    intr = record.intrinsics
    # f = (W / 2) / tan(angle / 2) = 20 / tan(45 deg) = 20; principal point at the image centre.
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.height, intr.width) == pytest.approx(
        (20, 20, 20, 10, 20, 40)
    )
    c2w = load_poses(record)[0]
    expected = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2], [0, 0, 0, 1]])
    torch.testing.assert_close(c2w, expected)
    # A world point above the axis (+y) must appear above the image centre (smaller row v).
    focal, centre = intr.at_size(20, 40)
    uv, depth = project_points(torch.tensor([[0.0, 0.5, 0.0]]), c2w, focal, centre)
    assert depth.item() == pytest.approx(2.0)
    torch.testing.assert_close(uv[0], torch.tensor([20.0, 10.0 - 20 * 0.25]))


def test_malformed_transforms_name_the_file(tmp_path):
    obj = tmp_path / "lego_train" / "lego"
    _nerf_synthetic_object(obj, angle_x=0.7, c2w_gl=[[1, 0, 0], [0, 1, 0]])
    with pytest.raises(DataError, match=r"transforms\.json: frames\[0\]\.transform_matrix must be 4x4"):
        read_transforms_object(obj)
    problems = check_dataset(tmp_path)
    assert [p.path for p in problems] == [obj / "transforms.json"]
    raw = json.loads((obj / "transforms.json").read_text())
    raw["frames"][0].update(file_path="./train/missing", transform_matrix=torch.eye(4).tolist())
    (obj / "transforms.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="image './train/missing' not found"):
        read_transforms_object(obj)


def test_data_check_summary_counts_transforms_frames(converted, capsys):
    from featurenerf.commands import data

    _, tf_root = converted
    assert data.main(["check", str(tf_root)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "ok: 4 objects, 20 views"
