"""``featurenerf export``: the object in one image as a coloured point cloud with its 3D features.

featurenerf export --ckpt outputs/runs/<run>/checkpoints/last.ckpt --image car.png --out car.ply
featurenerf export --ckpt last.ckpt --image car.png --method grid --grid 96 --out car.ply

Surface points come from

* ``--method depth`` (default): render ``--views`` views along the orbit of the input camera (as
  ``featurenerf render``); every pixel with opacity > 0.5 gives the point ``o + (depth / opacity) d``
  (depth divided by opacity is the expected distance of the surface hit); colour = rendered RGB with the
  background removed.
* ``--method grid``: density on a ``--grid``³ lattice over ``[-bound, bound]³``; cells whose density
  exceeds the threshold (default ln 2 / cell size: a ray crossing one cell is half blocked) and that touch
  a cell below it form the surface shell; colour = the field's RGB seen from the input camera.

Writes ``<out>.ply`` (x y z float, red green blue uchar, pca_red pca_green pca_blue uchar: the PCA
colours of the chosen feature; opens in MeshLab, CloudCompare, Open3D, Blender) and ``<out>.npz``:
``xyz`` (N, 3) float32, ``rgb`` (N, 3) float32 in [0, 1], ``features_internal`` (N, d_hidden) float16
(v_NeRF) and, when the model has a distilled head, ``features_distilled`` (N, D) float16.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from featurenerf.commands.render import input_parser

if TYPE_CHECKING:
    from torch import Tensor

    from featurenerf.commands.render import Prepared
    from featurenerf.nerf.model import Conditioning, FeatureNeRFNet

DESCRIPTION = "Export the object in one image as a point cloud (PLY: RGB + feature PCA; NPZ: features)"


def _parser() -> argparse.ArgumentParser:
    parser = input_parser("featurenerf export", DESCRIPTION, __doc__)
    parser.add_argument(
        "--out", required=True, type=Path, help="point cloud file (.ply); the .npz goes beside"
    )
    parser.add_argument(
        "--method", choices=("depth", "grid"), default="depth", help="how surface points are found"
    )
    parser.add_argument("--views", type=int, default=24, help="depth: orbit views rendered (default 24)")
    parser.add_argument(
        "--render-size", type=int, default=None, help="depth: width of the rendered views (default: input's)"
    )
    parser.add_argument("--grid", type=int, default=64, help="grid: cells per side (default 64)")
    parser.add_argument(
        "--bound",
        type=float,
        default=None,
        help="grid: half-side of the cube (default: the model's scene_radius, else 0.6)",
    )
    parser.add_argument(
        "--density-threshold", type=float, default=None, help="grid: default ln 2 / cell size"
    )
    parser.add_argument(
        "--max-points", type=int, default=200_000, help="keep at most this many points (seeded subset)"
    )
    parser.add_argument("--ascii", action="store_true", help="ASCII PLY instead of binary little-endian")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-points subset")
    return parser


def depth_points(
    prep: Prepared, views: int, render_size: int | None, progress: bool
) -> tuple[Tensor, Tensor]:
    """Surface points (P, 3) and their colours (P, 3) from depth rendered along the input's orbit."""

    from featurenerf.commands.render import render_orbit
    from featurenerf.geometry.cameras import pixel_centers, rays_from_pixels
    from featurenerf.orbit import orbit

    h, w = prep.view.size
    focal, c = prep.view.focal[0].cpu(), prep.view.c[0].cpu()
    if render_size:
        scale = render_size / w
        focal, c, h, w = focal * scale, c * scale, round(h * scale), render_size
    poses = orbit(prep.view.pose.cpu(), views)
    render = render_orbit(
        prep.net, prep.cond, poses, focal, c, h, w, feature=None, progress=progress, desc="depth"
    )
    origins, dirs = rays_from_pixels(
        pixel_centers(h, w)[None], poses[:, None, None], focal, c
    )  # (N, H, W, 3)
    mask = render.mask
    opacity = render.opacity[mask].clamp_min(1e-6)
    xyz = origins[mask] + (render.depth[mask] / opacity)[:, None] * dirs[mask]
    # The rendered colour is rgb_object * opacity + background * (1 - opacity): undo the blend.
    bg = prep.net.background_value
    rgb = ((render.rgb[mask] - (1 - opacity[:, None]) * bg) / opacity[:, None]).clamp(0, 1)
    return xyz, rgb


def surface_cells(inside: Tensor) -> Tensor:
    """Cells of a boolean grid (G, G, G) that are inside and have a 6-neighbour outside (or the border)."""
    import torch.nn.functional as F

    g = inside.shape[0]
    p = F.pad(inside[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0] > 0  # outside the grid = outside
    mid = slice(1, g + 1)
    neighbours = (
        p[:g, mid, mid],
        p[2:, mid, mid],
        p[mid, :g, mid],
        p[mid, 2:, mid],
        p[mid, mid, :g],
        p[mid, mid, 2:],
    )
    all_inside = neighbours[0]
    for n in neighbours[1:]:
        all_inside = all_inside & n
    return inside & ~all_inside


def grid_points(
    net: FeatureNeRFNet,
    cond: Conditioning,
    camera_centre: Tensor,
    cells: int,
    bound: float,
    threshold: float | None,
    progress: bool,
) -> tuple[Tensor, Tensor]:
    """Surface shell points (P, 3) of the density on a ``cells``³ grid over [-bound, bound]³, with the RGB
    (P, 3) the field gives them seen from ``camera_centre`` (3,)."""
    import torch
    from tqdm.auto import tqdm

    step = 2 * bound / cells
    threshold = math.log(2.0) / step if threshold is None else threshold
    axis = -bound + step * (torch.arange(cells) + 0.5)  # cell centres
    xyz = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    device = cond.features.device
    sigma = []
    with torch.no_grad():
        for part in tqdm(xyz.split(net.chunk * 4), desc="density", file=sys.stderr, disable=not progress):
            sigma.append(net.query(cond, part[None].to(device))["sigma"][0].cpu())
    density = torch.cat(sigma)
    if net.scene_radius is not None:  # as rendering does: nothing outside the scene sphere
        density = torch.where(xyz.norm(dim=-1) <= net.scene_radius, density, torch.zeros_like(density))
    inside = (density > threshold).reshape(cells, cells, cells)
    points = xyz[surface_cells(inside).reshape(-1)]
    dirs = points - camera_centre
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    rgb = []
    with torch.no_grad():
        for p, d in zip(points.split(net.chunk * 4), dirs.split(net.chunk * 4)):
            rgb.append(net.query(cond, p[None].to(device), d[None].to(device))["rgb"][0].cpu())
    return points, torch.cat(rgb) if rgb else points.new_zeros(0, 3)


def point_attributes(
    net: FeatureNeRFNet, cond: Conditioning, xyz: Tensor, progress: bool
) -> tuple[Tensor, Tensor]:
    """Internal v_NeRF (P, d_hidden) and distilled features (P, D) at points (P, 3), evaluated as
    :meth:`FeatureNeRFNet.point_features` does (no view direction given)."""
    import torch
    from tqdm.auto import tqdm

    device = cond.features.device
    hidden, distilled = [], []
    with torch.no_grad():
        for part in tqdm(xyz.split(net.chunk * 4), desc="features", file=sys.stderr, disable=not progress):
            out = net.query(cond, part[None].to(device))
            hidden.append(out["hidden"][0].cpu())
            distilled.append(out["features"][0].cpu())
    if not hidden:
        return xyz.new_zeros(0, net.d_hidden), xyz.new_zeros(0, net.feature_dim)
    return torch.cat(hidden), torch.cat(distilled)


def to_uchar(x: Tensor):
    """[0, 1] floats → uint8 numpy (rounded)."""
    import numpy as np

    return (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def write_cloud(
    out: Path, xyz: Tensor, rgb: Tensor, pca: Tensor, hidden: Tensor, distilled: Tensor, binary: bool
) -> tuple[Path, Path]:
    """Write ``out`` (PLY) and ``out.with_suffix('.npz')``."""
    import numpy as np

    from featurenerf.io import atomic_save_via
    from featurenerf.ply import write_ply

    xyz32 = xyz.float().numpy().astype(np.float32)
    rgb8, pca8 = to_uchar(rgb), to_uchar(pca)
    properties = {"x": xyz32[:, 0], "y": xyz32[:, 1], "z": xyz32[:, 2]}
    properties |= {name: rgb8[:, i] for i, name in enumerate(("red", "green", "blue"))}
    properties |= {f"pca_{name}": pca8[:, i] for i, name in enumerate(("red", "green", "blue"))}
    ply = write_ply(out, properties, binary=binary)
    arrays = {
        "xyz": xyz32,
        "rgb": rgb.float().numpy().astype(np.float32),
        "features_internal": hidden.half().numpy(),
    }
    if distilled.shape[1] > 0:
        arrays["features_distilled"] = distilled.half().numpy()
    npz = out.with_suffix(".npz")
    atomic_save_via(npz, lambda tmp: np.savez(tmp, **arrays))
    return ply, npz


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.command = "export"
    for name in ("views", "grid", "max_points"):
        if getattr(args, name) < 1:
            print(
                f"featurenerf export: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr
            )
            return 2
    if args.out.suffix.lower() != ".ply":
        print(f"featurenerf export: error: --out {args.out} must end in .ply", file=sys.stderr)
        return 2
    from featurenerf.data.srn import DataError

    try:
        import torch

        from featurenerf.commands.render import pca_colours, prepare

        prep = prepare(args)
        progress = not args.quiet
        if args.method == "depth":
            xyz, rgb = depth_points(prep, args.views, args.render_size, progress)
        else:
            bound = args.bound or prep.net.scene_radius or 0.6
            centre = prep.view.pose[:3, 3].cpu()
            xyz, rgb = grid_points(
                prep.net, prep.cond, centre, args.grid, bound, args.density_threshold, progress
            )
        if xyz.shape[0] == 0:
            raise ValueError(
                f"{args.image}: no surface found (no pixel/cell is opaque); check the image's camera "
                "(--pose/--intrinsics) and the checkpoint"
            )
        if xyz.shape[0] > args.max_points:
            keep = torch.randperm(xyz.shape[0], generator=torch.Generator().manual_seed(args.seed))
            keep = keep[: args.max_points].sort().values
            xyz, rgb = xyz[keep], rgb[keep]
        hidden, distilled = point_attributes(prep.net, prep.cond, xyz, progress)
        pca = pca_colours(hidden if args.features == "internal" else distilled, seed=args.seed)
        ply, npz = write_cloud(args.out, xyz, rgb, pca, hidden, distilled, binary=not args.ascii)
    except (DataError, ValueError, OSError) as err:
        print(f"featurenerf export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported {xyz.shape[0]} points ({args.method}) -> {ply} and {npz}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
