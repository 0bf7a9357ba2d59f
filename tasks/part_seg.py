"""One-shot part segmentation transfer, in 2D (pixels) and 3D (labelled surface points).

2D: each target foreground pixel takes the label of its nearest (cosine) source foreground pixel;
foreground is the true object mask. The source is described conditioned on its own image; the target on
its own image for cross-instance pairs, and on the *source* image for cross-view pairs (the model renders
the target view from the source view; ``teacher_2d`` reads the real target image).

3D: each target surface point (``points.npz``) takes the label of its nearest source surface point; each
object is conditioned on its own input view (cross-view: the same object from two views).

Metric: IoU per part present in both objects' truth, mean per pair, then mean over pairs.

Few-shot (``--tasks.shots K``): a cross-instance pair is also evaluated with ``K`` annotated source objects
(its source plus ``K - 1`` more of the split, seen from the same view, each conditioned on its own image);
each target element takes the majority label of its nearest element in each source
(:func:`~featurenerf.tasks.metrics.vote_labels`), and the IoU runs over the parts present in the target
and any source. Reported as ``mIoU@<K>shot`` beside the one-shot ``mIoU``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from featurenerf.data.annotations import load_part_map, load_points
from featurenerf.data.srn import ObjectRecord
from featurenerf.visualize import save_image_grid

from . import pictures
from .base import Task, TaskContext, register_task
from .descriptors import PosedView
from .metrics import PartIoU, PartMIoU, vote_labels


class _PartTransfer(Task):
    """Shared by the 2D and 3D part tasks: label transfer from one or several sources, and its mIoU
    (and each part's IoU, one-shot, when :meth:`set_part_names` named the parts)."""

    #: Names of part labels ``1 ..`` whose IoU is reported one by one (``--tasks.per_part``); empty: none.
    part_names: tuple[str, ...] = ()

    def set_part_names(self, names: Sequence[str]) -> None:
        """Also report each part's IoU (``<kind>/IoU/<name>``, one-shot pairs) for labels ``1 ..``;
        metric states are recreated."""
        self.part_names = tuple(names)
        self.set_methods(self.methods)

    def new_metrics(self) -> dict[str, Metric]:
        metrics: dict[str, Metric] = {"mIoU": PartMIoU()}
        if self.part_names:
            metrics["IoU"] = PartIoU(self.part_names)
        return metrics

    def kind_metrics(self, kind: str) -> dict[str, Metric]:
        # Per-part IoU is one-shot only: its results are named by part, not by the number of sources.
        return {n: m for n, m in super().kind_metrics(kind).items() if not n.startswith("IoU@")}

    def transfer(
        self, kind: str, method: str, sources: list[tuple[Tensor, Tensor]], trg_desc: Tensor, trg_lab: Tensor
    ) -> Tensor:
        """Update the mIoU of every number of sources evaluated on ``kind`` pairs.

        Args:
            sources: ``(descriptors (M_k, D), labels (M_k,))`` of the pair's source first, then the further
                sources of a few-shot evaluation. trg_desc: (N, D); trg_lab: (N,) true labels.
        Returns:
            (N,) the prediction with the fewest sources (the pictures show it).
        """
        shots = self.shots if kind == "cross_inst" else (1,)
        first = None
        for k in shots:
            pred = vote_labels(sources[:k], trg_desc)
            present = torch.cat([lab for _, lab in sources[:k]])
            self.update(kind, method, self.metric_name("mIoU", kind, k), pred, trg_lab, present)
            if self.part_names and k == 1:
                self.update(kind, method, "IoU", pred, trg_lab, present)
            first = pred if first is None else first
        return first


@register_task("part_seg_2d")
class PartSeg2D(_PartTransfer):
    """Part label transfer between images (mIoU over foreground pixels)."""

    needs = "part label maps parts/NNNNNN.png beside rgb/"
    few_shot = True

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
        extra = []  # further annotated sources (few-shot): (view, foreground labels)
        for side in item.get("extra_src", []):
            view = PosedView.from_item(side)
            ij = view.foreground_ij()
            if len(ij):
                extra.append((view, side["parts"][ij[:, 0], ij[:, 1]]))
        preds = {}
        for method in self.methods:
            trg_desc = ctx.descriptors.foreground(method, trg, cond)
            sources = [(ctx.descriptors.foreground(method, src, src), src_lab)]
            sources += [(ctx.descriptors.foreground(method, v, v), lab) for v, lab in extra]
            preds[method] = self.transfer(kind, method, sources, trg_desc, trg_lab)
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
class PartSeg3D(_PartTransfer):
    """Part label transfer between labelled surface point clouds (mIoU over target points)."""

    needs = "labelled surface points points.npz (xyz, labels)"
    few_shot = True

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
        extra = [
            (PosedView.from_item(side), side["points"], side["point_labels"])
            for side in item.get("extra_src", [])
            if len(side["points"])
        ]
        preds = {}
        for method in self.methods:
            trg_desc = ctx.descriptors.points(method, t_xyz, trg, ("surface", trg.name))
            sources = [(ctx.descriptors.points(method, s_xyz, src, ("surface", src.name)), s_lab)]
            sources += [
                (ctx.descriptors.points(method, x, v, ("surface", v.name)), lab) for v, x, lab in extra
            ]
            preds[method] = self.transfer(kind, method, sources, trg_desc, t_lab)
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
