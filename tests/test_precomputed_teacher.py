"""The ``precomputed`` teacher: maps another model wrote to disk, in our layout and the release's, joined
to the feature cache (an edited file is noticed), and distilled exactly as the model itself would be."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featurenerf.data.feature_cache import CacheError, FeatureCache
from featurenerf.data.formats import list_objects_any
from featurenerf.data.srn import DataError, load_image_and_mask
from featurenerf.teachers import Teacher, build_teacher, register_teacher
from featurenerf.teachers.precomputed import write_features


@register_teacher("test_conv4")
class Conv4(Teacher):
    """A fixed random 4x4/stride-4 convolution, 6 channels: a cheap stand-in for an external model."""

    def __init__(self) -> None:
        super().__init__()
        # Weights from a private generator: building the teacher must not move the global RNG, or the
        # model it is compared with would start from other weights.
        gen = torch.Generator().manual_seed(7)
        self.register_buffer("weight", torch.randn(6, 3, 4, 4, generator=gen))
        self.register_buffer("bias", torch.randn(6, generator=gen))

    feature_dim = property(lambda self: 6)
    stride = property(lambda self: 4)
    input_size = property(lambda self: 32)
    mean = property(lambda self: (0.5, 0.5, 0.5))
    std = property(lambda self: (0.5, 0.5, 0.5))
    weights_source = property(lambda self: "seeded random init")

    def cache_fields(self) -> dict:
        return {"seed": 7}

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.conv2d(images, self.weight, self.bias, stride=4))


def export(records, folder: Path, size: int = 32, background: str = "white") -> Path:
    """What a user does with an external model: run it on every view and write the maps + metadata."""
    teacher = Conv4()
    for record in records:
        loaded = [load_image_and_mask(p, size, background) for p in record.rgb_paths]
        images = torch.stack([im for im, _ in loaded])
        write_features(folder, record, teacher(images, mask=torch.stack([m for _, m in loaded])))
    (folder / "features.json").write_text(json.dumps({"feature_dim": 6, "stride": 4, "input_size": 32}))
    return folder


@pytest.fixture(scope="module")
def exported(toy_root, tmp_path_factory) -> Path:
    records = [r for s in ("train", "val", "test") for r in list_objects_any(toy_root, s)]
    return export(records, tmp_path_factory.mktemp("feats"))


def test_maps_equal_the_teachers_and_an_edit_is_noticed(toy_root, exported, tmp_path):
    record = list_objects_any(toy_root, "train")[0]
    direct = FeatureCache(tmp_path / "a", Conv4(), 32)
    pre = FeatureCache(tmp_path / "b", build_teacher("precomputed", features=str(exported)), 32)
    direct.ensure([record], progress=False)
    pre.ensure([record], progress=False)
    assert torch.equal(direct.load(record, [0, 3]), pre.load(record, [0, 3]))
    assert pre.key != direct.key and pre.grid == (8, 8)

    path = exported / record.directory.parent.name / f"{record.name}.npy"
    saved = np.load(path)
    try:
        np.save(path, (saved * 0.5).astype(np.float16))
        with pytest.raises(
            CacheError, match=r"stale feature cache file \(the object's images or the teacher's own files"
        ):
            pre.load(record, [0])
        report = pre.ensure([record], progress=False)
        assert report.rebuilt == 1
        assert torch.allclose(pre.load(record, [1]), direct.load(record, [1]) * 0.5, atol=1e-3)
    finally:
        np.save(path, saved)


def test_the_release_npz_layout_and_its_refusals(toy_root, exported, tmp_path):
    record = list_objects_any(toy_root, "train")[0]
    ours = np.load(exported / record.directory.parent.name / f"{record.name}.npy")
    group = tmp_path / "dino_feat_256" / record.directory.parent.name
    group.mkdir(parents=True)
    np.savez_compressed(group / f"{record.name}.npz", feats=ours.astype(np.float32))
    teacher = build_teacher(
        "precomputed", features=str(tmp_path / "dino_feat_256"), feature_dim=6, stride=4, input_size=32
    )
    assert torch.equal(teacher.object_features(record), torch.from_numpy(ours.astype(np.float32)))

    views = np.empty((), dtype=object)
    views[()] = {0: ours[0]}
    np.savez(group / f"{record.name}.npz", feats=views)
    with pytest.raises(DataError, match="holds features of some views only"):
        teacher.object_features(record)
    np.savez(group / f"{record.name}.npz", feats=ours[:2])
    with pytest.raises(DataError, match=r"features are \(2, 6, 8, 8\), expected \(5, 6, 8, 8\)"):
        teacher.object_features(record)
    with pytest.raises(DataError, match="missing precomputed features"):
        teacher.object_features(list_objects_any(toy_root, "train")[1])
    with pytest.raises(ValueError, match="stride, input_size unknown; pass them"):
        build_teacher("precomputed", features=str(tmp_path / "dino_feat_256"), feature_dim=6)
    with pytest.raises(RuntimeError, match="cannot run on images"):
        teacher(torch.zeros(1, 3, 32, 32))


def _distilled(ckpt: Path, record) -> torch.Tensor:
    """Rendered distilled features of view 1 conditioned on view 0 of a held-out object: (H*W, C)."""
    import featurenerf
    from featurenerf.data.datasets import ObjectViews

    net = featurenerf.load(ckpt)
    views = ObjectViews(32, "white").load(record, [0, 1], with_teacher=False)
    focal, c = views["focal"][None], views["c"][None]
    with torch.no_grad():
        cond = net.encode(views["images"][None, :1], views["poses"][None, :1], focal, c)
        out = net.render_image(cond, views["poses"][None, 1], focal, c, 32, 32, outputs=("features",))
    return out["features"].reshape(-1, out["features"].shape[-1])


def test_a_run_on_precomputed_maps_distils_what_the_teacher_run_does(toy_root, exported, tmp_path):
    from test_cli import tiny_fit_args

    from featurenerf.cli import main

    runs = tmp_path / "runs"
    steps = "--trainer.max_steps=3"
    assert main(tiny_fit_args(toy_root, runs, steps, "--run_name=direct", "--data.teacher=test_conv4")) == 0
    spec = json.dumps({"name": "precomputed", "features": str(exported)})
    assert main(tiny_fit_args(toy_root, runs, steps, "--run_name=pre", f"--data.teacher={spec}")) == 0
    held_out = list_objects_any(toy_root, "test")[0]
    a = _distilled(runs / "direct" / "checkpoints" / "last.ckpt", held_out)
    b = _distilled(runs / "pre" / "checkpoints" / "last.ckpt", held_out)
    assert a.shape == (32 * 32, 6)
    cosine = F.cosine_similarity(a, b, dim=-1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.9, (cosine.mean(), cosine.min())
