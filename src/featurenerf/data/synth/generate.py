"""Write a synthetic annotated dataset (the format of :mod:`featurenerf.data.annotations`) to disk.

Determinism: object ``i`` is built from ``SeedSequence([seed, i])`` alone (shape and surface points each
get their own child stream), the split assignment from ``seed`` and the fractions, and each split's cameras
from ``seed`` and the split's name, so the same arguments give byte-identical files (PNG, text, and
``points.npz`` written with fixed zip timestamps).

Cameras: every object of a split is rendered from one shared camera set (view k is the same camera for
all of them), as SRN's test views are. Cross-instance comparisons (view k of object A against view k of
object B) then compare the same viewpoint, which pixelNeRF-style features need: they live in the input
camera's frame. Each split draws its own set (train, val and test sets differ), so held-out evaluation
uses viewpoints never seen in training, as SRN's test spiral is not among its training views; a set does
not depend on the number of objects, so adding objects never moves the cameras.

Crash safety: each object is written into ``<root>/.staging/`` and renamed into its split folder only when
complete, so a killed run never leaves a half object that looks finished; re-running completes the missing
objects and leaves finished ones untouched. ``<root>/synth.json`` records the arguments; re-running with
different ones into the same folder is an error rather than a silent mix.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from featurenerf.data.annotations import Meta
from featurenerf.data.srn import SPLITS, DataError
from featurenerf.data.synth_options import TRAIN_CAMERAS
from featurenerf.data.synth.render import focal_for, render_view, sample_cameras, sample_points
from featurenerf.data.synth.shapes import (
    CATEGORIES,
    KEYPOINT_NAMES,
    PART_NAMES,
    Shape,
    make_shape,
    resolve_style,
    shape_styles,
)
from featurenerf.io import atomic_write_json

NEAR, FAR = 0.8, 1.8
POINTS_PER_OBJECT = 4000
_STAGING = ".staging"
#: Generator version per category: a dataset made by another version is refused, not silently mixed.
#: 1: per-object cameras; 2: one shared camera set per split (options that change the data, such as
#: ``style`` or ``train_cameras``, are recorded beside it in ``synth.json``).
_VERSION = {"toycar": 2, "toychair": 2}


def assign_splits(objects: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Split name per object index: counts from the fractions (at least one per split when ``objects >= 3``
    and its fraction is positive), object order from a permutation seeded by ``seed``."""
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions}")
    fr = fr / fr.sum()
    counts = np.floor(fr * objects).astype(int)
    # Largest remainders fill up the total; then make sure no wanted split is empty.
    for k in np.argsort(-(fr * objects - counts), kind="stable")[: objects - counts.sum()]:
        counts[k] += 1
    if objects >= 3:
        for k in range(3):
            while fr[k] > 0 and counts[k] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[k] += 1
    order = np.random.default_rng([seed, 7919]).permutation(objects)
    names = np.repeat(np.array(SPLITS), counts)
    splits = [""] * objects
    for rank, obj in enumerate(order):
        splits[int(obj)] = str(names[rank])
    return splits


def object_name(index: int) -> str:
    return f"obj{index:04d}"


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    # np.savez stamps the current time into the zip; a fixed timestamp keeps reruns byte-identical.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _fmt(x: float) -> str:
    return f"{x:.9g}"


def _streams(seed: int, index: int) -> list[np.random.Generator]:
    """Independent generators for object ``index``'s shape, its own cameras and its surface points.

    The middle one draws the object's cameras only for training objects under ``train_cameras:
    per_object``; shapes and points keep their streams either way.
    """
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3)]


# Tag that keeps the split camera streams apart from the object streams ``[seed, index]``.
_CAMERA_TAG = 104729


def split_cameras(category: str, split: str, views: int, seed: int) -> np.ndarray:
    """The shared camera set ``(views, 4, 4)`` (OpenCV camera-to-world) of every object in ``split``.

    Drawn from ``SeedSequence([seed, _CAMERA_TAG, split index])``: deterministic for a seed, different
    per split, independent of the number of objects.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _CAMERA_TAG, SPLITS.index(split)]))
    return sample_cameras(category, views, rng)


#: How each ``train_cameras`` choice is recorded in ``synth.json`` (``"cameras"``).
_CAMERAS_RECORD = {"shared": "shared_per_split", "per_object": "per_object_train_shared_eval"}


def render_object(
    category: str,
    index: int,
    views: int,
    size: int,
    seed: int,
    split: str,
    out_dir: Path,
    train_cameras: str = "shared",
    style: str | None = None,
) -> None:
    """Generate object ``index`` of ``split`` and write its files into the (empty, existing) folder ``out_dir``.

    Its views are the split's shared cameras (:func:`split_cameras`), except for a training object under
    ``train_cameras="per_object"``, which draws its own from its camera stream. Files are plain writes:
    the folder is the atomic unit (the caller renames it into place).
    """
    shape_rng, camera_rng, points_rng = _streams(seed, index)
    shape = make_shape(category, shape_rng, style)
    if split == "train" and train_cameras == "per_object":
        poses = sample_cameras(category, views, camera_rng)
    else:
        poses = split_cameras(category, split, views, seed)
    for sub in ("rgb", "pose", "parts"):
        (out_dir / sub).mkdir()
    for v, c2w in enumerate(poses):
        rgba, labels = render_view(shape, c2w, size)
        _write_png(out_dir / "rgb" / f"{v:06d}.png", rgba)
        _write_png(out_dir / "parts" / f"{v:06d}.png", labels)
        (out_dir / "pose" / f"{v:06d}.txt").write_text(" ".join(_fmt(x) for x in c2w.reshape(-1)) + "\n")
    f, c = focal_for(size), size / 2
    (out_dir / "intrinsics.txt").write_text(
        f"{_fmt(f)} {_fmt(c)} {_fmt(c)} 0.\n0. 0. 0.\n1.\n{size} {size}\n"
    )
    kps = [None if np.isnan(k).any() else [round(float(x), 6) for x in k] for k in shape.keypoints]
    (out_dir / "keypoints.json").write_text(json.dumps({"xyz": kps}) + "\n")
    xyz, labels = sample_points(shape, POINTS_PER_OBJECT, points_rng)
    _write_npz(out_dir / "points.npz", xyz=xyz, labels=labels.astype(np.int64))


def _job(args: tuple) -> str:
    category, index, views, size, seed, root, split, train_cameras, style = args
    final = root / f"{category}_{split}" / object_name(index)
    if final.is_dir():
        return "skipped"
    staging = Path(tempfile.mkdtemp(prefix=f"{object_name(index)}.", dir=root / _STAGING))
    try:
        render_object(category, index, views, size, seed, split, staging, train_cameras, style)
        final.parent.mkdir(exist_ok=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return "written"


def stale_dataset(root: Path) -> str | None:
    """Why the synthetic dataset in ``root`` is not what this generator makes, or ``None``.

    ``None`` also when ``root`` holds no ``synth.json`` (not a generated dataset: nothing to compare).
    A dataset of an older version stays usable, but its figures are not comparable with ones made today.
    """
    record = Path(root) / "synth.json"
    if not record.is_file():
        return None
    try:
        made = json.loads(record.read_text())
        category, version = made["category"], made["version"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{record}: unreadable ({err})"
    want = _VERSION.get(category)
    if want is None or version == want:
        return None
    return (
        f"{record}: made by data synth version {version} ({category}); this featurenerf makes version "
        f"{want}. Delete {root} to regenerate it, or give another folder"
    )


def recorded_options(root: Path) -> dict[str, str] | None:
    """The options that change what ``root``'s objects are (:func:`options_of`), read from
    ``root/synth.json``; ``None`` when ``root`` holds no readable record (not made by ``data synth``)."""
    try:
        made = json.loads((Path(root) / "synth.json").read_text())
    except (OSError, ValueError):
        return None
    return options_of(made)


def options_of(made: dict) -> dict[str, str] | None:
    """``{"style": ..., "train_cameras": ...}`` of a ``synth.json`` record (the category's default style
    when none is recorded); ``None`` when the record names no known category."""
    try:
        style = made.get("style") or shape_styles(made["category"])[0]
    except (AttributeError, KeyError, TypeError):
        return None
    cameras = "per_object" if made.get("cameras") == _CAMERAS_RECORD["per_object"] else "shared"
    return {"style": style, "train_cameras": cameras}


def generate_dataset(
    category: str,
    out: Path,
    objects: int,
    views: int,
    size: int,
    seed: int,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    progress: bool = True,
    workers: int = 1,
    train_cameras: str = "shared",
    style: str | None = None,
) -> Path:
    """Generate ``objects`` annotated objects of ``category`` with ``views`` views of ``size``² pixels.

    ``train_cameras``: ``shared`` (every split renders its objects from one camera set) or ``per_object``
    (training objects each draw their own views, as SRN's training set does; val and test keep their
    shared sets, so cross-instance pairs still compare the same camera). With a shared training set
    the network sees only ``views`` distinct viewpoints in all.

    ``style``: the category's shape style (:func:`~featurenerf.data.synth.shapes.shape_styles`; default
    its first). ``toycar`` has ``box`` (nearly front/back symmetric) and ``front_back`` (a low hood and a
    set-back cabin: the front differs from the back from every side).

    Returns the dataset root ``out`` (which holds ``meta.json``, ``synth.json`` and ``<category>_<split>/``).
    Re-running with the same arguments on a complete dataset writes nothing.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown synthetic category {category!r}; expected one of {', '.join(CATEGORIES)}")
    default_style = shape_styles(category)[0]
    style = resolve_style(category, style)  # checked before anything is written
    if train_cameras not in TRAIN_CAMERAS:
        raise ValueError(f"train_cameras: expected one of {', '.join(TRAIN_CAMERAS)}, got {train_cameras!r}")
    if objects < 1 or views < 1 or size < 4:
        raise ValueError(f"need objects >= 1, views >= 1, size >= 4; got {objects}, {views}, {size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "generator": "featurenerf.data.synth",
        "version": _VERSION[category],
        "category": category,
        "objects": objects,
        "views": views,
        "size": size,
        "seed": seed,
        "split_fractions": [float(x) for x in split_fractions],
        "cameras": _CAMERAS_RECORD[train_cameras],
    }
    if style != default_style:  # recorded only when not the default: older records stay equal
        settings["style"] = style
    _claim_root(root, settings)
    meta = Meta(category, PART_NAMES[category], KEYPOINT_NAMES[category], NEAR, FAR, "white")
    meta_path = root / "meta.json"
    if not meta_path.exists() or json.loads(meta_path.read_text()) != meta.to_json():
        atomic_write_json(meta_path, meta.to_json())

    staging = root / _STAGING
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed run
    staging.mkdir()
    splits = assign_splits(objects, seed, split_fractions)
    jobs = [(category, i, views, size, seed, root, splits[i], train_cameras, style) for i in range(objects)]
    bar = _progress(total=objects, enabled=progress, desc=f"synth {category}")
    try:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_job, jobs):
                    bar.update(1)
        else:
            for job in jobs:
                _job(job)
                bar.update(1)
    finally:
        bar.close()
    shutil.rmtree(staging, ignore_errors=True)
    return root


def _claim_root(root: Path, settings: dict) -> None:
    """Record ``settings`` in ``root/synth.json``, or check that they are the recorded ones.

    Raises:
        DataError: ``root`` was made by another generator version or with other settings, or it is a
            non-empty folder that no ``data synth`` made.
    """
    record = root / "synth.json"
    if (stale := stale_dataset(root)) is not None:
        raise DataError(stale)
    if record.exists():
        previous = json.loads(record.read_text())
        if previous != settings:
            raise DataError(
                f"{record}: {root} was generated with different settings {previous}; use another --out"
            )
    elif any(root.iterdir()):
        raise DataError(f"{root}: folder is not empty and holds no synth.json; refusing to write into it")
    else:
        atomic_write_json(record, settings)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    from featurenerf.console import bar_options

    return tqdm(total=total, desc=desc, unit="obj", file=sys.stderr, **bar_options())
