"""The synthetic generator: determinism, layout, splits, colour independence, annotation consistency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featurenerf.data.synth.generate as generate_mod
from featurenerf.data.annotations import derive_keypoints_2d, load_part_map, load_points, read_meta
from featurenerf.data.srn import DataError, list_objects, load_poses
from featurenerf.data.synth import (
    KEYPOINT_NAMES,
    KEYPOINT_PARTS,
    PART_NAMES,
    assign_splits,
    generate_dataset,
    make_shape,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def chair_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chair")
    return generate_dataset("toychair", out, objects=6, views=6, size=48, seed=3, progress=False)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = generate_dataset("toycar", tmp_path / "a", objects=3, views=3, size=32, seed=5, progress=False)
    b = generate_dataset("toycar", tmp_path / "b", objects=3, views=3, size=32, seed=5, progress=False)
    c = generate_dataset("toycar", tmp_path / "c", objects=3, views=3, size=32, seed=6, progress=False)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb
    rgb = [k for k in fa if "/rgb/" in k]
    assert len(rgb) == 9
    # Same seed but another seed: split, shapes and cameras all change; no rgb file can match.
    assert not set(fa.items()) & {(k, v) for k, v in fc.items() if "/rgb/" in k or "/pose/" in k}


def test_meta_and_layout_exactly_as_specified(toy_root):
    meta = json.loads((toy_root / "meta.json").read_text())
    assert meta == {
        "category": "toycar",
        "part_names": list(PART_NAMES["toycar"]),
        "keypoint_names": list(KEYPOINT_NAMES["toycar"]),
        "near": 0.8,
        "far": 1.8,
        "background": "white",
    }
    assert PART_NAMES["toycar"][0] == "background" and len(KEYPOINT_NAMES["toycar"]) >= 8
    assert sorted(p.name for p in toy_root.iterdir()) == [
        "meta.json",
        "synth.json",
        "toycar_test",
        "toycar_train",
        "toycar_val",
    ]
    names = [f"{v:06d}" for v in range(5)]
    for obj in toy_root.glob("toycar_*/*"):
        assert sorted(p.name for p in obj.iterdir()) == [
            "intrinsics.txt",
            "keypoints.json",
            "parts",
            "points.npz",
            "pose",
            "rgb",
        ]
        assert [p.stem for p in sorted((obj / "rgb").iterdir())] == names
        assert [p.name for p in sorted((obj / "pose").iterdir())] == [f"{n}.txt" for n in names]
        assert [p.name for p in sorted((obj / "parts").iterdir())] == [f"{n}.png" for n in names]
        lines = (obj / "intrinsics.txt").read_text().splitlines()
        f, cx, cy, zero = (float(x) for x in lines[0].split())
        assert (f, cx, cy, zero) == (525 / 512 * 32, 16.0, 16.0, 0.0)
        assert lines[-1].split() == ["32", "32"]
        kp = json.loads((obj / "keypoints.json").read_text())
        assert list(kp) == ["xyz"] and len(kp["xyz"]) == len(KEYPOINT_NAMES["toycar"])
        with np.load(obj / "points.npz") as z:
            assert z["xyz"].dtype == np.float32 and z["xyz"].shape[1] == 3
            assert 2000 <= len(z["xyz"]) <= 4000 and z["labels"].shape == (len(z["xyz"]),)
            assert set(np.unique(z["labels"])) == {1, 2, 3, 4}
            assert np.abs(z["xyz"]).max() < 0.5  # inside the near/far shell of cameras at radius 1.3


def test_rgba_alpha_is_object_mask_and_background_white(toy_root):
    record = list_objects(toy_root, "train")[0]
    for v in range(record.num_views):
        rgba = np.asarray(Image.open(record.rgb_paths[v]))
        assert rgba.shape == (32, 32, 4)
        parts = load_part_map(record, v).numpy()
        assert set(np.unique(rgba[..., 3])) == {0, 255}
        np.testing.assert_array_equal(rgba[..., 3] > 0, parts > 0)
        assert (rgba[parts == 0, :3] == 255).all()
        assert (rgba[parts > 0, :3] < 255).any(axis=-1).all()  # object colours are never pure white


def test_cameras_opencv_on_sphere_looking_at_origin(toy_root):
    for record in list_objects(toy_root, "train"):
        poses = load_poses(record).double()
        rot, t = poses[:, :3, :3], poses[:, :3, 3]
        torch.testing.assert_close(
            rot.transpose(1, 2) @ rot, torch.eye(3).expand(5, 3, 3).double(), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(torch.det(rot), torch.ones(5).double(), atol=1e-6, rtol=0)
        torch.testing.assert_close(t.norm(dim=1), torch.full((5,), 1.3).double(), atol=1e-6, rtol=0)
        torch.testing.assert_close(rot[:, :, 2], -t / t.norm(dim=1, keepdim=True), atol=1e-6, rtol=0)
        assert (rot[:, 2, 0].abs() < 1e-6).all()  # image x is horizontal (world up = +z)
        assert (rot[:, 2, 1] < 0).all()  # image down points to world -z (cameras above the horizon)
        assert (t[:, 2] > 0).all()  # car cameras on the upper hemisphere


def test_view_k_is_one_camera_for_every_object_of_a_split(toy_root, chair_root):
    for root, category in ((toy_root, "toycar"), (chair_root, "toychair")):
        per_split = {}
        for split in ("train", "val", "test"):
            records = list_objects(root, split)
            first = load_poses(records[0])
            for record in records[1:]:
                # The very same floats were written for every object of the split.
                assert torch.equal(load_poses(record), first), (category, split, record.name)
            # The views of one set are distinct cameras (not one pose repeated).
            centres = first[:, :3, 3]
            assert (torch.cdist(centres, centres) + torch.eye(len(centres))).min() > 1e-3
            per_split[split] = first
        # Each split has its own set: held-out views are viewpoints never seen in training.
        assert not torch.allclose(per_split["train"], per_split["test"])
        assert not torch.allclose(per_split["val"], per_split["test"])
    assert len(list_objects(toy_root, "train")) >= 2  # the check above compared objects


def test_split_cameras_deterministic_and_independent_of_object_count():
    a = generate_mod.split_cameras("toycar", "test", 7, seed=3)
    np.testing.assert_array_equal(a, generate_mod.split_cameras("toycar", "test", 7, seed=3))
    assert not np.allclose(a, generate_mod.split_cameras("toycar", "test", 7, seed=4))
    assert not np.allclose(a, generate_mod.split_cameras("toycar", "train", 7, seed=3))
    # The same seed with more objects keeps the cameras: each split's set is drawn alone.
    small = {split: generate_mod.split_cameras("toycar", split, 7, 3) for split in ("train", "val", "test")}
    assert all(np.array_equal(small[k], generate_mod.split_cameras("toycar", k, 7, 3)) for k in small)


def test_split_by_object(toy_root):
    expected = assign_splits(6, 0, (0.7, 0.1, 0.2))
    assert sorted(expected) == ["test", "train", "train", "train", "train", "val"]
    seen = {}
    for split in ("train", "val", "test"):
        for record in list_objects(toy_root, split):
            assert record.name not in seen
            seen[record.name] = split
    assert seen == {f"obj{i:04d}": s for i, s in enumerate(expected)}
    for n in range(3, 12):
        assert set(assign_splits(n, 1, (0.7, 0.1, 0.2))) == {"train", "val", "test"}


def test_part_colour_is_independent_of_part_identity():
    for category in ("toycar", "toychair"):
        colours = {}  # label -> (objects, 3)
        for i in range(40):
            shape = make_shape(category, np.random.default_rng([11, i]))
            for label in {p.label for p in shape.primitives}:
                colours.setdefault(label, []).append(
                    next(p.colour for p in shape.primitives if p.label == label)
                )
        means = []
        for label, cs in colours.items():
            cs = np.array(cs)
            assert cs.std(axis=0).min() > 0.1, (category, label)  # each part takes many colours
            means.append(cs.mean(axis=0))
        means = np.array(means)
        assert np.abs(means - means.mean(axis=0)).max() < 0.15  # no part is tinted on average


def test_keypoints_lie_on_the_surface_of_their_part():
    for category in ("toycar", "toychair"):
        for i in range(10):
            shape = make_shape(category, np.random.default_rng([2, i]))
            for name, part, kp in zip(KEYPOINT_NAMES[category], KEYPOINT_PARTS[category], shape.keypoints):
                if np.isnan(kp).any():
                    assert name.startswith("arm")
                    continue
                label = PART_NAMES[category].index(part)
                on = [
                    p.contains(kp[None], margin=-1e-6)[0] and not p.contains(kp[None], margin=1e-6)[0]
                    for p in shape.primitives
                    if p.label == label
                ]
                buried = [p.contains(kp[None], margin=1e-6)[0] for p in shape.primitives]
                assert any(on) and not any(buried), (category, i, name)


def _check_visible_keypoints_land_on_their_part(root: Path, category: str, size: int) -> tuple[int, int]:
    meta = read_meta(root)
    part_of_kp = torch.tensor([meta.part_names.index(p) for p in KEYPOINT_PARTS[category]])
    n_visible = n_total = 0
    for split in ("train", "val", "test"):
        for record in list_objects(root, split):
            for v in range(record.num_views):
                uv, visible = derive_keypoints_2d(record, v, size)
                parts = load_part_map(record, v, size)
                ij = uv[visible].floor().long()
                landed = parts[ij[:, 1], ij[:, 0]]
                assert torch.equal(landed, part_of_kp[visible]), (record.name, v)
                n_visible += int(visible.sum())
                n_total += len(visible)
    return n_visible, n_total


def test_visible_keypoints_land_on_their_part_car(toy_root):
    visible, total = _check_visible_keypoints_land_on_their_part(toy_root, "toycar", 32)
    assert 0.3 * total < visible < 0.9 * total  # occlusion does happen, and most are found


def test_visible_keypoints_land_on_their_part_chair(chair_root):
    visible, total = _check_visible_keypoints_land_on_their_part(chair_root, "toychair", 48)
    assert 0.3 * total < visible < 0.9 * total


def test_missing_arm_keypoints_are_null_and_never_visible(chair_root):
    armless = 0
    for split in ("train", "val", "test"):
        for record in list_objects(chair_root, split):
            rows = json.loads((record.directory / "keypoints.json").read_text())["xyz"]
            has_arm = (load_points(record)[1] == 4).any().item()
            assert (rows[10] is None) == (not has_arm) and (rows[11] is None) == (not has_arm)
            if not has_arm:
                armless += 1
                uv, visible = derive_keypoints_2d(record, 0, 48)
                assert not visible[10:].any() and torch.isnan(uv[10:]).all()
    assert armless >= 1


def test_rerun_is_noop_and_other_settings_refused(tmp_path):
    root = generate_dataset("toychair", tmp_path / "d", objects=3, views=2, size=16, seed=0, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    generate_dataset("toychair", root, objects=3, views=2, size=16, seed=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    with pytest.raises(DataError, match="different settings"):
        generate_dataset("toychair", root, objects=3, views=2, size=16, seed=1, progress=False)


def test_killed_run_leaves_no_partial_object_and_resumes(tmp_path, monkeypatch):
    real = generate_mod.render_object

    def dies_on_second(category, index, *args):  # args: views, size, seed, split, out_dir
        if index == 1:
            real(category, index, *args)  # the files are all there, but the folder is never renamed
            raise KeyboardInterrupt
        real(category, index, *args)

    monkeypatch.setattr(generate_mod, "render_object", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset("toycar", tmp_path / "r", objects=3, views=2, size=16, seed=4, progress=False)
    assert sorted(p.name for p in (tmp_path / "r").glob("toycar_*/*")) == ["obj0000"]
    monkeypatch.setattr(generate_mod, "render_object", real)
    resumed = generate_dataset("toycar", tmp_path / "r", objects=3, views=2, size=16, seed=4, progress=False)
    fresh = generate_dataset("toycar", tmp_path / "f", objects=3, views=2, size=16, seed=4, progress=False)
    assert _files(resumed) == _files(fresh)


def test_command_line_writes_dataset_and_reports_errors(tmp_path, capsys):
    from featurenerf.commands.data import main

    out = tmp_path / "cli"
    args = ["synth", "--category", "toychair", "--out", str(out), "--objects", "3", "--views", "2"]
    assert main([*args, "--size", "16", "--seed", "2", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert read_meta(out).category == "toychair" and len(list(out.glob("toychair_*/*"))) == 3
    assert main([*args, "--size", "24", "--seed", "2", "--quiet"]) == 1  # other settings, same folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different settings" in err[0]
    assert main(["check", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 3 objects, 6 views"


def test_a_dataset_from_an_older_generator_is_named_and_refused_by_synth_prepare_and_demo(tmp_path, capsys):
    from featurenerf.demo import run_demo
    from featurenerf.results.prepare import synth_if_missing

    root = generate_dataset("toycar", tmp_path / "cars", objects=2, views=2, size=16, seed=0, progress=False)
    assert generate_mod.stale_dataset(root) is None and generate_mod.stale_dataset(tmp_path) is None
    record = json.loads((root / "synth.json").read_text())
    (root / "synth.json").write_text(json.dumps({**record, "version": 1}))  # per-object cameras
    why = generate_mod.stale_dataset(root)
    assert why is not None and str(root / "synth.json") in why and "version 1" in why and "\n" not in why
    with pytest.raises(DataError, match="version 1"):
        generate_dataset("toycar", root, objects=2, views=2, size=16, seed=0, progress=False)
    assert synth_if_missing("toycar", root, objects=2, views=2, size=16) == 2
    assert run_demo(tmp_path / "out", root, Path("configs/toy_cars.yaml")) == 2  # before any training
    err = capsys.readouterr().err
    assert err.count("made by data synth version 1") == 2 and not (tmp_path / "out" / "run.json").exists()


def test_a_front_back_toy_car_front_differs_from_its_back_and_the_style_is_recorded(tmp_path):
    """``style: front_back``: the hood is lower than the rear body and the cabin sits behind the middle,
    for every car, so a view and its half-turned opposite never show the same silhouette (L_coord needs
    the pose to be readable). The default style is the box car, and only a non-default style is recorded
    in synth.json (datasets made before styles existed keep matching)."""
    from featurenerf.data.synth.shapes import PART_NAMES, make_shape, shape_styles

    assert shape_styles("toycar") == ("box", "front_back")
    body, cabin = PART_NAMES["toycar"].index("body"), PART_NAMES["toycar"].index("cabin")
    box = make_shape("toycar", np.random.default_rng(0))
    assert sum(p.label == body for p in box.primitives) == 1  # the default: one body box
    with pytest.raises(ValueError, match="shape style"):
        make_shape("toychair", np.random.default_rng(0), "front_back")
    kw = dict(objects=1, views=1, size=8, seed=0, progress=False)
    default = generate_dataset("toycar", tmp_path / "box", **kw)
    assert "style" not in json.loads((default / "synth.json").read_text())
    styled = generate_dataset("toycar", tmp_path / "fb", style="front_back", **kw)
    assert json.loads((styled / "synth.json").read_text())["style"] == "front_back"
    for i in range(20):
        shape = make_shape("toycar", np.random.default_rng(i), "front_back")
        bodies = sorted((p for p in shape.primitives if p.label == body), key=lambda p: p.centre[0])
        (rear, hood), cab = bodies, next(p for p in shape.primitives if p.label == cabin)
        top = lambda box: box.centre + box.half  # noqa: E731
        assert top(hood)[2] < top(rear)[2] - 0.02 and top(hood)[0] > top(rear)[0]
        assert cab.centre[0] < -0.03


def test_per_object_train_cameras_vary_the_training_views_and_keep_the_eval_sets_shared(tmp_path):
    """``--train-cameras per_object``: each training object draws its own views (as SRN's training set
    does); val and test objects keep their split's shared set, identical to the default's, so the
    held-out objects and their cross-instance pairs do not change."""
    from featurenerf.commands.data import main

    kw = dict(objects=8, views=3, size=16, seed=1, split_fractions=(0.5, 0.25, 0.25), progress=False)
    shared = generate_dataset("toycar", tmp_path / "shared", **kw)
    own = generate_dataset("toycar", tmp_path / "own", train_cameras="per_object", **kw)
    assert json.loads((own / "synth.json").read_text())["cameras"] == "per_object_train_shared_eval"

    def poses(root, split):
        return {r.name: load_poses(r) for r in list_objects(root, split)}

    train = poses(own, "train")
    assert len(train) >= 2
    first, *others = train.values()
    assert all(not torch.allclose(first, other) for other in others)  # every object its own cameras
    for split in ("val", "test"):
        a, b = poses(own, split), poses(shared, split)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(p, next(iter(a.values()))) for p in a.values())
    # The training shapes are the same objects either way: only their cameras moved.
    for r in list_objects(own, "train"):
        assert (r.directory / "keypoints.json").read_text() == (
            shared / r.directory.parent.name / r.name / "keypoints.json"
        ).read_text()
    with pytest.raises(DataError, match="different settings"):
        generate_dataset("toycar", own, **kw)  # the default cameras into the per-object folder
    with pytest.raises(ValueError, match="train_cameras"):
        generate_dataset("toycar", tmp_path / "bad", train_cameras="orbit", **kw)
    args = [
        "synth",
        "--category",
        "toychair",
        "--out",
        str(tmp_path / "cli"),
        "--objects",
        "2",
        "--views",
        "1",
    ]
    assert main([*args, "--size", "8", "--train-cameras", "per_object", "--quiet"]) == 0
    assert "per_object" in (tmp_path / "cli" / "synth.json").read_text()
