"""Evaluation pairs: cross-instance (two objects, same camera) and cross-view (one object, two views).

Pairs are either drawn with a fixed seed from a split's objects (:func:`sample_pairs`) or read from a
pairs file in the FeatureNeRF release's format (:func:`read_pairs_file`)::

    {"cross_inst_pairs": [{"src": "<object>", "trg": "<object>", "view": 12}, ...],
     "cross_view_pairs": [{"model_id": "<object>", "src_view": 3, "trg_view": 40}, ...]}

Views are indices into an object's views sorted by file name (``rgb/000012.png`` is view 12 in SRN-style
folders). The pairs a run used are written back in the same format, so a run can be repeated exactly.

Protocol (the release's, like SRN's test views): a cross-instance pair compares the **same camera** on two
objects, so view k must be one camera for every object of the split (``featurenerf data synth`` renders a
split from one shared camera set). Data whose view k differs between objects is refused, unless the
nearest camera is asked for (``match_camera="nearest"``): the target object's view whose viewing
direction is closest to the source view's; such a pair carries its own ``"trg_view"`` in the file (our
extension of the format). Cross-view pairs are drawn with a stated angular baseline: the angle between
the two viewing directions lies in ``baseline_deg`` (default :data:`DEFAULT_BASELINE_DEG`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurenerf.data.srn import DataError, ObjectRecord
from featurenerf.io import atomic_write_json

from .viewpoints import PoseCache, angles_deg, same_camera

#: Pair kinds in the order a task dataset lists them.
KINDS = ("cross_inst", "cross_view")
#: How a cross-instance pair finds the target's camera: the same view index (checked to be the same
#: camera) or the target view nearest in viewing direction.
MATCH_CAMERA = ("same", "nearest")
#: Default cross-view baseline in degrees between the two viewing directions: near views. Synthetic
#: cameras cover the upper hemisphere band (elevation 5-75 degrees); with 24-50 views the nearest other
#: view is typically 10-30 degrees away, so this range leaves every view several partners while keeping
#: the pairs near-view (pixelNeRF-style features are view-dependent; far pairs measure something else).
DEFAULT_BASELINE_DEG = (15.0, 60.0)


@dataclass(frozen=True)
class CrossInstancePair:
    """Two objects seen from the same camera: label ``src`` in its view ``view``, evaluate on ``trg``.

    ``trg_view`` is the target's view when it is not ``view`` (nearest-camera matching); None otherwise.
    """

    src: str
    trg: str
    view: int
    trg_view: int | None = None

    @property
    def target_view(self) -> int:
        """The target object's view index."""
        return self.view if self.trg_view is None else self.trg_view


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
            "cross_inst_pairs": [
                {"src": p.src, "trg": p.trg, "view": p.view}
                | ({} if p.trg_view is None else {"trg_view": p.trg_view})
                for p in self.cross_inst
            ],
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


def sample_pairs(
    records: Sequence[ObjectRecord],
    num_pairs: int,
    seed: int = 0,
    *,
    kinds: Sequence[str] = KINDS,
    match_camera: str = "same",
    baseline_deg: tuple[float, float] = DEFAULT_BASELINE_DEG,
    poses: PoseCache | None = None,
) -> PairSet:
    """Draw ``num_pairs`` pairs of each of ``kinds``, deterministically from ``seed`` and the object names.

    Cross-instance: an ordered pair of distinct objects and a source view; the target view is the same
    index (refused unless it is the same camera) or, with ``match_camera="nearest"``, the target's view
    nearest in viewing direction. Cross-view: an object and two of its views whose viewing directions are
    ``baseline_deg`` (min, max) degrees apart. Draws are with replacement (small splits repeat pairs);
    objects are taken in name order, so the listing order of the folders does not matter. A kind that
    cannot be drawn (fewer than two objects; no object with two views) is empty.

    Raises:
        DataError: one line, when view k is not the same camera on two objects (``match_camera="same"``)
            or no object has two views within the baseline.
    """
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    _check_options(match_camera, baseline_deg)
    recs = sorted(records, key=lambda r: r.name)
    poses = poses or PoseCache(recs)
    inst: list[CrossInstancePair] = []
    if "cross_inst" in kinds and len(recs) >= 2:
        rng = np.random.default_rng([seed, 0])
        for _ in range(num_pairs):
            i, j = rng.choice(len(recs), size=2, replace=False)
            a, b = recs[int(i)], recs[int(j)]
            if match_camera == "nearest":
                view = int(rng.integers(a.num_views))
                inst.append(match_nearest(CrossInstancePair(a.name, b.name, view), poses))
            else:
                view = int(rng.integers(min(a.num_views, b.num_views)))
                inst.append(check_same_camera(CrossInstancePair(a.name, b.name, view), poses, a))
    view: list[CrossViewPair] = []
    multi = [r for r in recs if r.num_views >= 2]
    if "cross_view" in kinds and multi and num_pairs > 0:
        view = _draw_cross_view(multi, num_pairs, seed, baseline_deg, poses)
    return PairSet(tuple(inst), tuple(view))


def _check_options(match_camera: str, baseline_deg: tuple[float, float]) -> None:
    if match_camera not in MATCH_CAMERA:
        raise ValueError(f"match_camera must be one of {', '.join(MATCH_CAMERA)}; got {match_camera!r}")
    lo, hi = baseline_deg
    if not 0.0 <= lo <= hi <= 180.0:
        raise ValueError(f"baseline must satisfy 0 <= min <= max <= 180 degrees; got {lo}, {hi}")


def check_same_camera(pair: CrossInstancePair, poses: PoseCache, src: ObjectRecord) -> CrossInstancePair:
    """``pair`` unchanged when its two views are the same camera; otherwise a one-line DataError."""
    a, b = poses(pair.src)[pair.view], poses(pair.trg)[pair.target_view]
    if not same_camera(a, b):
        gap = float(angles_deg(a[None], b[None])[0, 0])
        raise DataError(
            f"{src.directory.parent}: view {pair.view} of {pair.src!r} and view {pair.target_view} of "
            f"{pair.trg!r} are different cameras ({gap:.1f} degrees apart): cross-instance pairs compare "
            "the same camera, so view k must be one camera for every object of the split (regenerate "
            "with `featurenerf data synth`) or pass --tasks.match_camera nearest"
        )
    return pair


def match_nearest(pair: CrossInstancePair, poses: PoseCache) -> CrossInstancePair:
    """``pair`` with its target view set to the target object's camera nearest in viewing direction."""
    gaps = angles_deg(poses(pair.src)[pair.view][None], poses(pair.trg))[0]
    best = int(np.argmin(gaps))
    return CrossInstancePair(pair.src, pair.trg, pair.view, None if best == pair.view else best)


def _draw_cross_view(
    multi: list[ObjectRecord],
    num_pairs: int,
    seed: int,
    baseline_deg: tuple[float, float],
    poses: PoseCache,
) -> list[CrossViewPair]:
    """Uniform over objects that have a pair of views within the baseline, then over those pairs."""
    lo, hi = baseline_deg
    valid: dict[str, np.ndarray] = {}  # object -> (K, 2) view pairs within the baseline (read lazily)
    candidates = list(range(len(multi)))
    rng = np.random.default_rng([seed, 1])
    out: list[CrossViewPair] = []
    while len(out) < num_pairs:
        if not candidates:
            raise DataError(
                f"{multi[0].directory.parent}: no object of the {multi[0].split!r} split has two views "
                f"{lo:g}-{hi:g} degrees apart; widen --tasks.baseline_min_deg / --tasks.baseline_max_deg"
            )
        k = int(rng.integers(len(candidates)))
        rec = multi[candidates[k]]
        if rec.name not in valid:
            ang = angles_deg(poses(rec.name), poses(rec.name))
            np.fill_diagonal(ang, np.nan)
            valid[rec.name] = np.argwhere((ang >= lo) & (ang <= hi))
        if len(valid[rec.name]) == 0:
            candidates.pop(k)  # never again: the draw stays a function of the seed
            continue
        s, t = valid[rec.name][int(rng.integers(len(valid[rec.name])))]
        out.append(CrossViewPair(rec.name, int(s), int(t)))
    return out


def resolve_cross_instance(
    pairs: PairSet, records: Sequence[ObjectRecord], match_camera: str, poses: PoseCache | None = None
) -> PairSet:
    """Pairs read from a file, their cross-instance cameras checked (``same``) or matched (``nearest``).

    A pair that names its ``trg_view`` is taken as it is. Raises DataError like :func:`sample_pairs`.
    """
    _check_options(match_camera, (0.0, 180.0))
    by_name = {r.name: r for r in records}
    poses = poses or PoseCache(list(records))
    inst = []
    for p in pairs.cross_inst:
        if p.trg_view is None and match_camera == "nearest":
            p = match_nearest(p, poses)
        elif p.trg_view is None:
            p = check_same_camera(p, poses, by_name[p.src])
        inst.append(p)
    return PairSet(tuple(inst), pairs.cross_view)


def pair_angles(pairs: PairSet, poses: PoseCache) -> dict[str, list[float]]:
    """Angles in degrees between the two cameras of each pair: ``{"cross_inst": [...], "cross_view": [...]}``."""

    def gap(a: str, va: int, b: str, vb: int) -> float:
        return float(angles_deg(poses(a)[va][None], poses(b)[vb][None])[0, 0])

    return {
        "cross_inst": [gap(p.src, p.view, p.trg, p.target_view) for p in pairs.cross_inst],
        "cross_view": [gap(p.model_id, p.src_view, p.model_id, p.trg_view) for p in pairs.cross_view],
    }


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
        tv = None if item.get("trg_view") is None else _index(path, where, item["trg_view"])
        src, trg = check(where, item["src"], [v]), check(where, item["trg"], [v if tv is None else tv])
        inst.append(CrossInstancePair(src, trg, v, tv))
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
