"""Paired differences of the results report: matched by pair index and seed, hand-computed values."""

import math

import numpy as np
import pytest

from featurenerf.results.bootstrap import Interval, bootstrap_interval
from featurenerf.results.paired import paired_cell, paired_differences, paired_intervals, paired_table


def test_differences_match_pairs_by_index_and_seeds_by_number() -> None:
    ours = {0: ([0, 1, 2, 3], [0.5, 0.6, math.nan, 0.9]), 1: ([0, 1], [1.0, 1.0]), 2: ([0], [0.3])}
    # Another order, one pair missing (2D keypoints drop pairs with no visible keypoint), no seed 2.
    theirs = {0: ([3, 1, 0, 2], [0.4, 0.5, 0.2, 0.1]), 1: ([1], [0.25])}
    diffs = paired_differences(ours, theirs)
    assert len(diffs) == 2  # seeds 0 and 1: seed 2 has no baseline
    # Seed 0: pair 2 is not finite for ours and is left out; pairs 0, 1, 3 are matched by index.
    np.testing.assert_allclose(diffs[0], [0.5 - 0.2, 0.6 - 0.5, 0.9 - 0.4])
    np.testing.assert_allclose(diffs[1], [0.75])


def _study(noise: np.ndarray, gain: float) -> tuple[dict, dict]:
    """values/ids of one category: featurenerf = pixelnerf + gain on every pair, both carrying the same
    large pair-to-pair spread ``noise``; the pixelnerf run lists its pairs in reverse order."""
    n = noise.size
    idx = list(range(n))
    ours = {s: list(0.5 + noise + gain) for s in (0, 1)}
    theirs = {s: list((0.5 + noise)[::-1]) for s in (0, 1)}
    values = {"part_seg_3d": {"cross_inst/mIoU": {"featurenerf": ours, "pixelnerf": theirs}}}
    ids = {
        "part_seg_3d": {
            "cross_inst": {"featurenerf": {0: idx, 1: idx}, "pixelnerf": {0: idx[::-1], 1: idx[::-1]}}
        }
    }
    return values, ids


def test_a_small_steady_gain_is_resolved_where_separate_intervals_overlap() -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.2, size=50)
    values, ids = _study(noise, gain=0.01)
    rows = paired_intervals(values, ids, replicates=500)
    ci = rows["part_seg_3d / cross_inst/mIoU"]["pixelnerf"]
    # Every pair gains exactly 0.01, so every replicate does: the paired interval is that point.
    assert ci.mean == pytest.approx(0.01) and ci.lo == pytest.approx(0.01) and ci.hi == pytest.approx(0.01)
    # Both seeds carry the same values here, so they are one sample (see the bootstrap's docstring).
    assert ci.pairs == 50 and ci.seeds == 1
    # The two methods' own intervals overlap widely: the separate-interval target could not see it.
    per_col = values["part_seg_3d"]["cross_inst/mIoU"]
    a = bootstrap_interval([per_col["featurenerf"][s] for s in (0, 1)], replicates=500)
    b = bootstrap_interval([per_col["pixelnerf"][s] for s in (0, 1)], replicates=500)
    assert a.overlaps(b)
    lines = paired_table(rows)
    assert lines[0] == "| featurenerf minus | pixelnerf |"
    assert lines[2] == "| part_seg_3d / cross_inst/mIoU | **+1.0 [+1.0, +1.0]** |"


def test_rows_without_featurenerf_or_outside_the_targets_are_left_out() -> None:
    values = {
        "part_seg_2d": {"cross_inst/mIoU": {"featurenerf": {0: [0.1]}, "pixelnerf": {0: [0.2]}}},
        "keypoints_3d": {"cross_view/PCK@0.1": {"pixelnerf": {0: [0.2]}}},
    }
    ids = {"part_seg_2d": {"cross_inst": {"featurenerf": {0: [0]}, "pixelnerf": {0: [0]}}}}
    assert paired_intervals(values, ids) == {}
    assert paired_table({}) == []


def test_cells_carry_sign_units_and_bold_only_when_zero_is_excluded() -> None:
    assert paired_cell("cross_view/PSNR", Interval(-0.764, -0.85, -0.672, 400, 2)) == (
        "**−0.76 [−0.85, −0.67]**"
    )
    assert paired_cell("cross_inst/PCK@0.1", Interval(0.004, -0.007, 0.015, 400, 2)) == "+0.4 [−0.7, +1.5]"
    assert paired_cell("cross_inst/mIoU", None) == "–"


# ---------------------------------------------------------------- featurenerf results compare


def _report(values: list[float], test_data: str = "t1", pairs: str = "p1") -> dict:
    """A minimal results.json of one category: featurenerf's per-pair 3D part mIoU for seeds 0 and 1."""
    ids = list(range(len(values)))
    return {
        "per_pair": {
            "toy_chairs": {"part_seg_3d": {"cross_inst/mIoU": {"featurenerf": {"0": values, "1": values}}}}
        },
        "pair_ids": {"toy_chairs": {"part_seg_3d": {"cross_inst": {"featurenerf": {"0": ids, "1": ids}}}}},
        "digests": {"toy_chairs": {"pairs": pairs, "test_data": test_data}},
    }


def test_compare_subtracts_pair_by_pair_across_studies() -> None:
    from featurenerf.results.compare import compare

    a = _report([0.5, 0.7, 0.9])
    b = _report([0.4, 0.6, 0.8])
    lines, skipped = compare(a, b, ("a.json", "b.json"), replicates=200)
    assert skipped == []
    assert "| A minus B | featurenerf |" in lines
    assert "| part_seg_3d / cross_inst/mIoU | **+10.0 [+10.0, +10.0]** |" in lines


def test_compare_refuses_other_test_images_or_pairs_with_one_line() -> None:
    from featurenerf.errors import ConfigError
    from featurenerf.results.compare import compare

    a = _report([0.5])
    for other, what in (
        (_report([0.4], test_data="t2"), "test images"),
        (_report([0.4], pairs="p2"), "test pairs"),
    ):
        with pytest.raises(ConfigError, match=f"b.json: toy_chairs: its {what} differ from a.json's"):
            compare(a, other, ("a.json", "b.json"))
    old = _report([0.4])
    del old["digests"]
    with pytest.raises(ConfigError, match="b.json: toy_chairs: no digest of its test pairs"):
        compare(a, old, ("a.json", "b.json"))
    with pytest.raises(ConfigError, match="a.json: no category toy_cars"):
        compare(a, a, ("a.json", "b.json"), categories=["toy_cars"])


def test_the_test_split_digest_sees_test_files_only(tmp_path) -> None:
    from featurenerf.results.compare import digest_of_test_split

    for split in ("train", "test"):
        obj = tmp_path / f"toychair_{split}" / "obj0000" / "rgb"
        obj.mkdir(parents=True)
        (obj / "000000.png").write_bytes(b"image")
    first = digest_of_test_split(tmp_path)
    (tmp_path / "toychair_train" / "obj0000" / "rgb" / "000000.png").write_bytes(b"other training image")
    assert digest_of_test_split(tmp_path) == first
    (tmp_path / "toychair_test" / "obj0000" / "rgb" / "000000.png").write_bytes(b"other test image")
    assert digest_of_test_split(tmp_path) != first
    assert digest_of_test_split(tmp_path / "missing") is None


def test_compare_takes_a_study_on_a_prefix_of_the_pairs(tmp_path) -> None:
    """A study whose tasks took more pairs of the same draw (``--task-pairs``) compares with one on the
    first of them: its digests record each count's head, and only the shared pair indices are matched."""
    import json

    from featurenerf.errors import ConfigError
    from featurenerf.results.compare import _digest, _head, _sha256_json, compare

    pairs = {
        "cross_inst_pairs": [{"src": "a", "trg": "b", "view": v} for v in range(5)],
        "cross_view_pairs": [],
    }
    long, short = tmp_path / "long.json", tmp_path / "short.json"
    long.write_text(json.dumps(pairs))
    short.write_text(json.dumps({k: v[:3] for k, v in pairs.items()}, indent=2))
    head3 = _digest(_head(json.loads(long.read_text()), 3))
    assert head3 == _sha256_json(short) != _sha256_json(long)
    a = _report([0.5, 0.7, 0.9, 0.1, 0.1], pairs=_sha256_json(long))
    a["digests"]["toy_chairs"]["pairs_head"] = {"3": head3, "5": _sha256_json(long)}
    b = _report([0.4, 0.6, 0.8], pairs=_sha256_json(short))
    for x, y in ((a, b), (b, a)):
        lines, skipped = compare(x, y, ("x.json", "y.json"), replicates=200)
        assert (
            skipped == []
            and "On the pairs both studies evaluated: the first 3 of each kind, by index." in lines
        )
    lines, _ = compare(a, b, ("a.json", "b.json"), replicates=200)
    assert "| part_seg_3d / cross_inst/mIoU | **+10.0 [+10.0, +10.0]** |" in lines  # pairs 3, 4 left out
    b["digests"]["toy_chairs"]["pairs"] = "other"
    with pytest.raises(ConfigError, match="test pairs differ"):
        compare(a, b, ("a.json", "b.json"))
