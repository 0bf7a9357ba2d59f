"""Evaluation pairs (deterministic draws, the release's file format) and --task parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featurenerf.data.srn import DataError, Intrinsics, ObjectRecord
from featurenerf.tasks import (
    TASKS,
    CrossInstancePair,
    CrossViewPair,
    read_pairs_file,
    sample_pairs,
    write_pairs_file,
)


def _records(n: int, views: int = 5) -> list[ObjectRecord]:
    intr = Intrinsics(1.0, 1.0, 0.5, 0.5, 1, 1)
    paths = tuple(Path(f"{v:06d}.png") for v in range(views))
    return [ObjectRecord(f"obj{i:02d}", "test", Path(f"obj{i:02d}"), paths, paths, intr) for i in range(n)]


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
    every = expand_tasks(["part_seg", "keypoints", "novel_view"])
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
