"""``data.num_workers: auto``: one worker where a CPU step is slower than loading, up to eight per process on
a GPU, whose step is faster than one worker makes a batch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from featurenerf.data.workers import GPU_WORKERS, auto_workers


@pytest.mark.parametrize(
    ("device", "cpus", "processes", "expected"),
    [
        ("cpu", 1, 1, 0),  # no spare core: load in the training process
        ("cpu", 2, 1, 1),  # the toy configs' 2-core machine: as before auto
        ("cpu", 64, 1, 1),
        ("cuda", 16, 1, GPU_WORKERS),  # the H200 machine: 8 measured 0.5 % data wait
        ("cuda", 4, 1, 3),  # one CPU left for the training process
        ("cuda", 12, 4, 2),  # four DDP ranks share 12 CPUs: 3 each, one for the rank itself
        ("cuda", 2, 4, 0),
    ],
)
def test_auto_workers(device, cpus, processes, expected):
    assert auto_workers(device, cpus, processes) == expected


def _trainer(device: str, devices: int = 1):
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)),
        num_devices=devices,
        global_rank=0,
        world_size=1,
        lightning_module=None,
        global_step=0,
        accumulate_grad_batches=1,
    )


def test_auto_is_resolved_for_the_trainer_device_and_said(toy_root, monkeypatch, capsys):
    from featurenerf.data import workers
    from featurenerf.data.datamodule import FeatureNeRFData

    monkeypatch.setattr(workers, "usable_cpus", lambda: 16)
    dm = FeatureNeRFData(root=str(toy_root), teacher=None, image_size=16, num_workers="auto")
    dm.setup("fit")
    dm.trainer = _trainer("cpu")
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    assert all(v.num_workers == 1 for v in dm.val_dataloader())
    assert "data.num_workers auto: 1 (cpu trainer, 16 CPUs)" in capsys.readouterr().err
    dm.trainer = _trainer("cuda", devices=2)
    assert dm.train_dataloader().num_workers == 7  # 16 CPUs / 2 ranks, one left for each rank
    assert "data.num_workers auto: 7 (cuda trainer, 16 CPUs)" in capsys.readouterr().err
    dm.trainer = None
    assert dm.train_dataloader().num_workers == 1
    assert "(no trainer attached: as on a CPU, 16 CPUs)" in capsys.readouterr().err
    fixed = FeatureNeRFData(root=str(toy_root), teacher=None, image_size=16, num_workers=3)
    fixed.setup("fit")
    fixed.trainer = _trainer("cuda")
    assert fixed.train_dataloader().num_workers == 3  # a number is taken as it is


def test_toy_configs_ask_for_auto_and_it_parses(capsys):
    import yaml

    from featurenerf.lightning_cli import run_lightning

    for name in ("toy_cars", "toy_chairs"):
        assert yaml.safe_load(Path(f"configs/{name}.yaml").read_text())["data"]["num_workers"] == "auto"
    try:
        rc = run_lightning("fit", ["--config", "configs/toy_cars.yaml", "--print_config"])
    except SystemExit as done:  # --print_config exits after printing
        rc = done.code
    assert rc in (0, None) and "num_workers: auto" in capsys.readouterr().out
    rc = run_lightning("fit", ["--config", "configs/toy_cars.yaml", "--data.num_workers", "seven"])
    assert rc != 0 and "data.num_workers" in capsys.readouterr().err


def test_task_loaders_count_workers_for_the_trainer(toy_root, tmp_path, monkeypatch, capsys):
    """`validate --task` builds its task loaders before Lightning attaches the datamodule: `auto` must still
    see the trainer (on a GPU it would otherwise give the task loaders a CPU's single worker)."""
    from test_tasks_e2e import save_checkpoint, write_config

    from featurenerf.cli import main
    from featurenerf.data import workers

    monkeypatch.setattr(workers, "usable_cpus", lambda: 1)  # auto: 0 workers, no processes in the test
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    args = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--task", "part_seg_3d"]
    args += ["--tasks.num_pairs", "1", "--tasks.split", "train", "--data.num_workers", "auto"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "data.num_workers auto: 0 (cpu trainer, 1 CPUs)" in err
    assert "no trainer attached" not in err
