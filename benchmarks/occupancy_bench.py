"""The occupancy grid on a trained toy checkpoint: exactness, samples per ray, build cost, render and orbit
time against pixelNeRF's way.

* Exactness (held-out views at the training resolution, where the truth is): PSNR of the grid render
  minus PSNR of the exhaustive render (every sample evaluated), and the cosine between their rendered
  distilled features on the foreground (exhaustive opacity > 0.5), per grid resolution.
* Render (one held-out view at ``size``², rows timed interleaved): ``naive`` (pixelNeRF's way), ``skip``
  (scene bound + early termination, no grid) and one ``grid<N>`` row per resolution, whose time includes
  building the grid for this one render.
* Orbit (``frames`` views around the same object at ``size``², as ``featurenerf render`` draws them):
  one grid built and reused for all frames (build included). pixelNeRF's way evaluates every sample of
  every frame, so its orbit costs ``frames`` × its frame time; that frame is timed before and after the
  orbits (the mean is used), so the load the orbits saw hits it too.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from harness import median, timed, to_device
from render_bench import ROWS, SampleCounter, psnr, render

TARGETS = {
    "grid_render_ratio_vs_naive": "≤ 0.1",
    "grid_orbit_ratio_vs_naive": "≤ 0.05",
    "grid_psnr_delta_db": "≤ 0.05",
    "grid_feature_cosine": "≥ 0.999",
}


def _grid_row(resolution: int) -> dict:
    return {**ROWS["skip"], "occupancy": resolution}


def _encode(net, item: dict):
    with torch.no_grad():
        return net.encode(
            item["src_images"][None], item["src_poses"][None], item["focal"][None], item["c"][None]
        )


def exactness(net, data, resolutions: list[int]) -> dict:
    """Per resolution: PSNR change vs the exhaustive render and foreground feature cosine, over every
    target view of ``data`` (moved to the net's device); plus samples per ray (render only) and the grid's
    build cost."""
    device = next(net.parameters()).device
    counter = SampleCounter(net)
    acc = {r: {"dpsnr": [], "cos_mean": [], "cos_min": [], "spr": [], "build_s": [], "points": [], "occ": []}
           for r in resolutions}  # fmt: skip
    exhaustive_spr = []
    for item in data:
        item = to_device(item, device)
        cond = _encode(net, item)
        size = item["tgt_images"].shape[-1]
        grids = {}
        for r in resolutions:
            net.occupancy_resolution = r
            with torch.no_grad():
                grids[r] = net.with_occupancy(cond)  # one grid for the object's target views
            g = grids[r].occupancy
            acc[r]["build_s"].append(g.cost.seconds)
            acc[r]["points"].append(g.cost.points)
            acc[r]["occ"].append(g.occupied_fraction)
        for t in range(item["tgt_images"].shape[0]):
            truth = item["tgt_images"][t].permute(1, 2, 0)
            view = (item["tgt_poses"][t][None], item["focal"][None], item["c"][None], size, size)
            outputs = ("rgb", "opacity", "features")
            counter.count = 0
            with torch.no_grad():
                ex = net.render_image(cond, *view, outputs, skip_empty=False)
            exhaustive_spr.append(counter.count / size**2)
            fg = ex["opacity"][0] > 0.5
            for r in resolutions:
                counter.count = 0
                with torch.no_grad():
                    out = net.render_image(grids[r], *view, outputs, skip_empty=True)
                acc[r]["spr"].append(counter.count / size**2)
                acc[r]["dpsnr"].append(
                    psnr(out["rgb"][0].clamp(0, 1), truth) - psnr(ex["rgb"][0].clamp(0, 1), truth)
                )
                cos = F.cosine_similarity(out["features"][0][fg], ex["features"][0][fg], dim=-1)
                acc[r]["cos_mean"].append(float(cos.mean()))
                acc[r]["cos_min"].append(float(cos.min()))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rows = {
        f"grid{r}": {
            "resolution": r,
            "psnr_delta_vs_exhaustive_mean": mean(a["dpsnr"]),
            "psnr_delta_vs_exhaustive_max_abs": max(abs(x) for x in a["dpsnr"]),
            "feature_cosine_fg_mean": mean(a["cos_mean"]),
            "feature_cosine_fg_min_view_mean": min(a["cos_mean"]),
            "feature_cosine_fg_min_pixel": min(a["cos_min"]),
            "samples_per_ray": mean(a["spr"]),
            "build_s": mean(a["build_s"]),
            "build_points": mean(a["points"]),
            "occupied_fraction": mean(a["occ"]),
        }
        for r, a in acc.items()
    }
    return {"rows": rows, "exhaustive_samples_per_ray": mean(exhaustive_spr)}


def render_times(net, cond, view: tuple, size: int, resolutions: list[int], repeats: int) -> dict:
    """One ``size``² view, rows timed interleaved: seconds (median), × naive, samples per ray (grid rows:
    render samples, without the build's lattice points)."""
    rows = {"naive": ROWS["naive"], "skip": ROWS["skip"], **{f"grid{r}": _grid_row(r) for r in resolutions}}
    counter = SampleCounter(net)
    times: dict[str, list[float]] = {k: [] for k in rows}
    info: dict[str, dict] = {}
    for rep in range(repeats):
        for k, row in rows.items():
            counter.count = 0
            times[k].append(timed(lambda row=row: render(net, row, cond, *view, size)))
            if rep == 0:
                info[k] = {"samples_per_ray": counter.count / size**2}
    for k, r in zip(list(rows)[2:], resolutions):  # the lattice points are not samples of the render
        info[k]["grid_built"] = built(net, r, size * size)
        info[k]["build_points"] = lattice_cost(net, cond, r) if info[k]["grid_built"] else 0
        info[k]["samples_per_ray"] -= info[k]["build_points"] / size**2
    for k in rows:
        info[k]["render_s"] = median(times[k])
        info[k]["render_s_all"] = times[k]
        info[k]["ratio_vs_naive"] = median([a / b for a, b in zip(times[k], times["naive"])])
    return info


def built(net, resolution: int, rays: int) -> bool:
    """Whether a render of ``rays`` rays builds a grid at ``resolution`` (it does when it pays)."""
    from featurenerf.nerf.render_occupancy import grid_pays

    saved, net.occupancy_resolution = net.occupancy_resolution, resolution
    try:
        return grid_pays(net, rays)
    finally:
        net.occupancy_resolution = saved


def lattice_cost(net, cond, resolution: int) -> int:
    """Density evaluations a grid at ``resolution`` costs for ``cond`` (built once more, untimed: the
    lattice points it looks at depend on the coarser levels' occupied cells)."""
    from featurenerf.nerf.render_occupancy import build_grid

    return build_grid(net, cond, resolution).cost.points


def orbit_times(
    net, cond, pose, focal, c, size: int, frames: int, resolutions: list[int], naive_s: float
) -> dict:
    """A ``frames``-view orbit at ``size``² per grid resolution (one grid, build included), against
    ``frames`` × pixelNeRF's frame time (timed before and after, mean)."""
    from featurenerf.commands.render import render_orbit
    from featurenerf.orbit import orbit

    poses = orbit(pose[0].cpu(), frames)
    out: dict = {"frames": frames}
    naive_frames = [naive_s]
    for r in resolutions:
        net.occupancy_resolution = r
        start = time.perf_counter()
        render_orbit(net, cond, poses, focal[0], c[0], size, size, feature=None, progress=False)
        out[f"grid{r}"] = {
            "orbit_s": time.perf_counter() - start,
            "grid_built": built(net, r, frames * size**2),
        }
    naive_frames.append(
        timed(lambda: render(net, ROWS["naive"], cond, poses[frames // 2][None].to(pose), focal, c, size))
    )
    frame = sum(naive_frames) / len(naive_frames)
    out["naive"] = {"frame_s_all": naive_frames, "orbit_s": frames * frame, "extrapolated": True}
    for r in resolutions:
        e = out[f"grid{r}"]
        e["ratio_vs_naive"] = e["orbit_s"] / out["naive"]["orbit_s"]
        e["s_per_frame"] = e["orbit_s"] / frames
    return out


def bench_occupancy(
    ckpt: str,
    root: str,
    split: str = "test",
    objects: int = 4,
    views: int = 2,
    size: int = 128,
    frames: int = 24,
    resolutions: tuple[int, ...] = (32, 64),
    repeats: int = 1,
    device: str = "cpu",
) -> dict:
    """All three parts on a trained checkpoint (see the module docstring), the net on ``device``."""
    from featurenerf.api import background_name, load, training_image_size
    from featurenerf.data.datasets import NovelViews, ObjectViews
    from featurenerf.data.formats import list_objects_any

    net_device = torch.device(device)
    net = load(ckpt).to(net_device)
    native = training_image_size(ckpt) or 64
    records = list_objects_any(root, split)[:objects]
    if not records:
        raise ValueError(f"{root}: no objects in split {split!r}")
    data = NovelViews(records, ObjectViews(native, background_name(net), None), 1, views, seed=0)
    resolutions = list(resolutions)
    exact = exactness(net, data, resolutions)
    item = to_device(next(iter(data)), device)
    cond = _encode(net, item)
    scale = size / native  # same camera at size²: intrinsics scale with the side
    pose, focal, c = item["tgt_poses"][0][None], item["focal"][None] * scale, item["c"][None] * scale
    timing = render_times(net, cond, (pose, focal, c), size, resolutions, repeats)
    orbit = orbit_times(net, cond, pose, focal, c, size, frames, resolutions, timing["naive"]["render_s"])
    return {
        "checkpoint": str(ckpt),
        "data": {"root": str(root), "split": split, "objects": len(records), "views_per_object": views},
        "image_size": native,
        "render_size": size,
        "threads": torch.get_num_threads(),
        "device": net_device.type,
        **({"device_name": torch.cuda.get_device_name(net_device)} if net_device.type == "cuda" else {}),
        "stop_transmittance": net.stop_transmittance,
        "bound": repr(net.scene_bound),
        "exactness": exact,
        "render": timing,
        "orbit": orbit,
    }


def summary(r: dict) -> dict:
    """Headline figures of the occupancy section (per grid resolution)."""
    out = {}
    for k, e in r["exactness"]["rows"].items():
        out[k] = {
            "render_ratio_vs_naive": r["render"][k]["ratio_vs_naive"],
            "orbit_ratio_vs_naive": r["orbit"][k]["ratio_vs_naive"],
            "psnr_delta_vs_exhaustive_max_abs": e["psnr_delta_vs_exhaustive_max_abs"],
            "feature_cosine_fg_min_view_mean": e["feature_cosine_fg_min_view_mean"],
            "samples_per_ray": e["samples_per_ray"],
            "build_s": e["build_s"],
        }
    out["exhaustive_samples_per_ray"] = r["exactness"]["exhaustive_samples_per_ray"]
    return out


def _f(x, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def headlines(r: dict | None) -> list[tuple[str, str, str]]:
    """(figure, measured, target) rows for the report's headline table."""
    if not r or "exactness" not in r:
        return []
    rows = []
    for k, s in summary(r).items():
        if not k.startswith("grid"):
            continue
        rows += [
            (f"{r['render_size']}² render with the grid ÷ naive (trained toy, {k}, build included)",
             _f(s["render_ratio_vs_naive"], 3), TARGETS["grid_render_ratio_vs_naive"]),
            (f"… {r['orbit']['frames']}-frame orbit ÷ naive ({k}, one grid)",
             _f(s["orbit_ratio_vs_naive"], 3), TARGETS["grid_orbit_ratio_vs_naive"]),
            (f"… PSNR change vs exhaustive, max abs over views ({k})",
             f"{s['psnr_delta_vs_exhaustive_max_abs']:.4f} dB", TARGETS["grid_psnr_delta_db"]),
            (f"… foreground feature cosine vs exhaustive, worst view mean ({k})",
             _f(s["feature_cosine_fg_min_view_mean"], 5), TARGETS["grid_feature_cosine"]),
        ]  # fmt: skip
    return rows


def markdown(r: dict | None) -> list[str]:
    """The section's block in ``bench.md`` (or why it was skipped)."""
    if not r:
        return []
    lines = ["## Occupancy grid — trained toy model (held-out views)", ""]
    if "exactness" not in r:
        return lines + [r.get("skipped", ""), ""]
    d, ex = r["data"], r["exactness"]
    lines += [
        f"{r['checkpoint']}; {d['objects']} {d['split']} objects × {d['views_per_object']} views; bound "
        f"{r['bound']}; stop_transmittance {r['stop_transmittance']}; {r['threads']} thread(s).",
        "",
        f"Exactness at {r['image_size']}² against the exhaustive render "
        f"({_f(ex['exhaustive_samples_per_ray'], 1)} samples/ray):",
        "",
        "| grid | samples/ray | build s (density evaluations) | occupied | Δ PSNR mean / max abs dB "
        "| feature cosine (fg) mean / worst view / worst pixel |",
        "|---|---|---|---|---|---|",
    ]
    for e in ex["rows"].values():
        lines.append(
            f"| {e['resolution']}³ | {_f(e['samples_per_ray'], 1)} | {_f(e['build_s'], 3)} "
            f"({e['build_points']:.0f}) | {100 * e['occupied_fraction']:.1f} % | "
            f"{e['psnr_delta_vs_exhaustive_mean']:+.4f} / {e['psnr_delta_vs_exhaustive_max_abs']:.4f} | "
            f"{_f(e['feature_cosine_fg_mean'], 5)} / {_f(e['feature_cosine_fg_min_view_mean'], 5)} / "
            f"{_f(e['feature_cosine_fg_min_pixel'], 3)} |"
        )
    lines += ["", f"One {r['render_size']}² view, rows interleaved (grid rows: build included):", ""]
    lines += ["| row | render s | × naive | samples/ray (render only) |", "|---|---|---|---|"]
    for k, e in r["render"].items():
        grid = "" if "grid_built" not in e or e["grid_built"] else " (no grid built: it would not pay)"
        lines.append(
            f"| {k}{grid} | {_f(e['render_s'], 3)} | {_f(e['ratio_vs_naive'], 3)} | {_f(e['samples_per_ray'], 1)} |"
        )
    o = r["orbit"]
    lines += [
        "",
        f"{o['frames']}-frame orbit at {r['render_size']}² (one grid for all frames, build included); naive = "
        f"{o['frames']} × its frame time ({', '.join(_f(x, 2) for x in o['naive']['frame_s_all'])} s, "
        "timed before and after):",
        "",
        "| row | orbit s | s per frame | × naive |",
        "|---|---|---|---|",
        f"| naive | {_f(o['naive']['orbit_s'], 1)} | {_f(o['naive']['orbit_s'] / o['frames'], 2)} | 1.000 |",
    ]
    for k, e in o.items():
        if k.startswith("grid"):
            lines.append(
                f"| {k} | {_f(e['orbit_s'], 1)} | {_f(e['s_per_frame'], 2)} | {_f(e['ratio_vs_naive'], 3)} |"
            )
    return lines + [""]
