"""``featurenerf render``: novel views of the object in one image, along an orbit.

featurenerf render --ckpt outputs/runs/<run>/checkpoints/last.ckpt --image car.png --out renders/car
featurenerf render --ckpt last.ckpt --image rgb/000000.png --pose pose/000000.txt \\
    --intrinsics intrinsics.txt --frames 36 --out renders/car

Writes ``<out>/input.png``, ``frames/{rgb,depth,features}_NNN.png`` (one per frame),
``contact_sheet.png`` (rows: RGB, depth, feature PCA; up to 8 frames per band), ``orbit.gif``
(RGB | depth | features side by side) and ``cameras.npz`` (poses, focal, c of every frame). Without
``--pose`` the default camera is assumed: radius (near+far)/2, 20° above the xy plane, looking at the
origin, world up +z (SRN's setup). The orbit circles the world z axis at the input camera's elevation
and radius, starting at the input view. Features are coloured by ONE PCA fitted on the foreground
pixels (opacity > 0.5) of all frames, so a colour means the same feature in every frame.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a command runs, so `featurenerf --help` stays fast
    from torch import Tensor

    from featurenerf.api import SourceView
    from featurenerf.nerf.model import Conditioning, FeatureNeRFNet
    from featurenerf.rendering.occupancy import OccupancyGrid

DESCRIPTION = "Render an orbit of novel views (RGB, depth, feature PCA) from one image: PNGs, sheet, GIF"
#: Foreground = rendered opacity above this (the PCA is fitted there; export keeps these rays).
OPACITY_THRESHOLD = 0.5
#: Rows the PCA is fitted on at most (a seeded random subset of the foreground); the fit is a
#: 3-component estimate, which a few tens of thousands of rows pin down.
PCA_FIT_ROWS = 50_000
FRAMES_PER_BAND = 8


def input_parser(prog: str, description: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a command that reads one input view (render, export): its help text (the epilog is
    ``doc`` after its first paragraph) and the input arguments of :func:`add_input_arguments`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(parser)
    return parser


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by render and export: checkpoint, input view, device."""
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by `featurenerf fit`")
    parser.add_argument("--image", required=True, type=Path, help="input image (PNG/JPEG; alpha is used)")
    parser.add_argument("--pose", type=Path, default=None, help="SRN pose file of the image (c2w, OpenCV)")
    parser.add_argument("--intrinsics", type=Path, default=None, help="SRN intrinsics.txt of the image")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="side the image is resized to before encoding (default: the run's data.image_size, "
        "else the image's own size)",
    )
    parser.add_argument(
        "--features",
        choices=("internal", "distilled"),
        default="internal",
        help="feature shown as PCA colours: the internal v_NeRF (default) or the distilled head",
    )
    parser.add_argument(
        "--occupancy-resolution",
        type=int,
        default=None,
        help="cells per axis of the occupancy grid built once for the input view and used by every "
        "rendered view to skip empty space (default: the model's occupancy_resolution; 0: no grid)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="read a checkpoint that holds pickled Python objects (full unpickling runs code: only for "
        "files you trust); featurenerf's own checkpoints never need it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = input_parser("featurenerf render", DESCRIPTION, __doc__)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--frames", type=int, default=24, help="views along the orbit (default 24)")
    parser.add_argument(
        "--render-size", type=int, default=None, help="width of the rendered views (default: the input's)"
    )
    parser.add_argument("--fps", type=float, default=8.0, help="GIF frame rate (default 8)")
    return parser


@dataclass
class Prepared:
    """A loaded model, its input view and the conditioning computed from it."""

    net: FeatureNeRFNet
    view: SourceView
    cond: Conditioning


def prepare(args: argparse.Namespace) -> Prepared:
    """Load the checkpoint and the input view, say which camera was assumed, encode the view."""
    import torch

    from featurenerf.api import load, load_view, training_image_size
    from featurenerf.cpu_allocator import keep_freed_memory

    if args.occupancy_resolution is not None and args.occupancy_resolution < 0:
        raise ValueError(f"--occupancy-resolution must be >= 0 (0: no grid), got {args.occupancy_resolution}")
    if torch.device(args.device).type == "cpu":
        # Each chunk's activations are new large blocks; glibc would map and fault them in afresh every
        # chunk. Kept for reuse, an 8-frame 128² orbit of the toy cars took 13-17 % less CPU time.
        keep_freed_memory()
    net = load(args.ckpt, args.device, trust=args.trust, trust_hint="if you trust the file, pass --trust")
    if args.occupancy_resolution is not None:
        net.occupancy_resolution = args.occupancy_resolution
    size = args.size or training_image_size(args.ckpt)
    view = load_view(args.image, net, args.pose, args.intrinsics, size).to(args.device)
    prog = f"featurenerf {args.command}"
    if view.default_pose:
        print(
            f"{prog}: no --pose; assuming the default camera (radius {(net.near + net.far) / 2:g}, "
            "elevation 20°, looking at the origin, world up +z)",
            file=sys.stderr,
        )
    if args.intrinsics is None:
        print(f"{prog}: no --intrinsics; assuming SRN's (focal 1.0254 x side, centred)", file=sys.stderr)
    if args.features == "distilled" and net.feature_dim == 0:
        raise ValueError(f"{args.ckpt}: this model has no distilled feature head (feature_dim 0)")
    with torch.no_grad():
        cond = net.encode(view.images, view.poses, view.focal, view.c)
    return Prepared(net, view, cond)


@dataclass
class OrbitRender:
    """Rendered orbit: rgb (N, H, W, 3), depth (N, H, W), opacity (N, H, W) on the CPU, the foreground
    feature rows of every frame in frame order (float16, (F, C)), and the cameras."""

    rgb: Tensor
    depth: Tensor
    opacity: Tensor
    fg_features: Tensor
    poses: Tensor
    focal: Tensor
    c: Tensor

    @property
    def mask(self) -> Tensor:
        return self.opacity > OPACITY_THRESHOLD


def render_orbit(
    net: FeatureNeRFNet,
    cond: Conditioning,
    poses: Tensor,
    focal: Tensor,
    c: Tensor,
    height: int,
    width: int,
    feature: str = "hidden",
    progress: bool = True,
    desc: str = "render",
) -> OrbitRender:
    """Render every pose (N, 4, 4) at ``height`` x ``width`` with intrinsics focal, c (2,).

    ``feature`` is the rendered output kept for the foreground pixels ("hidden": internal v_NeRF,
    "features": distilled head, None: none); only foreground rows are kept, in float16, so a long
    orbit of 512-d maps fits in memory. One occupancy grid (``net.occupancy_resolution``) is built for
    ``cond`` and serves every frame; its cost is printed to stderr with the progress bar.
    """
    import torch
    from tqdm.auto import tqdm

    device = cond.features.device
    cond = net.with_occupancy(cond, len(poses) * height * width)  # one grid for the whole orbit
    if progress and cond.occupancy is not None:
        print(grid_line(cond.occupancy, desc), file=sys.stderr)
    outputs = ("rgb", "depth", "opacity", *((feature,) if feature else ()))
    rgb, depth, opacity, fg = [], [], [], []
    with torch.no_grad():
        for pose in tqdm(poses, desc=desc, unit="view", file=sys.stderr, disable=not progress):
            out = net.render_image(
                cond,
                pose[None].to(device),
                focal[None].to(device),
                c[None].to(device),
                height,
                width,
                outputs,
                # Pictures and exported surfaces, not metrics: the stratum midpoints keep every orbit
                # frame's samples on the same depths (evaluation renders sample like training instead).
                jitter_seed=None,
            )
            rgb.append(out["rgb"][0].cpu())
            depth.append(out["depth"][0].cpu())
            opacity.append(out["opacity"][0].cpu())
            if feature:
                keep = out["opacity"][0] > OPACITY_THRESHOLD
                fg.append(out[feature][0][keep].half().cpu())
    empty = torch.zeros(0, 0, dtype=torch.float16)
    return OrbitRender(
        torch.stack(rgb),
        torch.stack(depth),
        torch.stack(opacity),
        torch.cat(fg) if fg else empty,
        poses.cpu(),
        focal.cpu(),
        c.cpu(),
    )


def grid_line(grid: OccupancyGrid, prog: str) -> str:
    """One line saying what the occupancy grid of a render cost and how much of it is occupied."""
    n, cost = grid.resolution, grid.cost
    return (
        f"{prog}: occupancy grid {n}x{n}x{n}: {100 * grid.occupied_fraction:.1f} % of cells occupied, built "
        f"in {cost.seconds:.2f} s ({cost.points} density evaluations)"
    )


def pca_colours(rows: Tensor, seed: int = 0) -> Tensor:
    """Feature rows (F, C) → colours (F, 3) in [0, 1] through one PCA fitted on (a seeded subset of) them."""
    import torch

    from featurenerf.visualize import apply_pca, fit_pca

    rows = rows.float()
    if rows.shape[0] == 0:
        return rows.new_zeros(0, 3)
    fit_rows = rows
    if rows.shape[0] > PCA_FIT_ROWS:
        g = torch.Generator().manual_seed(seed)
        fit_rows = rows[torch.randperm(rows.shape[0], generator=g)[:PCA_FIT_ROWS]]
    return apply_pca(rows, *fit_pca(fit_rows))


def feature_frames(render: OrbitRender, background: float) -> Tensor:
    """Per-frame PCA pictures (N, 3, H, W): foreground from :func:`pca_colours`, background plain."""
    import torch

    mask = render.mask
    pictures = torch.full((*mask.shape, 3), float(background))
    pictures[mask] = pca_colours(render.fg_features)
    return pictures.permute(0, 3, 1, 2)


def depth_frames(render: OrbitRender) -> Tensor:
    """Per-frame depth pictures (N, 3, H, W), one scale for the whole orbit (1st..99th percentile of the
    foreground's depth divided by opacity, i.e. the expected depth of the surface hit)."""
    import torch

    from featurenerf.visualize import depth_image

    mask = render.mask
    surface = render.depth / render.opacity.clamp_min(1e-6)
    if mask.any():
        values = surface[mask]
        if values.numel() > 1_000_000:
            values = values[torch.linspace(0, values.numel() - 1, 1_000_000).long()]
        lo, hi = torch.quantile(values, 0.01).item(), torch.quantile(values, 0.99).item()
    else:
        lo, hi = 0.0, 1.0
    return depth_image(surface, mask, lo, hi)


def write_outputs(
    out: Path, view: SourceView, render: OrbitRender, background: float, fps: float
) -> dict[str, Path]:
    """Write the input, every frame's pictures, the contact sheet, the GIF and the cameras."""
    import numpy as np
    import torch

    from featurenerf.io import atomic_save_via
    from featurenerf.visualize import image_grid, save_gif, save_png, to_uint8

    rgb = render.rgb.permute(0, 3, 1, 2).clamp(0, 1)
    depth = depth_frames(render)
    feats = feature_frames(render, background)
    written = {"input": save_png(view.images[0, 0].cpu(), out / "input.png")}
    for k in range(rgb.shape[0]):
        save_png(rgb[k], out / "frames" / f"rgb_{k:03d}.png")
        save_png(depth[k], out / "frames" / f"depth_{k:03d}.png")
        save_png(feats[k], out / "frames" / f"features_{k:03d}.png")
    written["frames"] = out / "frames"
    rows, labels = [], []
    for start in range(0, rgb.shape[0], FRAMES_PER_BAND):
        band = slice(start, start + FRAMES_PER_BAND)
        rows += [list(rgb[band]), list(depth[band]), list(feats[band])]
        labels += ["RGB", "depth", "features (PCA)"]
    sheet = image_grid(rows, row_labels=labels)
    written["contact_sheet"] = save_png(sheet, out / "contact_sheet.png")
    strips = [to_uint8(torch.cat([r, d, f], dim=-1)) for r, d, f in zip(rgb, depth, feats)]
    written["gif"] = save_gif(strips, out / "orbit.gif", fps)
    cameras = {"poses": render.poses.numpy(), "focal": render.focal.numpy(), "c": render.c.numpy()}
    written["cameras"] = out / "cameras.npz"
    atomic_save_via(written["cameras"], lambda tmp: np.savez(tmp, **cameras))
    return written


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.command = "render"
    if args.frames < 1:
        print("featurenerf render: error: --frames must be at least 1", file=sys.stderr)
        return 2
    from featurenerf.data.srn import DataError

    try:
        from featurenerf.orbit import orbit

        prep = prepare(args)
        h, w = prep.view.size
        focal, c = prep.view.focal[0], prep.view.c[0]
        if args.render_size:  # same camera, other resolution: intrinsics scale with the side
            scale = args.render_size / w
            focal, c = focal * scale, c * scale
            h, w = round(h * scale), args.render_size
        render = render_orbit(
            prep.net,
            prep.cond,
            orbit(prep.view.pose.cpu(), args.frames),
            focal,
            c,
            h,
            w,
            feature="hidden" if args.features == "internal" else "features",
            progress=not args.quiet,
        )
        write_outputs(args.out, prep.view, render, prep.net.background_value, args.fps)
    except (DataError, ValueError, OSError) as err:
        print(f"featurenerf render: error: {err}", file=sys.stderr)
        return 2
    print(
        f"rendered {args.frames} views at {h}x{w} -> {args.out}/ "
        "(frames/, contact_sheet.png, orbit.gif, cameras.npz)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
