"""Precomputed teacher feature maps on disk: one float16 safetensors file per object.

Teacher maps are computed once and read back a few views at a time during training (50 DINO views of
one object are ~39 MB in float16; a step needs one or two). Layout::

    <cache_dir>/<teacher.cache_key()>/<size>px-<background>-<masked|unmasked>/<split folder>/<object>.safetensors

Each file holds ``features`` ``(V, C, h, w)`` float16 and metadata: the teacher's cache key, the
settings, a digest of the object's image files (names, sizes and bytes; plus the teacher's own feature
file for the ``precomputed`` teacher) and a CRC-32 per view. A file
whose key, settings or image digest no longer match is *stale*; one whose header does not parse, whose
shape is wrong or whose view bytes fail their checksum is *corrupt*. :meth:`FeatureCache.ensure` rebuilds
both (and says so); :meth:`FeatureCache.load` refuses them with :class:`CacheError`, so a bad cache file
is never silently used. Files are written to a temporary name and renamed, so a kill never leaves half
a file behind.
"""

from __future__ import annotations

from featurenerf.errors import CacheError  # importable from here too, as before

import dataclasses
import hashlib
import os
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from featurenerf.data.srn import ObjectRecord, load_image_and_mask
from featurenerf.io import atomic_save_via

FORMAT_VERSION = "1"
_FP16_MAX = float(torch.finfo(torch.float16).max)


@dataclasses.dataclass
class CacheReport:
    """What :meth:`FeatureCache.ensure` did: files already valid (``hit``), computed for the first time
    (``built``) and recomputed because they were stale or corrupt (``rebuilt``, with the reason per file)."""

    hit: int = 0
    built: int = 0
    rebuilt: int = 0
    views_computed: int = 0
    seconds: float = 0.0
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.hit} hit, {self.built} built, {self.rebuilt} rebuilt "
            f"({self.views_computed} views computed in {self.seconds:.1f} s)"
        )


class FeatureCache:
    """Teacher feature maps of whole objects, computed once and read a few views at a time.

    Args:
        cache_dir: root folder of all caches (one subfolder per teacher key and settings).
        teacher: the frozen teacher; its :meth:`~featurenerf.teachers.Teacher.cache_key` names the files.
        image_size: side the images are loaded at before the teacher sees them (the training size).
        background: colour alpha is composited on (``"white"`` or ``"black"``); it changes the input.
        batch_size: views per teacher call when building.
        mask_background: zero features outside the object mask (alpha > 0.5), as FeatureNeRF does.
    """

    def __init__(
        self,
        cache_dir: Path,
        teacher,  # featurenerf.teachers.Teacher (not imported: keeps this module free of the teachers)
        image_size: int,
        background: str = "white",
        batch_size: int = 8,
        mask_background: bool = True,
    ) -> None:
        if background not in ("white", "black"):
            raise ValueError(f"background must be 'white' or 'black', got {background!r}")
        self.teacher = teacher
        self.image_size = int(image_size)
        self.background = background
        self.batch_size = int(batch_size)
        self.mask_background = mask_background
        self.key = teacher.cache_key()
        self.settings = f"{self.image_size}px-{background}-{'masked' if mask_background else 'unmasked'}"
        self.root = Path(cache_dir)
        self.directory = self.root / self.key / self.settings
        self.grid = teacher.output_size(self.image_size, self.image_size)
        self.feature_dim = teacher.feature_dim
        self._digests: dict[tuple, str] = {}

    # ------------------------------------------------------------------ paths and identity
    def path_for(self, record: ObjectRecord) -> Path:
        """The cache file of ``record`` (keyed by its split folder, e.g. ``cars_train``, and name)."""
        return self.directory / record.directory.parent.name / f"{record.name}.safetensors"

    def source_files(self, record: ObjectRecord) -> list[Path]:
        """The files the maps of ``record`` are made from: its images, plus the teacher's own per-object
        files when it reads some (:meth:`Teacher.input_files`: the ``precomputed`` teacher's feature file,
        an annotation oracle's part maps)."""
        extra = getattr(self.teacher, "input_files", None)
        return [*record.rgb_paths, *(extra(record) if extra is not None else [])]

    def image_digest(self, record: ObjectRecord) -> str:
        """SHA-1 over the object's source files (:meth:`source_files`: names, sizes, bytes), remembered per
        file stat so the per-step check in :meth:`load` costs one ``stat`` per file, not a read."""
        files = self.source_files(record)
        try:
            stats = tuple((str(p), (s := os.stat(p)).st_size, s.st_mtime_ns) for p in files)
        except FileNotFoundError as err:
            raise CacheError(err.filename, "missing source file of the teacher maps") from None
        digest = self._digests.get(stats)
        if digest is None:
            h = hashlib.sha1()
            for path in files:
                data = Path(path).read_bytes()
                h.update(f"{Path(path).name}:{len(data)}\n".encode())
                h.update(data)
            digest = self._digests[stats] = h.hexdigest()
        return digest

    def size_on_disk(self) -> int:
        """Bytes of all cache files of this teacher and settings."""
        if not self.directory.exists():
            return 0
        return sum(p.stat().st_size for p in self.directory.rglob("*.safetensors"))

    # ------------------------------------------------------------------ checking
    def _header(self, path: Path) -> tuple[dict[str, str], tuple[int, ...]]:
        """Metadata and ``features`` shape of a cache file (``CacheError`` if it does not parse)."""
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                shape = tuple(f.get_slice("features").get_shape())
        except FileNotFoundError:
            raise CacheError(path, "missing feature cache file; run `featurenerf teachers cache`") from None
        except Exception as err:  # safetensors raises its own error types for every kind of damage
            raise CacheError(path, f"corrupt feature cache file ({type(err).__name__}: {err})") from None
        return meta, shape

    def _validate(
        self, path: Path, record: ObjectRecord, meta: dict[str, str], shape: tuple[int, ...]
    ) -> None:
        """Raise :class:`CacheError` when the header does not describe ``record`` under this teacher."""
        if meta.get("format") != FORMAT_VERSION:
            raise CacheError(path, f"stale feature cache file (format {meta.get('format')!r})")
        if meta.get("cache_key") != self.key or meta.get("settings") != self.settings:
            raise CacheError(
                path,
                f"stale feature cache file (made by {meta.get('cache_key')}/{meta.get('settings')}, "
                f"expected {self.key}/{self.settings})",
            )
        if meta.get("images") != self.image_digest(record):
            what = (
                "images or the teacher's own files"
                if self.source_files(record)[len(record.rgb_paths) :]
                else "images"
            )
            raise CacheError(path, f"stale feature cache file (the object's {what} changed)")
        expected = (record.num_views, self.feature_dim, *self.grid)
        crcs = meta.get("view_crc32", "").split(",")
        if shape != expected or len(crcs) != record.num_views:
            raise CacheError(path, f"corrupt feature cache file (shape {shape}, expected {expected})")

    def problem(self, record: ObjectRecord, verify_data: bool = True) -> str | None:
        """Why the cache file of ``record`` cannot be used (``None`` when it can).

        ``verify_data`` also checks every view's checksum (reads the whole file).
        """
        path = self.path_for(record)
        if not path.exists():
            return "missing"
        try:
            meta, shape = self._header(path)
            self._validate(path, record, meta, shape)
            if verify_data:
                self._read(path, meta, range(record.num_views))
        except CacheError as err:
            return err.reason
        return None

    def _read(self, path: Path, meta: dict[str, str], views: Sequence[int]) -> np.ndarray:
        """The chosen views ``(len(views), C, h, w)`` float16, each checked against its CRC-32.

        Reads through numpy, not torch: small copies and casts in torch go through its intra-op thread
        pool, which on a busy shared CPU made each load 25x slower (measured 33 ms vs 1.3 ms).
        """
        from safetensors import safe_open

        crcs = meta["view_crc32"].split(",")
        out = []
        try:
            with safe_open(path, framework="numpy") as f:
                sl = f.get_slice("features")
                for v in views:
                    view = sl[v : v + 1]
                    if f"{_crc(view):08x}" != crcs[v]:
                        raise CacheError(path, f"corrupt feature cache file (checksum mismatch in view {v})")
                    out.append(view)
        except CacheError:
            raise
        except Exception as err:
            raise CacheError(path, f"corrupt feature cache file ({type(err).__name__}: {err})") from None
        return np.concatenate(out) if out else np.zeros((0,), np.float16)

    # ------------------------------------------------------------------ reading
    def load(self, record: ObjectRecord, views: Sequence[int]) -> Tensor:
        """Teacher maps of the chosen views, reading only those views from disk.

        Args:
            record: the object.
            views: view indices into ``record.rgb_paths``.
        Returns:
            ``(len(views), C, h, w)`` float32.
        Raises:
            CacheError: the file is missing, stale (teacher, settings or images changed) or corrupt.
        """
        views = [int(v) for v in views]
        bad = [v for v in views if not 0 <= v < record.num_views]
        if bad:
            raise IndexError(
                f"{record.directory}: view {bad[0]} out of range (object has {record.num_views})"
            )
        path = self.path_for(record)
        meta, shape = self._header(path)
        self._validate(path, record, meta, shape)
        # float16 -> float32 in torch (exact either way): about 2x faster than numpy's astype here.
        return torch.from_numpy(self._read(path, meta, views)).float()

    # ------------------------------------------------------------------ building
    def ensure(self, records: Sequence[ObjectRecord], progress: bool = True) -> CacheReport:
        """Make every record's cache file valid: keep valid ones, build missing ones, rebuild stale or
        corrupt ones (each rebuild is reported on stderr with its reason)."""
        start = time.perf_counter()
        report = CacheReport()
        todo: list[tuple[ObjectRecord, str]] = []
        for record in records:
            reason = self.problem(record)
            if reason is None:
                report.hit += 1
            else:
                todo.append((record, reason))
        if todo:
            from tqdm.auto import tqdm

            from featurenerf.console import bar_options

            total = sum(r.num_views for r, _ in todo)
            desc = f"teacher {self.key}"
            with tqdm(
                total=total, unit="view", desc=desc, file=sys.stderr, disable=not progress, **bar_options()
            ) as bar:
                for record, reason in todo:
                    path = self.path_for(record)
                    if reason == "missing":
                        report.built += 1
                    else:
                        report.rebuilt += 1
                        report.reasons[str(path)] = reason
                        if progress:
                            bar.write(f"rebuilding {path}: {reason}", file=sys.stderr)
                    self.build(record, on_views=bar.update)
                    report.views_computed += record.num_views
        report.seconds = time.perf_counter() - start
        return report

    def compute(self, record: ObjectRecord, on_views=None) -> Tensor:
        """Teacher maps of every view of ``record``: ``(V, C, h, w)`` float16 on the CPU.

        A teacher that reads maps from disk (``object_features``, the ``precomputed`` teacher) gives
        them whole; the background is masked the same way as for a teacher that runs on images.
        """
        if hasattr(self.teacher, "object_features"):
            return self._read_precomputed(record, on_views)
        chunks = []
        for lo in range(0, record.num_views, self.batch_size):
            paths = record.rgb_paths[lo : lo + self.batch_size]
            loaded = [load_image_and_mask(p, self.image_size, self.background) for p in paths]
            images = torch.stack([im for im, _ in loaded])
            masks = torch.stack([m for _, m in loaded])[:, None] if self.mask_background else None
            if getattr(self.teacher, "needs_annotations", False):
                # An annotation oracle: it is told which (object, view) each image is.
                from featurenerf.teachers.base import ViewSource

                source = ViewSource(record, tuple(range(lo, lo + len(paths))))
                feats = self.teacher(images, mask=masks, source=source).float().cpu()
            else:
                feats = self.teacher(images, mask=masks).float().cpu()
            if not torch.isfinite(feats).all():
                raise CacheError(record.directory, f"teacher {self.key} returned non-finite features")
            chunks.append(feats.clamp(-_FP16_MAX, _FP16_MAX).half())
            if on_views is not None:
                on_views(len(paths))
        return torch.cat(chunks)

    def _read_precomputed(self, record: ObjectRecord, on_views=None) -> Tensor:
        from featurenerf.teachers.base import foreground_cells

        feats = self.teacher.object_features(record).float()
        if self.mask_background:
            masks = [load_image_and_mask(p, self.image_size, self.background)[1] for p in record.rgb_paths]
            feats = feats * foreground_cells(torch.stack(masks)[:, None], feats.shape[-2:]).to(feats)
        if on_views is not None:
            on_views(record.num_views)
        return feats.clamp(-_FP16_MAX, _FP16_MAX).half()

    def build(self, record: ObjectRecord, on_views=None) -> Path:
        """Compute and atomically write the cache file of ``record``; returns its path."""
        from safetensors.torch import save_file

        digest = self.image_digest(record)  # before reading: a concurrent edit then reads as stale
        features = self.compute(record, on_views).contiguous()
        meta = {
            "format": FORMAT_VERSION,
            "cache_key": self.key,
            "settings": self.settings,
            "images": digest,
            "view_crc32": ",".join(f"{_crc(v):08x}" for v in features.numpy()[:, None]),
            "object": str(record.directory),
        }
        path = self.path_for(record)
        atomic_save_via(path, lambda tmp: save_file({"features": features}, tmp, metadata=meta))
        return path


def _crc(view: np.ndarray) -> int:
    """CRC-32 of a float16 array's bytes."""
    return zlib.crc32(np.ascontiguousarray(view).view(np.uint8))
