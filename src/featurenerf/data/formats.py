"""Format-agnostic object listing: SRN folders (``rgb/``, ``pose/``), ``transforms.json`` objects, or the
FeatureNeRF release's layout.

SRN and transforms share the outer layout ``<root>/<category>_<split>/<object>/``; they differ inside the
object folder. The release (:mod:`featurenerf.data.release`) is a whole-root layout (``camera/``, ``img/``,
``splits/``), recognised by its ``camera/`` and ``img/`` folders. Every reader returns
:class:`featurenerf.data.srn.ObjectRecord`, so everything downstream (:func:`featurenerf.data.srn.load_poses`,
image loading, annotations) is the same.
"""

from __future__ import annotations

from pathlib import Path

from featurenerf.data.release import FORMAT as RELEASE
from featurenerf.data.release import is_release_root, list_release_objects
from featurenerf.data.srn import SPLITS, DataError, ObjectRecord, read_object, split_dirs
from featurenerf.data.transforms_json import FILENAME as TRANSFORMS_FILENAME
from featurenerf.data.transforms_json import read_transforms_object

FORMATS = ("srn", "transforms", RELEASE)


def _object_dirs(root: Path, split: str, category: str | None = None) -> list[Path]:
    return [
        obj
        for d in split_dirs(root, split, category)
        for obj in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    ]


def object_format(directory: Path) -> str:
    """``"transforms"`` when the object folder holds ``transforms.json`` and no ``rgb/``, else ``"srn"``."""
    directory = Path(directory)
    if (directory / TRANSFORMS_FILENAME).is_file() and not (directory / "rgb").is_dir():
        return "transforms"
    return "srn"


def detect_format(root: Path) -> str:
    """``"featurenerf_release"`` for the release's layout, else the format of the first object found under
    ``root`` (``"srn"`` or ``"transforms"``).

    Raises:
        DataError: when ``root`` does not exist or holds no object in any split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    if is_release_root(root):
        return RELEASE
    for split in SPLITS:
        for obj in _object_dirs(root, split):
            return object_format(obj)
    raise DataError(f"{root}: no objects under <category>_{{{','.join(SPLITS)}}}/ to detect the format from")


def list_objects_any(
    root: Path, split: str, category: str | None = None, format: str | None = "auto"
) -> list[ObjectRecord]:
    """Every object of ``split`` under ``root`` in either format, sorted by folder then name.

    ``format`` is ``"srn"``, ``"transforms"``, ``"featurenerf_release"`` or ``"auto"`` (None means auto):
    auto takes the release's layout when the root has one, else decides per object folder, so a root may
    even mix SRN and transforms objects.
    """
    fmt = "auto" if format is None else format
    if fmt not in ("auto", *FORMATS):
        raise DataError(f"{root}: unknown data format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    if fmt == RELEASE or (fmt == "auto" and is_release_root(root)):
        if not is_release_root(root):
            raise DataError(f"{root}: data.format {RELEASE} needs camera/ and img/ folders")
        return list_release_objects(root, split, category)
    records = []
    for obj in _object_dirs(root, split, category):
        kind = object_format(obj) if fmt == "auto" else fmt
        records.append(
            read_transforms_object(obj, split) if kind == "transforms" else read_object(obj, split)
        )
    return records
