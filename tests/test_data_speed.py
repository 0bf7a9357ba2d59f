"""Data that keeps up: per-ray teacher sampling does only each ray's own view, with unchanged values; the
data benchmark reports load time against step time."""

from __future__ import annotations

from pathlib import Path

import torch

from featurenerf.data.datasets import sample_teacher_at, sample_teacher_per_ray

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_per_ray_sampling_equals_sampling_every_view_then_picking():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(5, 7, 4, 6, generator=g)
    view = torch.tensor([3, 0, 3, 3, 1, 0, 4, 3])  # uneven groups, view 2 has no ray
    uv = torch.rand(8, 2, generator=g) * torch.tensor([24.0, 16.0])
    uv[0] = torch.tensor([0.0, 16.0])  # image corner: border padding
    old = sample_teacher_at(features, uv[None].expand(5, -1, -1), 16, 24)[view, torch.arange(8)]
    new = sample_teacher_per_ray(features, view, uv, 16, 24)
    assert new.shape == (8, 7)
    assert torch.allclose(new, old, atol=1e-6)
    one = sample_teacher_per_ray(features[:1], torch.zeros(3, dtype=torch.long), uv[:3], 16, 24)
    assert torch.allclose(one, sample_teacher_at(features[:1], uv[None, :3], 16, 24)[0], atol=1e-6)


def test_data_bench_reports_load_against_step(toy_root, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    from data_bench import bench_data

    r = bench_data(str(toy_root), "toy", teacher=None, batches=2, workers=0, cache_dir=str(tmp_path))
    b = r["breakdown_num_workers_0"]
    assert b["batches"] == 2 and b["batch_s"] > 0 and b["decode_s"] > 0 and b["teacher_cache_s"] == 0
    assert abs(b["decode_s"] + b["rays_and_collate_s"] - b["batch_s"]) < 1e-9
    w = r["wait"]
    assert w["num_workers"] == 0 and len(w["step_s_all"]) == 2 and w["step_s"] > 0
    assert r["load_vs_step"] == b["batch_s"] / w["step_s"]


def test_decoded_images_are_decoded_once_and_identical(toy_root, monkeypatch):
    """The decoded-image store returns exactly what decoding returns, decodes each view once while it fits,
    evicts least-recently-used views past its budget, and decodes every time at budget 0."""
    from featurenerf.data import datasets
    from featurenerf.data.srn import list_objects, load_image_and_mask

    record = list_objects(Path(toy_root), "train")[0]
    calls: list[str] = []

    def counting(path, size=None, background="white"):
        calls.append(str(path))
        return load_image_and_mask(path, size, background)

    monkeypatch.setattr(datasets, "load_image_and_mask", counting)
    views = datasets.ObjectViews(32, "white", image_cache_bytes=1 << 20)
    first = views.load(record, [0, 1, 0])
    again = views.load(record, [1, 0])
    assert len(calls) == 2  # views 0 and 1, once each
    for v, i in ((0, 0), (1, 1)):
        img, mask = load_image_and_mask(record.rgb_paths[v], 32, "white")
        assert torch.equal(first["images"][i], img) and torch.equal(first["masks"][i], mask)
    assert torch.equal(again["images"][1], first["images"][0])

    one_view = 32 * 32 * 3 * 4 + 32 * 32  # float32 image + bool mask
    small = datasets.ObjectViews(32, "white", image_cache_bytes=2 * one_view)
    calls.clear()
    small.load(record, [0, 1, 2])  # view 0 is evicted by view 2
    small.load(record, [2, 1, 0])
    assert calls[3:] == [str(record.rgb_paths[0])] and small.images.bytes <= 2 * one_view
    off = datasets.ObjectViews(32, "white")
    calls.clear()
    off.load(record, [0, 0])
    assert len(calls) == 2


def test_training_batches_are_pinned_only_for_a_cuda_trainer(toy_root):
    """Pinned batches let Lightning copy to the GPU without blocking; on a CPU pinning is wasted work."""
    from types import SimpleNamespace

    from featurenerf.data.datamodule import FeatureNeRFData

    dm = FeatureNeRFData(root=str(toy_root), teacher=None, image_size=16, num_workers=0)
    dm.setup("fit")
    for device, pinned in (("cpu", False), ("cuda", True)):
        trainer = SimpleNamespace(
            strategy=SimpleNamespace(root_device=torch.device(device)),
            global_rank=0,
            world_size=1,
            lightning_module=None,
            global_step=0,
            accumulate_grad_batches=1,
        )
        dm.trainer = trainer
        assert dm.train_dataloader().pin_memory is pinned
    dm.trainer = None
    assert dm.train_dataloader().pin_memory is False
