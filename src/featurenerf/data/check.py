"""Validate a dataset folder in one pass and list every problem, one line each (``featurenerf data check``).

Checked, per object of every ``<category>_{train,val,test}`` folder: images decode fully (truncation is
caught) and match ``intrinsics.txt``'s ``H W``; every image has a pose and every pose an image; a pose is 16
finite numbers whose rotation is orthonormal (tolerance :data:`ORTHO_TOL`) with bottom row ``0 0 0 1``;
``intrinsics.txt`` parses. Annotations, when present: part maps (one per image, same size, labels below
``len(part_names)``), ``keypoints.json`` (``K`` rows of 3 numbers or null), ``points.npz`` (finite
``xyz (N, 3)``, integer ``labels (N,)`` in range), and ``meta.json`` (required once any annotation exists).
Also reported: a root without split folders and a split folder with no objects. Objects in the
``transforms.json`` format (:mod:`featurenerf.data.transforms_json`) are checked for a readable
``transforms.json``, orthonormal rotations and decodable images of the declared size. The FeatureNeRF
release's layout is checked by :mod:`featurenerf.data.release_check`.

A check that depends on a broken file is skipped rather than reported twice (no image-size complaints when
``intrinsics.txt`` is malformed), so each problem names the file to fix.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from featurenerf.data.annotations import Meta, read_meta
from featurenerf.data.formats import object_format
from featurenerf.data.srn import SPLITS, DataError, Intrinsics, read_intrinsics
from featurenerf.data.transforms_json import FILENAME as TRANSFORMS_FILENAME
from featurenerf.data.transforms_json import read_transforms_object

ORTHO_TOL = 1e-3
_SPLIT_DIR = re.compile(rf"^.+_({'|'.join(SPLITS)})$")


@dataclass(frozen=True)
class Problem:
    """One problem: the file (or folder) at fault and what is wrong with it; ``obj``, when set, is the
    object folder the problem invalidates (layouts whose files do not live inside the object's folder)."""

    path: Path
    message: str
    obj: Path | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _strip(err: DataError, path: Path) -> str:
    """The message of a reader's ``"<path>: <message>"`` error without the path prefix."""
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def split_folders(root: Path) -> list[Path]:
    """The ``<category>_<split>`` folders directly under ``root``, sorted."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and _SPLIT_DIR.match(p.name))


def _objects(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_dataset(root: Path) -> list[Problem]:
    """Every problem found under ``root`` (empty when the dataset is clean)."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(root, "not a folder" if root.exists() else "does not exist")]
    from featurenerf.data.release import is_release_root

    if is_release_root(root):
        from featurenerf.data.release_check import check_release

        return check_release(root)
    problems: list[Problem] = []
    splits = split_folders(root)
    if not splits:
        problems.append(Problem(root, f"no <category>_{{{','.join(SPLITS)}}} folders"))
    objects = []
    for split in splits:
        objs = _objects(split)
        if not objs:
            problems.append(Problem(split, "split folder holds no objects"))
        objects += objs

    meta: Meta | None = None
    meta_path = root / "meta.json"
    meta_broken = False
    if meta_path.exists():
        try:
            meta = read_meta(root)
        except DataError as err:
            problems.append(Problem(meta_path, _strip(err, meta_path)))
            meta_broken = True

    any_annotations = False
    for obj in objects:
        found, annotated = _check_object(obj, meta)
        problems += found
        any_annotations |= annotated
    if any_annotations and meta is None and not meta_broken:
        problems.append(Problem(meta_path, "missing, but objects carry part/keypoint annotations"))
    return problems


def invalid_objects(problems: list[Problem]) -> set[Path]:
    """Object folders (``<root>/<category>_<split>/<object>``) that at least one problem lies in.

    Problems of the root, ``meta.json`` or a split folder belong to no object and are not returned.
    """
    out = set()
    for problem in problems:
        if problem.obj is not None:
            out.add(problem.obj)
            continue
        for candidate in (problem.path, *problem.path.parents):
            if _SPLIT_DIR.match(candidate.name):
                break  # climbed past object level: a split-level or root-level problem
            if _SPLIT_DIR.match(candidate.parent.name):
                out.add(candidate)
                break
    return out


def summarise(root: Path) -> tuple[int, int]:
    """Number of objects and of views under ``root``: ``rgb/`` images of SRN objects, frames of
    ``transforms.json`` objects (as the check reads them)."""
    from featurenerf.data.release import is_release_root

    if is_release_root(Path(root)):
        from featurenerf.data.release_check import summarise_release

        return summarise_release(Path(root))
    objects = [o for s in split_folders(Path(root)) for o in _objects(s)]
    return len(objects), sum(_count_views(o) for o in objects)


def _count_views(obj: Path) -> int:
    if (obj / TRANSFORMS_FILENAME).is_file():
        try:
            return read_transforms_object(obj).num_views
        except DataError:
            return 0  # the check reports why
    return len(list((obj / "rgb").glob("*.png")))


def _check_transforms_object(obj: Path) -> list[Problem]:
    path = obj / TRANSFORMS_FILENAME
    try:
        record = read_transforms_object(obj)
    except DataError as err:
        # Reader errors read "<file>: <problem>"; the file is transforms.json or an image it names.
        named, _, message = str(err).partition(": ")
        return [Problem(Path(named), message) if message else Problem(path, str(err))]
    problems = []
    rot = record.extra["poses"][:, :3, :3].double().numpy()
    for i, r in enumerate(rot):
        err = np.abs(r.T @ r - np.eye(3)).max()
        if err > ORTHO_TOL:
            problems.append(
                Problem(path, f"frames[{i}]: rotation is not orthonormal (max |R^T R - I| = {err:.2g})")
            )
    want = (record.intrinsics.height, record.intrinsics.width)
    for image in record.rgb_paths:
        msg = _check_image(image, want, rgb=True)
        if msg:
            problems.append(Problem(image, msg))
    return problems


def _check_object(obj: Path, meta: Meta | None) -> tuple[list[Problem], bool]:
    if object_format(obj) == "transforms":
        return _check_transforms_object(obj), False
    problems: list[Problem] = []
    rgb_dir, pose_dir, parts_dir = obj / "rgb", obj / "pose", obj / "parts"
    images = {p.stem: p for p in sorted(rgb_dir.glob("*.png"))} if rgb_dir.is_dir() else {}
    poses = {p.stem: p for p in sorted(pose_dir.glob("*.txt"))} if pose_dir.is_dir() else {}
    if not images:
        problems.append(Problem(rgb_dir, "no images" if rgb_dir.is_dir() else "missing"))
    if not pose_dir.is_dir():
        problems.append(Problem(pose_dir, "missing"))

    intr: Intrinsics | None = None
    intr_path = obj / "intrinsics.txt"
    try:
        intr = read_intrinsics(intr_path)
    except DataError as err:
        problems.append(Problem(intr_path, "missing" if not intr_path.exists() else _strip(err, intr_path)))
    want = (intr.height, intr.width) if intr is not None else None

    for stem, path in images.items():
        msg = _check_image(path, want, rgb=True)
        if msg:
            problems.append(Problem(path, msg))
        if pose_dir.is_dir() and stem not in poses:
            problems.append(Problem(pose_dir / f"{stem}.txt", f"missing (image {path.name} has no pose)"))
    for stem, path in poses.items():
        if stem not in images:
            problems.append(Problem(path, f"pose without image (no rgb/{stem}.png)"))
            continue
        msg = _check_pose(path)
        if msg:
            problems.append(Problem(path, msg))

    annotated = False
    n_parts = len(meta.part_names) if meta is not None else None
    if parts_dir.is_dir():
        annotated = True
        labels = {p.stem: p for p in sorted(parts_dir.glob("*.png"))}
        for stem, path in labels.items():
            if stem not in images:
                problems.append(Problem(path, f"part map without image (no rgb/{stem}.png)"))
                continue
            msg = _check_image(path, want, rgb=False, n_labels=n_parts)
            if msg:
                problems.append(Problem(path, msg))
        for stem in images:
            if stem not in labels:
                problems.append(
                    Problem(parts_dir / f"{stem}.png", f"missing (image {stem}.png has no part map)")
                )
    kp_path = obj / "keypoints.json"
    if kp_path.exists():
        annotated = True
        msg = _check_keypoints(kp_path, len(meta.keypoint_names) if meta is not None else None)
        if msg:
            problems.append(Problem(kp_path, msg))
    pts_path = obj / "points.npz"
    if pts_path.exists():
        annotated = True
        msg = _check_points(pts_path, n_parts)
        if msg:
            problems.append(Problem(pts_path, msg))
    return problems, annotated


def _check_image(
    path: Path, want: tuple[int, int] | None, rgb: bool, n_labels: int | None = None
) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()  # full decode: a truncated file fails here, not at training time
            size = (im.height, im.width)
            if rgb:
                if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                    return f"unexpected image mode {im.mode}"
                max_label = None
            else:
                if im.mode not in ("L", "P", "I", "I;16"):
                    return f"part map must be a single-channel label image, got mode {im.mode}"
                max_label = int(np.asarray(im).max()) if n_labels is not None else None
    except (OSError, SyntaxError, ValueError) as err:
        return f"unreadable or truncated image ({err})"
    if want is not None and size != want:
        return f"image is {size[0]}x{size[1]} but intrinsics.txt says {want[0]}x{want[1]}"
    if max_label is not None and n_labels is not None and max_label >= n_labels:
        return f"label {max_label} >= len(part_names) = {n_labels} (meta.json)"
    return None


def _check_pose(path: Path) -> str | None:
    try:
        tokens = path.read_text().split()
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable pose ({err})"
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return "pose must be 16 numbers, found non-numeric text"
    if len(values) != 16 or not all(math.isfinite(v) for v in values):
        return f"pose must be 16 finite numbers, found {len(values)}"
    m = np.asarray(values).reshape(4, 4)
    rot = m[:3, :3]
    err = np.abs(rot.T @ rot - np.eye(3)).max()
    if err > ORTHO_TOL:
        return f"rotation is not orthonormal (max |R^T R - I| = {err:.2g})"
    if np.linalg.det(rot) < 0:
        return "rotation is a reflection (det < 0)"
    if np.abs(m[3] - [0, 0, 0, 1]).max() > ORTHO_TOL:
        return "bottom row must be 0 0 0 1"
    return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_keypoints(path: Path, n_keypoints: int | None) -> str | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"malformed JSON ({err})"
    rows = raw.get("xyz") if isinstance(raw, dict) else None
    if not isinstance(rows, list):
        return 'expected {"xyz": [[x, y, z] or null, ...]}'
    for i, row in enumerate(rows):
        if row is not None and not (
            isinstance(row, list) and len(row) == 3 and all(_is_number(v) for v in row)
        ):
            return f"row {i} must be 3 finite numbers or null"
    if n_keypoints is not None and len(rows) != n_keypoints:
        return f"{len(rows)} rows but meta.json names {n_keypoints} keypoints"
    return None


def _check_points(path: Path, n_parts: int | None) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("xyz", "labels") if k not in z]
            if missing:
                return f"missing array(s) {', '.join(missing)}"
            xyz, labels = z["xyz"], z["labels"]
    except (OSError, ValueError, EOFError) as err:
        return f"unreadable ({err})"
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        return f"xyz must be (N, 3), got {xyz.shape}"
    if labels.shape != (xyz.shape[0],):
        return f"labels must be ({xyz.shape[0]},), got {labels.shape}"
    if not np.issubdtype(xyz.dtype, np.floating) or not np.isfinite(xyz).all():
        return "xyz must be finite floats"
    if not np.issubdtype(labels.dtype, np.integer):
        return f"labels must be integers, got {labels.dtype}"
    if len(labels) and (labels.min() < 0 or (n_parts is not None and labels.max() >= n_parts)):
        return f"labels must lie in [0, {n_parts}) (meta.json part_names)"
    return None
