"""Reader for Sitzmann's SRN layout (the format ShapeNet-SRN cars/chairs ship in).

Layout::

    <root>/<category>_{train,val,test}/<object>/rgb/NNNNNN.png
                                               /pose/NNNNNN.txt      # 16 numbers, 4x4 camera-to-world
                                               /intrinsics.txt       # first line "f cx cy 0", last "H W"

Poses are used exactly as stored: SRN's camera-to-world matrices already follow our OpenCV convention
(+x right, +y down, +z forward; see :mod:`featurenerf.geometry.cameras`). pixelNeRF's right-multiplication
by diag(1, -1, -1, 1) converts them to OpenGL for its own ray code; we never need it. The test against the
real SRN car in ``../shared/data/srn_cars_real`` pins this down.
"""

from __future__ import annotations

from featurenerf.errors import DataError  # importable from here too, as before

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels at the stored image size ``height`` x ``width``."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    def at_size(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Focal ``(2,)`` and principal point ``(2,)`` rescaled to an image of ``height`` x ``width``.

        Scaling multiplies both by the size ratio: pixel *edges* scale, so a centre at ``W/2`` stays at the
        centre of the resized image (pixel centres are at ``j + 0.5``).
        """
        sx, sy = width / self.width, height / self.height
        focal = torch.tensor([self.fx * sx, self.fy * sy], dtype=torch.float32)
        centre = torch.tensor([self.cx * sx, self.cy * sy], dtype=torch.float32)
        return focal, centre


@dataclass(frozen=True)
class ObjectRecord:
    """One object: its image and pose files (same order, sorted by frame number) and intrinsics."""

    name: str
    split: str
    directory: Path
    rgb_paths: tuple[Path, ...]
    pose_paths: tuple[Path, ...]
    intrinsics: Intrinsics
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_views(self) -> int:
        return len(self.rgb_paths)


def _numbers(path: Path, line: str) -> list[float]:
    try:
        return [float(t) for t in line.split()]
    except ValueError as err:
        raise DataError(f"{path}: expected numbers, got {line.strip()!r}") from err


def read_intrinsics(path: Path) -> Intrinsics:
    """Parse ``intrinsics.txt``: first line ``f cx cy 0``, last line ``H W`` (SRN writes them so)."""
    path = Path(path)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as err:
        raise DataError(f"{path}: cannot read intrinsics ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: intrinsics is not text") from err
    if len(lines) < 2:
        raise DataError(
            f"{path}: malformed intrinsics, expected 'f cx cy 0' on the first line and 'H W' last"
        )
    first, last = _numbers(path, lines[0]), _numbers(path, lines[-1])
    if len(first) < 3 or len(last) != 2:
        raise DataError(
            f"{path}: malformed intrinsics, expected 'f cx cy 0' on the first line and 'H W' last"
        )
    f, cx, cy = first[:3]
    h, w = last
    if not all(math.isfinite(v) for v in (f, cx, cy, h, w)) or f <= 0 or h < 1 or w < 1:
        raise DataError(f"{path}: intrinsics must be finite with f > 0 and H, W >= 1")
    return Intrinsics(f, f, cx, cy, int(h), int(w))


def read_pose(path: Path) -> torch.Tensor:
    """Read a 4x4 camera-to-world matrix (16 whitespace-separated numbers) as a float32 ``(4, 4)`` tensor."""
    path = Path(path)
    try:
        values = _numbers(path, Path(path).read_text())
    except OSError as err:
        raise DataError(f"{path}: cannot read pose ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: pose is not text") from err
    if len(values) != 16 or not all(math.isfinite(v) for v in values):
        raise DataError(f"{path}: pose must be 16 finite numbers, found {len(values)}")
    return torch.tensor(values, dtype=torch.float32).reshape(4, 4)


def load_image(path: Path, size: int | None = None, background: str = "white") -> torch.Tensor:
    """Load an RGB(A) image as ``(3, H, W)`` floats in [0, 1], alpha composited onto ``background``.

    ``size`` resizes (area-averaging, as antialiased downsampling) to ``size`` x ``size``.
    """
    return load_image_and_mask(path, size, background)[0]


def load_image_and_mask(
    path: Path, size: int | None = None, background: str = "white"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`load_image`, also returning the object mask ``(H, W)`` bool.

    The mask is the alpha channel (> 0.5) when the file has one; otherwise the pixels that differ from
    the background colour (SRN and our generator write alpha, so the fallback is for other sources).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from err
    bg = 1.0 if background == "white" else 0.0
    rgb = rgba[..., :3] * rgba[..., 3:] + bg * (1.0 - rgba[..., 3:])
    img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    has_alpha = bool((rgba[..., 3] < 1.0).any())
    if has_alpha:
        alpha = torch.from_numpy(np.ascontiguousarray(rgba[..., 3]))
    else:
        alpha = ((img - bg).abs().amax(0) > 2.0 / 255).float()
    if size is not None and (img.shape[1] != size or img.shape[2] != size):
        img = torch.nn.functional.interpolate(img[None], size=(size, size), mode="area")[0]
        alpha = torch.nn.functional.interpolate(alpha[None, None], size=(size, size), mode="area")[0, 0]
    return img.clamp(0, 1), alpha > 0.5


def split_dirs(root: Path, split: str, category: str | None = None) -> list[Path]:
    """The ``<category>_<split>`` folders under ``root`` (all categories unless one is named)."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"{root}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    pattern = f"{category}_{split}" if category else f"*_{split}"
    return sorted(p for p in root.glob(pattern) if p.is_dir())


def read_object(directory: Path, split: str = "") -> ObjectRecord:
    """Index one object folder (no images are decoded)."""
    directory = Path(directory)
    rgb = sorted((directory / "rgb").glob("*.png"))
    poses = sorted((directory / "pose").glob("*.txt"))
    if not rgb:
        raise DataError(f"{directory / 'rgb'}: no images")
    by_stem = {p.stem: p for p in poses}
    missing = [p.name for p in rgb if p.stem not in by_stem]
    if missing:
        raise DataError(f"{directory / 'pose'}: no pose for image {missing[0]}")
    intr = read_intrinsics(directory / "intrinsics.txt")
    return ObjectRecord(
        name=directory.name,
        split=split,
        directory=directory,
        rgb_paths=tuple(rgb),
        pose_paths=tuple(by_stem[p.stem] for p in rgb),
        intrinsics=intr,
    )


def list_objects(root: Path, split: str, category: str | None = None) -> list[ObjectRecord]:
    """Every object of ``split`` under ``root``, sorted by folder then name."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data root does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: data root is a file, expected a folder holding <category>_{split}/")
    records = []
    for d in split_dirs(root, split, category):
        # Dot-folders are never objects (editors', rsync's and our generator's temporary folders).
        for obj in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            records.append(read_object(obj, split))
    return records


def load_poses(record: ObjectRecord, indices: list[int] | None = None) -> torch.Tensor:
    """Camera-to-world poses ``(V, 4, 4)`` of the chosen views (all when ``indices`` is None).

    Readers of formats without per-view pose files (``transforms.json``) store the already converted
    poses in ``record.extra["poses"]``; those are returned instead of reading files.
    """
    idx = list(range(record.num_views)) if indices is None else list(indices)
    if "poses" in record.extra:
        return record.extra["poses"][idx].clone()
    return torch.stack([read_pose(record.pose_paths[i]) for i in idx])
