"""Write a tiny dataset in the FeatureNeRF release's layout from objects of our annotated format.

Each annotation kind is written the way the release stores it (see :mod:`featurenerf.data.release`), from
the same truth our own readers serve, so a test can compare the two readers record by record.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featurenerf.data.annotations import (
    derive_keypoints_2d,
    load_keypoints_3d,
    load_part_map,
    load_points,
)
from featurenerf.data.srn import ObjectRecord, load_poses
from featurenerf.geometry.cameras import opengl_to_opencv

SYNSET = "02958343"


def object_array(items: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def write_release_object(record: ObjectRecord, root: Path, synset: str = SYNSET) -> None:
    """One object: camera file, images and all four annotation files."""
    img_dir = root / "img" / synset / record.name
    img_dir.mkdir(parents=True)
    intr = record.intrinsics
    frames = []
    for path, c2w in zip(record.rgb_paths, load_poses(record).double()):
        shutil.copy(path, img_dir / path.name)
        frames.append({"file_path": path.name, "transform_matrix": opengl_to_opencv(c2w).tolist()})
    camera = {"camera_angle_x": 2 * math.atan(intr.width / (2 * intr.fx)), "frames": frames}
    (root / "camera" / synset).mkdir(parents=True, exist_ok=True)
    (root / "camera" / synset / f"{record.name}.json").write_text(json.dumps(camera))

    def save(kind: str, **arrays: np.ndarray) -> None:
        (root / kind / synset).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(root / kind / synset / f"{record.name}.npz", **arrays)

    views = range(record.num_views)
    save("part_2d_anno", labels=np.stack([load_part_map(record, v).numpy().astype(np.uint8) for v in views]))
    xyz, labels = load_points(record)
    save("part_3d_anno", pts=xyz.numpy(), labels=labels.numpy())
    kp = load_keypoints_3d(record)
    ids = torch.isfinite(kp).all(-1).nonzero().squeeze(1)
    save("kp_3d_anno", labels=torch.cat([kp[ids], ids[:, None].float()], 1).numpy(), pts=xyz.numpy())
    per_view = []
    for v in views:
        uv, visible = derive_keypoints_2d(record, v, intr.width)
        vis = visible.nonzero().squeeze(1)
        per_view.append(torch.cat([uv[vis].floor().long(), vis[:, None]], 1).numpy())
    save("kp_2d_anno", labels=object_array(per_view))


def write_release_dataset(records: list[ObjectRecord], root: Path, splits: dict[str, list[str]]) -> Path:
    """The release layout under ``root`` for ``records``, with ``splits`` (plus pairs) as the split file."""
    for record in records:
        write_release_object(record, root)
    (root / "splits").mkdir(parents=True)
    (root / "splits" / f"{SYNSET}.json").write_text(json.dumps(splits))
    return root


def rgba_square(path: Path, size: int) -> None:
    """A size x size RGBA image, a grey square on transparent background."""
    a = np.zeros((size, size, 4), np.uint8)
    a[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = (128, 128, 128, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, "RGBA").save(path)
