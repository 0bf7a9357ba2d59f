"""Reader for the FeatureNeRF release's rendered ShapeNet data and its annotations
(``data.format: featurenerf_release``).

Layout (one folder per ShapeNet synset, e.g. ``02958343`` = cars)::

    <root>/camera/<synset>/<id>.json        # camera_angle_x + frames[].file_path / transform_matrix (OpenGL)
    <root>/img/<synset>/<id>/*.png          # RGBA renders; file_path is relative to this folder
    <root>/splits/<synset>.json             # {"train", "val", "test": [ids]} + the evaluation pairs
    <root>/part_2d_anno/<synset>/<id>.npz   # labels (V, H, W) int part map per view, 0 = background
    <root>/part_3d_anno/<synset>/<id>.npz   # pts (N, 3) surface points, labels (N,) part labels
    <root>/kp_2d_anno/<synset>/<id>.npz     # labels: object array, per view (K_v, 3) int rows (u, v, id)
    <root>/kp_3d_anno/<synset>/<id>.npz     # labels (K, 4) rows (x, y, z, id); pts (M, 3) candidate points
    <root>/meta.json                        # optional: part and keypoint names (see read_release_meta)

The split file is the release's ``assets/splits/<synset>.json``, copied beside the data. Views are the
camera file's frames in order. Poses are OpenGL camera-to-world and converted on reading (as for
``transforms.json``); near/far are 0.8/1.8 and the background black, the release's settings.

2D keypoints are stored, not derived: a row ``(u, v, id)`` is the keypoint ``id`` seen at column ``u``,
row ``v`` (integer pixels of the stored image), so its centre is ``(u + 0.5, v + 0.5)`` in featurenerf's
pixel convention. The 3D keypoint task predicts among the ``pts`` of ``kp_3d_anno`` (the release's
candidates), not among the part points.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from featurenerf.data.json_file import read_json
from featurenerf.data.npz import load_npz
from featurenerf.data.srn import SPLITS, DataError, ObjectRecord
from featurenerf.data.transforms_json import read_frames

FORMAT = "featurenerf_release"
CAMERA, IMAGES, SPLIT_FILES = "camera", "img", "splits"
PART_2D, PART_3D, KP_2D, KP_3D = "part_2d_anno", "part_3d_anno", "kp_2d_anno", "kp_3d_anno"
ANNOTATIONS = (PART_2D, PART_3D, KP_2D, KP_3D)
NEAR, FAR, BACKGROUND = 0.8, 1.8, "black"


def is_release_root(root: Path) -> bool:
    """Whether ``root`` holds the release's ``camera/`` and ``img/`` folders."""
    root = Path(root)
    return (root / CAMERA).is_dir() and (root / IMAGES).is_dir()


def synsets(root: Path, category: str | None = None) -> list[str]:
    """The synsets under ``<root>/camera/`` (only ``category`` when given)."""
    found = sorted(p.name for p in (Path(root) / CAMERA).iterdir() if p.is_dir())
    return [s for s in found if s == category] if category else found


def split_file(root: Path, synset: str) -> Path:
    return Path(root) / SPLIT_FILES / f"{synset}.json"


def read_split_ids(root: Path, synset: str) -> dict[str, list[str]]:
    """``{"train": [ids], "val": [...], "test": [...]}`` from the synset's split file.

    Raises:
        DataError: the file is missing, not JSON, or a split is not a list of strings.
    """
    path = split_file(root, synset)
    raw = read_json(path, f"copy assets/splits/{synset}.json from the release here")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: malformed, expected a JSON object with 'train', 'val', 'test'")
    out = {}
    for split in SPLITS:
        ids = raw.get(split, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataError(f"{path}: malformed, {split!r} must be a list of object ids")
        out[split] = ids
    return out


def annotation_path(record: ObjectRecord, kind: str) -> Path:
    """``<root>/<kind>/<synset>/<id>.npz`` of a release record (``kind`` from :data:`ANNOTATIONS`)."""
    return record.extra["root"] / kind / record.extra["synset"] / f"{record.name}.npz"


def read_release_object(root: Path, synset: str, obj_id: str, split: str = "") -> ObjectRecord:
    """Index one object (no image is decoded); its poses, already in OpenCV axes, go in ``extra``."""
    root = Path(root)
    directory = root / IMAGES / synset / obj_id
    images, c2w, intr = read_frames(root / CAMERA / synset / f"{obj_id}.json", directory)
    return ObjectRecord(
        name=obj_id,
        split=split,
        directory=directory,
        rgb_paths=images,
        pose_paths=(root / CAMERA / synset / f"{obj_id}.json",) * len(images),
        intrinsics=intr,
        extra={"poses": c2w, "format": FORMAT, "root": root, "synset": synset},
    )


def list_release_objects(root: Path, split: str, category: str | None = None) -> list[ObjectRecord]:
    """Every object of ``split`` (per the split files) of every synset, or of synset ``category``."""
    if split not in SPLITS:
        raise DataError(f"{root}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    n_kp = len(read_release_meta(root, category).keypoint_names)
    records = []
    for synset in synsets(root, category):
        for obj_id in read_split_ids(root, synset)[split]:
            record = read_release_object(root, synset, obj_id, split)
            record.extra["num_keypoints"] = n_kp
            records.append(record)
    return records


# ---------------------------------------------------------------------------------------- metadata
def _ids_and_labels(root: Path, synset: str) -> tuple[int, int]:
    """(largest keypoint id, largest 3D part label) over a synset's 3D annotation files (-1 if none)."""

    def labels(path: Path) -> np.ndarray:
        try:
            out = load_npz(path, ("labels",))["labels"]
        except DataError:
            return np.zeros((0,))  # a broken file is reported by the data check and its loader, not here
        return np.zeros((0,)) if out.dtype.hasobject or not np.isfinite(out.astype(np.float64)).all() else out

    kp_max = part_max = -1
    for path in sorted((root / KP_3D / synset).glob("*.npz")):
        rows = labels(path)
        if rows.ndim == 2 and rows.size:
            kp_max = max(kp_max, int(rows[:, -1].max()))
    for path in sorted((root / PART_3D / synset).glob("*.npz")):
        part = labels(path)
        if part.size:
            part_max = max(part_max, int(part.max()))
    return kp_max, part_max


@functools.lru_cache(maxsize=16)
def _scanned(root: Path, category: str | None) -> tuple[int, int]:
    found = [_ids_and_labels(root, s) for s in synsets(root, category)]
    return max((k for k, _ in found), default=-1), max((p for _, p in found), default=-1)


def read_release_meta(root: Path, category: str | None = None):  # -> featurenerf.data.annotations.Meta
    """The dataset's :class:`~featurenerf.data.annotations.Meta`.

    ``<root>/meta.json`` when present (our annotated format's header, to name parts and keypoints);
    otherwise one made from the release's settings (near 0.8, far 1.8, black background) with generic
    names ``part_1..`` and ``keypoint_0..`` covering the largest label and keypoint id found in the 3D
    annotation files (scanned once per process).
    """
    from featurenerf.data.annotations import Meta, read_meta

    root = Path(root).resolve()
    if (root / "meta.json").is_file():
        return read_meta(root)
    kp_max, part_max = _scanned(root, category)
    parts = ("background", *(f"part_{i}" for i in range(1, max(part_max, 1) + 1)))
    keypoints = tuple(f"keypoint_{i}" for i in range(kp_max + 1))
    return Meta(category or "+".join(synsets(root)), parts, keypoints, NEAR, FAR, BACKGROUND)


# ---------------------------------------------------------------------------------------- annotations
def _resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.nn.functional.interpolate(labels[None, None].float(), size=(size, size), mode="nearest-exact")
    return out[0, 0].round().long()


def load_part_map(record: ObjectRecord, view: int, size: int | None = None) -> torch.Tensor:
    """Part labels of one view from ``part_2d_anno``, ``(H, W)`` int64 (nearest-resized to ``size``)."""
    path = annotation_path(record, PART_2D)
    labels = load_npz(path, ("labels",))["labels"]
    if labels.ndim != 3 or labels.shape[0] != record.num_views or labels.dtype.hasobject:
        raise DataError(
            f"{path}: malformed, labels must be (V, H, W) with V = {record.num_views} views, got {labels.shape}"
        )
    out = torch.from_numpy(np.asarray(labels[view], dtype=np.int64).copy())
    return out if size is None or tuple(out.shape) == (size, size) else _resize_labels(out, size)


def load_part_points(record: ObjectRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled surface points from ``part_3d_anno``: xyz ``(N, 3)`` float32, labels ``(N,)`` int64."""
    path = annotation_path(record, PART_3D)
    z = load_npz(path, ("pts", "labels"))
    xyz, labels = z["pts"], z["labels"]
    if xyz.ndim != 2 or xyz.shape[1] != 3 or labels.shape != (len(xyz),) or not np.isfinite(xyz).all():
        raise DataError(
            f"{path}: malformed, pts must be finite (N, 3) and labels (N,), got {xyz.shape}, {labels.shape}"
        )
    return torch.from_numpy(xyz.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def _keypoint_rows(path: Path, rows: np.ndarray, width: int, n: int) -> np.ndarray:
    if (
        rows.ndim != 2
        or rows.shape[1] != width
        or (rows.size and not np.isfinite(rows.astype(np.float64)).all())
    ):
        raise DataError(
            f"{path}: malformed keypoint rows, expected (K, {width}) finite numbers, got {rows.shape}"
        )
    ids = rows[:, -1].astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise DataError(
            f"{path}: keypoint id {int(ids.max() if ids.max() >= n else ids.min())} outside [0, {n})"
        )
    return rows


def load_keypoints_3d(record: ObjectRecord) -> torch.Tensor:
    """3D keypoints ``(K, 3)`` float32 indexed by keypoint id, NaN rows for ids the object lacks."""
    path = annotation_path(record, KP_3D)
    n = int(record.extra["num_keypoints"])
    rows = _keypoint_rows(path, load_npz(path, ("labels",))["labels"], 4, n)
    out = torch.full((n, 3), float("nan"))
    out[torch.from_numpy(rows[:, 3].astype(np.int64))] = torch.from_numpy(rows[:, :3].astype(np.float32))
    return out


def load_keypoint_candidates(record: ObjectRecord) -> torch.Tensor:
    """The surface points ``(M, 3)`` a 3D keypoint prediction is chosen among (``kp_3d_anno`` ``pts``)."""
    path = annotation_path(record, KP_3D)
    pts = load_npz(path, ("pts",))["pts"]
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.isfinite(pts).all():
        raise DataError(f"{path}: malformed, pts must be finite (M, 3), got {pts.shape}")
    return torch.from_numpy(pts.astype(np.float32))


def load_keypoints_2d(record: ObjectRecord, view: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored 2D keypoints of one view at ``size``: uv ``(K, 2)`` pixel positions (NaN where absent) and
    visible ``(K,)`` bool, indexed by keypoint id."""
    path = annotation_path(record, KP_2D)
    per_view = load_npz(path, ("labels",))["labels"]
    if per_view.ndim == 0 or len(per_view) != record.num_views:
        raise DataError(f"{path}: malformed, labels must hold one (K, 3) array per view ({record.num_views})")
    n = int(record.extra["num_keypoints"])
    rows = _keypoint_rows(path, np.asarray(per_view[view]), 3, n).astype(np.float64)
    scale = torch.tensor([size / record.intrinsics.width, size / record.intrinsics.height])
    uv = torch.full((n, 2), float("nan"))
    visible = torch.zeros(n, dtype=torch.bool)
    ids = torch.from_numpy(rows[:, 2].astype(np.int64))
    uv[ids] = (torch.from_numpy(rows[:, :2]).float() + 0.5) * scale
    visible[ids] = True
    return uv, visible
