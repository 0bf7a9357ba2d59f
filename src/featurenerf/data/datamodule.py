"""The LightningDataModule: finds objects, owns the frozen teacher and its feature cache, builds loaders.

The teacher lives here, not in the model: its weights are frozen and never enter a checkpoint, and the
model only sees its cached maps. The model's feature-head width is linked from :attr:`feature_dim` by the
CLI (``link_arguments(..., apply_on="instantiate")``), so the width is never typed twice.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from featurenerf.data.datasets import DrawSampler, NovelViews, ObjectViews, TrainRays
from featurenerf.data.srn import DataError, ObjectRecord
from featurenerf.ranges import NonNegativeInt, PositiveInt
from featurenerf.teachers.base import Teacher

log = logging.getLogger(__name__)

MAKE_DATA_HINT = (
    "make the toy data with `featurenerf data synth --category toycar --out data/toy_cars` "
    "(or `make demo`), or point data.root at an SRN folder holding cars_train/, cars_val/, cars_test/"
)


def require_data_root(root: str | Path | None) -> Path:
    """``root`` as a folder that exists, or a one-line :class:`DataError` saying how to get data (the CLI
    calls this right after parsing, before anything is built)."""
    if root is None:
        raise DataError(f"data.root is not set: {MAKE_DATA_HINT}")
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data root does not exist; {MAKE_DATA_HINT}")
    if not root.is_dir():
        raise DataError(f"{root}: data root is a file, expected a folder; {MAKE_DATA_HINT}")
    return root


class FeatureNeRFData(L.LightningDataModule):
    """Objects in the SRN layout (or ``transforms.json``), with cached teacher maps.

    Args:
        root: dataset folder holding ``<category>_{train,val,test}/``.
        category: restrict to one category folder prefix (e.g. ``cars``); all by default.
        format: "auto", "srn", "transforms" or "featurenerf_release" (the authors' rendered ShapeNet:
            ``camera/``, ``img/``, ``splits/``; ``category`` is then a synset such as ``02958343``).
        image_size: square size images are resized to (SRN: 128).
        background: "white" or "black"; ``None`` reads ``meta.json`` (white when absent).
        teacher: registry name (``hed_vgg16``, ``dino_vits8``, ...), a ``{"class_path": ..., "init_args":
            ...}`` / ``{"name": ..., **kwargs}`` mapping, or ``None`` for no distillation.
        cache_dir: where teacher maps are cached; default ``<root>/.cache/features``.
        num_src_views: source views per object per step (FeatureNeRF: 1).
        rays_per_object: target rays per object per step (128).
        batch_size: objects per step (4).
        epoch_length: training items (objects) per epoch; default one pass over the objects.
        val_split: split evaluated as unseen objects ("val" or "test").
        val_objects: how many held-out objects validation renders (``None``: all).
        val_views: novel views rendered per held-out object.
        num_workers: DataLoader workers, or ``"auto"``: up to 8 per process on a GPU (a GPU step is faster than
            one worker makes a batch), 1 on a CPU with two or more cores (see :mod:`featurenerf.data.workers`).
        image_cache_mb: decoded images kept in memory per process (MB; 0: decode every time). A step reads
            up to every view of its objects, so decoding dominated the data time without it.
        seed: seed of ray/view sampling (independent of the trainer's seed).
        skip_invalid: drop objects that fail the data check (and say how many) instead of refusing.
        check: run the data check before training/validation.
    """

    def __init__(
        self,
        root: str | None = None,
        category: str | None = None,
        format: str = "auto",
        image_size: PositiveInt = 128,
        background: str | None = None,
        teacher: Teacher | None = "hed_vgg16",  # type: ignore[assignment]  (a registry name)
        cache_dir: str | None = None,
        num_src_views: PositiveInt = 1,
        rays_per_object: PositiveInt = 128,
        batch_size: PositiveInt = 4,
        epoch_length: PositiveInt | None = None,
        val_split: str = "val",
        val_objects: PositiveInt | None = 8,
        val_views: PositiveInt = 2,
        num_workers: NonNegativeInt | Literal["auto"] = 0,
        image_cache_mb: NonNegativeInt = 1024,
        seed: int = 0,
        skip_invalid: bool = False,
        check: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root) if root else None
        self.category = category
        self.format = format
        self.image_size = image_size
        self._background = background
        self.teacher_spec = teacher
        self.cache_dir = cache_dir
        self.num_src_views = num_src_views
        self.rays_per_object = rays_per_object
        self.batch_size = batch_size
        self.epoch_length = epoch_length
        self.val_split = val_split
        self.val_objects = val_objects
        self.val_views = val_views
        self.num_workers = num_workers
        self.image_cache_mb = image_cache_mb
        self.seed = seed
        self.skip_invalid = skip_invalid
        self.check = check
        self._teacher = None
        self._cache = None
        self._records: dict[str, list[ObjectRecord]] = {}
        self.extra_val_loaders: list = []  # task loaders appended by the module (dataloader_idx >= 1)
        self._said_workers: int | None = None  # the `num_workers: auto` count last printed

    # ------------------------------------------------------------------ teacher
    @property
    def teacher(self):
        """The frozen teacher (built on first use), or ``None``."""
        if self._teacher is None and self.teacher_spec is not None:
            from featurenerf.teachers import resolve_teacher

            self._teacher = resolve_teacher(self.teacher_spec)
        return self._teacher

    @property
    def feature_dim(self) -> int:
        """Width of the distilled feature head: the teacher's ``feature_dim`` (0 without a teacher)."""
        return 0 if self.teacher is None else int(self.teacher.feature_dim)

    @property
    def background(self) -> str:
        if self._background is not None:
            return self._background
        meta = self.meta
        return meta.background if meta is not None else "white"

    @property
    def meta(self):
        """The dataset's ``meta.json`` annotations header, or ``None`` for unannotated data."""
        from featurenerf.data.annotations import read_meta

        try:
            return read_meta(self.require_root(), self.category)
        except DataError:
            return None

    def require_root(self) -> Path:
        """The data root, or a one-line error saying how to get data."""
        return require_data_root(self.root)

    # ------------------------------------------------------------------ records
    def records(self, split: str) -> list[ObjectRecord]:
        """Objects of a split (cached; invalid ones dropped when ``skip_invalid``)."""
        if split not in self._records:
            from featurenerf.data.formats import list_objects_any

            recs = list_objects_any(self.require_root(), split, self.category, self.format)
            bad = getattr(self, "_invalid_dirs", set())
            self._records[split] = [r for r in recs if r.directory not in bad]
        return self._records[split]

    def run_check(self) -> None:
        """The data check, up front: refuse with the report, or drop bad objects when ``skip_invalid``."""
        root = self.require_root()
        if not self.check:
            return
        from featurenerf.data.check import check_dataset, invalid_objects

        problems = check_dataset(root)
        self._checked = True  # setup() on the same process need not read every file again
        if not problems:
            return
        if not self.skip_invalid:
            report = "\n".join(str(p) for p in problems)
            raise DataError(
                f"{root}: {len(problems)} problem(s) in the dataset (fix them, or set data.skip_invalid: true "
                f"to drop the bad objects):\n{report}"
            )
        self._invalid_dirs = invalid_objects(problems)
        self._records.clear()
        print(f"data.skip_invalid: dropped {len(self._invalid_dirs)} invalid object(s)", file=sys.stderr)

    @property
    def cache(self):
        if self._cache is None and self.teacher is not None:
            from featurenerf.data.feature_cache import FeatureCache

            cache_dir = (
                Path(self.cache_dir) if self.cache_dir else self.require_root() / ".cache" / "features"
            )
            self._cache = FeatureCache(cache_dir, self.teacher, self.image_size, background=self.background)
        return self._cache

    def _views(self) -> ObjectViews:
        return ObjectViews(self.image_size, self.background, self.cache, self.image_cache_mb << 20)

    def val_records(self) -> list[ObjectRecord]:
        recs = self.records(self.val_split)
        if not recs:
            raise DataError(
                f"{self.require_root()}: no objects in the {self.val_split!r} split to validate on"
            )
        return recs if self.val_objects is None else recs[: self.val_objects]

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Check the data and fill the teacher cache once (rank 0); later runs hit the cache."""
        self.run_check()
        if self.cache is not None:
            needed = self.records("train") + self.val_records()
            self.cache.ensure(needed, progress=True)

    def setup(self, stage: str | None = None) -> None:
        if self.check and not hasattr(self, "_checked"):
            # prepare_data runs on rank 0 only; every rank needs the same record lists.
            self.run_check()
        if stage in (None, "fit"):
            train = self.records("train")
            if not train:
                raise DataError(f"{self.require_root()}: no objects in the 'train' split")
            self.train_set = TrainRays(
                train,
                self._views(),
                self.num_src_views,
                self.rays_per_object,
                seed=self.seed,
                length=self.epoch_length,
            )
        self.val_set = NovelViews(
            self.val_records(), self._views(), self.num_src_views, self.val_views, self.seed
        )

    def train_dataloader(self) -> DataLoader:
        # TrainRays draws objects itself, as a pure function of the index; the sampler continues the
        # stream of draws across epochs and, after a resume, from the exact batch the checkpoint followed.
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        global_batch = self.batch_size * world
        per_epoch = len(self.train_set) // global_batch * global_batch
        if per_epoch == 0:
            raise DataError(
                f"data.epoch_length ({len(self.train_set)}) is smaller than data.batch_size ({self.batch_size})"
                f" x {world} process(es)"
            )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=DrawSampler(per_epoch, self._consumed_draws, rank, world),
            num_workers=self.workers,
            persistent_workers=self.workers > 0,
            drop_last=True,
            pin_memory=self._pin_memory(),
        )

    @property
    def workers(self) -> int:
        """``num_workers`` as a count: ``"auto"`` is resolved for the trainer's device (and said once)."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        from featurenerf.data.workers import auto_workers, usable_cpus

        trainer = self.trainer
        device = trainer.strategy.root_device.type if trainer is not None else "cpu"
        local = getattr(trainer, "num_devices", 1) if trainer is not None and device == "cuda" else 1
        cpus = usable_cpus()
        n = auto_workers(device, cpus, local)
        if self._said_workers != n and (trainer is None or trainer.global_rank == 0):
            self._said_workers = n
            where = f"{device} trainer" if trainer is not None else "no trainer attached: as on a CPU"
            print(f"data.num_workers auto: {n} ({where}, {cpus} CPUs)", file=sys.stderr)
        return n

    def _pin_memory(self) -> bool:
        """Page-locked batches when training on CUDA: Lightning then copies them to the GPU without
        blocking (``non_blocking=True``), so the copy overlaps the previous step's kernels."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _consumed_draws(self) -> int:
        """Training draws already used: batches trained on (the module's ``seen_steps``, restored from a
        checkpoint before iteration starts) × batch size × processes; 0 outside a trainer."""
        trainer = self.trainer
        if trainer is None:
            return 0
        seen = getattr(trainer.lightning_module, "seen_steps", None)
        batches = int(seen) if seen is not None else trainer.global_step * trainer.accumulate_grad_batches
        return batches * self.batch_size * trainer.world_size

    def val_dataloader(self) -> list[DataLoader]:
        loaders = [DataLoader(self.val_set, batch_size=1, num_workers=self.workers)]
        return loaders + list(self.extra_val_loaders)
