"""Readers for the per-object annotations of featurenerf's annotated-object format.

The format extends the SRN layout (see :mod:`featurenerf.data.srn`)::

    <root>/meta.json                      # {"category", "part_names" (0 = "background"), "keypoint_names",
                                          #  "near", "far", "background": "white" | "black"}
    <root>/<category>_<split>/<object>/rgb/NNNNNN.png     # RGBA; alpha = object mask
                                      /pose/NNNNNN.txt
                                      /intrinsics.txt
                                      /parts/NNNNNN.png   # uint8 label map, 0 = background
                                      /keypoints.json     # {"xyz": [[x, y, z] | null, ...]}, world frame
                                      /points.npz         # xyz (N, 3) float32, labels (N,) int

Every annotation is optional (real SRN ships none), so each reader raises :class:`DataError` naming the
missing file; callers add which task needed it. 2D keypoints are not stored: they are derived from the 3D
keypoints by projection plus a visibility test (:func:`derive_keypoints_2d`).

Records of the FeatureNeRF release (``record.extra["format"] == "featurenerf_release"``) are read from the
release's own annotation files instead (:mod:`featurenerf.data.release`); every loader here dispatches, so
tasks never need to know the format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featurenerf.data.json_file import read_json
from featurenerf.data.srn import DataError, ObjectRecord, load_poses
from featurenerf.geometry.cameras import project_points

BACKGROUNDS = ("white", "black")


@dataclass(frozen=True)
class Meta:
    """Dataset-wide annotation metadata from ``<root>/meta.json``."""

    category: str
    part_names: tuple[str, ...]
    keypoint_names: tuple[str, ...]
    near: float
    far: float
    background: str

    def to_json(self) -> dict:
        """The ``meta.json`` dictionary (lists instead of tuples)."""
        return {
            "category": self.category,
            "part_names": list(self.part_names),
            "keypoint_names": list(self.keypoint_names),
            "near": self.near,
            "far": self.far,
            "background": self.background,
        }


def _release(record: ObjectRecord):  # -> the featurenerf.data.release module, or None
    """The release reader when ``record`` comes from the FeatureNeRF release's layout."""
    if record.extra.get("format") != "featurenerf_release":
        return None
    from featurenerf.data import release

    return release


def read_meta(root: Path, category: str | None = None) -> Meta:
    """Parse and validate ``<root>/meta.json``; for the release's layout, its header (see
    :func:`featurenerf.data.release.read_release_meta`, which ``category`` narrows to one synset).

    Raises:
        DataError: "<root>/meta.json: missing (...)" when absent, or a one-line description when malformed.
    """
    from featurenerf.data import release

    path = Path(root) / "meta.json"
    if not path.is_file() and release.is_release_root(Path(root)):
        return release.read_release_meta(Path(root), category)
    raw = read_json(path, "annotated datasets describe their parts and keypoints here")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: malformed, expected a JSON object")
    missing = [
        k for k in ("category", "part_names", "keypoint_names", "near", "far", "background") if k not in raw
    ]
    if missing:
        raise DataError(f"{path}: malformed, missing key(s) {', '.join(missing)}")
    parts, kps = raw["part_names"], raw["keypoint_names"]
    if not isinstance(raw["category"], str):
        raise DataError(f"{path}: malformed, 'category' must be a string")
    for key, names in (("part_names", parts), ("keypoint_names", kps)):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: malformed, {key!r} must be a list of strings")
    if not parts or parts[0] != "background":
        raise DataError(f"{path}: malformed, part_names[0] must be 'background'")
    near, far = raw["near"], raw["far"]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (near, far)) or not 0 <= near < far:
        raise DataError(f"{path}: malformed, need finite 0 <= near < far, got near={near!r} far={far!r}")
    if raw["background"] not in BACKGROUNDS:
        raise DataError(
            f"{path}: malformed, background must be 'white' or 'black', got {raw['background']!r}"
        )
    return Meta(raw["category"], tuple(parts), tuple(kps), float(near), float(far), raw["background"])


def part_map_path(record: ObjectRecord, view: int) -> Path:
    """``parts/NNNNNN.png`` beside the view's ``rgb/NNNNNN.png``."""
    return record.directory / "parts" / record.rgb_paths[view].with_suffix(".png").name


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from err
    return im


def load_part_map(record: ObjectRecord, view: int, size: int | None = None) -> torch.Tensor:
    """Part labels of one view, ``(H, W)`` int64 (0 = background, k = ``part_names[k]``).

    ``size`` resizes to ``size`` x ``size`` with nearest neighbour (labels must not be blended).
    """
    if (release := _release(record)) is not None:
        return release.load_part_map(record, view, size)
    path = part_map_path(record, view)
    with _open_image(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise DataError(f"{path}: part map must be a single-channel label image, got mode {im.mode}")
        labels = torch.from_numpy(np.asarray(im, dtype=np.int64).copy())
    if size is not None and tuple(labels.shape) != (size, size):
        labels = _resize_nearest(labels, size)
    return labels


def _resize_nearest(labels: torch.Tensor, size: int) -> torch.Tensor:
    # "nearest-exact" samples at pixel centres (j + 0.5) * scale, matching our half-pixel convention.
    out = torch.nn.functional.interpolate(labels[None, None].float(), size=(size, size), mode="nearest-exact")
    return out[0, 0].round().long()


def load_object_mask(record: ObjectRecord, view: int, size: int | None = None) -> torch.Tensor:
    """Object mask of one view, ``(H, W)`` bool: alpha > 0 of the RGB(A) image.

    Images without an alpha channel fall back to the part map (``parts > 0``). ``size`` resizes with
    nearest neighbour.
    """
    path = record.rgb_paths[view]
    with _open_image(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        alpha = np.asarray(im.convert("RGBA"))[..., 3] if has_alpha else None
    if alpha is None:
        return load_part_map(record, view, size) > 0
    mask = torch.from_numpy(alpha > 0)
    if size is not None and tuple(mask.shape) != (size, size):
        mask = _resize_nearest(mask.long(), size) > 0
    return mask


def load_keypoints_3d(record: ObjectRecord) -> torch.Tensor:
    """The object's 3D keypoints ``(K, 3)`` float32 in the world (object) frame; NaN rows where null."""
    if (release := _release(record)) is not None:
        return release.load_keypoints_3d(record)
    path = record.directory / "keypoints.json"
    raw = read_json(path)
    rows = raw.get("xyz") if isinstance(raw, dict) else None
    if not isinstance(rows, list):
        raise DataError(f"{path}: malformed, expected {{'xyz': [[x, y, z] or null, ...]}}")
    out = torch.full((len(rows), 3), float("nan"), dtype=torch.float32)
    for i, row in enumerate(rows):
        if row is None:
            continue
        ok = isinstance(row, list) and len(row) == 3
        ok = ok and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row
        )
        if not ok:
            raise DataError(f"{path}: malformed keypoint row {i}, expected 3 finite numbers or null")
        out[i] = torch.tensor(row, dtype=torch.float32)
    return out


def load_points(record: ObjectRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled surface points: xyz ``(N, 3)`` float32 and part labels ``(N,)`` int64."""
    if (release := _release(record)) is not None:
        return release.load_part_points(record)
    path = record.directory / "points.npz"
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "xyz" not in z or "labels" not in z:
                raise DataError(f"{path}: malformed, needs arrays 'xyz' and 'labels'")
            xyz, labels = z["xyz"], z["labels"]
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable ({err})") from err
    if xyz.ndim != 2 or xyz.shape[1] != 3 or labels.shape != (xyz.shape[0],):
        raise DataError(
            f"{path}: malformed, xyz must be (N, 3) and labels (N,), got {xyz.shape}, {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.isfinite(xyz).all():
        raise DataError(f"{path}: malformed, xyz must be finite and labels integers")
    return torch.from_numpy(xyz.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def load_keypoint_candidates(record: ObjectRecord) -> torch.Tensor:
    """The surface points ``(M, 3)`` a 3D keypoint prediction is chosen among: ``points.npz``'s xyz (the
    release: its ``kp_3d_anno`` points)."""
    if (release := _release(record)) is not None:
        return release.load_keypoint_candidates(record)
    return load_points(record)[0]


def keypoints_2d(record: ObjectRecord, view: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2D keypoints of one view at ``size``: uv ``(K, 2)`` and visible ``(K,)``. Derived from the 3D
    keypoints (:func:`derive_keypoints_2d`), or read where the data stores them (the release)."""
    if (release := _release(record)) is not None:
        return release.load_keypoints_2d(record, view, size)
    return derive_keypoints_2d(record, view, size)


def derive_keypoints_2d(
    record: ObjectRecord,
    view: int,
    size: int,
    kp3d: torch.Tensor | None = None,
    *,
    radius_world: float = 0.02,
    depth_tolerance: float = 0.03,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project the 3D keypoints into one view and decide which are visible.

    A keypoint is **visible** iff all of these hold:

    1. its coordinates are finite (null keypoints are never visible) and it is in front of the camera;
    2. it projects inside the ``size`` x ``size`` image;
    3. no surface point occludes it: the object's ``points.npz`` points are projected as a sparse z-buffer,
       and the keypoint's depth must be <= (the smallest depth of the points landing within a small
       neighbourhood of its pixel position) + ``depth_tolerance``. The neighbourhood radius is
       ``radius_world`` world units at the keypoint's depth, converted to pixels, so it follows the point
       spacing and gives the same answer at any image size. This catches self-occlusion within a part (the far side of
       a cabin, a leg behind a leg);
    4. the part map at its pixel shows the keypoint's own part, taken as the label of the surface point
       nearest to it in 3D (any non-background part when no point lies within 0.05). This catches
       occlusion by other parts at pixel precision, and silhouette keypoints whose pixel is background.

    The defaults were tuned on the synthetic toy cars and chairs (4000 points per object, 128 px) against
    exact ray casting: about 1% (cars) to 3% (chairs) of hidden keypoints are called visible, and about
    80% of keypoints seen at less than 75 degrees from the surface normal are called visible; grazing
    views are mostly called hidden.

    Args:
        record: the object; view: view index; size: output image side in pixels.
        kp3d: ``(K, 3)`` keypoints (loaded with :func:`load_keypoints_3d` when None).
    Returns:
        uv ``(K, 2)`` float pixel positions at ``size`` (pixel centres at ``j + 0.5``, OpenCV), NaN for null
        keypoints, and visible ``(K,)`` bool.
    """
    if kp3d is None:
        kp3d = load_keypoints_3d(record)
    c2w = load_poses(record, [view])[0]
    focal, centre = record.intrinsics.at_size(size, size)
    uv, depth = project_points(kp3d, c2w, focal, centre)
    finite = torch.isfinite(kp3d).all(-1)
    uv = torch.where(finite[:, None], uv, torch.full_like(uv, float("nan")))
    inside = finite & (depth > 0) & (uv >= 0).all(-1) & (uv < size).all(-1)
    visible = inside.clone()
    if not inside.any():
        return uv, visible

    xyz, labels = load_points(record)
    kp_in, uv_in, depth_in = kp3d[inside], uv[inside], depth[inside]
    p_uv, p_depth = project_points(xyz, c2w, focal, centre)
    radius_px = radius_world * focal.mean() / depth_in  # (K_in,) same world radius at any image size
    near = torch.cdist(uv_in, p_uv) <= radius_px[:, None]  # (K_in, N)
    near &= p_depth[None, :] > 0
    zmin = torch.where(near, p_depth[None, :], torch.full(near.shape, float("inf"))).min(dim=1).values
    unoccluded = depth_in <= zmin + depth_tolerance

    parts = load_part_map(record, view, size)
    ij = uv_in.floor().long().clamp(0, size - 1)
    shown = parts[ij[:, 1], ij[:, 0]]
    dist3d, nearest = torch.cdist(kp_in, xyz).min(dim=1)
    own = torch.where(dist3d <= 0.05, labels[nearest], torch.full_like(shown, -1))
    right_part = torch.where(own >= 0, shown == own, shown > 0)
    visible[inside] = unoccluded & right_part
    return uv, visible
