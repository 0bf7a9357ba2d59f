"""Novel-view synthesis on the cross-view pairs: the target view rendered from the source image.

PSNR and SSIM of the full rendered image against the true target view, per pair, averaged over pairs, as
pixelNeRF reports them (both images quantised to uint8, SSIM with a 7×7 uniform window: see
:mod:`featurenerf.image_metrics`). Only methods that are radiance fields apply (``featurenerf`` and
``pixelnerf``), beside the trivial ``copy_input`` baseline (the source image itself taken as the target
view) on the same pairs.
"""

from __future__ import annotations

from torchmetrics import Metric

from featurenerf.image_metrics import psnr_uint8, ssim_uint8
from featurenerf.visualize import save_image_grid

from . import pictures
from .base import Task, TaskContext, register_task
from .descriptors import FIELD_OUTPUTS, PosedView
from .metrics import PairMean


@register_task("novel_view")
class NovelView(Task):
    """PSNR / SSIM of the target view of each cross-view pair, rendered from the source view."""

    kinds = ("cross_view",)
    supported_methods = ("featurenerf", "pixelnerf", "copy_input")
    uses_teacher = False

    def new_metrics(self) -> dict[str, Metric]:
        return {"PSNR": PairMean(), "SSIM": PairMean()}

    def step(self, ctx: TaskContext, item: dict) -> None:
        src, trg = PosedView.from_item(item["src"]), PosedView.from_item(item["trg"])
        s = trg.size
        truth = trg.image.float()[None]
        preds = {}
        for method in self.methods:
            if method == "copy_input":
                pred = src.image.float()[None]
            else:
                model = FIELD_OUTPUTS[method][0]
                net = ctx.models[model]
                with ctx.rendering(net):
                    cond = ctx.descriptors.condition(model, src, s * s)
                    rgb = net.render_image(
                        cond, trg.pose[None], trg.focal[None], trg.c[None], s, s, outputs=("rgb",)
                    )["rgb"]
                pred = rgb.permute(0, 3, 1, 2).clamp(0, 1).float()
            preds[method] = pred[0]
            self.update("cross_view", method, "PSNR", psnr_uint8(pred, truth)[0])
            self.update("cross_view", method, "SSIM", ssim_uint8(pred, truth)[0])
        if ctx.wants_picture(item):
            row = [src.image.float().cpu(), *[p.cpu() for p in preds.values()], trg.image.float().cpu()]
            header = ["input", *preds, "truth"]
            save_image_grid(
                [[pictures.enlarge(x) for x in row]], ctx.picture_path(self.name, item), header=header
            )
