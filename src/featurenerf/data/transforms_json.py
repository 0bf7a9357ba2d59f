"""Reader and writer for NeRF-synthetic / nerfstudio ``transforms.json`` objects.

Layout: one folder per object, ``<root>/<category>_<split>/<object>/transforms.json``, with images at
``frames[i].file_path`` relative to that folder (the extension may be omitted, as NeRF-synthetic does).
Intrinsics come from ``camera_angle_x`` (horizontal field of view; principal point at the image centre) or
from ``fl_x``/``fl_y``/``cx``/``cy`` (nerfstudio), with ``w``/``h`` or else the first image's size.

Poses in ``transforms.json`` are camera-to-world with **OpenGL** camera axes (y up, -z forward); they are
converted once, on reading, to featurenerf's OpenCV convention with
:func:`featurenerf.geometry.cameras.opengl_to_opencv` and kept in ``record.extra["poses"]`` (``(V, 4, 4)``),
which :func:`featurenerf.data.srn.load_poses` returns instead of reading pose files.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from featurenerf.data.json_file import read_json
from featurenerf.data.srn import DataError, Intrinsics, ObjectRecord, load_poses
from featurenerf.geometry.cameras import opengl_to_opencv
from featurenerf.io import atomic_write_bytes, atomic_write_json

FILENAME = "transforms.json"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _resolve_image(directory: Path, file_path: str, where: str) -> Path:
    path = directory / file_path
    if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file():
        return path
    for suffix in _IMAGE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    raise DataError(f"{where}: image {file_path!r} not found (tried with and without .png/.jpg)")


def _number(raw: dict, key: str, where: str) -> float | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise DataError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _intrinsics(raw: dict, first_image: Path, where: str) -> Intrinsics:
    w, h = _number(raw, "w", where), _number(raw, "h", where)
    if w is None or h is None:
        try:
            with Image.open(first_image) as im:
                width, height = im.size
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{first_image}: unreadable image ({err})") from err
    else:
        width, height = int(w), int(h)
    fl_x, fl_y = _number(raw, "fl_x", where), _number(raw, "fl_y", where)
    angle_x = _number(raw, "camera_angle_x", where)
    if fl_x is None and angle_x is None:
        raise DataError(f"{where}: needs 'camera_angle_x' or 'fl_x' for the focal length")
    if fl_x is None:
        if not 0 < angle_x < math.pi:
            raise DataError(f"{where}: camera_angle_x must lie in (0, pi), got {angle_x}")
        fl_x = 0.5 * width / math.tan(0.5 * angle_x)
        angle_y = _number(raw, "camera_angle_y", where)
        fl_y = 0.5 * height / math.tan(0.5 * angle_y) if angle_y is not None else fl_x
    fl_y = fl_x if fl_y is None else fl_y
    cx, cy = _number(raw, "cx", where), _number(raw, "cy", where)
    # Pixel centres sit at j + 0.5 (featurenerf.geometry.cameras), so the image centre is exactly W/2.
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    if fl_x <= 0 or fl_y <= 0:
        raise DataError(f"{where}: focal lengths must be positive")
    return Intrinsics(fl_x, fl_y, cx, cy, height, width)


def read_frames(path: Path, image_dir: Path) -> tuple[tuple[Path, ...], torch.Tensor, Intrinsics]:
    """Parse a ``transforms.json``-style camera file whose ``file_path`` entries are relative to
    ``image_dir``.

    Returns:
        The image paths (in frame order), camera-to-world poses ``(V, 4, 4)`` float32 converted to
        featurenerf's OpenCV axes, and the intrinsics.
    Raises:
        DataError: one line naming the file (and frame) at fault.
    """
    raw = read_json(path)
    frames = raw.get("frames") if isinstance(raw, dict) else None
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path}: needs a non-empty 'frames' list")
    images, poses = [], []
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DataError(f"{where} needs a 'file_path' string")
        matrix = frame.get("transform_matrix")
        try:
            pose = torch.tensor(matrix, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}.transform_matrix must be a 4x4 list of numbers") from err
        if pose.shape != (4, 4) or not torch.isfinite(pose).all():
            raise DataError(
                f"{where}.transform_matrix must be 4x4 finite numbers, got shape {tuple(pose.shape)}"
            )
        images.append(_resolve_image(image_dir, frame["file_path"], where))
        poses.append(pose)
    intr = _intrinsics(raw, images[0], str(path))
    return tuple(images), opengl_to_opencv(torch.stack(poses)).float(), intr


def read_transforms_object(directory: Path, split: str = "") -> ObjectRecord:
    """Index one ``transforms.json`` object; poses are converted to OpenCV and kept in ``extra["poses"]``."""
    directory = Path(directory)
    path = directory / FILENAME
    images, c2w, intr = read_frames(path, directory)
    return ObjectRecord(
        name=directory.name,
        split=split,
        directory=directory,
        rgb_paths=images,
        pose_paths=(path,) * len(images),  # no per-view pose files: every view's pose lives in this file
        intrinsics=intr,
        extra={"poses": c2w, "format": "transforms"},
    )


def write_transforms_object(record: ObjectRecord, out_dir: Path) -> Path:
    """Write ``record``'s views as a ``transforms.json`` object in ``out_dir`` (images are copied).

    Uses nerfstudio keys (``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``) so non-square pixels and
    off-centre principal points survive; poses are converted back to OpenGL axes.
    Returns the path of the written ``transforms.json``.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    c2w_gl = opengl_to_opencv(load_poses(record).double())  # diag(1,-1,-1,1) is its own inverse
    frames = []
    for src, pose in zip(record.rgb_paths, c2w_gl):
        dst = out_dir / "images" / src.name
        atomic_write_bytes(dst, src.read_bytes())
        frames.append({"file_path": f"images/{src.stem}", "transform_matrix": pose.tolist()})
    intr = record.intrinsics
    raw = {
        "fl_x": intr.fx,
        "fl_y": intr.fy,
        "cx": intr.cx,
        "cy": intr.cy,
        "w": intr.width,
        "h": intr.height,
        "frames": frames,
    }
    atomic_write_json(out_dir / FILENAME, raw)
    return out_dir / FILENAME
