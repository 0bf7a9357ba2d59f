"""Camera convention: hand-computed pixel centres, rays, projections and conversions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from featurenerf.geometry.cameras import (
    camera_to_world_points,
    opengl_to_opencv,
    pixel_centers,
    project_points,
    rays_from_pixels,
    resize_intrinsics,
    rotate_to_camera,
    uv_to_grid,
    world_to_camera_points,
)

FOCAL = torch.tensor([2.0, 2.0])
CENTRE = torch.tensor([2.0, 2.0])  # a 4 x 4 image: cx = cy = W / 2

# Rotation by +90 degrees about world y: camera +z (forward) -> world +x, camera +x -> world -z.
#   R @ (0, 0, 1) = (1, 0, 0);  R @ (1, 0, 0) = (0, 0, -1);  R @ (0, 1, 0) = (0, 1, 0).
ROT_Y90 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def make_c2w(rot: torch.Tensor, t: tuple[float, float, float]) -> torch.Tensor:
    c2w = torch.eye(4)
    c2w[:3, :3] = rot
    c2w[:3, 3] = torch.tensor(t)
    return c2w


def test_pixel_centers_are_half_integers_in_uv_order():
    uv = pixel_centers(2, 3)
    assert uv.shape == (2, 3, 2)
    # [i, j] = (u, v) = (j + 0.5, i + 0.5): u runs along columns, v along rows.
    expected = torch.tensor(
        [
            [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]],
            [[0.5, 1.5], [1.5, 1.5], [2.5, 1.5]],
        ]
    )
    torch.testing.assert_close(uv, expected, rtol=0, atol=0)


def test_rays_identity_pose_hand_computed():
    c2w = torch.eye(4)
    uv = torch.tensor(
        [
            [2.0, 2.0],  # principal point: x = y = 0           -> d = (0, 0, 1)
            [4.0, 2.0],  # x = (4 - 2) / 2 = 1, y = 0             -> d = (1, 0, 1) / sqrt(2)
            [2.0, 0.0],  # x = 0, y = (0 - 2) / 2 = -1 (row above) -> d = (0, -1, 1) / sqrt(2)
            [0.5, 3.5],  # x = (0.5 - 2) / 2 = -0.75, y = 0.75     -> d = (-0.75, 0.75, 1) / sqrt(2.125)
        ]
    )
    origins, dirs = rays_from_pixels(uv, c2w, FOCAL, CENTRE)
    s2 = 1.0 / math.sqrt(2.0)
    n = math.sqrt(0.75**2 + 0.75**2 + 1.0)  # sqrt(2.125)
    expected = torch.tensor([[0.0, 0.0, 1.0], [s2, 0.0, s2], [0.0, -s2, s2], [-0.75 / n, 0.75 / n, 1.0 / n]])
    torch.testing.assert_close(dirs, expected)
    torch.testing.assert_close(origins, torch.zeros(4, 3), rtol=0, atol=0)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(4))


def test_rays_rotated_translated_pose_hand_computed():
    c2w = make_c2w(ROT_Y90, (-3.0, 0.0, 0.0))
    uv = torch.tensor([[2.0, 2.0], [4.0, 2.0]])
    origins, dirs = rays_from_pixels(uv, c2w, FOCAL, CENTRE)
    # Principal ray: camera (0, 0, 1) -> world (1, 0, 0).
    # uv (4, 2): camera (1, 0, 1)/sqrt2 -> world (R(1,0,0) + R(0,0,1))/sqrt2 = (1, 0, -1)/sqrt2.
    s2 = 1.0 / math.sqrt(2.0)
    torch.testing.assert_close(dirs, torch.tensor([[1.0, 0.0, 0.0], [s2, 0.0, -s2]]))
    torch.testing.assert_close(origins, torch.tensor([[-3.0, 0.0, 0.0]] * 2))


def test_rays_broadcast_over_batch_of_cameras():
    c2w = torch.stack([torch.eye(4), make_c2w(ROT_Y90, (-3.0, 0.0, 0.0))])[:, None]  # (2, 1, 4, 4)
    uv = pixel_centers(4, 4).reshape(1, 16, 2).expand(2, 16, 2)
    origins, dirs = rays_from_pixels(uv, c2w, FOCAL, CENTRE)
    assert origins.shape == dirs.shape == (2, 16, 3)
    # The second camera's rays are the first camera's rotated by R.
    torch.testing.assert_close(dirs[1], dirs[0] @ ROT_Y90.T)


def test_project_known_points_identity_pose():
    c2w = torch.eye(4)
    pts = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 7.0], [-1.0, 1.0, 2.0]])
    uv, depth = project_points(pts, c2w, FOCAL, CENTRE)
    # (1, 2, 4):  u = 1/4 * 2 + 2 = 2.5,  v = 2/4 * 2 + 2 = 3.0
    # (0, 0, 7):  on the optical axis -> (2, 2)
    # (-1, 1, 2): u = -1/2 * 2 + 2 = 1.0, v = 1/2 * 2 + 2 = 3.0
    torch.testing.assert_close(uv, torch.tensor([[2.5, 3.0], [2.0, 2.0], [1.0, 3.0]]))
    torch.testing.assert_close(depth, torch.tensor([4.0, 7.0, 2.0]))


def test_project_known_point_rotated_camera():
    # Camera at (-3, 0, 0) looking along world +x.
    c2w = make_c2w(ROT_Y90, (-3.0, 0.0, 0.0))
    # World (0, 1, 0): R^T (p - t) = R^T (3, 1, 0); R^T = [[0,0,-1],[0,1,0],[1,0,0]] -> camera (0, 1, 3).
    # u = 0/3 * 2 + 2 = 2,  v = 1/3 * 2 + 2 = 8/3, depth 3.
    uv, depth = project_points(torch.tensor([0.0, 1.0, 0.0]), c2w, FOCAL, CENTRE)
    torch.testing.assert_close(uv, torch.tensor([2.0, 8.0 / 3.0]))
    torch.testing.assert_close(depth, torch.tensor(3.0))
    torch.testing.assert_close(
        world_to_camera_points(torch.tensor([0.0, 1.0, 0.0]), c2w), torch.tensor([0.0, 1.0, 3.0])
    )


def test_point_behind_camera_has_negative_depth():
    _, depth = project_points(torch.tensor([0.0, 0.0, -2.0]), torch.eye(4), FOCAL, CENTRE)
    assert depth.item() == -2.0


def test_ray_point_projects_back_to_its_pixel():
    c2w = make_c2w(ROT_Y90, (-3.0, 0.5, 0.25))
    uv = torch.tensor([[0.5, 3.5], [1.5, 2.5]])
    o, d = rays_from_pixels(uv, c2w, FOCAL, CENTRE)
    uv_back, depth = project_points(o + 2.5 * d, c2w, FOCAL, CENTRE)
    torch.testing.assert_close(uv_back, uv)
    # Unit directions: z is distance, so depth along +z is 2.5 * cos(angle to the axis) = 2.5 * d_cam.z.
    d_cam = rotate_to_camera(d, c2w)
    torch.testing.assert_close(depth, 2.5 * d_cam[:, 2])


def test_camera_world_points_roundtrip_and_rotation_only():
    c2w = make_c2w(ROT_Y90, (1.0, 2.0, 3.0))
    p = torch.tensor([[0.3, -0.2, 1.5], [4.0, 0.0, -1.0]])
    torch.testing.assert_close(camera_to_world_points(world_to_camera_points(p, c2w), c2w), p)
    # rotate_to_camera ignores the translation: R^T v.
    torch.testing.assert_close(rotate_to_camera(p, c2w), p @ ROT_Y90)
    # camera (0, 0, 1) is one unit in front of the camera centre: (1, 2, 3) + (1, 0, 0).
    torch.testing.assert_close(
        camera_to_world_points(torch.tensor([0.0, 0.0, 1.0]), c2w), torch.tensor([2.0, 2.0, 3.0])
    )


def test_resize_intrinsics_scales_focal_and_centre():
    f2, c2 = resize_intrinsics(torch.tensor([2.0, 2.0]), torch.tensor([2.0, 2.0]), 0.5)
    # 4 px -> 2 px: f = 2 * 0.5 = 1, c = 2 * 0.5 = 1 (still the image centre, W/2 = 1).
    torch.testing.assert_close(f2, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(c2, torch.tensor([1.0, 1.0]))
    f3, c3 = resize_intrinsics(torch.tensor([10.0, 20.0]), torch.tensor([4.0, 8.0]), (2.0, 0.5))
    # per axis: fx 10 * 2 = 20, fy 20 * 0.5 = 10; cx 4 * 2 = 8, cy 8 * 0.5 = 4.
    torch.testing.assert_close(f3, torch.tensor([20.0, 10.0]))
    torch.testing.assert_close(c3, torch.tensor([8.0, 4.0]))


def test_resize_keeps_rays_through_corresponding_pixels():
    # Pixel (row 1, col 3) of a 4 x 4 image has centre (3.5, 1.5); after a 2x upsample the same
    # image point is (7.0, 3.0): it must see the same ray with the resized intrinsics.
    c2w = make_c2w(ROT_Y90, (0.0, 0.0, 0.0))
    _, d_old = rays_from_pixels(torch.tensor([3.5, 1.5]), c2w, FOCAL, CENTRE)
    f2, c2 = resize_intrinsics(FOCAL, CENTRE, 2.0)
    _, d_new = rays_from_pixels(torch.tensor([7.0, 3.0]), c2w, f2, c2)
    torch.testing.assert_close(d_new, d_old)


def test_opengl_to_opencv_flips_y_and_z_axes():
    torch.testing.assert_close(
        opengl_to_opencv(torch.eye(4)), torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    )
    gl = make_c2w(ROT_Y90, (1.0, 2.0, 3.0))
    cv = opengl_to_opencv(gl)
    # Columns are the camera axes in world: x kept, y and z negated; the position is unchanged.
    torch.testing.assert_close(cv[:3, 0], gl[:3, 0])
    torch.testing.assert_close(cv[:3, 1], -gl[:3, 1])
    torch.testing.assert_close(cv[:3, 2], -gl[:3, 2])
    torch.testing.assert_close(cv[:3, 3], gl[:3, 3])
    # An OpenGL camera looks along its -z: the converted principal ray points there.
    _, d = rays_from_pixels(CENTRE, cv, FOCAL, CENTRE)
    torch.testing.assert_close(d, -gl[:3, 2])
    # OpenGL's +y is image-up; OpenCV's +v is image-down: the row above the centre (v = 0) looks
    # towards the GL camera's +y. Direction (0, -1, 1)/sqrt2 in OpenCV = (gl_y - gl_z) / sqrt2 in world.
    _, d_up = rays_from_pixels(torch.tensor([2.0, 0.0]), cv, FOCAL, CENTRE)
    torch.testing.assert_close(d_up, (gl[:3, 1] - gl[:3, 2]) / math.sqrt(2.0))
    # The conversion is its own inverse and keeps the dtype.
    torch.testing.assert_close(opengl_to_opencv(cv), gl)
    assert opengl_to_opencv(gl.double()).dtype == torch.float64


def test_uv_to_grid_hand_values_and_grid_sample_reads_pixel_centres():
    # W = 4, H = 2: grid = uv * (2/W, 2/H) - 1.
    uv = torch.tensor([[0.0, 0.0], [4.0, 2.0], [0.5, 0.5], [2.0, 1.0]])
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-0.75, -0.5], [0.0, 0.0]])
    torch.testing.assert_close(uv_to_grid(uv, width=4, height=2), expected)
    # Sampling a map at every pixel centre with align_corners=False returns the map exactly.
    fmap = torch.arange(8.0).reshape(1, 1, 2, 4)
    grid = uv_to_grid(pixel_centers(2, 4), width=4, height=2)[None]
    out = F.grid_sample(fmap, grid, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, fmap)
