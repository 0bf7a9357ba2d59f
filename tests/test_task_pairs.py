"""Evaluation pairs (deterministic draws, the release's file format) and --task parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf.data.srn import DataError, Intrinsics, ObjectRecord
from featurenerf.data.synth.render import look_at
from featurenerf.tasks import (
    TASKS,
    CrossInstancePair,
    CrossViewPair,
    read_pairs_file,
    sample_pairs,
    write_pairs_file,
)


def _cameras(azimuths_deg, elevation_deg: float = 30.0) -> torch.Tensor:
    """Cameras at radius 1.3 looking at the origin, one per azimuth (degrees)."""
    el = np.radians(elevation_deg)
    out = []
    for az in np.radians(np.asarray(azimuths_deg, dtype=np.float64)):
        out.append(look_at(1.3 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])))
    return torch.as_tensor(np.stack(out))


def _records(n: int, views: int = 5, cameras=None) -> list[ObjectRecord]:
    """``n`` objects of ``views`` views; all share one camera set (20 degrees apart) unless ``cameras``
    (object index -> (V, 4, 4)) says otherwise."""
    intr = Intrinsics(1.0, 1.0, 0.5, 0.5, 1, 1)
    paths = tuple(Path(f"{v:06d}.png") for v in range(views))
    shared = _cameras(20.0 * np.arange(views))
    return [
        ObjectRecord(
            f"obj{i:02d}",
            "test",
            Path(f"obj{i:02d}"),
            paths,
            paths,
            intr,
            extra={"poses": shared if cameras is None else cameras(i)},
        )
        for i in range(n)
    ]


def test_sampling_is_deterministic_and_order_free():
    recs = _records(6)
    a = sample_pairs(recs, 50, seed=3)
    assert a == sample_pairs(recs, 50, seed=3)
    assert a == sample_pairs(list(reversed(recs)), 50, seed=3)  # listing order does not matter
    assert a != sample_pairs(recs, 50, seed=4)
    assert len(a.cross_inst) == len(a.cross_view) == 50


def test_sampled_pairs_are_valid():
    recs = _records(4, views=3)
    pairs = sample_pairs(recs, 200, seed=0)
    names = {r.name for r in recs}
    for p in pairs.cross_inst:
        assert p.src != p.trg and {p.src, p.trg} <= names and 0 <= p.view < 3
    for p in pairs.cross_view:
        assert p.model_id in names and p.src_view != p.trg_view and {p.src_view, p.trg_view} <= {0, 1, 2}
    # With 200 draws from 4 objects every ordered pair shows up (the draw is not degenerate).
    assert len({(p.src, p.trg) for p in pairs.cross_inst}) == 12


def test_kinds_that_cannot_be_drawn_are_empty():
    pairs = sample_pairs(_records(1), 10, seed=0)
    assert pairs.cross_inst == () and len(pairs.cross_view) == 10
    assert sample_pairs(_records(3, views=1), 10).cross_view == ()


def test_pairs_file_round_trip_in_release_format(tmp_path):
    recs = _records(5)
    pairs = sample_pairs(recs, 7, seed=1)
    path = write_pairs_file(tmp_path / "pairs.json", pairs)
    raw = json.loads(path.read_text())
    assert set(raw) == {"cross_inst_pairs", "cross_view_pairs"}
    assert set(raw["cross_inst_pairs"][0]) == {"src", "trg", "view"}
    assert set(raw["cross_view_pairs"][0]) == {"model_id", "src_view", "trg_view"}
    assert read_pairs_file(path, recs) == pairs
    assert read_pairs_file(path, recs).head(3).cross_inst == pairs.cross_inst[:3]


def test_release_file_with_string_views(tmp_path):
    path = tmp_path / "car.json"
    path.write_text(
        json.dumps(
            {
                "cross_inst_pairs": [{"src": "obj01", "trg": "obj00", "view": "4"}],
                "cross_view_pairs": [{"model_id": "obj02", "src_view": 0, "trg_view": 3}],
            }
        )
    )
    pairs = read_pairs_file(path, _records(3))
    assert pairs.cross_inst == (CrossInstancePair("obj01", "obj00", 4),)
    assert pairs.cross_view == (CrossViewPair("obj02", 0, 3),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed pairs file"),
        ('{"pairs": []}', "expected keys"),
        (
            '{"cross_inst_pairs": [{"src": "objXX", "trg": "obj00", "view": 0}]}',
            "'objXX' is not in the evaluated split",
        ),
        (
            '{"cross_view_pairs": [{"model_id": "obj00", "src_view": 0, "trg_view": 9}]}',
            "view 9 out of range",
        ),
        ('{"cross_view_pairs": [{"model_id": "obj00", "src_view": 0}]}', "expected {'model_id'"),
        ('{"cross_inst_pairs": [{"src": "obj01", "trg": "obj00", "view": 1.5}]}', "view must be an integer"),
    ],
)
def test_bad_pairs_files_say_what_is_wrong_in_one_line(tmp_path, content, message):
    path = tmp_path / "pairs.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_pairs_file(path, _records(2))
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_missing_pairs_file(tmp_path):
    with pytest.raises(DataError, match="pairs file missing"):
        read_pairs_file(tmp_path / "nope.json")


def test_task_option_parsing_expands_groups_to_registered_tasks():
    from featurenerf.lightning_cli import expand_tasks

    assert expand_tasks(["part_seg"]) == ["part_seg_2d", "part_seg_3d"]
    assert expand_tasks(["keypoints,novel_view", "part_seg_3d", "keypoints_2d"]) == [
        "keypoints_2d",
        "keypoints_3d",
        "novel_view",
        "part_seg_3d",
    ]
    assert expand_tasks(None) == []
    every = expand_tasks(["part_seg", "keypoints", "novel_view", "canonical_coords"])
    assert sorted(every) == TASKS.list()


def test_task_items_interleave_kinds_so_a_truncated_run_sees_both():
    from featurenerf.tasks.data import PairItems
    from featurenerf.tasks.part_seg import PartSeg3D

    pairs = sample_pairs(_records(4), 3, seed=0)
    pairs = type(pairs)(pairs.cross_inst[:2], pairs.cross_view)  # 2 cross-instance, 3 cross-view
    items = PairItems(PartSeg3D(), pairs, _records(4), views=None)
    assert [(k, i) for k, i, *_ in items.items] == [
        ("cross_inst", 0),
        ("cross_view", 0),
        ("cross_inst", 1),
        ("cross_view", 1),
        ("cross_view", 2),
    ]
    kind, i, a, va, b, vb = items.items[1]
    p = pairs.cross_view[0]
    assert (a, va, b, vb) == (p.model_id, p.src_view, p.model_id, p.trg_view)


def _per_object_cameras(i: int) -> torch.Tensor:
    # View k of object i is rotated 7 degrees per object: every object has its own cameras.
    return _cameras(20.0 * np.arange(5) + 7.0 * i)


def test_cross_instance_pairs_refused_when_view_k_is_another_camera():
    recs = _records(3, cameras=_per_object_cameras)
    with pytest.raises(DataError) as err:
        sample_pairs(recs, 5, seed=0)
    text = str(err.value)
    assert "different cameras" in text and "--tasks.match_camera nearest" in text and "\n" not in text
    # Cross-view pairs alone do not compare objects: nothing to refuse.
    assert len(sample_pairs(recs, 5, seed=0, kinds=["cross_view"]).cross_view) == 5


def test_same_camera_allows_float_text_noise_only():
    from featurenerf.tasks.viewpoints import same_camera

    pose = _cameras([33.0])[0].numpy()
    assert same_camera(pose, pose + 1e-6)
    assert not same_camera(pose, _cameras([33.5])[0].numpy())  # half a degree is another camera
    moved = pose.copy()
    moved[:3, 3] *= 1.01  # same direction, 1 % farther away
    assert not same_camera(pose, moved)


def test_nearest_camera_matching_by_hand():
    # Object 0 at azimuths 0, 20, 40, 60, 80; object 1's views are shuffled and nudged by 1-2 degrees.
    trg_az = [41.0, 1.0, 79.0, 21.0, 62.0]
    recs = _records(2, cameras=lambda i: _cameras(20.0 * np.arange(5) if i == 0 else trg_az))
    pairs = sample_pairs(recs, 40, seed=0, kinds=["cross_inst"], match_camera="nearest")
    nearest = {"obj00": {0: 1, 1: 3, 2: 0, 3: 4, 4: 2}, "obj01": {0: 2, 1: 0, 2: 4, 3: 1, 4: 3}}
    assert len(pairs.cross_inst) == 40
    for p in pairs.cross_inst:
        assert p.target_view == nearest[p.src][p.view]
    from featurenerf.tasks.pairs import pair_angles
    from featurenerf.tasks.viewpoints import PoseCache

    gaps = pair_angles(pairs, PoseCache(recs))["cross_inst"]
    assert max(gaps) < 2.1 and min(gaps) > 0.4  # 1-2 degrees of azimuth at 30 degrees elevation


def test_cross_view_pairs_keep_the_stated_baseline():
    # On the horizon, the angle between two viewing directions is the azimuth difference.
    az = [0.0, 10.0, 30.0, 69.0, 150.0]
    recs = _records(3, cameras=lambda i: _cameras(az, elevation_deg=0.0))
    pairs = sample_pairs(recs, 300, seed=1, kinds=["cross_view"])  # default 15-60 degrees
    # |a - b| in [15, 60]: (0, 30) 30, (10, 30) 20, (10, 69) 59, (30, 69) 39; not 10, 69, 81, 120, ...
    within = {(0, 2), (1, 2), (1, 3), (2, 3)}
    within |= {(b, a) for a, b in within}
    assert {(p.src_view, p.trg_view) for p in pairs.cross_view} == within
    wide = sample_pairs(recs, 300, seed=1, kinds=["cross_view"], baseline_deg=(100.0, 180.0))
    far = {(0, 4), (1, 4), (2, 4)}  # 150, 140 and 120 degrees; (3, 4) is 81
    assert {(p.src_view, p.trg_view) for p in wide.cross_view} == far | {(b, a) for a, b in far}
    with pytest.raises(DataError, match="no object of the 'test' split has two views 61-68 degrees apart"):
        sample_pairs(recs, 3, seed=1, kinds=["cross_view"], baseline_deg=(61.0, 68.0))
    with pytest.raises(ValueError, match="baseline"):
        sample_pairs(recs, 3, baseline_deg=(60.0, 15.0))


def test_pairs_file_cross_instance_cameras_checked_or_matched(tmp_path):
    from featurenerf.tasks.pairs import resolve_cross_instance

    recs = _records(2, cameras=_per_object_cameras)
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"cross_inst_pairs": [{"src": "obj00", "trg": "obj01", "view": 1}]}))
    with pytest.raises(DataError, match="different cameras"):
        resolve_cross_instance(read_pairs_file(path, recs), recs, "same")
    matched = resolve_cross_instance(read_pairs_file(path, recs), recs, "nearest")
    # obj00 view 1 is at azimuth 20; obj01's views are at 7, 27, 47, ...: view 1 (27) is nearest.
    assert matched.cross_inst == (CrossInstancePair("obj00", "obj01", 1, None),)
    path.write_text(json.dumps({"cross_inst_pairs": [{"src": "obj00", "trg": "obj01", "view": 2}]}))
    # obj00 view 2 at azimuth 40: obj01 view 2 (47, 7 away) is nearer than view 1 (27, 13 away).
    assert resolve_cross_instance(read_pairs_file(path, recs), recs, "nearest").cross_inst[0].target_view == 2
    path.write_text(json.dumps({"cross_inst_pairs": [{"src": "obj00", "trg": "obj01", "view": 0}]}))
    # obj00 view 0 at azimuth 0: obj01 view 0 (7) is nearest.
    assert resolve_cross_instance(read_pairs_file(path, recs), recs, "nearest").cross_inst[0].target_view == 0


def test_pairs_file_keeps_an_explicit_target_view(tmp_path):
    trg_az = [41.0, 1.0, 79.0, 21.0, 62.0]
    recs = _records(2, cameras=lambda i: _cameras(20.0 * np.arange(5) if i == 0 else trg_az))
    pairs = sample_pairs(recs, 10, seed=0, kinds=["cross_inst"], match_camera="nearest")
    assert any(p.trg_view is not None for p in pairs.cross_inst)
    path = write_pairs_file(tmp_path / "pairs.json", pairs)
    rows = json.loads(path.read_text())["cross_inst_pairs"]
    assert all(("trg_view" in r) == (p.trg_view is not None) for r, p in zip(rows, pairs.cross_inst))
    assert read_pairs_file(path, recs) == pairs
