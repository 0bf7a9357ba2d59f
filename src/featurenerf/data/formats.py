"""Format-agnostic object listing: SRN folders (``rgb/``, ``pose/``) or ``transforms.json`` objects.

Both formats share the outer layout ``<root>/<category>_<split>/<object>/``; they differ inside the object
folder. Either reader returns :class:`featurenerf.data.srn.ObjectRecord`, so everything downstream
(:func:`featurenerf.data.srn.load_poses`, image loading) is the same.
"""

from __future__ import annotations

from pathlib import Path

from featurenerf.data.srn import SPLITS, DataError, ObjectRecord, read_object, split_dirs
from featurenerf.data.transforms_json import FILENAME as TRANSFORMS_FILENAME
from featurenerf.data.transforms_json import read_transforms_object

FORMATS = ("srn", "transforms")


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
    """The format of the first object found under ``root`` (``"srn"`` or ``"transforms"``).

    Raises:
        DataError: when ``root`` does not exist or holds no object in any split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    for split in SPLITS:
        for obj in _object_dirs(root, split):
            return object_format(obj)
    raise DataError(f"{root}: no objects under <category>_{{{','.join(SPLITS)}}}/ to detect the format from")


def list_objects_any(
    root: Path, split: str, category: str | None = None, format: str | None = "auto"
) -> list[ObjectRecord]:
    """Every object of ``split`` under ``root`` in either format, sorted by folder then name.

    ``format`` is ``"srn"``, ``"transforms"`` or ``"auto"`` (None means auto): auto decides per object
    folder, so a root may even mix the two.
    """
    fmt = "auto" if format is None else format
    if fmt not in ("auto", *FORMATS):
        raise DataError(f"{root}: unknown data format {fmt!r}; expected auto, srn or transforms")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    records = []
    for obj in _object_dirs(root, split, category):
        kind = object_format(obj) if fmt == "auto" else fmt
        records.append(
            read_transforms_object(obj, split) if kind == "transforms" else read_object(obj, split)
        )
    return records
