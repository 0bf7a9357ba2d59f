"""Torch datasets over object records: training rays and held-out novel views.

Pixel convention for every target: pixel ``(i, j)`` (row, column) has its centre at ``u = j + 0.5``,
``v = i + 0.5`` (see :mod:`featurenerf.geometry.cameras`). A training ray goes through a pixel centre; its
colour target is that pixel and its distillation target is the teacher map sampled bilinearly at the same
``(u, v)`` with ``align_corners=False`` — the teacher map covers the image, so a feature cell of stride
``s`` has its centre at ``s * (j' + 0.5)`` in image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from featurenerf.data.srn import ObjectRecord, load_image_and_mask, load_poses
from featurenerf.geometry.cameras import rays_from_pixels, uv_to_grid
from featurenerf.lru import TensorLRU


def sample_teacher_at(features: Tensor, uv: Tensor, height: int, width: int) -> Tensor:
    """Bilinearly sample teacher maps at image pixel positions.

    Args:
        features: (V, D, h, w) maps covering (H, W) images. uv: (V, R, 2) pixel positions.
    Returns:
        (V, R, D).
    """
    grid = uv_to_grid(uv, width, height)[:, :, None]  # (V, R, 1, 2)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def sample_teacher_per_ray(features: Tensor, view: Tensor, uv: Tensor, height: int, width: int) -> Tensor:
    """Each ray's teacher feature, sampled bilinearly in its own view's map only.

    Same values as ``sample_teacher_at(features, uv expanded to every view)[view, arange(R)]`` without
    sampling every ray in every view (V times the work): rays are grouped by view into a (V, m, 2) block
    padded to the largest group ``m``, sampled in one call and put back in ray order.

    Args:
        features: (V, D, h, w) maps covering (H, W) images. view: (R,) long, each ray's map.
        uv: (R, 2) pixel positions.
    Returns:
        (R, D).
    """
    n_views, r = features.shape[0], view.shape[0]
    counts = torch.bincount(view, minlength=n_views)
    order = torch.argsort(view, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(view)
    slot[order] = torch.arange(r) - starts[view[order]]  # each ray's place within its view's group
    block = uv.new_zeros(n_views, max(int(counts.max()), 1), 2)
    block[view, slot] = uv
    return sample_teacher_at(features, block, height, width)[view, slot]


def mask_bbox(mask: Tensor) -> Tensor:
    """Inclusive pixel bounding box ``(i0, j0, i1, j1)`` of a (H, W) mask; the whole image when empty."""
    rows = mask.any(1).nonzero()
    cols = mask.any(0).nonzero()
    if len(rows) == 0:
        return torch.tensor([0, 0, mask.shape[0] - 1, mask.shape[1] - 1])
    return torch.stack([rows.min(), cols.min(), rows.max(), cols.max()])


class ObjectViews:
    """Loads the views of one object at a fixed size (images, masks, poses, intrinsics, teacher maps).

    Args:
        image_size: square size images are resized to; background: "white" or "black".
        cache: the teacher-feature cache (or None). image_cache_bytes: budget of the decoded images kept
            in memory (one store per process; 0 decodes every time). A training item reads up to every view
            of its object, so without the store a step decodes and resizes ~100 PNGs. The stored values are
            :func:`load_image_and_mask`'s float32 tensors: training is bit-identical with or without it.
    """

    def __init__(self, image_size: int, background: str, cache=None, image_cache_bytes: int = 0) -> None:
        self.image_size = image_size
        self.background = background
        self.cache = cache
        self.images = TensorLRU(image_cache_bytes)
        # Every pose of an object, read once: a training item reads up to every view's pose file, and
        # parsing ~50 text files per object cost about a sixth of a toy batch's loading time.
        self.poses: dict[str, Tensor] = {}

    def load(
        self, record: ObjectRecord, views: Sequence[int], with_teacher: bool = True
    ) -> dict[str, Tensor]:
        """Returns images (V, 3, S, S), masks (V, S, S), poses (V, 4, 4), focal (2,), c (2,) and, with a
        cache, teacher (V, D, h, w)."""
        size, bg = self.image_size, self.background
        loaded = [
            self.images.get((str(p), size, bg), lambda p=p: load_image_and_mask(p, size, bg))
            for p in (record.rgb_paths[v] for v in views)
        ]
        focal, c = record.intrinsics.at_size(self.image_size, self.image_size)
        out = {
            "images": torch.stack([im for im, _ in loaded]),
            "masks": torch.stack([m for _, m in loaded]),
            "poses": self._poses(record)[list(views)],
            "focal": focal,
            "c": c,
        }
        if with_teacher and self.cache is not None:
            out["teacher"] = self.cache.load(record, list(views))
        return out

    def _poses(self, record: ObjectRecord) -> Tensor:
        """All of ``record``'s poses ``(N, 4, 4)``, read on first use (a few KB per object)."""
        key = str(record.directory)
        if key not in self.poses:
            self.poses[key] = load_poses(record)
        return self.poses[key]


class TrainRays(Dataset):
    """One item per (object, draw): random source view(s) and ``rays_per_object`` target rays.

    Target rays come from all views of the object (FeatureNeRF's setting); each ray's view is drawn
    uniformly and only the views drawn are loaded. Two ray sets are returned with the same views: ``bbox``
    (pixels inside the object's 2D bounding box, used early in training) and ``full`` (any pixel); the
    module picks one by step. Randomness is a pure function of ``(seed, index)`` so a run is reproducible
    and resumable: index ``k`` maps to object ``k mod N`` of a per-round permutation. Any ``k >= 0`` is a
    valid draw (``len`` is one epoch); :class:`DrawSampler` walks the stream across epochs.
    """

    def __init__(
        self,
        records: Sequence[ObjectRecord],
        views: ObjectViews,
        num_src_views: int = 1,
        rays_per_object: int = 128,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if not records:
            raise ValueError("no training objects")
        self.records = list(records)
        self.views = views
        self.num_src_views = num_src_views
        self.rays_per_object = rays_per_object
        self.seed = seed
        self.length = length or len(self.records)

    def __len__(self) -> int:
        return self.length

    def _object_index(self, k: int) -> int:
        n = len(self.records)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + k // n))
        return int(perm[k % n])

    def __getitem__(self, k: int) -> dict:
        record = self.records[self._object_index(k)]
        g = torch.Generator().manual_seed(self.seed * 7_919 + 104_729 * k + 1)
        nv, r, s = record.num_views, self.rays_per_object, self.views.image_size
        src = torch.randperm(nv, generator=g)[: self.num_src_views].tolist()
        ray_views = torch.randint(nv, (r,), generator=g)
        unique, inverse = ray_views.unique(return_inverse=True)
        tgt = self.views.load(record, unique.tolist())
        src_data = self.views.load(record, src, with_teacher=False)

        # Full-image pixels and bbox pixels, for the same ray views.
        full_ij = torch.randint(s, (r, 2), generator=g)
        boxes = torch.stack([mask_bbox(m) for m in tgt["masks"]])[inverse]  # (R, 4)
        lo, hi = boxes[:, :2], boxes[:, 2:]
        frac = torch.rand((r, 2), generator=g)
        bbox_ij = (lo + (frac * (hi - lo + 1)).long().clamp_max(hi - lo)).long()

        out = {
            "src_images": src_data["images"],
            "src_poses": src_data["poses"],
            "focal": tgt["focal"],
            "c": tgt["c"],
            "rays": {},
        }
        for name, ij in (("full", full_ij), ("bbox", bbox_ij)):
            uv = ij.flip(-1).float() + 0.5  # (u, v) pixel centres
            poses = tgt["poses"][inverse]
            origins, dirs = rays_from_pixels(uv, poses, tgt["focal"], tgt["c"])
            rays = {
                "origins": origins,
                "dirs": dirs,
                "rgb": tgt["images"][inverse, :, ij[:, 0], ij[:, 1]],
                "uv": uv,
            }
            if "teacher" in tgt:
                rays["teacher"] = sample_teacher_per_ray(tgt["teacher"], inverse, uv, s, s)
            out["rays"][name] = rays
        return out


class DrawSampler(DistributedSampler):
    """Indices of :class:`TrainRays` draws for one epoch, continuing from the draws already consumed.

    Draw ``k`` is a pure function of ``(seed, k)`` for any ``k >= 0``, so training reads one stream
    0, 1, 2, ... An epoch is ``epoch_items`` consecutive draws, starting at ``consumed()`` (read when
    iteration starts) and ending at the epoch boundary: epoch ``e`` of a fresh run reads draws
    ``e * epoch_items ...`` (new rays every epoch, not the same items again), and a run resumed after ``b``
    batches of an epoch reads exactly the rest of that epoch. Resuming needs no sampler state in the
    checkpoint: the count comes from the restored training state.

    With several processes, process ``rank`` takes every ``world_size``-th draw of the same stream. That
    is why this is a ``DistributedSampler``: Lightning then uses it as it is instead of wrapping it in one
    that would expect a full epoch after a mid-epoch resume.

    Args:
        epoch_items: draws per epoch, all processes together (a whole number of global batches).
        consumed: draws already trained on, all processes together.
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self, epoch_items: int, consumed: Callable[[], int], rank: int = 0, world_size: int = 1
    ) -> None:
        if epoch_items < 1 or epoch_items % world_size:
            raise ValueError(f"epoch_items must be a positive multiple of {world_size}, got {epoch_items}")
        # DistributedSampler.__init__ wants a dataset and a process group; set only what it reads.
        self.epoch_items = epoch_items
        self.consumed = consumed
        self.rank = rank
        self.num_replicas = world_size
        self.epoch = 0

    def __len__(self) -> int:
        # a full epoch: Lightning counts a resumed epoch's batches from the epoch's start
        return self.epoch_items // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        start = int(self.consumed())
        end = (start // self.epoch_items + 1) * self.epoch_items
        return iter(range(start + self.rank, end, self.num_replicas))


class NovelViews(Dataset):
    """Held-out objects: one (or more) fixed source view(s) and ``num_target_views`` full target views.

    Views are drawn once with ``seed`` so every evaluation uses the same ones.
    """

    def __init__(
        self,
        records: Sequence[ObjectRecord],
        views: ObjectViews,
        num_src_views: int = 1,
        num_target_views: int = 2,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.views = views
        self.choices = []
        for i, rec in enumerate(self.records):
            g = torch.Generator().manual_seed(seed * 31 + i)
            perm = torch.randperm(rec.num_views, generator=g).tolist()
            self.choices.append(
                (perm[:num_src_views], perm[num_src_views : num_src_views + num_target_views])
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        src, tgt = self.choices[i]
        s = self.views.load(self.records[i], src, with_teacher=False)
        t = self.views.load(self.records[i], tgt)
        out = {
            "src_images": s["images"],
            "src_poses": s["poses"],
            "focal": s["focal"],
            "c": s["c"],
            "tgt_images": t["images"],
            "tgt_masks": t["masks"],
            "tgt_poses": t["poses"],
            "index": torch.tensor(i),
        }
        if "teacher" in t:
            out["tgt_teacher"] = t["teacher"]
        return out
