"""`featurenerf render` / `export`, orbit cameras and the PLY writer, on a model whose field is known.

The test model is a real checkpoint whose output layer is fixed by hand: colour (0.25, 0.5, 0.75) and a
huge density everywhere, cut to a ball of radius 0.4 by the model's ``scene_radius`` (render-time
empty-space skipping). So every view shows an opaque sphere of that colour, depth is the distance to the
sphere, and exported surface points lie on it. The internal features still vary over space (the trunk is
untouched), which the PCA colours show.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from featurenerf.commands import export, render
from featurenerf.orbit import (
    default_camera,
    default_intrinsics,
    elevation_radius,
    look_at,
    orbit,
    spherical_camera,
)
from featurenerf.ply import write_ply

plyfile = pytest.importorskip("plyfile")

SIZE = 32
RADIUS = 0.4
COLOUR = (0.25, 0.5, 0.75)
COLOUR_U8 = (64, 128, 191)  # round(255 * c)
N_COARSE = 32  # coarse sample spacing (far - near) / 32 = 1/32 bounds how far inside the ball depth lands


@pytest.fixture(scope="module")
def sphere_ckpt(tmp_path_factory):
    import lightning as L

    from featurenerf.module import FeatureNeRF

    model = FeatureNeRF(
        feature_dim=8,
        encoder_layers=2,
        d_hidden=16,
        n_coarse=N_COARSE,
        n_fine=2,
        n_fine_depth=2,
        scene_radius=RADIUS,
        background="white",
    )
    with torch.no_grad():
        out = model.net.mlp.lin_out
        out.weight[:4].zero_()  # rgb and sigma no longer depend on the point
        out.bias[:3] = torch.logit(torch.tensor(COLOUR))
        out.bias[3] = 1e4
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("ckpt") / "sphere.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def view_files(tmp_path_factory):
    """A 32-px input image with an SRN pose file (camera at radius 1.3, 30° up) and intrinsics."""
    d = tmp_path_factory.mktemp("view")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / "img.png")
    pose = spherical_camera(1.3, 30.0, 0.0)
    (d / "pose.txt").write_text(" ".join(f"{v:.9g}" for v in pose.reshape(-1).tolist()) + "\n")
    f = 525.0 / 512.0 * SIZE
    (d / "intrinsics.txt").write_text(f"{f} {SIZE / 2} {SIZE / 2} 0.\n0. 0. 0.\n1.\n{SIZE} {SIZE}\n")
    return d, pose


# ---------------------------------------------------------------- orbit cameras
def test_default_camera_is_srn_like():
    c2w = default_camera(0.8, 1.8)
    el = math.radians(20.0)
    torch.testing.assert_close(c2w[:3, 3], torch.tensor([1.3 * math.cos(el), 0.0, 1.3 * math.sin(el)]))
    torch.testing.assert_close(c2w[:3, 2], -c2w[:3, 3] / 1.3)  # looks at the origin (+z forward)
    assert c2w[2, 1] < 0  # image down (+y) points toward world -z: world up is +z
    torch.testing.assert_close(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3))
    focal, c = default_intrinsics(64, 64)
    torch.testing.assert_close(focal, torch.tensor([65.625, 65.625]))  # 525 / 512 * 64
    torch.testing.assert_close(c, torch.tensor([32.0, 32.0]))


def test_look_at_matches_srn_axes():
    # A camera on -x looking along +x at the origin: right = -y, down = -z (as real SRN poses).
    c2w = look_at(torch.tensor([-2.0, 0.0, 0.0]))
    torch.testing.assert_close(c2w[:3, 0], torch.tensor([0.0, -1.0, 0.0]))
    torch.testing.assert_close(c2w[:3, 1], torch.tensor([0.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="z axis"):
        look_at(torch.tensor([0.0, 0.0, 2.0]))


def test_orbit_circles_the_z_axis_from_the_input_camera():
    start = spherical_camera(1.3, 30.0, 0.0)
    poses = orbit(start, 4)
    torch.testing.assert_close(poses[0], start)
    el = math.radians(30.0)
    r, z = 1.3 * math.cos(el), 1.3 * math.sin(el)
    expected = [[r, 0, z], [0, r, z], [-r, 0, z], [0, -r, z]]  # 90° steps, counter-clockwise seen from +z
    torch.testing.assert_close(poses[:, :3, 3], torch.tensor(expected), atol=1e-6, rtol=0)
    for p in poses:
        torch.testing.assert_close(p, spherical_camera(1.3, 30.0, math.degrees(math.atan2(p[1, 3], p[0, 3]))))
        el_k, r_k = elevation_radius(p)
        assert el_k == pytest.approx(30.0, abs=1e-4) and r_k == pytest.approx(1.3, abs=1e-6)
    with pytest.raises(ValueError):
        orbit(start, 0)


# ---------------------------------------------------------------- PLY writer
@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trips_through_a_real_parser(tmp_path, binary):
    rng = np.random.default_rng(1)
    props = {
        "x": rng.normal(size=5).astype(np.float32),
        "y": rng.normal(size=5).astype(np.float32),
        "z": np.float32([0, 1e-7, -3.5, 1e6, 0.1]),
        "red": np.uint8([0, 1, 127, 254, 255]),
        "count": np.int32([-7, 0, 3, 2**31 - 1, -(2**31)]),
    }
    path = write_ply(tmp_path / "p.ply", props, binary=binary)
    ply = plyfile.PlyData.read(str(path))
    assert ply.text is (not binary)
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == list(props)
    assert [p.val_dtype for p in vertex.properties] == ["f4", "f4", "f4", "u1", "i4"]
    for name, values in props.items():
        np.testing.assert_array_equal(vertex[name], values)  # exact, ASCII included


def test_ply_rejects_ragged_or_unsupported_columns(tmp_path):
    with pytest.raises(ValueError, match="one length"):
        write_ply(tmp_path / "a.ply", {"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="dtype"):
        write_ply(tmp_path / "b.ply", {"x": np.zeros(3, np.complex64)})
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------- render
def test_render_writes_frames_sheet_gif_and_cameras(sphere_ckpt, view_files, tmp_path, capsys):
    d, pose = view_files
    out = tmp_path / "render"
    args = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--pose", str(d / "pose.txt")]
    args += ["--intrinsics", str(d / "intrinsics.txt"), "--out", str(out), "--frames", "4", "--quiet"]
    assert render.main(args) == 0
    assert "rendered 4 views at 32x32" in capsys.readouterr().out

    for kind in ("rgb", "depth", "features"):
        for k in range(4):
            with Image.open(out / "frames" / f"{kind}_{k:03d}.png") as im:
                assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    rgb = np.asarray(Image.open(out / "frames" / "rgb_000.png"))
    depth = np.asarray(Image.open(out / "frames" / "depth_000.png"))
    feats = np.asarray(Image.open(out / "frames" / "features_001.png"))
    centre, corner = (SIZE // 2, SIZE // 2), (0, 0)
    assert tuple(rgb[centre]) == COLOUR_U8 and tuple(rgb[corner]) == (255, 255, 255)  # sphere on white
    assert depth[centre].min() >= 240 and tuple(depth[corner]) == (0, 0, 0)  # nearest point is brightest
    assert tuple(feats[corner]) == (255, 255, 255)  # background keeps the model's background colour
    assert len({tuple(p) for p in feats[12:20, 12:20].reshape(-1, 3)}) > 1  # the feature field varies

    with Image.open(out / "orbit.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (3 * SIZE, SIZE)  # rgb | depth | features per frame
        assert gif.info["loop"] == 0 and gif.info["duration"] == 120  # 8 fps in 1/100 s
    with Image.open(out / "contact_sheet.png") as sheet:
        # image_grid: 3 rows (rgb, depth, features) x 4 frames, 2-px padding, a left margin of row labels
        margin = sheet.width - 4 * (SIZE + 2)
        assert sheet.height == 3 * (SIZE + 2) + 2 and margin > 40
        labels = np.asarray(sheet.convert("L"))[:, : margin - 2]
        for row in range(3):  # each row's label is written beside it
            band = labels[2 + row * (SIZE + 2) : (row + 1) * (SIZE + 2)]
            assert (band < 128).any(), row
    with Image.open(out / "input.png") as im:
        assert im.size == (SIZE, SIZE)
    cams = np.load(out / "cameras.npz")
    np.testing.assert_allclose(cams["poses"][0], pose.numpy(), atol=1e-6)
    np.testing.assert_allclose(cams["poses"][2][:3, 3], pose[:3, 3].numpy() * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(cams["focal"], [525.0 / 512.0 * SIZE] * 2, rtol=1e-6)


def test_cpu_render_keeps_freed_memory_for_the_next_chunk(sphere_ckpt, view_files, tmp_path, monkeypatch):
    """render/export on a CPU reuse freed activation memory (13-17 % less CPU time on a toy orbit) as
    fit/validate do; on another device they leave the allocator alone."""
    import featurenerf.cpu_allocator as allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    d, _ = view_files
    args = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--frames", "1", "--quiet"]
    assert render.main([*args, "--out", str(tmp_path / "r"), "--render-size", "8"]) == 0
    assert calls == [1]
    import featurenerf.api as api

    class Loaded(Exception):
        pass

    monkeypatch.setattr(api, "load", lambda *a, **k: (_ for _ in ()).throw(Loaded()))
    with pytest.raises(Loaded):  # stops at loading: the allocator decision was made before it
        render.main([*args, "--out", str(tmp_path / "m"), "--device", "meta"])
    assert calls == [1]  # not a CPU run: untouched


def test_render_without_pose_says_which_camera_it_assumed(sphere_ckpt, view_files, tmp_path, capsys):
    d, _ = view_files
    out = tmp_path / "r"
    args = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--out", str(out), "--frames", "2"]
    assert render.main([*args, "--quiet", "--render-size", "16"]) == 0
    err = capsys.readouterr().err
    assert "default camera" in err and "radius 1.3" in err and "elevation 20" in err
    np.testing.assert_allclose(np.load(out / "cameras.npz")["poses"][0], default_camera(0.8, 1.8), atol=1e-6)
    np.testing.assert_allclose(np.load(out / "cameras.npz")["focal"], [525.0 / 512.0 * 16] * 2, rtol=1e-6)
    with Image.open(out / "orbit.gif") as gif:
        assert gif.n_frames == 2 and gif.size == (3 * 16, 16)


def test_render_occupancy_option_reports_the_grid_and_leaves_the_views_unchanged(
    sphere_ckpt, view_files, tmp_path, capsys
):
    d, _ = view_files
    base = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--pose", str(d / "pose.txt")]
    base += ["--frames", "2", "--render-size", "16"]
    assert render.main([*base, "--out", str(tmp_path / "g"), "--occupancy-resolution", "16"]) == 0
    err = capsys.readouterr().err
    assert "render: occupancy grid 16x16x16:" in err and "density evaluations" in err
    assert render.main([*base, "--out", str(tmp_path / "n"), "--occupancy-resolution", "0", "--quiet"]) == 0
    assert "occupancy grid" not in capsys.readouterr().err
    for k in range(2):
        a = np.asarray(Image.open(tmp_path / "g" / "frames" / f"rgb_{k:03d}.png"), dtype=int)
        b = np.asarray(Image.open(tmp_path / "n" / "frames" / f"rgb_{k:03d}.png"), dtype=int)
        assert np.abs(a - b).max() <= 1
    rc = render.main([*base, "--out", str(tmp_path / "x"), "--occupancy-resolution", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--occupancy-resolution must be >= 0" in err[0]


def test_render_missing_checkpoint_is_one_line(view_files, tmp_path, capsys):
    d, _ = view_files
    rc = render.main(
        ["--ckpt", str(tmp_path / "no.ckpt"), "--image", str(d / "img.png"), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no.ckpt" in err[0] and "not found" in err[0]


# ---------------------------------------------------------------- export
def _read_cloud(path):
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    return vertex, xyz


def test_export_depth_points_lie_on_the_sphere(sphere_ckpt, view_files, tmp_path, capsys):
    d, _ = view_files
    out = tmp_path / "cloud.ply"
    args = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--pose", str(d / "pose.txt")]
    args += ["--intrinsics", str(d / "intrinsics.txt"), "--out", str(out), "--views", "2", "--quiet"]
    assert export.main(args) == 0
    vertex, xyz = _read_cloud(out)
    names = [p.name for p in vertex.properties]
    assert names == ["x", "y", "z", "red", "green", "blue", "pca_red", "pca_green", "pca_blue"]
    assert [p.val_dtype for p in vertex.properties] == ["f4"] * 3 + ["u1"] * 6
    n = len(xyz)
    # the sphere covers about pi * 10.6^2 of 32^2 pixels in each of the 2 views
    assert 2 * 300 < n < 2 * 400
    radius = np.linalg.norm(xyz, axis=1)
    assert radius.max() <= RADIUS + 1e-4 and radius.min() >= RADIUS - 1.0 / N_COARSE
    for name, value in zip(("red", "green", "blue"), COLOUR_U8):
        assert (vertex[name] == value).all()  # background blend undone exactly
    assert (
        len({tuple(p) for p in np.stack([vertex["pca_red"], vertex["pca_green"], vertex["pca_blue"]], 1)}) > 1
    )
    assert f"exported {n} points (depth)" in capsys.readouterr().out

    side = np.load(out.with_suffix(".npz"))
    assert set(side.files) == {"xyz", "rgb", "features_internal", "features_distilled"}
    np.testing.assert_array_equal(side["xyz"], xyz)
    np.testing.assert_allclose(side["rgb"], np.broadcast_to(COLOUR, (n, 3)), atol=1e-5)
    assert side["features_internal"].shape == (n, 16) and side["features_internal"].dtype == np.float16
    assert side["features_distilled"].shape == (n, 8)

    # the side features are the API's point features at those points
    import featurenerf

    net = featurenerf.load(sphere_ckpt)
    view = featurenerf.load_view(d / "img.png", net, d / "pose.txt", d / "intrinsics.txt")
    with torch.no_grad():
        cond = net.encode(view.images, view.poses, view.focal, view.c)
        expected = net.point_features(cond, torch.from_numpy(xyz[:200]))
    np.testing.assert_allclose(side["features_internal"][:200], expected.numpy(), rtol=2e-3, atol=2e-3)


def test_export_grid_finds_the_shell_of_the_ball(sphere_ckpt, view_files, tmp_path):
    d, _ = view_files
    out = tmp_path / "grid.ply"
    args = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--out", str(out), "--quiet"]
    args += ["--method", "grid", "--grid", "10", "--bound", "0.5", "--ascii", "--max-points", "100000"]
    assert export.main(args) == 0
    ply = plyfile.PlyData.read(str(out))
    assert ply.text
    _, xyz = _read_cloud(out)
    # Independent count: cell centres inside the ball with a 6-neighbour outside it (or off the grid).
    centres = -0.5 + 0.1 * (np.arange(10) + 0.5)
    inside = np.linalg.norm(np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1), axis=-1)
    inside = inside <= RADIUS
    padded = np.pad(inside, 1)
    interior = inside.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1]
    shell = np.argwhere(inside & ~interior)
    assert len(xyz) == len(shell)
    np.testing.assert_allclose(
        np.sort(np.linalg.norm(xyz, axis=1)), np.sort(np.linalg.norm(centres[shell], axis=1)), atol=1e-6
    )


def test_export_max_points_and_bad_suffix(sphere_ckpt, view_files, tmp_path, capsys):
    d, _ = view_files
    base = ["--ckpt", str(sphere_ckpt), "--image", str(d / "img.png"), "--quiet", "--views", "1"]
    assert export.main([*base, "--out", str(tmp_path / "c.ply"), "--max-points", "50"]) == 0
    assert len(_read_cloud(tmp_path / "c.ply")[1]) == 50
    assert export.main([*base, "--out", str(tmp_path / "c.txt")]) == 2
    assert "must end in .ply" in capsys.readouterr().err


def test_render_refuses_a_non_checkpoint_and_names_its_trust_flag(sphere_ckpt, view_files, tmp_path, capsys):
    import argparse
    import random

    d, _ = view_files

    def run(ckpt, *extra):
        args = ["--ckpt", str(ckpt), "--image", str(d / "img.png"), "--pose", str(d / "pose.txt")]
        args += ["--out", str(tmp_path / "out"), "--frames", "1", "--render-size", "8", "--quiet", *extra]
        capsys.readouterr()
        rc = render.main(args)
        return rc, capsys.readouterr().err.strip().splitlines()

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(random.Random(0).randbytes(4096))
    rc, err = run(junk)
    assert rc == 2 and len(err) == 1 and f"{junk}: not a checkpoint" in err[0], err
    assert "trust" not in err[0]

    # A real torch.save file that pickles a Python object (as DINO's training checkpoints do).
    pickled = tmp_path / "pickled.ckpt"
    ckpt = torch.load(sphere_ckpt, map_location="cpu", weights_only=True)
    torch.save({**ckpt, "args": argparse.Namespace(lr=1.0)}, pickled)
    rc, err = run(pickled)
    assert rc == 2 and len(err) == 1 and "refusing to unpickle" in err[0], err
    assert err[0].endswith("if you trust the file, pass --trust")
    rc, err = run(pickled, "--trust")
    assert rc == 0 and (tmp_path / "out" / "orbit.gif").exists()
