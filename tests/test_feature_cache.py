"""FeatureCache: hit / miss, invalidation (teacher, settings, images), corruption and truncation,
reading only the requested views, atomic writes, and the ``featurenerf teachers cache`` command."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from featurenerf.data.feature_cache import CacheError, FeatureCache
from featurenerf.data.srn import list_objects, load_image_and_mask
from featurenerf.teachers import Teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


V, SIZE = 4, 16


class PoolTeacher(Teacher):
    """A cheap stand-in: 4x4 average pool of the normalised image, mapped 3 -> 6 channels."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.proj = torch.nn.Conv2d(3, 6, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(18.0).view(6, 3, 1, 1) / 10)
            self.proj.bias.zero_()
        self.calls = 0

    feature_dim = property(lambda self: 6)
    stride = property(lambda self: 4)
    input_size = property(lambda self: None)
    mean = property(lambda self: (0.5, 0.5, 0.5))
    std = property(lambda self: (0.5, 0.5, 0.5))
    weights_source = property(lambda self: "test")

    def cache_fields(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += images.shape[0]
        return self.scale * self.proj(F.avg_pool2d(images, 4))


def write_object(directory: Path, views: int, seed: int) -> None:
    """An SRN-layout object: RGBA PNGs (an opaque square on transparency), poses, intrinsics."""
    rng = np.random.default_rng(seed)
    (directory / "rgb").mkdir(parents=True)
    (directory / "pose").mkdir()
    (directory / "intrinsics.txt").write_text(f"20 {SIZE / 2} {SIZE / 2} 0\n0 0 0\n1\n{SIZE} {SIZE}\n")
    for v in range(views):
        rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
        rgba[..., :3] = rng.integers(0, 256, (SIZE, SIZE, 3))
        rgba[2:10, 4:12, 3] = 255  # object: rows 2-9, cols 4-11
        Image.fromarray(rgba, "RGBA").save(directory / "rgb" / f"{v:06d}.png")
        (directory / "pose" / f"{v:06d}.txt").write_text(" ".join(map(str, np.eye(4).flatten())))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    for i, split in enumerate(["train", "train", "val"]):
        write_object(tmp_path / "data" / f"cars_{split}" / f"obj{i}", V, seed=i)
    return tmp_path / "data"


def records(root: Path) -> list:
    return list_objects(root, "train") + list_objects(root, "val")


def make_cache(tmp_path: Path, teacher: Teacher | None = None, **kwargs: Any) -> FeatureCache:
    return FeatureCache(tmp_path / "cache", teacher or PoolTeacher(), SIZE, batch_size=3, **kwargs)


def expected_features(cache: FeatureCache, record, views) -> torch.Tensor:
    loaded = [load_image_and_mask(record.rgb_paths[v], SIZE, cache.background) for v in views]
    images = torch.stack([im for im, _ in loaded])
    masks = torch.stack([m for _, m in loaded])[:, None] if cache.mask_background else None
    return cache.teacher(images, mask=masks)


def test_miss_then_hit(tmp_path, data):
    cache = make_cache(tmp_path)
    recs = records(data)
    report = cache.ensure(recs, progress=False)
    assert (report.hit, report.built, report.rebuilt, report.views_computed) == (0, 3, 0, 3 * V)
    path = cache.path_for(recs[0])
    key = cache.teacher.cache_key()
    assert path == tmp_path / "cache" / key / "16px-white-masked" / "cars_train" / "obj0.safetensors"
    assert cache.teacher.calls == 3 * V
    again = cache.ensure(recs, progress=False)
    assert (again.hit, again.built, again.rebuilt) == (3, 0, 0)
    assert cache.teacher.calls == 3 * V  # nothing recomputed
    # float16 on disk: V x 6 x 4 x 4 halves plus a small header
    assert V * 6 * 4 * 4 * 2 < path.stat().st_size < V * 6 * 4 * 4 * 2 + 2048
    assert cache.size_on_disk() == sum(cache.path_for(r).stat().st_size for r in recs)


def test_load_returns_the_chosen_views(tmp_path, data):
    cache = make_cache(tmp_path)
    rec = records(data)[1]
    cache.ensure([rec], progress=False)
    got = cache.load(rec, [3, 1])
    assert got.dtype == torch.float32 and got.shape == (2, 6, 4, 4)
    torch.testing.assert_close(got, expected_features(cache, rec, [3, 1]), rtol=1e-3, atol=1e-3)
    # Background cells are zero. The object covers pixel rows 2-9 and cols 4-11; a 4x4 cell is kept when
    # at least half its pixels are object: cell rows 0 (2 of 4 rows), 1 (all) and 2 (2 of 4), cell cols
    # 1 and 2 (all); cell row 3 and cols 0 and 3 are background.
    fg = torch.zeros(4, 4, dtype=torch.bool)
    fg[0:3, 1:3] = True
    assert torch.equal(got[0].abs().sum(0) > 0, fg)
    with pytest.raises(IndexError, match="view 4 out of range"):
        cache.load(rec, [4])


def test_unmasked_cache_keeps_background_and_lives_elsewhere(tmp_path, data):
    rec = records(data)[0]
    masked, unmasked = make_cache(tmp_path), make_cache(tmp_path, mask_background=False)
    assert masked.directory != unmasked.directory
    unmasked.ensure([rec], progress=False)
    assert (unmasked.load(rec, [0])[0].abs().sum(0) > 0).all()
    with pytest.raises(CacheError, match="missing feature cache file"):
        masked.load(rec, [0])


def test_teacher_or_settings_change_uses_another_folder(tmp_path, data):
    recs = records(data)
    first = make_cache(tmp_path)
    first.ensure(recs, progress=False)
    changed = make_cache(tmp_path, PoolTeacher(scale=2.0))
    black = make_cache(tmp_path, background="black")
    assert len({first.directory, changed.directory, black.directory}) == 3
    report = changed.ensure(recs, progress=False)
    assert report.built == 3 and report.hit == 0
    torch.testing.assert_close(changed.load(recs[0], [0]), 2 * first.load(recs[0], [0]), rtol=1e-3, atol=1e-3)
    # A file copied under the wrong key is stale, not silently used.
    target = changed.path_for(recs[1])
    shutil.copy(first.path_for(recs[1]), target)
    with pytest.raises(CacheError, match="stale feature cache file \\(made by pool"):
        changed.load(recs[1], [0])
    assert changed.ensure(recs, progress=False).rebuilt == 1


def test_changed_image_makes_the_file_stale(tmp_path, data):
    cache = make_cache(tmp_path)
    recs = records(data)
    cache.ensure(recs, progress=False)
    rec = recs[2]
    before = cache.load(rec, [2])
    rgba = np.asarray(Image.open(rec.rgb_paths[2])).copy()
    rgba[..., :3] = 255 - rgba[..., :3]
    Image.fromarray(rgba, "RGBA").save(rec.rgb_paths[2])
    with pytest.raises(CacheError, match="stale feature cache file \\(the object's images changed\\)"):
        cache.load(rec, [0])
    report = cache.ensure(recs, progress=False)
    assert (report.hit, report.rebuilt) == (2, 1)
    assert "images changed" in report.reasons[str(cache.path_for(rec))]
    after = cache.load(rec, [2])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected_features(cache, rec, [2]), rtol=1e-3, atol=1e-3)


def test_flipped_byte_is_caught_per_view_and_rebuilt(tmp_path, data):
    cache = make_cache(tmp_path)
    rec = records(data)[0]
    cache.ensure([rec], progress=False)
    path = cache.path_for(rec)
    good = cache.load(rec, range(V))
    raw = bytearray(path.read_bytes())
    view_bytes = 6 * 4 * 4 * 2
    raw[len(raw) - (V - 1) * view_bytes - 7] ^= 0xFF  # inside view 0 (data is the file's tail)
    path.write_bytes(bytes(raw))
    # Only the requested views are read and checked: views 1-3 are intact.
    torch.testing.assert_close(cache.load(rec, [1, 2, 3]), good[1:])
    with pytest.raises(CacheError, match="checksum mismatch in view 0"):
        cache.load(rec, [0])
    report = cache.ensure([rec], progress=False)
    assert report.rebuilt == 1 and "checksum mismatch in view 0" in report.reasons[str(path)]
    torch.testing.assert_close(cache.load(rec, range(V)), good)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_truncated_or_garbage_file_is_corrupt(tmp_path, data, damage):
    cache = make_cache(tmp_path)
    rec = records(data)[0]
    cache.ensure([rec], progress=False)
    path = cache.path_for(rec)
    raw = path.read_bytes()
    path.write_bytes(
        {"truncate": raw[: len(raw) - 100], "garbage": b"\x00" * 64 + raw[64:], "empty": b""}[damage]
    )
    with pytest.raises(CacheError, match=r"obj0\.safetensors: corrupt feature cache file"):
        cache.load(rec, [0])
    assert cache.ensure([rec], progress=False).rebuilt == 1
    assert cache.load(rec, [0]).shape == (1, 6, 4, 4)


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path, data, monkeypatch):
    import safetensors.torch

    cache = make_cache(tmp_path)
    rec = records(data)[0]
    cache.ensure([rec], progress=False)
    path = cache.path_for(rec)
    before = path.read_bytes()

    def dying_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cache.build(rec)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    other = records(data)[1]
    with pytest.raises(KeyboardInterrupt):
        cache.build(other)
    assert not cache.path_for(other).exists()


def test_cache_command_on_a_generated_toy_set(toy_root, tmp_path, capsys):
    from featurenerf.commands.teachers import main

    args = ["cache", "--teacher", "hed_vgg16", "--data", str(toy_root), "--size", "32", "--quiet"]
    args += ["--cache-dir", str(tmp_path / "features"), "--threads", "1", "--set", "input_size=null"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 objects, 30 views at 32px" in out and "0 hit, 6 built, 0 rebuilt" in out
    assert "cache size on disk:" in out
    files = sorted((tmp_path / "features").rglob("*.safetensors"))
    assert len(files) == 6
    # input_size=null: the teacher keeps the 32-px images -> 768 x 4 x 4 float16, 5 views per object.
    assert all(5 * 768 * 4 * 4 * 2 < f.stat().st_size < 5 * 768 * 4 * 4 * 2 + 2048 for f in files)
    assert main(args) == 0
    assert "6 hit, 0 built, 0 rebuilt" in capsys.readouterr().out
    assert main(["cache", "--teacher", "hed_vgg16", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
