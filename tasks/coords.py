"""How well the canonical-coordinate head x̂ has learned the object frame (a diagnostic of ``L_coord``).

FeatureNeRF's network only sees points in the input camera's frame; ``L_coord`` asks its coordinate head
to name each point's canonical (world = object frame) position, which it can only do by inferring the
object's pose from the image. When it does, the internal feature carries the canonical position and
transfers across views; when it does not, ``L_coord`` is a loss the field pays for without that gain.
This task measures which, on the same cross-view pairs as the transfer tasks:

For each pair (one object, two views) the head is read at the object's labelled surface points
(``points.npz``), conditioned on each view in turn (query direction as in the 3D tasks). Per pair, over
both views' readings:

* ``err``: mean distance |x̂ − x| in world units (lower is better);
* ``R2``: 1 − Σ|x̂ − x|² / Σ|x − x̄|², x̄ the object's centroid: 1 is exact, 0 is no better than
  naming the centroid for every point. ``R2_x/y/z`` per world axis;
* ``acc@0.05``, ``acc@0.1``: % of readings within that distance of the truth;
* ``drift``: mean |x̂_view1 − x̂_view2| of the same point read from the two views (view consistency;
  lower is better);
* ``turned``: % of the two readings that are closer to the truth turned 180° about the up axis (z) than
  to the truth itself: the head named the view's front as the back. A head that reads the pose scores
  about 0; a head that cannot tell a view from its opposite (a front/back-symmetric object) scores up
  to 50 (lower is better).

Methods: ``featurenerf`` (the evaluated model's head) and ``pixelnerf`` (a model trained without
``L_coord``: its head is untrained, a reference for chance).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from featurenerf.data.annotations import load_points
from featurenerf.data.srn import ObjectRecord

from .base import Task, TaskContext, register_task
from .descriptors import FIELD_OUTPUTS, PosedView, encode_view, query_points
from .metrics import PCK, PairMean

#: Distances (world units) of the ``acc@`` values.
COORD_THRESHOLDS = (0.05, 0.1)
#: Labels of the R² vector.
R2_LABELS = ["R2", "R2_x", "R2_y", "R2_z"]


#: (x, y, z) → (−x, −y, z): a half turn about the up axis through the object-frame origin.
HALF_TURN = (-1.0, -1.0, 1.0)


def turned_share(pred: Tensor, truth: Tensor) -> Tensor:
    """1.0 when ``pred`` is closer (summed squared error) to the truth turned a half turn about z than
    to the truth, else 0.0 (one reading of a whole object).

    Args:
        pred, truth: (N, 3) predicted and true positions in the object frame (centred at the origin).
    Returns:
        Scalar float64 tensor.
    """
    pred, truth = pred.double(), truth.double()
    turned = truth * truth.new_tensor(HALF_TURN)
    return ((pred - turned).pow(2).sum() < (pred - truth).pow(2).sum()).double()


def coordinate_r2(pred: Tensor, truth: Tensor) -> Tensor:
    """Coefficient of determination of predicted coordinates against the truth, overall and per axis.

    The baseline is the truth's own centroid, so a constant guess scores at most 0.

    Args:
        pred, truth: (N, 3) predicted and true positions (N >= 2, not all equal).
    Returns:
        (4,) ``[R², R²_x, R²_y, R²_z]``.
    """
    pred, truth = pred.double(), truth.double()
    sq_err = (pred - truth).pow(2).sum(0)  # (3,)
    spread = (truth - truth.mean(0)).pow(2).sum(0)  # (3,)
    overall = 1 - sq_err.sum() / spread.sum()
    per_axis = 1 - sq_err / spread.clamp_min(1e-12)
    return torch.cat([overall[None], per_axis])


class Distance(PairMean):
    """A per-pair mean distance in world units (lower is better)."""

    higher_is_better = False


class Share(PairMean):
    """A per-pair fraction of readings that went wrong, shown in % (lower is better)."""

    higher_is_better = False


@register_task("canonical_coords")
class CanonicalCoords(Task):
    """x̂ against the true world positions of surface points, and its consistency across two views."""

    needs = "labelled surface points points.npz (xyz)"
    kinds = ("cross_view",)
    supported_methods = ("featurenerf", "pixelnerf")
    uses_teacher = False

    def new_metrics(self) -> dict[str, Metric]:
        err, drift = Distance(), Distance()
        r2 = PairMean(size=len(R2_LABELS))
        r2.labels = list(R2_LABELS)
        acc = PCK(COORD_THRESHOLDS, labels=[f"acc@{t:g}" for t in COORD_THRESHOLDS])
        return {"err": err, "R2": r2, "acc": acc, "drift": drift, "turned": Share()}

    def annotations(self, record: ObjectRecord, view: int) -> dict:
        return {"points": load_points(record)[0]}

    def step(self, ctx: TaskContext, item: dict) -> None:
        kind = item["kind"]
        src, trg = PosedView.from_item(item["src"]), PosedView.from_item(item["trg"])
        xyz = item["src"]["points"].float()
        if len(xyz) < 2:
            return  # nothing to measure; the pair is not counted
        for method in self.methods:
            net = ctx.models[FIELD_OUTPUTS[method][0]]
            with ctx.rendering(net):
                read = [
                    query_points(net, encode_view(net, v), v, xyz, ("coords",))["coords"].float()
                    for v in (src, trg)
                ]
            both, truth = torch.cat(read), xyz.repeat(2, 1)
            self.update(kind, method, "err", (both - truth).norm(dim=-1).mean())
            self.update(kind, method, "R2", coordinate_r2(both, truth))
            self.update(kind, method, "acc", both, truth)
            self.update(kind, method, "drift", (read[0] - read[1]).norm(dim=-1).mean())
            self.update(kind, method, "turned", sum(turned_share(r, xyz) for r in read) / 2)
