"""Full-image render benchmark and the PSNR cost of empty-space skipping.

Rows (same net, same view, timed interleaved):

* ``naive`` — pixelNeRF's way: fine pass re-evaluates all sorted samples, per-point injection, no skipping.
* ``exhaustive`` — fast field + fine reuse, every sample evaluated (the exact render skipping is judged by).
* ``skip`` — ``exhaustive`` + empty-space skipping with the net's configured bound (``scene_radius``),
  early termination (``stop_transmittance``) and zero-interval samples skipped.
* ``skip_box`` — ``skip`` with the normalised-object box [-0.5, 0.5]^3 as the bound (SRN and the toy
  objects are scaled to a bounding-box diagonal of at most 1 around the origin).
* ``grid`` — ``skip`` with the occupancy grid at the model's default resolution, built for this one
  render (its build is in the time, and its density evaluations in the samples per ray). The ``skip``
  rows have no grid (``occupancy_resolution`` 0).
"""

from __future__ import annotations

import math

import torch
from harness import PeakRSS, cameras, intrinsics, load_config, median, timed

from featurenerf.nerf.config import NetConfig
from featurenerf.nerf.model import FeatureNeRFNet
from featurenerf.rendering.bounds import Box

#: The occupancy grid resolution of the ``grid`` row: the model's default.
GRID_RESOLUTION = NetConfig().occupancy_resolution

ROWS = {
    "naive": {"fast_field": False, "reuse_coarse": False, "skip_empty": False},
    "exhaustive": {"fast_field": True, "reuse_coarse": True, "skip_empty": False},
    "skip": {"fast_field": True, "reuse_coarse": True, "skip_empty": True},
    "skip_box": {"fast_field": True, "reuse_coarse": True, "skip_empty": True, "bound": Box()},
    "grid": {"fast_field": True, "reuse_coarse": True, "skip_empty": True, "occupancy": GRID_RESOLUTION},
}


class SampleCounter:
    """Counts the points the field is evaluated at (wraps the two input builders on the instance)."""

    def __init__(self, net) -> None:
        self.count = 0
        for name in ("_camera_inputs", "_mlp_inputs"):
            orig = getattr(net, name)

            def wrapped(cond, xyz, *args, _orig=orig, _fast=name == "_camera_inputs", **kwargs):
                # fast path: (P, V, 3) camera-frame points; reference path: (B, P, 3) world points
                self.count += xyz.shape[0] if _fast else xyz.shape[0] * xyz.shape[1]
                return _orig(cond, xyz, *args, **kwargs)

            setattr(net, name, wrapped)


def render(net, row: dict, cond, pose, focal, c, size: int, outputs=("rgb", "depth", "opacity")) -> dict:
    """One full-image render of ``row`` (restores the net's flags afterwards). ``cond`` must carry no
    occupancy grid: the ``grid`` row builds its own, the others have none."""
    saved = (net.fast_field, net.reuse_coarse, net.occupancy_resolution)
    net.fast_field, net.reuse_coarse = row["fast_field"], row["reuse_coarse"]
    net.occupancy_resolution = row.get("occupancy", 0)
    if "bound" in row:
        net.scene_bound = row["bound"]
    try:
        with torch.no_grad():
            return net.render_image(cond, pose, focal, c, size, size, outputs, skip_empty=row["skip_empty"])
    finally:
        net.fast_field, net.reuse_coarse, net.occupancy_resolution = saved
        if "bound" in row:
            net.scene_bound = None  # back to the sphere of scene_radius


def time_rows(net, rows: list[str], cond, pose, focal, c, size: int, repeats: int) -> dict:
    """Interleaved render timing; per row: median seconds, evaluated samples per ray, peak RSS."""
    counter = SampleCounter(net)
    times: dict[str, list[float]] = {k: [] for k in rows}
    info: dict[str, dict] = {}
    for rep in range(repeats):
        for k in rows:
            counter.count = 0
            with PeakRSS() as mem:
                times[k].append(timed(lambda k=k: render(net, ROWS[k], cond, pose, focal, c, size)))
            if rep == 0:
                info[k] = {"samples_per_ray": counter.count / (size * size), "peak_rss_bytes": mem.peak}
    ref = rows[0]
    for k in rows:
        info[k]["render_s"] = median(times[k])
        info[k]["render_s_all"] = times[k]
        info[k][f"ratio_vs_{ref}"] = median([a / b for a, b in zip(times[k], times[ref])])
    return info


def bench_untrained(name: str, size: int | None, repeats: int) -> dict:
    """Render timing at config ``name`` with untrained weights (one object, one view).

    ``size`` renders at a reduced resolution with the same field of view (focal scaled), so rays cover the
    view as at full size; times are then extrapolated by the pixel ratio (stated in the result).
    """
    cfg = load_config(name)
    full = cfg["data"]["image_size"]
    size = size or full
    torch.manual_seed(0)
    net = FeatureNeRFNet(**{k: v for k, v in cfg["model"].items() if k in _NET_ARGS}).eval()
    src = cameras(1, 11)[None]
    focal_src, c_src = intrinsics(full, 1)
    img = torch.rand(1, 1, 3, full, full, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = net.encode(img, src, focal_src, c_src)
    pose = cameras(1, 12)
    focal, c = intrinsics(size, 1)
    rows = time_rows(net, list(ROWS), cond, pose, focal, c, size, repeats)
    scale = (full / size) ** 2
    for rec in rows.values():
        rec["render_s_full_image"] = rec["render_s"] * scale
    return {
        "config": name,
        "weights": "untrained (random init): skipping statistics are not those of a trained field",
        "image_size": full,
        "rendered_at": size,
        "extrapolation": None
        if size == full
        else f"times x{scale:g} = ({full}/{size})^2 pixels, same field of view",
        "rows": rows,
    }


_NET_ARGS = {
    "feature_dim", "encoder_layers", "d_hidden", "n_blocks", "n_inject", "combine_layer", "num_freqs",
    "freq_factor", "use_viewdirs", "n_coarse", "n_fine", "n_fine_depth", "depth_std", "near", "far",
    "background", "reuse_coarse", "scene_radius", "stop_transmittance", "chunk",
}  # fmt: skip


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return -10 * math.log10(max(mse, 1e-12))


def bench_trained(ckpt: str, root: str, split: str, objects: int, views: int, repeats: int) -> dict:
    """Held-out novel views of a trained checkpoint: render time per row and PSNR against the truth;
    the skipping rows' PSNR difference to the exhaustive render."""
    from featurenerf.api import background_name, load
    from featurenerf.data.datasets import NovelViews, ObjectViews
    from featurenerf.data.formats import list_objects_any

    net = load(ckpt)
    size = _image_size(ckpt)
    records = list_objects_any(root, split)[:objects]
    if not records:
        raise ValueError(f"{root}: no objects in split {split!r}")
    data = NovelViews(records, ObjectViews(size, background_name(net), None), 1, views, seed=0)
    rows = list(ROWS)
    times: dict[str, list[float]] = {k: [] for k in rows}
    scores: dict[str, list[float]] = {k: [] for k in rows}
    deltas: dict[str, list[float]] = {k: [] for k in rows}
    counter = SampleCounter(net)
    samples: dict[str, list[float]] = {k: [] for k in rows}
    for item in data:
        with torch.no_grad():
            cond = net.encode(
                item["src_images"][None], item["src_poses"][None], item["focal"][None], item["c"][None]
            )
        for t in range(item["tgt_images"].shape[0]):
            truth = item["tgt_images"][t].permute(1, 2, 0)
            pose = item["tgt_poses"][t][None]
            images = {}
            view = (cond, pose, item["focal"][None], item["c"][None], size)
            for rep in range(repeats):
                for k in rows:
                    counter.count = 0
                    res = {}
                    times[k].append(
                        timed(lambda k=k, res=res, view=view: res.update(render(net, ROWS[k], *view)))
                    )
                    if rep == 0:
                        images[k] = res["rgb"][0].clamp(0, 1)
                        samples[k].append(counter.count / (size * size))
            for k in rows:
                scores[k].append(psnr(images[k], truth))
                deltas[k].append(psnr(images[k], truth) - psnr(images["exhaustive"], truth))
    out_rows = {}
    for k in rows:
        out_rows[k] = {
            "render_s": median(times[k]),
            "ratio_vs_naive": median([a / b for a, b in zip(times[k], times["naive"])]),
            "samples_per_ray": sum(samples[k]) / len(samples[k]),
            "psnr": sum(scores[k]) / len(scores[k]),
            "psnr_delta_vs_exhaustive_mean": sum(deltas[k]) / len(deltas[k]),
            "psnr_delta_vs_exhaustive_max_abs": max(abs(d) for d in deltas[k]),
        }
    return {
        "checkpoint": str(ckpt),
        "data": {"root": str(root), "split": split, "objects": len(records), "views_per_object": views},
        "image_size": size,
        "bound": {"skip": repr(net.scene_bound), "skip_box": repr(Box())},
        "stop_transmittance": net.stop_transmittance,
        "rows": out_rows,
    }


def _image_size(ckpt: str) -> int:
    from featurenerf.api import training_image_size

    return training_image_size(ckpt) or 64
