"""One-shot part segmentation transfer, in 2D (pixels) and 3D (labelled surface points).

2D: each target foreground pixel takes the label of its nearest (cosine) source foreground pixel;
foreground is the true object mask. The source is described conditioned on its own image; the target on
its own image for cross-instance pairs, and on the *source* image for cross-view pairs (the model renders
the target view from the source view; ``teacher_2d`` reads the real target image).

3D: each target surface point (``points.npz``) takes the label of its nearest source surface point; each
object is conditioned on its own input view (cross-view: the same object from two views).

Metric: IoU per part present in both objects' truth, mean per pair, then mean over pairs.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from featurenerf.data.annotations import load_part_map, load_points
from featurenerf.data.srn import ObjectRecord
from featurenerf.visualize import save_image_grid

from . import pictures
from .base import Task, TaskContext, register_task
from .descriptors import PosedView
from .metrics import PartMIoU, transfer_labels


@register_task("part_seg_2d")
class PartSeg2D(Task):
    """Part label transfer between images (mIoU over foreground pixels)."""

    needs = "part label maps parts/NNNNNN.png beside rgb/"

    def new_metrics(self) -> dict[str, Metric]:
        return {"mIoU": PartMIoU()}

    def annotations(self, record: ObjectRecord, view: int) -> dict:
        return {"parts": load_part_map(record, view, self.image_size)}

    def step(self, ctx: TaskContext, item: dict) -> None:
        kind = item["kind"]
        src, trg = PosedView.from_item(item["src"]), PosedView.from_item(item["trg"])
        cond = src if kind == "cross_view" else trg
        src_ij, trg_ij = src.foreground_ij(), trg.foreground_ij()
        if len(src_ij) == 0 or len(trg_ij) == 0:
            return  # an empty view has nothing to transfer; the pair is not counted
        src_lab = item["src"]["parts"][src_ij[:, 0], src_ij[:, 1]]
        trg_lab = item["trg"]["parts"][trg_ij[:, 0], trg_ij[:, 1]]
        preds = {}
        for method in self.methods:
            src_desc = ctx.descriptors.foreground(method, src, src)
            trg_desc = ctx.descriptors.foreground(method, trg, cond)
            preds[method] = transfer_labels(src_desc, src_lab, trg_desc)
            self.update(kind, method, "mIoU", preds[method], trg_lab, src_lab)
        if ctx.wants_picture(item):
            n = ctx.num_parts
            row = [
                pictures.paint_parts(src.image, src_ij, src_lab, n),
                trg.image.float().cpu(),
                pictures.paint_parts(trg.image, trg_ij, trg_lab, n),
                *[pictures.paint_parts(trg.image, trg_ij, p, n) for p in preds.values()],
            ]
            header = ["source parts", "target", "target truth", *preds]
            save_image_grid(
                [[pictures.enlarge(x) for x in row]], ctx.picture_path(self.name, item), header=header
            )


@register_task("part_seg_3d")
class PartSeg3D(Task):
    """Part label transfer between labelled surface point clouds (mIoU over target points)."""

    needs = "labelled surface points points.npz (xyz, labels)"

    def new_metrics(self) -> dict[str, Metric]:
        return {"mIoU": PartMIoU()}

    def annotations(self, record: ObjectRecord, view: int) -> dict:
        xyz, labels = load_points(record)
        return {"points": xyz, "point_labels": labels}

    def step(self, ctx: TaskContext, item: dict) -> None:
        kind = item["kind"]
        src, trg = PosedView.from_item(item["src"]), PosedView.from_item(item["trg"])
        s_xyz, s_lab = item["src"]["points"], item["src"]["point_labels"]
        t_xyz, t_lab = item["trg"]["points"], item["trg"]["point_labels"]
        if len(s_xyz) == 0 or len(t_xyz) == 0:
            return
        preds = {}
        for method in self.methods:
            src_desc = ctx.descriptors.points(method, s_xyz, src, ("surface", src.name))
            trg_desc = ctx.descriptors.points(method, t_xyz, trg, ("surface", trg.name))
            preds[method] = transfer_labels(src_desc, s_lab, trg_desc)
            self.update(kind, method, "mIoU", preds[method], t_lab, s_lab)
        if ctx.wants_picture(item):
            n = ctx.num_parts
            extent = float(torch.cat([s_xyz, t_xyz]).norm(dim=-1).max()) * 1.1
            colours = lambda lab: pictures.label_colours(lab.cpu(), n)  # noqa: E731
            row = [
                pictures.scatter_points(s_xyz, colours(s_lab), extent=extent),
                pictures.scatter_points(t_xyz, colours(t_lab), extent=extent),
                *[pictures.scatter_points(t_xyz, colours(p), extent=extent) for p in preds.values()],
            ]
            header = ["source parts", "target truth", *preds]
            save_image_grid([row], ctx.picture_path(self.name, item), header=header)
