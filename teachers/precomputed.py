"""The ``precomputed`` teacher: feature maps some other model already wrote to disk.

Distil any external model's features without its weights: point ``data.teacher`` at a folder of
per-object arrays, one map per view, and declare their width, stride and input size::

    data:
      teacher:
        name: precomputed
        features: /data/feats/dino_vitb8        # holds features.json, or pass the three numbers below
        # feature_dim: 768
        # stride: 8
        # input_size: 224

Two layouts are read (``layout: auto`` picks per file by extension):

* **featurenerf**: ``<features>/<group>/<object>.npy``, a ``(V, C, h, w)`` float16/float32 array whose
  views follow the object's view order, plus ``<features>/features.json``:
  ``{"feature_dim": C, "stride": s, "input_size": S}`` — the maps were computed from images resized to
  ``S`` x ``S`` with ``s`` input pixels per cell, so ``h = w = S // s``.
* **release**: the FeatureNeRF release's ``<features>/<group>/<object>.npz`` holding ``feats`` ``(V, C, h,
  w)`` (``dino_feat_256/<synset>/<id>.npz``: ``feature_dim 384, stride 8, input_size 256``). A file
  holding a per-view dictionary (features of a few views only) is refused: training reads every view.

``<group>`` is the folder above the object's image folder: the split folder (``cars_train``) for SRN and
``transforms.json`` data, the synset for the release. Maps are cached like any teacher's (the feature
cache masks the background as usual); the cache key names the folder, and the cache's digest covers each
object's feature file, so editing a file rebuilds that object's cache entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from featurenerf.data.npz import load_npz
from featurenerf.data.srn import ObjectRecord
from featurenerf.errors import ConfigError, DataError

from .base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherInfo, register_teacher

METADATA = "features.json"
LAYOUTS = ("auto", "featurenerf", "release")
_FIELDS = ("feature_dim", "stride", "input_size")


def _declared(folder: Path, given: dict[str, int | None]) -> dict[str, int]:
    """Width, stride and input size: the arguments, else ``features.json`` (one line when unknown)."""
    out = {k: v for k, v in given.items() if v is not None}
    path = folder / METADATA
    if len(out) < len(_FIELDS) and path.is_file():
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: malformed JSON ({err})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected {{'feature_dim', 'stride', 'input_size'}}")
        for k in _FIELDS:
            out.setdefault(k, raw.get(k))
    missing = [k for k in _FIELDS if out.get(k) is None]
    if missing:
        raise ConfigError(
            f"precomputed teacher: {', '.join(missing)} unknown; pass them (data.teacher.{missing[0]}) "
            f"or write {path}"
        )
    bad = [k for k in _FIELDS if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 1]
    if bad:
        raise ConfigError(f"precomputed teacher: {bad[0]} must be a positive integer, got {out[bad[0]]!r}")
    return out


@register_teacher("precomputed")
class PrecomputedTeacher(Teacher):
    """Feature maps read from disk per object and view (see the module docstring for the layouts).

    Args:
        features: folder of per-object feature files.
        feature_dim, stride, input_size: the maps' width, input pixels per cell, and the square side of
            the images they were computed from; ``None`` reads them from ``<features>/features.json``.
        layout: ``"featurenerf"`` (``.npy``), ``"release"`` (``.npz`` with ``feats``) or ``"auto"``.
    """

    def __init__(
        self,
        features: str,
        feature_dim: int | None = None,
        stride: int | None = None,
        input_size: int | None = None,
        layout: str = "auto",
    ) -> None:
        super().__init__()
        folder = Path(features).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"precomputed teacher: features folder {folder} does not exist")
        if layout not in LAYOUTS:
            raise ConfigError(
                f"precomputed teacher: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}"
            )
        self.folder = folder.resolve()
        self.layout = layout
        declared = _declared(
            self.folder, {"feature_dim": feature_dim, "stride": stride, "input_size": input_size}
        )
        self._dim, self._stride, self._size = (
            declared["feature_dim"],
            declared["stride"],
            declared["input_size"],
        )

    # ---- metadata ---------------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self._dim

    @property
    def stride(self) -> int:
        return self._stride

    @property
    def input_size(self) -> int:
        return self._size

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN  # unused: no image is ever normalised here

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD

    @property
    def weights_source(self) -> str:
        return f"features on disk: {self.folder}"

    def cache_fields(self) -> dict[str, Any]:
        return {"features": str(self.folder), "layout": self.layout}

    @classmethod
    def describe(cls) -> TeacherInfo:
        return TeacherInfo(0, 0, None, "features on disk (set features=DIR; width from features.json)")

    def extract(self, images: Tensor) -> Tensor:
        raise RuntimeError(
            f"the precomputed teacher reads features from {self.folder} per object; it cannot run on images"
        )

    # ---- reading ----------------------------------------------------------------------------------
    def input_files(self, record: ObjectRecord) -> list[Path]:
        """The feature file of ``record`` (the feature cache hashes it, so an edit is noticed)."""
        group = self.folder / record.directory.parent.name
        candidates = {"featurenerf": [".npy"], "release": [".npz"], "auto": [".npy", ".npz"]}[self.layout]
        for suffix in candidates:
            path = group / f"{record.name}{suffix}"
            if path.is_file():
                return [path]
        return [group / f"{record.name}{candidates[0]}"]  # missing: reported when read

    def object_features(self, record: ObjectRecord) -> Tensor:
        """Every view's map of ``record``: ``(V, feature_dim, h, w)`` float32, ``h = w = input_size // stride``.

        Raises:
            DataError: one line naming the file: missing, unreadable, a per-view dictionary, or a shape
                other than the declared one.
        """
        (path,) = self.input_files(record)
        if not path.is_file():
            raise DataError(f"{path}: missing precomputed features for object {record.name}")
        if path.suffix == ".npy":
            try:
                feats = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise DataError(f"{path}: unreadable features ({err})") from err
        else:
            found = load_npz(path)
            key = "feats" if "feats" in found else "features" if "features" in found else None
            if key is None:
                raise DataError(f"{path}: needs an array 'feats' (V, C, h, w)")
            feats = found[key]
            if feats.dtype.hasobject:
                raise DataError(
                    f"{path}: holds features of some views only (a per-view dictionary); "
                    "precomputed distillation needs every view: write them all as one (V, C, h, w) array"
                )
        grid = self.input_size // self.stride
        want = (record.num_views, self.feature_dim, grid, grid)
        if feats.shape != want:
            raise DataError(
                f"{path}: features are {tuple(feats.shape)}, expected {want} (views, feature_dim, "
                f"input_size // stride twice)"
            )
        if not np.issubdtype(feats.dtype, np.floating) or not np.isfinite(feats).all():
            raise DataError(f"{path}: features must be finite floats, got {feats.dtype}")
        return torch.from_numpy(feats.astype(np.float32))


def write_features(folder: Path, record: ObjectRecord, features: Tensor) -> Path:
    """Write ``record``'s maps ``(V, C, h, w)`` in the featurenerf layout (float16, atomically)."""
    from featurenerf.io import atomic_write

    path = Path(folder) / record.directory.parent.name / f"{record.name}.npy"
    with atomic_write(path, "wb") as f:
        np.save(f, features.detach().cpu().numpy().astype(np.float16))
    return path
