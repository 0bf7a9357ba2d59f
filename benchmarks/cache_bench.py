"""Teacher feature cache: training-epoch time with the cache vs recomputing teacher maps on the fly.

Both epochs iterate the same training DataLoader of :class:`FeatureNeRFData` (same objects, views, rays);
the only difference is where ``ObjectViews`` gets the teacher maps: the float16 cache files, or the teacher
run on the views each item needs (:class:`OnTheFly`, with the cache's own preprocessing).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

import torch
from harness import median, timed

from featurenerf.data.srn import ObjectRecord, load_image_and_mask


class OnTheFly:
    """Stands in for :class:`FeatureCache`: computes the teacher maps of the requested views each time."""

    def __init__(self, cache) -> None:
        self.cache = cache  # for its teacher and settings

    def load(self, record: ObjectRecord, views: Sequence[int]) -> torch.Tensor:
        c = self.cache
        loaded = [load_image_and_mask(record.rgb_paths[v], c.image_size, c.background) for v in views]
        images = torch.stack([im for im, _ in loaded])
        masks = torch.stack([m for _, m in loaded])[:, None] if c.mask_background else None
        with torch.no_grad():
            feats = c.teacher(images, mask=masks)
        return feats.float().half().float()  # the cache stores float16


def bench_cache(root: str, teacher: str, image_size: int, items: int, repeats: int, **data_kwargs) -> dict:
    """Epoch time (``items`` objects) with the cache vs on the fly, interleaved ``repeats`` times."""
    from featurenerf.data.datamodule import FeatureNeRFData

    with tempfile.TemporaryDirectory() as cache_dir:
        dm = FeatureNeRFData(
            root=root,
            teacher=teacher,
            image_size=image_size,
            cache_dir=cache_dir,
            epoch_length=items,
            num_workers=0,
            **data_kwargs,
        )
        build_s = timed(dm.prepare_data)
        dm.setup("fit")
        views = dm.train_set.views
        cached, fly = views.cache, OnTheFly(views.cache)

        def epoch(source) -> float:
            views.cache = source
            return timed(lambda: sum(1 for _ in dm.train_dataloader()))

        epoch(cached)  # warm-up: file system cache, teacher initialisation
        epoch(fly)
        times = {"cached": [], "on_the_fly": []}
        for _ in range(repeats):
            times["cached"].append(epoch(cached))
            times["on_the_fly"].append(epoch(fly))
        batches = len(dm.train_dataloader())
    return {
        "teacher": teacher,
        "image_size": image_size,
        "items_per_epoch": items,
        "batches_per_epoch": batches,
        "rays_per_object": dm.rays_per_object,
        "cache_build_s": build_s,
        "epoch_s_cached": median(times["cached"]),
        "epoch_s_on_the_fly": median(times["on_the_fly"]),
        "ratio_cached_vs_on_the_fly": median([a / b for a, b in zip(times["cached"], times["on_the_fly"])]),
        "all": times,
        "note": "data loading only (the training step is the same either way); num_workers=0",
    }
