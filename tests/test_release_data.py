"""The FeatureNeRF release's layout (``data.format: featurenerf_release``): cameras in our conventions,
annotations equal to the truth they were written from, the data check, and fit + validate from the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from release_data import SYNSET, object_array, rgba_square, write_release_dataset

from featurenerf.data import annotations as ann
from featurenerf.data.check import check_dataset, invalid_objects
from featurenerf.data.formats import detect_format, list_objects_any
from featurenerf.data.npz import load_npz
from featurenerf.data.srn import DataError, list_objects, load_poses
from featurenerf.geometry.cameras import project_points


@pytest.fixture(scope="module")
def release_root(toy_root, tmp_path_factory) -> Path:
    """Two toy cars (5 views, 32 px, every annotation kind) in the release's layout."""
    a, b = list_objects(toy_root, "train")[:2]
    splits = {
        "train": [a.name, b.name],
        "val": [a.name],
        "test": [a.name, b.name],
        "cross_inst_pairs": [
            {"src": a.name, "trg": b.name, "view": 1},
            {"src": b.name, "trg": a.name, "view": 2},
        ],
        "cross_view_pairs": [{"model_id": a.name, "src_view": 0, "trg_view": 3}],
    }
    return write_release_dataset([a, b], tmp_path_factory.mktemp("release"), splits)


def test_a_known_point_projects_where_the_opengl_camera_sees_it(tmp_path):
    # An OpenGL camera 1.3 units up +z looking down -z (identity rotation), 60 degree field of view, 32 px.
    size, fov = 32, math.radians(60)
    rgba_square(tmp_path / "img" / SYNSET / "obj" / "000.png", size)
    c2w = np.eye(4)
    c2w[2, 3] = 1.3
    camera = {"camera_angle_x": fov, "frames": [{"file_path": "000.png", "transform_matrix": c2w.tolist()}]}
    (tmp_path / "camera" / SYNSET).mkdir(parents=True)
    (tmp_path / "camera" / SYNSET / "obj.json").write_text(json.dumps(camera))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / f"{SYNSET}.json").write_text(json.dumps({"train": ["obj"], "val": [], "test": []}))

    assert detect_format(tmp_path) == "featurenerf_release"
    (record,) = list_objects_any(tmp_path, "train")
    focal, c = record.intrinsics.at_size(size, size)
    f = size / (2 * math.tan(fov / 2))
    assert torch.allclose(focal, torch.tensor([f, f])) and torch.allclose(c, torch.tensor([16.0, 16.0]))
    # World +x is image right, world +y (OpenGL up) is image up, i.e. smaller v.
    uv, depth = project_points(torch.tensor([[0.1, 0.05, 0.0]]), load_poses(record)[0], focal, c)
    assert torch.allclose(uv[0], torch.tensor([16 + f * 0.1 / 1.3, 16 - f * 0.05 / 1.3]), atol=1e-4)
    assert depth.item() == pytest.approx(1.3)


def test_records_and_annotations_equal_the_truth_they_were_written_from(toy_root, release_root):
    ours = {r.name: r for r in list_objects(toy_root, "train")}
    records = list_objects_any(release_root, "train")
    assert [r.name for r in records] == list(ours)[:2]
    assert [r.name for r in list_objects_any(release_root, "val")] == [records[0].name]
    meta = ann.read_meta(release_root)
    assert (meta.near, meta.far, meta.background) == (0.8, 1.8, "black")
    truth_meta = ann.read_meta(toy_root)
    assert len(meta.keypoint_names) <= len(truth_meta.keypoint_names)
    for rec in records:
        mine = ours[rec.name]
        assert torch.allclose(load_poses(rec), load_poses(mine), atol=1e-5)
        assert torch.allclose(rec.intrinsics.at_size(32, 32)[0], mine.intrinsics.at_size(32, 32)[0])
        xyz, labels = ann.load_points(rec)
        assert torch.equal(labels, ann.load_points(mine)[1]) and torch.allclose(xyz, ann.load_points(mine)[0])
        assert torch.equal(ann.load_keypoint_candidates(rec), xyz)
        kp, kp_truth = ann.load_keypoints_3d(rec), ann.load_keypoints_3d(mine)[: len(meta.keypoint_names)]
        assert torch.equal(torch.isnan(kp), torch.isnan(kp_truth)) and torch.allclose(
            kp.nan_to_num(), kp_truth.nan_to_num()
        )
        for view in range(rec.num_views):
            assert torch.equal(ann.load_part_map(rec, view, 16), ann.load_part_map(mine, view, 16))
            uv, visible = ann.keypoints_2d(rec, view, 64)  # stored at 32 px, asked at 64 px
            uv_true, visible_true = ann.derive_keypoints_2d(mine, view, 64)
            n = len(meta.keypoint_names)
            assert torch.equal(visible, visible_true[:n])
            assert (
                uv[visible] - uv_true[:n][visible]
            ).abs().max() <= 1.0  # integer pixels at 32 px = 2 px at 64


def test_object_arrays_load_without_running_pickled_code(tmp_path):
    rows = object_array([np.zeros((2, 3), np.int64), np.ones((0, 3), np.int64)])
    np.savez(tmp_path / "ok.npz", labels=rows)
    assert [r.shape for r in load_npz(tmp_path / "ok.npz")["labels"]] == [(2, 3), (0, 3)]

    class Hostile:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    np.savez(tmp_path / "bad.npz", labels=object_array([Hostile()]))
    with pytest.raises(DataError, match=r"bad\.npz: unreadable array \(refusing to load shutil\.rmtree\)"):
        load_npz(tmp_path / "bad.npz")
    assert (tmp_path / "victim").is_dir()


def test_data_check_names_every_problem_once(release_root, tmp_path, capsys):
    from featurenerf.cli import main

    assert check_dataset(release_root) == []
    bad = tmp_path / "bad"
    shutil.copytree(release_root, bad)
    a, b = json.loads((bad / "splits" / f"{SYNSET}.json").read_text())["train"]
    (bad / "img" / SYNSET / a / "000003.png").unlink()  # the views of a are unknown: its annotations wait
    np.savez(bad / "part_2d_anno" / SYNSET / f"{b}.npz", labels=np.zeros((2, 32, 32), np.uint8))
    kp = load_npz(bad / "kp_3d_anno" / SYNSET / f"{b}.npz")
    kp["labels"][0, 3] = -1
    np.savez(bad / "kp_3d_anno" / SYNSET / f"{b}.npz", **kp)
    for synset, split in (("02691156", {"train": ["x"]}), ("03001627", {"train": "oops"})):
        (bad / "camera" / synset).mkdir()
        (bad / "splits" / f"{synset}.json").write_text(json.dumps(split))
    rgba_square(bad / "img" / "02691156" / "x" / "000.png", 32)
    (bad / "camera" / "02691156" / "x.json").write_text("{not json")

    problems = check_dataset(bad)
    lines = sorted(str(p) for p in problems)
    expect = [
        ("camera/02691156/x.json", "malformed JSON"),
        (f"camera/{SYNSET}/{a}.json", "image '000003.png' not found"),
        (f"kp_3d_anno/{SYNSET}/{b}.npz", "keypoint id -1 outside"),
        (f"part_2d_anno/{SYNSET}/{b}.npz", "labels must be (V, H, W)"),
        ("splits/03001627.json", "'train' must be a list"),
    ]
    assert len(lines) == len(expect), "\\n".join(lines)
    for (path, message), line in zip(expect, lines):
        assert line.startswith(str(bad / path)) and message in line, line
    assert invalid_objects(problems) == {
        bad / "img" / "02691156" / "x",
        bad / "img" / SYNSET / a,
        bad / "img" / SYNSET / b,
    }

    assert main(["data", "check", str(bad)]) != 0
    out = capsys.readouterr()
    printed = [ln for ln in (out.out + out.err).splitlines() if str(bad) in ln]
    assert len(printed) >= len(expect)


def test_fit_one_step_and_validate_every_task_from_the_cli(release_root, tmp_path, capsys):
    from test_cli import tiny_fit_args

    from featurenerf.cli import main

    runs = tmp_path / "runs"
    args = tiny_fit_args(
        release_root, runs, "--trainer.max_steps=1", "--run_name=rel", "--data.category", SYNSET
    )
    assert main(args) == 0
    run = runs / "rel"
    pairs = release_root / "splits" / f"{SYNSET}.json"
    rc = main(
        [
            "validate",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--task",
            "part_seg",
            "keypoints",
            "novel_view",
            "--tasks.pairs_file",
            str(pairs),
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    results = json.loads((run / "tasks" / "results.json").read_text())
    tasks = {"part_seg_2d", "part_seg_3d", "keypoints_2d", "keypoints_3d", "novel_view"}
    assert set(results) == tasks | {"protocol"}
    for task in ("part_seg_2d", "part_seg_3d", "keypoints_2d", "keypoints_3d"):
        for method in ("featurenerf", "featurenerf_v", "teacher_2d"):
            values = results[task][method]
            assert values and all(v is not None and 0.0 <= v <= 1.0 for v in values.values()), (task, values)
    written = json.loads((run / "tasks" / "pairs.json").read_text())
    assert written["cross_inst_pairs"] == json.loads(pairs.read_text())["cross_inst_pairs"]
