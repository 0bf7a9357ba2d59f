"""End to end: ``featurenerf validate --task part_seg`` on the tiny generated toy cars, the teacher
baseline's 3D lookup, and the one-line error on data without annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from featurenerf.data.srn import DataError

#: A very small model of the real architecture (fast on CPU at 32 px).
TINY = {
    "encoder_layers": 1,
    "d_hidden": 32,
    "n_blocks": 2,
    "n_inject": 1,
    "combine_layer": 1,
    "n_coarse": 8,
    "n_fine": 4,
    "n_fine_depth": 4,
    "scene_radius": 0.8,
    "chunk": 2048,
}


def save_checkpoint(path: Path, **hparams: Any) -> Path:
    """A Lightning checkpoint of a freshly initialised model (seeded), as ``fit`` would write it."""
    import lightning as L

    from featurenerf.module import FeatureNeRF

    torch.manual_seed(0)
    model = FeatureNeRF(**TINY, **hparams)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def write_config(path: Path, root: Path, runs: Path) -> Path:
    lines = [
        "seed_everything: 0",
        "trainer:",
        "  accelerator: cpu",
        "  devices: 1",
        "  logger: false",
        "  enable_progress_bar: false",
        "  enable_model_summary: false",
        f"  default_root_dir: {runs}",
        "model:",
        *[f"  {k}: {v}" for k, v in TINY.items()],
        "data:",
        f"  root: {root}",
        "  image_size: 32",
        "  teacher: null",
        "  val_objects: 1",
        "  val_views: 1",
        "  num_workers: 0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_part_seg_end_to_end(toy_root, tmp_path, capsys):
    from featurenerf.cli import main

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    args = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--task", "part_seg"]
    # The baseline checkpoint is the same model: its column must equal featurenerf's exactly, which
    # checks that both methods go through the same descriptors and that the checkpoint round-trips.
    args += ["--tasks.num_pairs", "2", "--tasks.split", "train", "--tasks.pixelnerf_ckpt", str(ckpt)]
    assert main(args) == 0

    out = tmp_path / "run" / "tasks"
    results = json.loads((out / "results.json").read_text())
    protocol = results.pop("protocol")
    assert set(results) == {"part_seg_2d", "part_seg_3d"}
    # The toy data shares one camera set per split: cross-instance pairs are the very same camera.
    assert protocol["cross_inst_camera"] == "same" and protocol["cross_view_baseline_deg"] == [15.0, 60.0]
    assert protocol["measured_deg"]["cross_inst"]["max"] == 0.0
    assert (
        15.0
        <= protocol["measured_deg"]["cross_view"]["min"]
        <= protocol["measured_deg"]["cross_view"]["max"]
        <= 60.0
    )
    for task in results.values():
        assert set(task) == {"featurenerf", "pixelnerf"}  # no teacher, no feature head: those are skipped
        assert set(task["featurenerf"]) == {"cross_inst/mIoU", "cross_view/mIoU"}
        assert task["pixelnerf"] == task["featurenerf"]
        for value in task["featurenerf"].values():
            assert 0.0 <= value <= 1.0

    pairs = json.loads((out / "pairs.json").read_text())
    assert len(pairs["cross_inst_pairs"]) == 2 and len(pairs["cross_view_pairs"]) == 2

    table = (out / "results.md").read_text()
    assert "| task / metric | featurenerf | pixelnerf |" in table
    assert "teacher_2d: skipped" in table and "featurenerf_v: skipped" in table
    assert "cross-view baseline (angle between the two viewing directions): drawn at 15-60 degrees" in table
    assert "cross-instance pairs: same camera (view k on both)" in table
    assert "| task / metric | featurenerf | pixelnerf |" in capsys.readouterr().out  # printed at the end
    for task in ("part_seg_2d", "part_seg_3d"):
        assert sorted(p.name for p in (out / "pictures" / task).glob("*.png")) == [
            "cross_inst000_step000000.png",
            "cross_inst001_step000000.png",
            "cross_view000_step000000.png",
            "cross_view001_step000000.png",
        ]


def test_teacher_3d_lookup_matches_the_pixel_lookup():
    """teacher_2d at 3D points = the upsampled teacher map read where the points project: points that
    project onto pixel centres get exactly those pixels' descriptors."""
    from featurenerf.geometry.cameras import rays_from_pixels
    from featurenerf.tasks.descriptors import Descriptors, PosedView, sample_map

    s = 8
    torch.manual_seed(0)
    mask = torch.zeros(s, s, dtype=torch.bool)
    mask[2:6, 1:7] = True
    pose = torch.eye(4)
    pose[2, 3] = -2.0
    view = PosedView(
        "obj",
        0,
        torch.rand(3, s, s),
        mask,
        pose,
        torch.tensor([9.0, 9.0]),
        torch.tensor([4.0, 4.0]),
        teacher=torch.randn(5, 2, 2),
    )
    d = Descriptors({}, ["teacher_2d"])
    ij = view.foreground_ij()
    uv = ij.flip(-1).float() + 0.5
    origins, dirs = rays_from_pixels(uv, pose, view.focal, view.c)
    xyz = origins + 1.7 * dirs  # any depth along each pixel's ray
    at_points = d.points("teacher_2d", xyz, view, ("pts", "obj"))
    at_pixels = d.foreground("teacher_2d", view, view)
    assert torch.allclose(at_points, at_pixels, atol=1e-5)
    # And a constant map reads as that constant anywhere, including outside the image (border padding).
    const = torch.ones(3, s, s) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    assert torch.allclose(
        sample_map(const, torch.tensor([[-5.0, 3.0], [4.0, 4.0]])), torch.tensor([[1.0, 2.0, 3.0]] * 2)
    )
    assert torch.allclose(at_pixels.norm(dim=-1), torch.ones(len(ij)))
    assert F.cosine_similarity(at_pixels[:1], at_pixels[:1]).item() == pytest.approx(1.0)


def test_unannotated_data_says_which_file_is_needed(toy_root, tmp_path):
    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.tasks.suite import TaskSuite

    root = tmp_path / "plain"
    shutil.copytree(toy_root, root)
    for parts in root.glob("*/*/parts"):
        shutil.rmtree(parts)
    dm = FeatureNeRFData(root=str(root), image_size=32, teacher=None, check=False)
    with pytest.raises(DataError) as err:
        TaskSuite(["part_seg_2d"], dm, num_pairs=2, split="train", out_dir=tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    assert "/parts/" in message and ": missing; part_seg_2d needs part label maps" in message
    assert "annotated format" in message
    # Tasks that need other files still work on it, and a missing points.npz is named likewise.
    TaskSuite(["part_seg_3d"], dm, num_pairs=2, split="train", out_dir=tmp_path / "out")
    for points in root.glob("*/*/points.npz"):
        points.unlink()
    with pytest.raises(DataError, match=r"points\.npz: missing; keypoints_3d needs"):
        TaskSuite(["keypoints_3d"], dm, num_pairs=2, split="train", out_dir=tmp_path / "out")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tasks.baseline_min_deg", "70", "--tasks.baseline_max_deg", "20"], "--tasks.baseline_min_deg"),
        (["--tasks.match_camera", "farthest"], "tasks.match_camera"),
    ],
)
def test_bad_pair_protocol_options_are_one_line(toy_root, tmp_path, capfd, options, message):
    """Refused right after parsing (before Lightning builds anything): stderr is exactly one line."""
    from featurenerf.cli import main

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    args = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--task", "part_seg_3d"]
    capfd.readouterr()
    assert main([*args, "--tasks.num_pairs", "1", "--tasks.split", "train", *options]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0], err


def test_per_object_cameras_refused_for_cross_instance_pairs(toy_root, tmp_path):
    """Data whose view k is another camera on each object: refused in one line, or matched if asked."""
    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.tasks.suite import TaskSuite

    root = tmp_path / "own_cameras"
    shutil.copytree(toy_root, root)
    objects = sorted(root.glob("toycar_train/*"))
    # Give the second object the first object's views in reverse order (its own camera per view k).
    poses = sorted((objects[1] / "pose").iterdir())
    texts = [p.read_text() for p in poses]
    for path, text in zip(poses, reversed(texts)):
        path.write_text(text)
    dm = FeatureNeRFData(root=str(root), image_size=32, teacher=None, check=False)
    with pytest.raises(DataError) as err:
        TaskSuite(["part_seg_3d"], dm, num_pairs=20, split="train", out_dir=tmp_path / "out")
    assert "different cameras" in str(err.value) and "\n" not in str(err.value)
    suite = TaskSuite(
        ["part_seg_3d"], dm, num_pairs=20, split="train", out_dir=tmp_path / "out", match_camera="nearest"
    )
    assert suite.protocol["cross_inst_camera"] == "nearest"
    assert suite.protocol["measured_deg"]["cross_inst"]["max"] < 1e-3  # the reversed set still holds view k
    assert any(p.trg_view is not None for p in suite.pairs.cross_inst)
    # Cross-view tasks alone never compare two objects: nothing to refuse.
    TaskSuite(["novel_view"], dm, num_pairs=3, split="train", out_dir=tmp_path / "out")


class PoolTeacher:
    """Built lazily (the Teacher base imports the teacher package): 4x4 average pool, 3 → 6 channels."""

    @staticmethod
    def build():
        from featurenerf.teachers import Teacher

        class _Pool(Teacher):
            def __init__(self) -> None:
                super().__init__()
                self.proj = torch.nn.Conv2d(3, 6, 1)
                with torch.no_grad():
                    self.proj.weight.copy_(torch.arange(18.0).view(6, 3, 1, 1) / 10 - 0.8)
                    self.proj.bias.zero_()

            feature_dim = property(lambda self: 6)
            stride = property(lambda self: 4)
            input_size = property(lambda self: None)
            mean = property(lambda self: (0.5, 0.5, 0.5))
            std = property(lambda self: (0.5, 0.5, 0.5))
            weights_source = property(lambda self: "test")

            def cache_fields(self) -> dict[str, Any]:
                return {}

            def extract(self, images: torch.Tensor) -> torch.Tensor:
                return self.proj(F.avg_pool2d(images, 4))

        return _Pool()


def _validate_in_process(
    root: Path, out: Path, tasks: list[str], devices: int = 1, teacher=None, pixelnerf=None
):
    import lightning as L

    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.module import FeatureNeRF
    from featurenerf.tasks.suite import TaskSuite

    dm = FeatureNeRFData(
        root=str(root),
        image_size=32,
        teacher=teacher,
        cache_dir=str(out / "cache"),
        val_objects=1,
        val_views=1,
        check=False,
    )
    torch.manual_seed(0)
    model = FeatureNeRF(feature_dim=dm.feature_dim, **TINY)
    suite = TaskSuite(tasks, dm, num_pairs=3, split="train", out_dir=out / "tasks", pixelnerf_ckpt=pixelnerf)
    model.tasks = suite
    dm.extra_val_loaders = suite.dataloaders()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        default_root_dir=out,  # validation pictures land here, not in the working directory
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(model, datamodule=dm, verbose=False)
    results = json.loads((out / "tasks" / "results.json").read_text())
    assert results.pop("protocol")["cross_inst_camera"] == "same"
    return results


@pytest.mark.slow
def test_every_task_and_method_in_one_table(toy_root, tmp_path):
    from featurenerf.tasks import TASKS

    pix = save_checkpoint(tmp_path / "pix.ckpt", feature_dim=6, distill_weight=0.0)
    results = _validate_in_process(
        toy_root, tmp_path, TASKS.list(), teacher=PoolTeacher.build(), pixelnerf=str(pix)
    )
    assert set(results) == set(TASKS.list())
    for name, per_method in results.items():
        want = {
            "novel_view": {"featurenerf", "pixelnerf", "copy_input"},
            "canonical_coords": {"featurenerf", "pixelnerf"},
        }.get(name, {"featurenerf", "featurenerf_v", "teacher_2d", "pixelnerf"})
        assert set(per_method) == want
        for metrics in per_method.values():
            assert all(v is not None for v in metrics.values())
    assert set(results["keypoints_3d"]["teacher_2d"]) == {
        f"{k}/PCK@{t}" for k in ("cross_inst", "cross_view") for t in ("0.025", "0.05", "0.075", "0.1")
    }
    assert set(results["keypoints_2d"]["featurenerf"]) == {
        f"{k}/PCK@{t}" for k in ("cross_inst", "cross_view") for t in ("2.5", "5", "7.5", "10")
    }
    assert results["novel_view"]["featurenerf"]["cross_view/SSIM"] <= 1.0
    md = (tmp_path / "tasks" / "results.md").read_text()
    assert "| task / metric | featurenerf | featurenerf_v | teacher_2d | pixelnerf |" in md
    assert len(list((tmp_path / "tasks" / "pictures").rglob("*.png"))) == 2 * 4 * 2 + 2


@pytest.mark.slow
def test_ddp_two_ranks_give_the_single_process_numbers(toy_root, tmp_path):
    """3 pairs per kind over 2 ranks: uneven shards, summed states; the table must not change."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    tasks = ["part_seg_2d", "keypoints_3d"]
    single = _validate_in_process(toy_root, tmp_path / "one", tasks)
    double = _validate_in_process(toy_root, tmp_path / "two", tasks, devices=2)
    # Equal up to the order of the float64 sums (a + b + c vs (a + c) + b).
    assert single.keys() == double.keys()
    for task, per_method in single.items():
        assert per_method.keys() == double[task].keys()
        for method, metrics in per_method.items():
            assert metrics == pytest.approx(double[task][method], rel=1e-12, abs=1e-15)


def test_truncated_task_loaders_are_noted(toy_root, tmp_path):
    from types import SimpleNamespace

    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.tasks.suite import TaskSuite

    dm = FeatureNeRFData(root=str(toy_root), image_size=32, teacher=None, check=False)
    suite = TaskSuite(["part_seg_3d", "novel_view"], dm, num_pairs=3, split="train", out_dir=tmp_path)
    dm.extra_val_loaders = suite.dataloaders()
    assert [len(dl) for dl in dm.extra_val_loaders] == [6, 3]  # both kinds / cross-view only
    suite._note_truncation(SimpleNamespace(num_val_batches=[1, 2, 3]))
    suite._note_truncation(SimpleNamespace(num_val_batches=[1, 2, 3]))  # said once, not per validation run
    truncated = [n for n in suite.notes if "limit_val_batches" in n]
    assert truncated == [
        "part_seg_3d: only 2 of 6 pairs per process were evaluated "
        "(trainer.limit_val_batches; pass --trainer.limit_val_batches 1.0 for all)"
    ]


def test_a_later_validate_of_other_tasks_keeps_the_earlier_ones_when_comparable(toy_root, tmp_path, capfd):
    """``validate --task part_seg`` then ``--task keypoints`` on one checkpoint: both stay in the results;
    another pair draw replaces them, and says so in one line."""
    from featurenerf.cli import main

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    base = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--tasks.split", "train"]
    out = tmp_path / "run" / "tasks"
    assert main([*base, "--task", "part_seg", "--tasks.num_pairs", "2"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert main([*base, "--task", "keypoints", "--tasks.num_pairs", "2"]) == 0
    both = json.loads((out / "results.json").read_text())
    assert set(both) - {"protocol"} == {"part_seg_2d", "part_seg_3d", "keypoints_2d", "keypoints_3d"}
    assert both["part_seg_3d"] == first["part_seg_3d"]
    per_pair = json.loads((out / "per_pair.json").read_text())["tasks"]
    assert set(per_pair) == {"part_seg_2d", "part_seg_3d", "keypoints_2d", "keypoints_3d"}
    md = (out / "results.md").read_text()
    assert "| part_seg_3d / cross_inst/mIoU |" in md and "| keypoints_3d / cross_inst/PCK@0.1 |" in md
    assert "- part_seg_2d, part_seg_3d: kept from an earlier validate of the same checkpoint and pairs" in md
    capfd.readouterr()
    # Three pairs are another draw: the earlier tasks are not comparable and are replaced, with a line.
    assert main([*base, "--task", "part_seg", "--tasks.num_pairs", "3"]) == 0
    assert set(json.loads((out / "results.json").read_text())) == {"part_seg_2d", "part_seg_3d", "protocol"}
    err = capfd.readouterr().err
    assert (
        f"tasks: {out / 'results.json'}: replacing keypoints_2d, keypoints_3d of an earlier validate" in err
    )


def test_per_part_iou_names_the_datas_parts_and_averages_to_each_pairs_miou(toy_root, tmp_path):
    """``--tasks.per_part true``: ``<kind>/IoU/<part>`` per part of ``meta.json``; in every pair the mean
    of the measured parts' IoUs is the pair's mIoU. Without it, no per-part results."""
    import math

    from featurenerf.cli import main
    from featurenerf.data.annotations import read_meta

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    base = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--task", "part_seg"]
    base += ["--tasks.split", "train", "--tasks.num_pairs", "3"]
    out = tmp_path / "run" / "tasks"
    assert main(base) == 0
    plain = json.loads((out / "results.json").read_text())
    assert not any("IoU/" in k for k in plain["part_seg_3d"]["featurenerf"])
    assert main([*base, "--tasks.per_part", "true"]) == 0
    results = json.loads((out / "results.json").read_text())
    parts = read_meta(toy_root).part_names[1:]
    per_pair = json.loads((out / "per_pair.json").read_text())["tasks"]
    for task in ("part_seg_2d", "part_seg_3d"):
        got = results[task]["featurenerf"]
        assert {f"cross_inst/IoU/{p}" for p in parts} <= set(got), task
        assert got["cross_inst/mIoU"] == plain[task]["featurenerf"]["cross_inst/mIoU"]  # unchanged
        for kind, entry in per_pair[task]["featurenerf"].items():
            for i, miou in enumerate(entry["mIoU"]):
                ious = [entry[f"IoU/{p}"][i] for p in parts]
                measured = [v for v in ious if not math.isnan(v)]
                assert measured and sum(measured) / len(measured) == pytest.approx(miou), (task, kind, i)


def test_task_pairs_give_a_task_its_own_pair_count(toy_root, tmp_path):
    """``--tasks.task_pairs``: the named task evaluates more pairs, drawn once, so its first pairs are the
    other tasks' pairs and give the values a run without the option gives; the header says so."""
    from featurenerf.cli import main

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    base = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--tasks.split", "train"]
    out = tmp_path / "run" / "tasks"

    assert main([*base, "--task", "part_seg_3d", "--tasks.num_pairs", "2"]) == 0
    alone = json.loads((out / "per_pair.json").read_text())["tasks"]["part_seg_3d"]["featurenerf"]
    shutil.rmtree(out)

    args = [*base, "--task", "part_seg_2d", "part_seg_3d", "--tasks.num_pairs", "2"]
    assert main([*args, "--tasks.task_pairs", "{part_seg_3d: 5}"]) == 0
    per_pair = json.loads((out / "per_pair.json").read_text())["tasks"]
    for kind in ("cross_inst", "cross_view"):
        assert per_pair["part_seg_2d"]["featurenerf"][kind]["pairs"] == [0, 1]
        more = per_pair["part_seg_3d"]["featurenerf"][kind]
        assert more["pairs"] == [0, 1, 2, 3, 4]
        assert more["mIoU"][:2] == alone[kind]["mIoU"]  # the same first pairs, the same values
    pairs = json.loads((out / "pairs.json").read_text())
    assert len(pairs["cross_inst_pairs"]) == 5 and len(pairs["cross_view_pairs"]) == 5
    header = (out / "results.md").read_text().splitlines()[0]
    assert "2 cross-instance and 2 cross-view pairs (part_seg_3d: 5 and 5) from the 'train' split" in header


def test_task_pairs_for_a_task_not_evaluated_is_one_line(toy_root, tmp_path, capfd):
    from featurenerf.cli import main

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    args = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--task", "part_seg_2d"]
    capfd.readouterr()
    assert main([*args, "--tasks.split", "train", "--tasks.task_pairs", "{keypoints_3d: 4}"]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--tasks.task_pairs: 'keypoints_3d' is not an evaluated task" in err[0], err


def test_model_option_on_the_command_line_wins_over_the_checkpoint(toy_root, tmp_path, capfd):
    """Lightning merges a checkpoint's hyper-parameters over the config; a ``--model.*`` option typed on
    the command line (here fewer coarse samples per ray) must still reach the evaluated model."""
    from featurenerf.cli import main
    from featurenerf.lightning_cli import typed_model_keys

    assert typed_model_keys(
        ["--model.n_coarse", "2", "--model.chunk=64", "--model.n_coarse=3", "--data.x"]
    ) == [
        "n_coarse",
        "chunk",
    ]
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    args = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--task", "novel_view"]
    args += ["--tasks.num_pairs", "2", "--tasks.split", "train"]
    out = tmp_path / "run" / "tasks" / "results.json"

    def psnr(*extra: str) -> float:
        assert main([*args, *extra]) == 0
        return json.loads(out.read_text())["novel_view"]["featurenerf"]["cross_view/PSNR"]

    plain = psnr()
    capfd.readouterr()
    fewer = psnr("--model.n_coarse", "2")
    assert (
        "validate: model.n_coarse 2 from the command line (the checkpoint's is 8)" in capfd.readouterr().err
    )
    assert fewer != plain
