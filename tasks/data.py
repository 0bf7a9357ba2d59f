"""Task items: one pair per item, with both sides' images, cameras, masks and the task's annotations.

Items are small (two views and their labels); the model work happens in ``validation_step``. The
sampler gives every pair to exactly one rank (no padding), so metric sums reduced over ranks are exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler

from featurenerf.data.datasets import ObjectViews
from featurenerf.data.srn import ObjectRecord

from .base import Task
from .pairs import CrossInstancePair, PairSet


class PairItems(Dataset):
    """The pairs a task evaluates, the kinds interleaved (so ``limit_val_batches`` keeps both kinds).

    Each item: ``{"index", "kind", "pair" (index within its kind), "src": side, "trg": side}``; a side is
    ``{"name", "view", "image" (3, S, S), "mask" (S, S), "pose" (4, 4), "focal" (2,), "c" (2,)}``, plus
    ``"teacher"`` (C, h, w) when teacher maps are available and the task's annotations. A few-shot task's
    cross-instance items also carry ``"extra_src"``: the sides of the further source objects ``extra``
    names for the pair (index within its kind), seen from the pair's view.
    """

    def __init__(
        self,
        task: Task,
        pairs: PairSet,
        records: Sequence[ObjectRecord],
        views: ObjectViews,
        extra: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        self.task = task
        self.extra = extra if task.few_shot and max(task.shots) > 1 else None
        self.records = {r.name: r for r in records}
        self.views = views
        per_kind = []
        for kind in task.kinds:
            rows = []
            for i, p in enumerate(pairs.cross_inst if kind == "cross_inst" else pairs.cross_view):
                if isinstance(p, CrossInstancePair):
                    rows.append((kind, i, p.src, p.view, p.trg, p.target_view))
                else:
                    rows.append((kind, i, p.model_id, p.src_view, p.model_id, p.trg_view))
            per_kind.append(rows)
        # inst 0, view 0, inst 1, view 1, ...: a truncated run still measures every kind.
        longest = max((len(r) for r in per_kind), default=0)
        self.items: list[tuple[str, int, str, int, str, int]] = [
            rows[i] for i in range(longest) for rows in per_kind if i < len(rows)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def side(self, name: str, view: int) -> dict:
        record = self.records[name]
        with_teacher = self.task.uses_teacher and self.views.cache is not None
        loaded = self.views.load(record, [view], with_teacher=with_teacher)
        out = {
            "name": name,
            "view": view,
            "image": loaded["images"][0],
            "mask": loaded["masks"][0],
            "pose": loaded["poses"][0],
            "focal": loaded["focal"],
            "c": loaded["c"],
        }
        if "teacher" in loaded:
            out["teacher"] = loaded["teacher"][0].float()
        out.update(self.task.required_annotations(record, view))
        return out

    def __getitem__(self, index: int) -> dict:
        kind, i, a, va, b, vb = self.items[index]
        item = {"index": index, "kind": kind, "pair": i, "src": self.side(a, va), "trg": self.side(b, vb)}
        if self.extra is not None and kind == "cross_inst":
            item["extra_src"] = [self.side(name, va) for name in self.extra.get(i, ())]
        return item


def single_item(batch: list[dict]) -> dict:
    """Collate for batch size 1: the item itself (sides keep their own shapes)."""
    return batch[0]


class ShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes items ``r, r + W, ...``: each item exactly once, no padding.

    The world size is read when iterating (the loaders are built before DDP starts). Lightning leaves a
    :class:`~torch.utils.data.DistributedSampler` alone, so its padding sampler never replaces this one.
    """

    def __init__(self, length: int) -> None:  # deliberately not DistributedSampler.__init__ (needs DDP)
        self.length = length
        self.epoch = 0

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self) -> Iterator[int]:
        rank, world = self._world()
        return iter(range(rank, self.length, world))

    def __len__(self) -> int:
        rank, world = self._world()
        return len(range(rank, self.length, world))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
