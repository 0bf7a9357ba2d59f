"""Task metrics against hand-computed values; label transfer through a task's step; exact reduction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from featurenerf.tasks import PCK, PairMean, PartMIoU, cosine_nearest, part_miou, pck
from featurenerf.tasks.data import ShardSampler
from featurenerf.tasks.metrics import pck_thresholds_2d, transfer_labels
from featurenerf.tasks.tables import format_value, results_table


def test_cosine_nearest_ignores_scale_and_picks_best_angle():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = torch.tensor([[10.0, 0.1], [0.0, 0.01], [3.0, 2.9], [-1.0, 0.0]])
    # [-1, 0] has cosine -1, 0 and -0.707 with the keys: the orthogonal key 1 is the nearest.
    assert cosine_nearest(query, keys).tolist() == [0, 1, 2, 1]
    assert cosine_nearest(query, keys, chunk=1).tolist() == [0, 1, 2, 1]


def test_similarity_blocks_shrink_with_the_keys_and_do_not_change_the_picks(monkeypatch):
    from featurenerf.tasks import metrics
    from featurenerf.tasks.metrics import query_blocks, vote_labels

    q = torch.zeros(1000, 4)
    assert [len(b) for b in query_blocks(q, num_keys=1 << 19)][:3] == [2, 2, 2]  # 2 rows x 2^19 keys
    assert [len(b) for b in query_blocks(q, num_keys=10)] == [1000]
    assert [len(b) for b in query_blocks(q, num_keys=10, chunk=300)] == [300, 300, 300, 100]
    g = torch.Generator().manual_seed(0)
    query, keys = torch.randn(700, 16, generator=g), torch.randn(500, 16, generator=g)
    labels = torch.randint(0, 4, (500,), generator=g)
    one_block = cosine_nearest(query, keys, chunk=700)
    votes = vote_labels([(keys, labels), (keys[:300], labels[:300])], query)
    monkeypatch.setattr(metrics, "SIMILARITY_BLOCK", 500 * 64)  # 64-row blocks
    assert torch.equal(cosine_nearest(query, keys), one_block)
    assert torch.equal(vote_labels([(keys, labels), (keys[:300], labels[:300])], query), votes)


def test_perfect_transfer_gives_miou_one():
    labels = torch.tensor([0, 1, 1, 2, 3, 3])
    desc = F.one_hot(labels, 4).float()
    pred = transfer_labels(desc, labels, desc)
    assert pred.tolist() == labels.tolist()
    assert part_miou(pred, labels, labels).item() == 1.0


def test_known_permutation_miou():
    truth = torch.tensor([1, 1, 2, 2, 3, 3])
    swapped = torch.tensor([2, 2, 1, 1, 3, 3])  # parts 1 and 2 exchanged, 3 right
    assert part_miou(swapped, truth, truth).item() == pytest.approx(1 / 3)
    # Only parts present in BOTH truths count: without part 3 in the source, the mean is over {1, 2}.
    assert part_miou(swapped, truth, torch.tensor([1, 2])).item() == 0.0


def test_partial_overlap_miou_by_hand():
    truth = torch.tensor([1, 1, 1, 2])
    pred = torch.tensor([1, 1, 2, 2])
    # IoU(1) = 2 / 3, IoU(2) = 1 / 2 → mean 7 / 12.
    assert part_miou(pred, truth, torch.tensor([1, 2])).item() == pytest.approx(7 / 12)
    # A target-only part (4) and background (0) are not averaged.
    truth = torch.tensor([0, 1, 1, 4])
    pred = torch.tensor([1, 1, 1, 1])
    assert part_miou(pred, truth, torch.tensor([0, 1])).item() == pytest.approx(2 / 4)


def test_no_common_part_is_not_counted():
    assert part_miou(torch.tensor([1]), torch.tensor([1]), torch.tensor([2])) is None
    m = PartMIoU()
    m.update(torch.tensor([1]), torch.tensor([1]), torch.tensor([2]))
    m.update(torch.tensor([1, 2]), torch.tensor([1, 1]), torch.tensor([1]))  # IoU(1) = 1/2
    assert m.pairs.item() == 1
    assert m.compute().item() == pytest.approx(0.5)


def test_pck_by_hand_and_strict_threshold():
    dist = torch.tensor([0.0, 3.0, 6.0, 9.0, 12.0])
    assert pck(dist, [2.5, 5, 7.5, 10]).tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert pck(torch.tensor([5.0]), [5.0]).tolist() == [0.0]  # "below" the threshold, as the release
    assert pck(torch.zeros(0), [1.0]) is None


def test_pck_metric_perfect_and_per_pair_mean():
    m = PCK([2.5, 5.0, 7.5, 10.0])
    kp = torch.tensor([[10.0, 10.0], [20.0, 5.0]])
    m.update(kp, kp)
    assert m.compute().tolist() == [1.0, 1.0, 1.0, 1.0]
    m.reset()
    # Pair 1: one keypoint, right. Pair 2: three keypoints 6 px off. Per pair 1 and 0 at 5 px → 0.5
    # (pooling all keypoints would give 0.25).
    m.update(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    off = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    m.update(off, off + torch.tensor([6.0, 0.0]))
    assert m.compute().tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_pck_2d_thresholds_scale_with_image_size():
    assert pck_thresholds_2d(128) == (2.5, 5.0, 7.5, 10.0)
    assert pck_thresholds_2d(32) == (0.625, 1.25, 1.875, 2.5)


def test_sum_states_reduce_exactly():
    """Summing two ranks' states (what dist_reduce_fx="sum" does) equals evaluating all pairs on one."""
    values = [0.2, 0.9, 0.4, 0.7, 1.0]
    one, a, b = PairMean(), PairMean(), PairMean()
    for i, v in enumerate(values):
        one.update(v)
        (a if i % 2 == 0 else b).update(v)
    merged = (a.total + b.total) / (a.pairs + b.pairs)
    assert merged.item() == pytest.approx(one.compute().item())
    assert one.compute().item() == pytest.approx(sum(values) / len(values))
    assert math.isnan(PairMean().compute().item())


def test_shard_sampler_gives_each_item_to_exactly_one_rank(monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(ShardSampler, "_world", staticmethod(lambda r=rank: (r, 3)))
        s = ShardSampler(10)
        got = list(s)
        assert len(s) == len(got)
        seen += got
    assert sorted(seen) == list(range(10))  # no padding, no repeats
    monkeypatch.undo()
    assert list(ShardSampler(4)) == [0, 1, 2, 3]


class _OneHotDescriptors:
    """Descriptors that are one-hot part labels; method 'swap' swaps labels 1 and 2 on the target."""

    def __init__(self, parts: dict):
        self.parts = parts

    def foreground(self, method, view, cond):
        ij = view.foreground_ij()
        lab = self.parts[view.key][ij[:, 0], ij[:, 1]].clone()
        if method == "pixelnerf" and view.key[1] == 1:
            lab = torch.where(lab == 1, 2, torch.where(lab == 2, 1, lab))
        return F.one_hot(lab, 4).float()


def _side(name, view, parts):
    s = parts.shape[-1]
    return {
        "name": name,
        "view": view,
        "image": torch.rand(3, s, s),
        "mask": parts > 0,
        "pose": torch.eye(4),
        "focal": torch.ones(2),
        "c": torch.ones(2),
        "parts": parts,
    }


def test_part_seg_2d_step_perfect_and_permuted():
    from featurenerf.tasks.base import TaskContext
    from featurenerf.tasks.part_seg import PartSeg2D

    src = torch.tensor([[0, 1, 1], [2, 2, 3], [0, 3, 0]])
    trg = torch.tensor([[1, 1, 0], [0, 2, 2], [3, 3, 3]])
    item = {"kind": "cross_inst", "pair": 5, "src": _side("a", 0, src), "trg": _side("b", 1, trg)}
    task = PartSeg2D(methods=["featurenerf", "pixelnerf"], image_size=3)
    ctx = TaskContext(descriptors=_OneHotDescriptors({("a", 0): src, ("b", 1): trg}), models={})
    task.step(ctx, item)
    out = task.compute()
    assert out["featurenerf"]["cross_inst/mIoU"] == 1.0
    assert out["pixelnerf"]["cross_inst/mIoU"] == pytest.approx(1 / 3)  # parts 1, 2 swapped: IoU 0, 0, 1
    assert math.isnan(out["featurenerf"]["cross_view/mIoU"])
    task.reset()
    assert math.isnan(task.compute()["featurenerf"]["cross_inst/mIoU"])


def test_results_table_rows_and_columns():
    results = {
        "part_seg_2d": {
            "featurenerf": {"cross_inst/mIoU": 0.5},
            "teacher_2d": {"cross_inst/mIoU": float("nan")},
        },
        "novel_view": {"featurenerf": {"cross_view/PSNR": 21.234, "cross_view/SSIM": 0.8123}},
    }
    table = results_table(results, notes=["pixelnerf: skipped"])
    lines = table.splitlines()
    assert lines[0] == "| task / metric | featurenerf | teacher_2d |"
    assert "| part_seg_2d / cross_inst/mIoU | 50.0 | – |" in lines
    assert "| novel_view / cross_view/PSNR | 21.23 | – |" in lines
    assert "| novel_view / cross_view/SSIM | 0.812 | – |" in lines
    assert lines[-1] == "- pixelnerf: skipped"
    assert format_value("cross_inst/PCK@5", 0.25) == "25.0"


def test_per_pair_values_survive_the_rank_reduction():
    """Two ranks' list states merged as dist_reduce_fx="cat" does: the same pairs and values as one
    process, sorted by pair index whatever rank held them."""
    values = {0: [0.2, 0.1], 1: [0.9, 0.8], 2: [0.4, 0.3], 3: [0.7, 0.6], 4: [1.0, 0.5]}
    one, a, b = PCK([1.0, 2.0]), PairMean(2), PairMean(2)
    for pair, v in values.items():
        PairMean.update(one, torch.tensor(v), pair=pair)
        (a if pair % 2 else b).update(torch.tensor(v), pair=pair)
    b.update(None, pair=9)  # a pair with nothing to measure is not listed
    a.merge_state(b)  # the reduction each state declares (sum / cat)
    ids, vals = a.per_pair()
    assert ids.tolist() == [0, 1, 2, 3, 4]
    assert vals.flatten().tolist() == pytest.approx([x for i in range(5) for x in values[i]])
    assert torch.equal(one.per_pair()[1], vals)
    assert a.compute().tolist() == pytest.approx(one.compute().tolist())
    empty_ids, empty_vals = PairMean(3).per_pair()
    assert empty_ids.shape == (0,) and empty_vals.shape == (0, 3)


def test_task_per_pair_lists_each_counted_pair_by_index():
    from featurenerf.tasks.base import TaskContext
    from featurenerf.tasks.part_seg import PartSeg2D

    src = torch.tensor([[0, 1, 1], [2, 2, 3], [0, 3, 0]])
    trg = torch.tensor([[1, 1, 0], [0, 2, 2], [3, 3, 3]])
    task = PartSeg2D(methods=["featurenerf", "pixelnerf"], image_size=3)
    ctx = TaskContext(descriptors=_OneHotDescriptors({("a", 0): src, ("b", 1): trg}), models={})
    for pair in (7, 3):
        task.current_pair = pair
        task.step(
            ctx, {"kind": "cross_inst", "pair": pair, "src": _side("a", 0, src), "trg": _side("b", 1, trg)}
        )
    per = task.per_pair()
    assert per["featurenerf"]["cross_inst"] == {"pairs": [3, 7], "mIoU": [1.0, 1.0]}
    assert per["pixelnerf"]["cross_inst"]["mIoU"] == pytest.approx([1 / 3, 1 / 3])
    assert per["featurenerf"]["cross_view"] == {"pairs": [], "mIoU": []}  # no pair of that kind yet


def test_per_part_iou_by_hand_and_a_missing_part_leaves_its_pairs_out():
    """``PartIoU``: each part's IoU per pair (NaN where either object lacks it), averaged over the pairs
    that measured it; the per-pair values keep the NaN (the bootstrap drops it)."""
    from featurenerf.tasks.metrics import PartIoU, part_ious

    truth = torch.tensor([1, 1, 2, 2, 3, 3])
    pred = torch.tensor([1, 2, 2, 2, 3, 1])
    # body: {0} ∩ truth {0,1} = 1 / {0,1,5} = 1/3; cabin: {2,3} / {1,2,3} = 2/3; wheel: {4} / {4,5} = 1/2.
    ious = part_ious(pred, truth, torch.tensor([1, 2, 3, 4]), parts=4)
    assert torch.allclose(ious[:3], torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
    assert math.isnan(ious[3])  # light: in the source only
    assert part_ious(pred, truth, torch.tensor([4, 0]), parts=4) is None  # nothing in common
    metric = PartIoU(["body", "cabin", "wheel", "light"])
    metric.update(pred, truth, torch.tensor([1, 2, 3, 4]), pair=0)  # 1/3, 2/3, 1/2, –
    metric.update(truth, truth, torch.tensor([1]), pair=1)  # only body shared: 1, –, –, –
    metric.update(pred, truth, torch.tensor([4]), pair=2)  # no part shared: not counted
    got = metric.compute()
    assert torch.allclose(got[:3], torch.tensor([(1 / 3 + 1) / 2, 2 / 3, 1 / 2], dtype=torch.float64))
    assert math.isnan(got[3])
    ids, values = metric.per_pair()
    assert ids.tolist() == [0, 1] and values.shape == (2, 4) and math.isnan(values[1, 1])
    assert metric.labels == ["IoU/body", "IoU/cabin", "IoU/wheel", "IoU/light"]
