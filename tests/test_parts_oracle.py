"""The diagnostic ``parts_oracle`` teacher: soft part fractions by hand, refusals, and the feature cache
(it is told each image's (object, view); editing a part map makes its cached maps stale)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from featurenerf.data.annotations import load_part_map
from featurenerf.data.feature_cache import CacheError, FeatureCache
from featurenerf.data.srn import DataError, Intrinsics, ObjectRecord, list_objects
from featurenerf.errors import ConfigError
from featurenerf.teachers import TEACHERS, ViewSource, build_teacher


def _object(tmp_path: Path, labels: np.ndarray) -> ObjectRecord:
    """One object with one view: a grey RGBA image and the part label map ``labels``."""
    obj = tmp_path / "cars_test" / "obj"
    (obj / "rgb").mkdir(parents=True)
    (obj / "parts").mkdir()
    h, w = labels.shape
    rgba = np.full((h, w, 4), 128, np.uint8)
    rgba[..., 3] = np.where(labels > 0, 255, 0)
    Image.fromarray(rgba).save(obj / "rgb" / "000000.png")
    Image.fromarray(labels.astype(np.uint8)).save(obj / "parts" / "000000.png")
    paths = (obj / "rgb" / "000000.png",)
    return ObjectRecord("obj", "test", obj, paths, paths, Intrinsics(16.0, 16.0, 8.0, 8.0, h, w))


def test_soft_part_fractions_by_hand(tmp_path):
    labels = np.zeros((16, 16), np.int64)
    labels[0:8, 0:8] = 1  # top-left cell: all part 1
    labels[0:8, 8:12] = 2  # top-right cell: half part 2, half background
    labels[8:16, 0:16:2] = 3  # bottom cells: every other column part 3, the rest part 4
    labels[8:16, 1:16:2] = 4
    record = _object(tmp_path, labels)
    oracle = build_teacher("parts_oracle", num_parts=5, stride=8, input_size=None)
    assert (oracle.feature_dim, oracle.stride) == (5, 8) and oracle.needs_annotations
    images = torch.rand(1, 3, 16, 16)
    got = oracle(images, source=ViewSource(record, (0,)))
    want = torch.zeros(1, 5, 2, 2)
    want[0, 1, 0, 0] = 1.0
    want[0, 2, 0, 1], want[0, 0, 0, 1] = 0.5, 0.5
    want[0, 3, 1, :], want[0, 4, 1, :] = 0.5, 0.5
    torch.testing.assert_close(got, want)
    # The pixels do not matter, only the annotations of the named view.
    torch.testing.assert_close(oracle(torch.zeros(1, 3, 16, 16), source=ViewSource(record, (0,))), want)
    # With the object mask, cells less than half object are zeroed like every teacher's background.
    masked = oracle(images, mask=torch.from_numpy(labels > 0)[None], source=ViewSource(record, (0,)))
    torch.testing.assert_close(masked, want)  # every cell here is at least half object


def test_input_size_sets_the_cell_size_like_a_real_teacher(tmp_path):
    """At input_size 32 a 16-pixel view's labels are doubled (nearest) before the stride-8 pooling, so a
    cell spans 4 image pixels: a 4x4 block of one part is exactly one pure cell."""
    labels = np.zeros((16, 16), np.int64)
    labels[0:4, 0:4] = 1
    labels[4:8, 0:2] = 2  # half of the cell below
    record = _object(tmp_path, labels)
    oracle = build_teacher("parts_oracle", num_parts=5, stride=8, input_size=32)
    assert oracle.output_size(16, 16) == (4, 4)
    got = oracle(torch.rand(1, 3, 16, 16), source=ViewSource(record, (0,)))
    assert got.shape == (1, 5, 4, 4)
    assert got[0, 1, 0, 0] == 1.0 and got[0, :, 0, 0].sum() == 1.0
    assert got[0, 2, 1, 0] == 0.5 and got[0, 0, 1, 0] == 0.5
    assert got[0, 0, 2:, :].eq(1.0).all()
    # The default is a real teacher's input (efficientnet_lite0's 160), so the cell is as fine as its.
    default = build_teacher("parts_oracle")
    assert default.output_size(64, 64) == build_teacher("efficientnet_lite0", weights=None).output_size(
        64, 64
    )
    with pytest.raises(ConfigError, match="multiple of stride 8"):
        build_teacher("parts_oracle", input_size=20)


def test_refusals_are_one_line(tmp_path):
    oracle = build_teacher("parts_oracle")
    with pytest.raises(ValueError, match="runs through the feature cache") as err:
        oracle(torch.rand(1, 3, 16, 16))
    assert "\n" not in str(err.value)
    labels = np.zeros((16, 16), np.int64)
    labels[4:12, 4:12] = 7
    record = _object(tmp_path, labels)
    with pytest.raises(DataError, match=r"part label 7 but parts_oracle has num_parts=5") as err:
        oracle(torch.rand(1, 3, 16, 16), source=ViewSource(record, (0,)))
    assert str(err.value).startswith(str(record.directory / "parts" / "000000.png"))


def test_listed_as_a_teacher_but_never_a_default():
    from featurenerf.data.datamodule import FeatureNeRFData

    assert "parts_oracle" in TEACHERS.list()
    info = TEACHERS.get("parts_oracle").describe()
    assert (info.feature_dim, info.stride, info.input_size) == (5, 8, 160)
    import inspect

    assert inspect.signature(FeatureNeRFData).parameters["teacher"].default != "parts_oracle"


def test_through_the_feature_cache(toy_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(toy_root, root)
    record = list_objects(root, "train")[0]
    cache = FeatureCache(tmp_path / "cache", build_teacher("parts_oracle", input_size=None), image_size=32)
    report = cache.ensure([record], progress=False)
    assert report.built == 1
    feats = cache.load(record, [0, 3])  # (2, 5, 4, 4) at 32 px, stride 8
    assert feats.shape == (2, 5, 4, 4)
    for i, v in enumerate((0, 3)):
        parts = load_part_map(record, v, 32)
        fractions = F.avg_pool2d(F.one_hot(parts, 5).permute(2, 0, 1).float()[None], 8)[0]
        # Cells at least half object keep their fractions (float16 on disk); the others are zeroed.
        keep = fractions[0] <= 0.5
        torch.testing.assert_close(feats[i][:, keep], fractions[:, keep], atol=1e-3, rtol=0)
        assert (feats[i][:, ~keep] == 0).all()
    # Editing a part map (not the image) makes the cached maps stale, and ensure rebuilds them.
    part_file = record.directory / "parts" / "000000.png"
    labels = np.asarray(Image.open(part_file)).copy()
    labels[labels == 1] = 2
    Image.fromarray(labels).save(part_file)
    with pytest.raises(CacheError, match="the object's images or the teacher's own files changed"):
        cache.load(record, [0])
    assert cache.ensure([record], progress=False).rebuilt == 1
    assert cache.load(record, [0])[0, 1].max() == 0  # no part 1 left in view 0
