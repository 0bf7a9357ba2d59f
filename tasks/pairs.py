"""Evaluation pairs: cross-instance (two objects, same view) and cross-view (one object, two views).

Pairs are either drawn with a fixed seed from a split's objects (:func:`sample_pairs`) or read from a
pairs file in the FeatureNeRF release's format (:func:`read_pairs_file`)::

    {"cross_inst_pairs": [{"src": "<object>", "trg": "<object>", "view": 12}, ...],
     "cross_view_pairs": [{"model_id": "<object>", "src_view": 3, "trg_view": 40}, ...]}

Views are indices into an object's views sorted by file name (``rgb/000012.png`` is view 12 in SRN-style
folders). The pairs a run used are written back in the same format, so a run can be repeated exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurenerf.data.srn import DataError, ObjectRecord
from featurenerf.io import atomic_write_json

#: Pair kinds in the order a task dataset lists them.
KINDS = ("cross_inst", "cross_view")


@dataclass(frozen=True)
class CrossInstancePair:
    """Two objects seen from the same view index: label ``src``, evaluate on ``trg``."""

    src: str
    trg: str
    view: int


@dataclass(frozen=True)
class CrossViewPair:
    """One object: label view ``src_view``, evaluate on view ``trg_view``."""

    model_id: str
    src_view: int
    trg_view: int


@dataclass(frozen=True)
class PairSet:
    """The pairs of one evaluation."""

    cross_inst: tuple[CrossInstancePair, ...]
    cross_view: tuple[CrossViewPair, ...]

    def to_json(self) -> dict:
        """The release's JSON layout."""
        return {
            "cross_inst_pairs": [{"src": p.src, "trg": p.trg, "view": p.view} for p in self.cross_inst],
            "cross_view_pairs": [
                {"model_id": p.model_id, "src_view": p.src_view, "trg_view": p.trg_view}
                for p in self.cross_view
            ],
        }

    def head(self, num_pairs: int | None) -> PairSet:
        """The first ``num_pairs`` pairs of each kind (all when ``None``)."""
        if num_pairs is None:
            return self
        return PairSet(self.cross_inst[:num_pairs], self.cross_view[:num_pairs])


def sample_pairs(records: Sequence[ObjectRecord], num_pairs: int, seed: int = 0) -> PairSet:
    """Draw ``num_pairs`` pairs of each kind, deterministically from ``seed`` and the object names.

    Cross-instance: an ordered pair of distinct objects and a view index both have. Cross-view: an object
    and two distinct views of it. Draws are with replacement (small splits repeat pairs); objects are
    taken in name order, so the listing order of the folders does not matter. A kind that cannot be
    drawn (fewer than two objects; no object with two views) is empty.
    """
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    recs = sorted(records, key=lambda r: r.name)
    n = len(recs)
    inst: list[CrossInstancePair] = []
    if n >= 2:
        rng = np.random.default_rng([seed, 0])
        for _ in range(num_pairs):
            i, j = rng.choice(n, size=2, replace=False)
            views = min(recs[i].num_views, recs[j].num_views)
            inst.append(CrossInstancePair(recs[i].name, recs[j].name, int(rng.integers(views))))
    view: list[CrossViewPair] = []
    multi = [r for r in recs if r.num_views >= 2]
    if multi:
        rng = np.random.default_rng([seed, 1])
        for _ in range(num_pairs):
            rec = multi[int(rng.integers(len(multi)))]
            s, t = rng.choice(rec.num_views, size=2, replace=False)
            view.append(CrossViewPair(rec.name, int(s), int(t)))
    return PairSet(tuple(inst), tuple(view))


def _index(path: Path, where: str, value: object) -> int:
    # The release stores view indices as integers; numeric strings are accepted too.
    if isinstance(value, bool):
        raise DataError(f"{path}: {where}: view must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise DataError(f"{path}: {where}: view must be an integer, got {value!r}")


def read_pairs_file(path: str | Path, records: Sequence[ObjectRecord] | None = None) -> PairSet:
    """Read a pairs file in the release's format; with ``records``, check every object and view exists.

    Raises:
        DataError: one line naming the file and the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pairs file missing")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: malformed pairs file ({err})") from err
    if not isinstance(raw, dict) or not any(k in raw for k in ("cross_inst_pairs", "cross_view_pairs")):
        raise DataError(
            f"{path}: malformed pairs file, expected keys 'cross_inst_pairs' and/or 'cross_view_pairs'"
        )
    by_name = None if records is None else {r.name: r for r in records}

    def check(where: str, name: object, views: Sequence[int]) -> str:
        if not isinstance(name, str):
            raise DataError(f"{path}: {where}: object id must be a string, got {name!r}")
        if by_name is None:
            return name
        rec = by_name.get(name)
        if rec is None:
            raise DataError(f"{path}: {where}: object {name!r} is not in the evaluated split")
        for v in views:
            if not 0 <= v < rec.num_views:
                raise DataError(
                    f"{path}: {where}: view {v} out of range for {name!r} ({rec.num_views} views)"
                )
        return name

    inst, view = [], []
    for i, item in enumerate(raw.get("cross_inst_pairs", [])):
        where = f"cross_inst_pairs[{i}]"
        if not isinstance(item, dict) or not {"src", "trg", "view"} <= item.keys():
            raise DataError(f"{path}: {where}: expected {{'src', 'trg', 'view'}}")
        v = _index(path, where, item["view"])
        inst.append(CrossInstancePair(check(where, item["src"], [v]), check(where, item["trg"], [v]), v))
    for i, item in enumerate(raw.get("cross_view_pairs", [])):
        where = f"cross_view_pairs[{i}]"
        if not isinstance(item, dict) or not {"model_id", "src_view", "trg_view"} <= item.keys():
            raise DataError(f"{path}: {where}: expected {{'model_id', 'src_view', 'trg_view'}}")
        s, t = _index(path, where, item["src_view"]), _index(path, where, item["trg_view"])
        view.append(CrossViewPair(check(where, item["model_id"], [s, t]), s, t))
    return PairSet(tuple(inst), tuple(view))


def write_pairs_file(path: str | Path, pairs: PairSet) -> Path:
    """Write pairs in the release's format (atomically)."""
    atomic_write_json(path, pairs.to_json())
    return Path(path)
