"""One-shot keypoint transfer, in 2D (pixels) and 3D (surface points).

2D: each source keypoint visible in both views is described at its pixel; its nearest (cosine) target
foreground pixel is the prediction. Visibility and 2D positions come from the 3D keypoints projected into
each view with an occlusion test (:func:`featurenerf.data.annotations.derive_keypoints_2d`), or are read
where the data stores them (the FeatureNeRF release's ``kp_2d_anno``). Conditioning is as for 2D parts
(cross-view: the target view is rendered from the source image). PCK at 2.5/5/7.5/10 pixels of a
128-pixel image, scaled with the image size.

3D: each source keypoint (``keypoints.json``, world frame) present on both objects is described at its 3D
position; its nearest target *surface point* (``points.npz``; the release: ``kp_3d_anno``'s points) is
the prediction. PCK at 0.025/0.05/0.075/0.1 world units. Each object is conditioned on its own input view.

PCK is computed per pair over the keypoints evaluated in it, then averaged over pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from featurenerf.data.annotations import keypoints_2d, load_keypoint_candidates, load_keypoints_3d
from featurenerf.data.srn import ObjectRecord
from featurenerf.visualize import save_image_grid

from . import pictures
from .base import Task, TaskContext, register_task
from .descriptors import PosedView, pixel_uv
from .metrics import PCK, PCK_2D_PIXELS_AT_128, PCK_3D_UNITS, cosine_nearest, pck_thresholds_2d


def pixel_rows(ij: Tensor, uv: Tensor, size: int) -> Tensor:
    """Row of each keypoint's pixel among the foreground pixels ``ij`` (N, 2).

    A keypoint whose pixel is not foreground (a visible keypoint on the silhouette edge, where the mask
    and the part map disagree) takes the nearest foreground pixel.

    Args:
        ij: (N, 2) foreground (row, column), N >= 1. uv: (K, 2) keypoint pixel positions at ``size``.
    Returns:
        (K,) int64 rows into ``ij``.
    """
    index = torch.full((size, size), -1, dtype=torch.long, device=ij.device)
    index[ij[:, 0], ij[:, 1]] = torch.arange(len(ij), device=ij.device)
    kij = uv.flip(-1).floor().long().clamp(0, size - 1)
    rows = index[kij[:, 0], kij[:, 1]]
    missing = rows < 0
    if missing.any():
        rows[missing] = torch.cdist(uv[missing].float(), pixel_uv(ij)).argmin(dim=1)
    return rows


@register_task("keypoints_2d")
class Keypoints2D(Task):
    """Keypoint transfer between images (PCK in pixels)."""

    needs = "3D keypoints keypoints.json, surface points points.npz and part maps parts/ (2D visibility)"

    def new_metrics(self) -> dict[str, Metric]:
        labels = [f"PCK@{t:g}" for t in PCK_2D_PIXELS_AT_128]
        return {"PCK": PCK(pck_thresholds_2d(self.image_size), labels=labels)}

    def annotations(self, record: ObjectRecord, view: int) -> dict:
        uv, visible = keypoints_2d(record, view, self.image_size)
        return {"kp_uv": uv, "kp_visible": visible}

    def step(self, ctx: TaskContext, item: dict) -> None:
        kind = item["kind"]
        src, trg = PosedView.from_item(item["src"]), PosedView.from_item(item["trg"])
        cond = src if kind == "cross_view" else trg
        both = item["src"]["kp_visible"].bool() & item["trg"]["kp_visible"].bool()
        src_ij, trg_ij = src.foreground_ij(), trg.foreground_ij()
        if not both.any() or len(src_ij) == 0 or len(trg_ij) == 0:
            return  # no keypoint visible in both views: the pair is not counted
        ids = both.nonzero().squeeze(1)
        s_uv, t_uv = item["src"]["kp_uv"][ids], item["trg"]["kp_uv"][ids]
        rows = pixel_rows(src_ij, s_uv, src.size)
        preds = {}
        for method in self.methods:
            src_desc = ctx.descriptors.foreground(method, src, src)[rows]
            trg_desc = ctx.descriptors.foreground(method, trg, cond)
            preds[method] = pixel_uv(trg_ij[cosine_nearest(src_desc, trg_desc)])
            self.update(kind, method, "PCK", preds[method], t_uv)
        if ctx.wants_picture(item):
            n = ctx.num_keypoints
            row = [
                pictures.draw_keypoints(src.image, [(s_uv, "dot")], ids, n),
                pictures.draw_keypoints(trg.image, [(t_uv, "ring")], ids, n),
                *[
                    pictures.draw_keypoints(trg.image, [(t_uv, "ring"), (p, "dot")], ids, n, lines=(p, t_uv))
                    for p in preds.values()
                ],
            ]
            header = ["source", "target truth", *[f"{m} (dot)" for m in preds]]
            save_image_grid([row], ctx.picture_path(self.name, item), header=header)


@register_task("keypoints_3d")
class Keypoints3D(Task):
    """Keypoint transfer onto the target's surface points (PCK in world units)."""

    needs = "3D keypoints keypoints.json and surface points points.npz"

    def new_metrics(self) -> dict[str, Metric]:
        return {"PCK": PCK(PCK_3D_UNITS)}

    def annotations(self, record: ObjectRecord, view: int) -> dict:
        return {"kp_xyz": load_keypoints_3d(record), "points": load_keypoint_candidates(record)}

    def step(self, ctx: TaskContext, item: dict) -> None:
        kind = item["kind"]
        src, trg = PosedView.from_item(item["src"]), PosedView.from_item(item["trg"])
        s_kp, t_kp = item["src"]["kp_xyz"], item["trg"]["kp_xyz"]
        t_pts = item["trg"]["points"]
        s_fin, t_fin = torch.isfinite(s_kp).all(-1), torch.isfinite(t_kp).all(-1)
        both = s_fin & t_fin
        if not both.any() or len(t_pts) == 0:
            return
        ids = both.nonzero().squeeze(1)
        # Descriptors of all the source's keypoints are made once (cached); pick those present in both.
        rows = (s_fin.long().cumsum(0) - 1)[ids]
        preds = {}
        for method in self.methods:
            src_desc = ctx.descriptors.points(method, s_kp[s_fin], src, ("keypoints", src.name))[rows]
            trg_desc = ctx.descriptors.points(method, t_pts, trg, ("surface", trg.name))
            preds[method] = t_pts[cosine_nearest(src_desc, trg_desc)]
            self.update(kind, method, "PCK", preds[method], t_kp[ids])
        if ctx.wants_picture(item):
            n = ctx.num_keypoints
            cols = pictures.palette(n)[ids.cpu() % n]
            extent = float(t_pts.norm(dim=-1).max()) * 1.1
            grey = torch.full((len(t_pts), 3), 0.8)
            s_pts = item["src"].get("points", t_pts)
            row = [
                pictures.scatter_points(
                    s_pts, torch.full((len(s_pts), 3), 0.8), extent=extent, markers=[(s_kp[ids], cols, "dot")]
                ),
                pictures.scatter_points(t_pts, grey, extent=extent, markers=[(t_kp[ids], cols, "ring")]),
                *[
                    pictures.scatter_points(
                        t_pts, grey, extent=extent, markers=[(t_kp[ids], cols, "ring"), (p, cols, "dot")]
                    )
                    for p in preds.values()
                ],
            ]
            header = ["source", "target truth", *[f"{m} (dot)" for m in preds]]
            save_image_grid([row], ctx.picture_path(self.name, item), header=header)
