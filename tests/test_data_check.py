"""``featurenerf data check``: clean data passes; each kind of damage is reported at the damaged file only."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurenerf.commands.data import main as data_main
from featurenerf.data.check import Problem, check_dataset, invalid_objects
from featurenerf.data.synth import generate_dataset


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("check")
    return generate_dataset("toychair", out, objects=4, views=4, size=32, seed=1, progress=False)


@pytest.fixture
def root(clean_root, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(clean_root, copy)
    return copy


def test_clean_dataset_passes(clean_root, capsys):
    assert check_dataset(clean_root) == []
    assert data_main(["check", str(clean_root)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 4 objects, 16 views"


# Each corruption damages one file (chosen at random) and returns the path the report must name.
def _truncate_png(obj: Path, rng: random.Random) -> Path:
    path = rng.choice(sorted((obj / "rgb").glob("*.png")))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garble_pose(obj: Path, rng: random.Random) -> Path:
    path = rng.choice(sorted((obj / "pose").glob("*.txt")))
    path.write_text(path.read_text().replace(" ", " x", 1))
    return path


def _short_pose(obj: Path, rng: random.Random) -> Path:
    path = rng.choice(sorted((obj / "pose").glob("*.txt")))
    path.write_text(" ".join(path.read_text().split()[:12]))
    return path


def _delete_pose(obj: Path, rng: random.Random) -> Path:
    path = rng.choice(sorted((obj / "pose").glob("*.txt")))
    path.unlink()
    return path


def _skew_pose(obj: Path, rng: random.Random) -> Path:
    path = rng.choice(sorted((obj / "pose").glob("*.txt")))
    m = np.array([float(t) for t in path.read_text().split()]).reshape(4, 4)
    m[:3, 0] *= 1.05  # a scaled axis: no longer orthonormal
    path.write_text(" ".join(f"{v:.9g}" for v in m.reshape(-1)))
    return path


def _bad_intrinsics(obj: Path, rng: random.Random) -> Path:
    path = obj / "intrinsics.txt"
    path.write_text(rng.choice(["f cx cy 0\n32 32\n", "42.0 16 16 0\n", ""]))
    return path


def _bad_label(obj: Path, rng: random.Random) -> Path:
    path = rng.choice(sorted((obj / "parts").glob("*.png")))
    labels = np.asarray(Image.open(path)).copy()
    labels[rng.randrange(32), rng.randrange(32)] = 9  # part_names has 5 entries
    Image.fromarray(labels).save(path)
    return path


def _bad_keypoints(obj: Path, rng: random.Random) -> Path:
    path = obj / "keypoints.json"
    rows = json.loads(path.read_text())["xyz"]
    broken = rng.choice([rows[:-1], [[1.0, 2.0]] + rows[1:], ["a"] + rows[1:]])
    path.write_text(json.dumps({"xyz": broken}))
    return path


def _bad_points(obj: Path, rng: random.Random) -> Path:
    path = obj / "points.npz"
    with np.load(path) as z:
        xyz, labels = z["xyz"].copy(), z["labels"]
    choice = rng.randrange(3)
    if choice == 0:
        xyz[0, 0] = np.nan
        np.savez(path, xyz=xyz, labels=labels)
    elif choice == 1:
        np.savez(path, xyz=xyz)
    else:
        np.savez(path, xyz=xyz[:, :2], labels=labels)
    return path


CORRUPTIONS = [
    _truncate_png,
    _garble_pose,
    _short_pose,
    _delete_pose,
    _skew_pose,
    _bad_intrinsics,
    _bad_label,
    _bad_keypoints,
    _bad_points,
]


@pytest.mark.parametrize("seed", range(6))
def test_report_names_each_damaged_file_and_nothing_else(root, seed):
    rng = random.Random(seed)
    objects = sorted(root.glob("toychair_*/*"))
    # Damage up to 4 distinct objects, one corruption each (a broken intrinsics.txt would mask size checks
    # of other damage in the same object, which is the checker's intent, so objects are not shared).
    picks = rng.sample(objects, k=min(4, len(objects)))
    kinds = rng.sample(CORRUPTIONS, k=len(picks))
    damaged = {kind(obj, rng) for obj, kind in zip(picks, kinds)}
    problems = check_dataset(root)
    assert {p.path for p in problems} == damaged, [str(p) for p in problems]
    assert invalid_objects(problems) == set(picks)
    assert data_main(["check", str(root)]) == 1


def test_every_corruption_kind_is_caught(root):
    objects = sorted(root.glob("toychair_*/*"))
    rng = random.Random(0)
    for kind in CORRUPTIONS:
        target = root.parent / f"one_{kind.__name__}"
        shutil.copytree(root, target)
        obj = target / objects[0].relative_to(root)
        path = kind(obj, rng)
        problems = check_dataset(target)
        assert [p.path for p in problems] == [path], (kind.__name__, [str(p) for p in problems])


def test_structural_problems(tmp_path, root):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [str(p) for p in check_dataset(empty)] == [f"{empty}: no <category>_{{train,val,test}} folders"]
    (root / "toychair_extra_val").mkdir()  # an extra split folder with no objects
    (root / "meta.json").unlink()  # annotations exist, so meta.json is required
    problems = check_dataset(root)
    assert {p.path for p in problems} == {root / "toychair_extra_val", root / "meta.json"}
    assert invalid_objects(problems) == set()
    assert str(Problem(Path("a/b.png"), "bad")) == "a/b.png: bad"


def test_wrong_image_size_and_orphans(root):
    obj = sorted(root.glob("toychair_train/*"))[0]
    Image.new("RGBA", (16, 16)).save(obj / "rgb" / "000001.png")
    (obj / "pose" / "000099.txt").write_text(" ".join(["1", "0", "0", "0"] * 4))
    problems = {p.path: p.message for p in check_dataset(root)}
    assert set(problems) == {obj / "rgb" / "000001.png", obj / "pose" / "000099.txt"}
    assert "16x16" in problems[obj / "rgb" / "000001.png"]
    assert "without image" in problems[obj / "pose" / "000099.txt"]


def test_prepare_data_then_setup_reads_the_dataset_once(toy_root, monkeypatch):
    """The check reads every file: a process that ran it in prepare_data does not run it again in setup
    (a rank that skipped prepare_data still checks in setup)."""
    from featurenerf.data import check as check_module
    from featurenerf.data.datamodule import FeatureNeRFData

    calls = []
    real = check_module.check_dataset
    monkeypatch.setattr(
        check_module, "check_dataset", lambda root, *a, **k: calls.append(root) or real(root, *a, **k)
    )
    dm = FeatureNeRFData(root=str(toy_root), image_size=16, teacher=None, val_objects=1)
    dm.prepare_data()
    dm.setup("fit")
    assert len(calls) == 1
    other_rank = FeatureNeRFData(root=str(toy_root), image_size=16, teacher=None, val_objects=1)
    other_rank.setup("fit")
    assert len(calls) == 2
