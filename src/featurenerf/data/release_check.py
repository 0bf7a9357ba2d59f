"""``featurenerf data check`` for the FeatureNeRF release's layout (:mod:`featurenerf.data.release`).

Checked: every synset under ``camera/`` has a split file that parses; every object a split file names has
a camera file that parses (frames, ``camera_angle_x``, 4x4 finite matrices with orthonormal rotations),
as many images in ``img/<synset>/<id>/`` as frames, each decoding fully at one size; and each annotation
file present is readable with the shapes and ranges the tasks rely on (views, image size, keypoint ids,
part labels below ``len(part_names)``). Problems carry the object's image folder, so
``data.skip_invalid`` can drop the object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurenerf.data import release
from featurenerf.data.check import ORTHO_TOL, Problem, _check_image
from featurenerf.data.npz import load_npz
from featurenerf.data.srn import SPLITS, DataError, ObjectRecord


def _problem(err: DataError, fallback: Path, obj: Path | None = None) -> Problem:
    # Reader errors read "<file>: <problem>".
    named, _, message = str(err).partition(": ")
    return Problem(Path(named), message, obj) if message else Problem(fallback, str(err), obj)


def check_release(root: Path) -> list[Problem]:
    """Every problem of a release-layout dataset under ``root`` (empty when clean)."""
    root = Path(root)
    problems: list[Problem] = []
    try:
        meta = release.read_release_meta(root)
    except DataError as err:
        problems.append(_problem(err, root / "meta.json"))
        meta = None
    found = release.synsets(root)
    if not found:
        problems.append(Problem(root / release.CAMERA, "no synset folders"))
    for synset in found:
        try:
            splits = release.read_split_ids(root, synset)
        except DataError as err:
            problems.append(_problem(err, release.split_file(root, synset)))
            continue
        ids = list(dict.fromkeys(i for s in SPLITS for i in splits[s]))
        if not ids:
            problems.append(Problem(release.split_file(root, synset), "lists no objects"))
        for obj_id in ids:
            problems += _check_object(root, synset, obj_id, meta)
    return problems


def _check_object(root: Path, synset: str, obj_id: str, meta) -> list[Problem]:
    obj = root / release.IMAGES / synset / obj_id
    camera = root / release.CAMERA / synset / f"{obj_id}.json"
    if not obj.is_dir():
        return [Problem(obj, "missing (the split file lists this object)", obj)]
    try:
        record = release.read_release_object(root, synset, obj_id)
    except DataError as err:
        return [_problem(err, camera, obj)]
    problems = []
    on_disk = sorted(obj.glob("*.png"))
    if len(on_disk) != record.num_views:
        problems.append(
            Problem(obj, f"{len(on_disk)} images but {camera.name} has {record.num_views} frames", obj)
        )
    rot = record.extra["poses"][:, :3, :3].double().numpy()
    for i, r in enumerate(rot):
        err = np.abs(r.T @ r - np.eye(3)).max()
        if err > ORTHO_TOL:
            msg = f"frames[{i}]: rotation is not orthonormal (max |R^T R - I| = {err:.2g})"
            problems.append(Problem(camera, msg, obj))
    size = (record.intrinsics.height, record.intrinsics.width)
    for image in record.rgb_paths:
        msg = _check_image(image, size, rgb=True)
        if msg:
            problems.append(Problem(image, msg.replace("intrinsics.txt says", "the first image is"), obj))
    if meta is None:
        return problems  # label and id ranges need the header, whose problem is already reported
    record.extra["num_keypoints"] = len(meta.keypoint_names)
    n_parts = len(meta.part_names)
    for kind, check in _ANNOTATION_CHECKS.items():
        path = release.annotation_path(record, kind)
        if not path.exists():
            continue
        try:
            msg = check(record, path, n_parts)
        except DataError as err:
            problems.append(_problem(err, path, obj))
            continue
        if msg:
            problems.append(Problem(path, msg, obj))
    return problems


def _labels_in_range(labels: np.ndarray, n_parts: int | None) -> str | None:
    if not np.issubdtype(labels.dtype, np.integer):
        return f"labels must be integers, got {labels.dtype}"
    if labels.size and (labels.min() < 0 or (n_parts is not None and labels.max() >= n_parts)):
        return (
            f"part labels must lie in [0, {n_parts}) (len(part_names)), found {labels.min()}..{labels.max()}"
        )
    return None


def _check_part_2d(record: ObjectRecord, path: Path, n_parts: int | None) -> str | None:
    labels = load_npz(path, ("labels",))["labels"]
    want = (record.num_views, record.intrinsics.height, record.intrinsics.width)
    if labels.shape != want:
        return f"labels must be (V, H, W) = {want} (views and image size), got {labels.shape}"
    return _labels_in_range(labels, n_parts)


def _check_part_3d(record: ObjectRecord, path: Path, n_parts: int | None) -> str | None:
    release.load_part_points(record)  # shapes and finiteness
    return _labels_in_range(load_npz(path, ("labels",))["labels"], n_parts)


def _check_kp_2d(record: ObjectRecord, path: Path, n_parts: int | None) -> str | None:
    per_view = load_npz(path, ("labels",))["labels"]
    if per_view.ndim == 0 or len(per_view) != record.num_views:
        return f"labels must hold one (K, 3) array per view ({record.num_views} views)"
    w, h = record.intrinsics.width, record.intrinsics.height
    for view, rows in enumerate(per_view):
        rows = np.asarray(rows)
        release._keypoint_rows(path, rows, 3, int(record.extra["num_keypoints"]))
        if len(rows) and not ((rows[:, 0] >= 0).all() and (rows[:, 0] < w).all()):
            return f"view {view}: keypoint column outside [0, {w})"
        if len(rows) and not ((rows[:, 1] >= 0).all() and (rows[:, 1] < h).all()):
            return f"view {view}: keypoint row outside [0, {h})"
    return None


def _check_kp_3d(record: ObjectRecord, path: Path, n_parts: int | None) -> str | None:
    release.load_keypoints_3d(record)
    release.load_keypoint_candidates(record)
    return None


_ANNOTATION_CHECKS = {
    release.PART_2D: _check_part_2d,
    release.PART_3D: _check_part_3d,
    release.KP_2D: _check_kp_2d,
    release.KP_3D: _check_kp_3d,
}


def summarise_release(root: Path) -> tuple[int, int]:
    """Number of objects (in the split files) and of their views (images)."""
    objects = views = 0
    for synset in release.synsets(root):
        try:
            ids = set(i for ids in release.read_split_ids(root, synset).values() for i in ids)
        except DataError:
            continue
        for obj_id in ids:
            objects += 1
            views += len(list((Path(root) / release.IMAGES / synset / obj_id).glob("*.png")))
    return objects, views
