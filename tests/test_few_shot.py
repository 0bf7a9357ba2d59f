"""Few-shot part transfer (``--tasks.shots``): the vote, the extra source objects, and the results table
reporting one-shot and K-shot side by side."""

from __future__ import annotations

import json

import pytest
import torch
from test_tasks_e2e import TINY

from featurenerf.tasks.metrics import transfer_labels, vote_labels
from featurenerf.tasks.pairs import CrossInstancePair
from featurenerf.tasks.shots import draw_extra_sources, normalise_shots


def test_one_source_is_the_one_shot_transfer_and_the_majority_wins():
    gen = torch.Generator().manual_seed(0)
    src, trg = torch.randn(50, 8, generator=gen), torch.randn(20, 8, generator=gen)
    labels = torch.randint(0, 4, (50,), generator=gen)
    assert torch.equal(vote_labels([(src, labels)], trg), transfer_labels(src, labels, trg))

    e = torch.eye(3)  # target 0 looks like e0, target 1 like e1
    trg = torch.stack([e[0], e[1]])
    a = (e, torch.tensor([1, 2, 0]))  # says 1, 2
    b = (e, torch.tensor([1, 3, 0]))  # says 1, 3
    c = (torch.stack([e[0], -e[1]]), torch.tensor([2, 3]))  # says 2 (exact), 2 (at cosine 0 > -1)
    assert vote_labels([a, b, c], trg).tolist() == [1, 2]  # two votes for 1; one each for 2, 3, 2 -> 2
    # A tie (one vote each) goes to the more similar source, whatever the order: target 1 is e1 itself
    # in a (label 2, cosine 1) and only near (e1 + e2) / sqrt(2) in f (label 7, cosine 0.71).
    f = (torch.stack([e[0], (e[1] + e[2]) / 2**0.5]), torch.tensor([8, 7]))
    assert vote_labels([a, f], trg)[1] == 2 and vote_labels([f, a], trg)[1] == 2
    # Under bf16 autocast (trainer.precision auto on a CPU with bf16) the vote is the same.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vote_labels([a, b, c], trg).tolist() == [1, 2]


def test_extra_sources_are_other_objects_with_the_view_and_nest():
    class Rec:
        def __init__(self, name: str, views: int) -> None:
            self.name, self.num_views = name, views

    records = [Rec(n, 5) for n in "abcdef"] + [Rec("short", 2)]
    pairs = [CrossInstancePair("a", "b", 3), CrossInstancePair("c", "d", 1)]
    four = draw_extra_sources(pairs, records, 4, seed=0)
    assert set(four[0]) == {"c", "d", "e", "f"} and "short" not in four[0]  # "short" lacks view 3
    assert len(four[1]) == 4 and not {"c", "d"} & set(four[1])
    assert draw_extra_sources(pairs, records, 4, seed=0) == four
    assert draw_extra_sources(pairs, records, 9, seed=0)[0] == four[0]  # fewer candidates: all of them
    assert normalise_shots(5) == (5,) and normalise_shots([5, 1, 5]) == (1, 5)
    with pytest.raises(ValueError, match="--tasks.shots: expected positive integers"):
        normalise_shots([0])


def _run(root, out, shots):
    import lightning as L

    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.module import FeatureNeRF
    from featurenerf.tasks.suite import TaskSuite

    dm = FeatureNeRFData(root=str(root), image_size=32, teacher=None, val_objects=1, val_views=1, check=False)
    torch.manual_seed(0)
    model = FeatureNeRF(feature_dim=0, **TINY)
    suite = TaskSuite(
        ["part_seg_2d", "part_seg_3d"], dm, num_pairs=3, split="train", out_dir=out, shots=shots
    )
    model.tasks = suite
    dm.extra_val_loaders = suite.dataloaders()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, default_root_dir=out, logger=False, enable_progress_bar=False
    )
    trainer.validate(model, datamodule=dm, verbose=False)
    return suite, json.loads((out / "results.json").read_text())


def test_k_shot_is_reported_beside_one_shot(toy_root, tmp_path):
    one_suite, one = _run(toy_root, tmp_path / "one", 1)
    suite, both = _run(toy_root, tmp_path / "both", [1, 3])
    for pair, extra in zip(suite.pairs.cross_inst, suite.extra_sources.values()):
        assert len(extra) == 2 and not {pair.src, pair.trg} & set(extra)  # 4 train objects: 2 more each
    for task in ("part_seg_2d", "part_seg_3d"):
        values = both[task]["featurenerf"]
        assert list(values) == ["cross_inst/mIoU", "cross_inst/mIoU@3shot", "cross_view/mIoU"]
        assert values["cross_inst/mIoU"] == one[task]["featurenerf"]["cross_inst/mIoU"]  # one-shot unchanged
        assert values["cross_view/mIoU"] == one[task]["featurenerf"]["cross_view/mIoU"]
        assert 0.0 <= values["cross_inst/mIoU@3shot"] <= 1.0
    table = (tmp_path / "both" / "results.md").read_text()
    assert "| part_seg_2d / cross_inst/mIoU@3shot |" in table and "from 1 and 3 source object(s)" in table
