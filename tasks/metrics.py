"""Label transfer by cosine nearest neighbour, and the metrics of FeatureNeRF's evaluation protocol.

Pure functions (:func:`cosine_nearest`, :func:`part_miou`, :func:`pck`) compute one pair's value; the
:class:`torchmetrics.Metric` subclasses accumulate them over pairs. Every metric is a mean over pairs of
a per-pair value (mIoU of a pair, PCK of a pair's keypoints, PSNR of a pair's view), kept as a running
*sum* and a pair *count* with ``dist_reduce_fx="sum"``: under DDP each rank evaluates its own pairs and
the reduction is exact (the suite's sampler gives every pair to exactly one rank). The per-pair values
themselves are kept too (list states with ``dist_reduce_fx="cat"``, tagged with the pair's index), so
intervals can be bootstrapped over pairs (:meth:`PairMean.per_pair`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

#: 2D PCK thresholds in pixels of a 128-pixel image (PAPER.md); scaled with the image size.
PCK_2D_PIXELS_AT_128 = (2.5, 5.0, 7.5, 10.0)
#: 3D PCK thresholds in world (object) units.
PCK_3D_UNITS = (0.025, 0.05, 0.075, 0.1)


def pck_thresholds_2d(image_size: int) -> tuple[float, ...]:
    """The 2D PCK thresholds in pixels of an ``image_size`` image (2.5/5/7.5/10 px at 128 px)."""
    return tuple(t * image_size / 128.0 for t in PCK_2D_PIXELS_AT_128)


#: Similarities per block of nearest-neighbour search (4 MB of float32): the block stays in cache while
#: its rows are reduced. With ~3,700 keys (a 3D part pair) this is ~280 query rows a block, which on one
#: CPU thread matched 1.5-1.7x faster than 4,096-row blocks, with the same picks.
SIMILARITY_BLOCK = 1 << 20


def query_blocks(query: Tensor, num_keys: int, chunk: int | None = None) -> tuple[Tensor, ...]:
    """``query`` (N, D) split into row blocks of at most ``chunk`` rows (default: as many as keep
    :data:`SIMILARITY_BLOCK` similarities to ``num_keys`` keys in one block)."""
    rows = chunk or max(1, SIMILARITY_BLOCK // max(num_keys, 1))
    return query.split(rows)


def cosine_nearest(query: Tensor, keys: Tensor, chunk: int | None = None) -> Tensor:
    """Index of each query's nearest key by cosine similarity.

    Args:
        query: (N, D) descriptors; keys: (M, D) descriptors (M >= 1). Neither needs to be normalised.
        chunk: query rows per similarity block (default: see :func:`query_blocks`), so memory stays
            O(chunk * M) for full images.
    Returns:
        (N,) int64 indices into ``keys`` (ties go to the lowest index).
    """
    if keys.shape[0] == 0:
        raise ValueError("cosine_nearest: no keys to match against")
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(keys.float(), dim=-1)
    out = [(part @ k.T).argmax(dim=1) for part in query_blocks(q, k.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=query.device)


def transfer_labels(src_desc: Tensor, src_labels: Tensor, trg_desc: Tensor) -> Tensor:
    """One-shot label transfer: each target element takes the label of its nearest source element.

    Args:
        src_desc: (M, D); src_labels: (M,) int; trg_desc: (N, D).
    Returns:
        (N,) predicted target labels.
    """
    return src_labels[cosine_nearest(trg_desc, src_desc)]


def vote_labels(sources: Sequence[tuple[Tensor, Tensor]], trg_desc: Tensor) -> Tensor:
    """Few-shot label transfer: each target element takes the majority label of its nearest element in
    each of the ``K`` annotated sources (ties go to the label whose votes are more similar in sum).

    With one source this is exactly :func:`transfer_labels`.

    Args:
        sources: ``K`` pairs ``(desc (M_k, D), labels (M_k,) int)``, each ``M_k >= 1``. trg_desc: (N, D).
    Returns:
        (N,) predicted target labels.
    """
    if len(sources) == 1:
        return transfer_labels(sources[0][0], sources[0][1], trg_desc)
    q = F.normalize(trg_desc.float(), dim=-1)
    votes, sims = [], []
    for desc, labels in sources:
        k = F.normalize(desc.float(), dim=-1)
        best = [(part @ k.T).max(dim=1) for part in query_blocks(q, k.shape[0])]
        sims.append(torch.cat([b.values for b in best]))
        votes.append(labels[torch.cat([b.indices for b in best])])
    votes_t, sims_t = torch.stack(votes, 1), torch.stack(sims, 1)  # (N, K)
    n_labels = int(votes_t.max()) + 1
    # A vote counts 1; the summed similarity, scaled into (-0.5, 0.5), only breaks ties between counts.
    # float32 whatever the matmul gave (bf16 under autocast: trainer.precision auto on a bf16 CPU)
    weight = 1.0 + sims_t.float() / (2 * len(sources) + 1)
    scores = torch.zeros(len(q), n_labels, device=q.device).scatter_add_(1, votes_t, weight)
    return scores.argmax(dim=1)


def part_miou(pred: Tensor, truth: Tensor, src_labels: Tensor, background: int = 0) -> Tensor | None:
    """Mean IoU of one pair over the parts present in both the source and the target truth.

    Args:
        pred: (N,) predicted labels of the target elements (foreground pixels or surface points).
        truth: (N,) true labels of the same elements. src_labels: (M,) the source's true labels.
        background: label that is never a part.
    Returns:
        Scalar tensor, or ``None`` when the two objects share no part (the pair is not counted).
    """
    ious = _shared_part_ious(pred, truth, src_labels, background)
    return torch.stack(list(ious.values())).mean() if ious else None


def _shared_part_ious(pred: Tensor, truth: Tensor, src_labels: Tensor, background: int) -> dict[int, Tensor]:
    """``{label: IoU}`` (float64 scalars) of the parts present in both the source and the target truth."""
    common = set(truth.unique().tolist()) & set(src_labels.unique().tolist())
    common.discard(background)
    out = {}
    for k in sorted(common):
        p, t = pred == k, truth == k
        out[k] = (p & t).sum().double() / (p | t).sum().double()
    return out


def part_ious(
    pred: Tensor, truth: Tensor, src_labels: Tensor, parts: int, background: int = 0
) -> Tensor | None:
    """IoU of one pair for each part label ``1 .. parts``, NaN for a part not present in both the source
    and the target truth (the parts :func:`part_miou` averages).

    Args:
        pred, truth: (N,) predicted and true labels of the target elements. src_labels: (M,) the
            source's true labels. parts: number of part labels (``len(part_names) - 1``).
    Returns:
        (parts,) float64, or ``None`` when the two objects share no part (the pair is not counted).
    """
    ious = _shared_part_ious(pred, truth, src_labels, background)
    if not ious:
        return None
    out = torch.full((parts,), float("nan"), dtype=torch.float64)
    for k, iou in ious.items():
        if 1 <= k <= parts:
            out[k - 1] = iou.cpu()
    return out


def pck(dist: Tensor, thresholds: Sequence[float]) -> Tensor | None:
    """Fraction of keypoints whose error is below each threshold (strictly, as the release does).

    Args:
        dist: (K,) distances between predicted and true keypoint positions.
    Returns:
        (T,) float64 fractions, or ``None`` when ``K == 0`` (the pair is not counted).
    """
    if dist.numel() == 0:
        return None
    thr = torch.as_tensor(thresholds, dtype=torch.float64, device=dist.device)
    return (dist.double()[:, None] < thr[None]).double().mean(0)


class PairMean(Metric):
    """Mean over pairs of a per-pair value vector ``(T,)``; states are sums, so DDP reduction is exact.

    Each counted pair's value is also kept with its pair index (list states, concatenated across ranks),
    for intervals over pairs (:meth:`per_pair`).

    Args:
        size: length ``T`` of the per-pair vector (1 for a scalar).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, size: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = size
        self.add_state("total", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("values", default=[], dist_reduce_fx="cat")  # (T,) float64 per counted pair
        self.add_state("pair_ids", default=[], dist_reduce_fx="cat")  # (1,) float64 per counted pair

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        # A rank without pairs would send torchmetrics' empty placeholder in the default dtype (float32)
        # while the others send float64: gloo refuses the gather (byte counts differ). Send float64
        # empties instead (the states are restored from the cache after syncing).
        for name in ("values", "pair_ids"):
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                setattr(self, name, [torch.zeros(0, dtype=torch.float64, device=self.total.device)])
        super()._sync_dist(*args, **kwargs)

    def update(self, value: Tensor | float | None, pair: int = -1) -> None:
        """Add one pair's value (``None``: the pair has nothing to measure and is not counted).

        ``pair`` is the pair's index within its kind (``-1``: unknown), kept beside the value.
        """
        if value is None:
            return
        v = torch.as_tensor(value, dtype=torch.float64, device=self.total.device).reshape(-1)
        if v.numel() != self.size:
            raise ValueError(f"expected a per-pair value of size {self.size}, got {v.numel()}")
        self._accumulate(v)
        self.pairs += 1
        self.values.append(v.clone())
        self.pair_ids.append(torch.tensor([float(pair)], dtype=torch.float64, device=v.device))  # exact

    def _accumulate(self, v: Tensor) -> None:
        """Add one counted pair's value (T,) to the reduced sums."""
        self.total += v

    def per_pair(self) -> tuple[Tensor, Tensor]:
        """The counted pairs' indices (P,) and values (P, T), sorted by pair index (all ranks' pairs).

        Under DDP every rank must call it (the list states are gathered).
        """
        with self.sync_context(should_unsync=True):
            values, ids = self.values, self.pair_ids
            if isinstance(values, list):  # not synced (one process) or nothing gathered
                values = torch.stack(values) if values else torch.zeros(0, self.size, dtype=torch.float64)
                ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
            values = values.reshape(-1, self.size).cpu()
            ids = ids.reshape(-1).long().cpu()  # stored as float64 (see __init__)
        order = torch.argsort(ids, stable=True)
        return ids[order], values[order]

    def compute(self) -> Tensor:
        """(T,) mean over the pairs counted so far (NaN before any)."""
        if self.pairs == 0:
            return torch.full_like(self.total, float("nan"))
        return self.total / self.pairs


class PartMIoU(PairMean):
    """Part mIoU: per pair over parts present in both objects, averaged over pairs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(size=1, **kwargs)

    def update(self, pred: Tensor, truth: Tensor, src_labels: Tensor, pair: int = -1) -> None:  # type: ignore[override]
        """pred, truth: (N,) target labels; src_labels: (M,) source labels (see :func:`part_miou`)."""
        super().update(part_miou(pred, truth, src_labels), pair)


class PartIoU(PairMean):
    """Each part's IoU, averaged over the pairs where both objects have the part (a pair without it
    keeps a NaN in its per-pair values, which the bootstrap drops).

    Args:
        part_names: names of labels ``1 ..`` (``meta.json``'s ``part_names`` without the background);
            the results are ``IoU/<name>``.
    """

    def __init__(self, part_names: Sequence[str], **kwargs) -> None:
        super().__init__(size=len(part_names), **kwargs)
        self.labels = [f"IoU/{name}" for name in part_names]
        # NaN-free sums: each part's IoU total and the pairs that measured it.
        self.add_state("measured", default=torch.zeros(self.size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, truth: Tensor, src_labels: Tensor, pair: int = -1) -> None:  # type: ignore[override]
        """pred, truth: (N,) target labels; src_labels: (M,) source labels (see :func:`part_ious`)."""
        super().update(part_ious(pred, truth, src_labels, self.size), pair)

    def _accumulate(self, v: Tensor) -> None:
        seen = ~v.isnan()
        self.total += torch.where(seen, v, torch.zeros_like(v))
        self.measured += seen.double()

    def compute(self) -> Tensor:
        """(P,) each part's mean IoU over the pairs that measured it (NaN where none did)."""
        return self.total / self.measured  # 0 / 0 is NaN


class PCK(PairMean):
    """Percentage of correct keypoints at several thresholds: per pair, averaged over pairs.

    Args:
        thresholds: distances (pixels or world units) below which a keypoint is correct.
        labels: result names of the thresholds (default ``PCK@<threshold>``).
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(size=len(thresholds), **kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)
        #: Names of the values in results (2D thresholds are named at 128 px whatever the image size).
        self.labels = list(labels) if labels is not None else [f"PCK@{t:g}" for t in self.thresholds]
        if len(self.labels) != len(self.thresholds):
            raise ValueError(
                f"need one label per threshold, got {len(self.labels)} for {len(self.thresholds)}"
            )

    def update(self, pred: Tensor, truth: Tensor, pair: int = -1) -> None:  # type: ignore[override]
        """pred, truth: (K, 2) pixel or (K, 3) world positions of the keypoints evaluated in one pair."""
        super().update(pck((pred.float() - truth.float()).norm(dim=-1), self.thresholds), pair)
