"""DDP on CPU: ``featurenerf fit --trainer.strategy ddp --trainer.devices 2`` (gloo) trains, validates and runs
a task loop end to end. Lightning's ``ddp`` strategy re-launches the command for rank 1, so the fit runs in
a subprocess. (That task metrics reduce across ranks to the single-process numbers is tested in
``test_tasks_e2e.py::test_ddp_two_ranks_give_the_single_process_numbers``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)


@pytest.fixture(scope="module")
def ddp_run(toy_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("ddp_runs")
    cmd = [
        sys.executable, "-m", "featurenerf.cli", "fit",
        "--config", str(REPO / "configs" / "toy_cars.yaml"),
        "--data.root", str(toy_root), "--data.teacher", "null", "--data.image_size", "32",
        "--data.rays_per_object", "16", "--data.batch_size", "2", "--data.num_workers", "0",
        "--data.val_objects", "1", "--data.val_views", "1",
        "--model.d_hidden", "32", "--model.encoder_layers", "2",
        "--model.n_coarse", "8", "--model.n_fine", "4", "--model.n_fine_depth", "4",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(runs), "--run_name", "ddp",
        "--task", "keypoints_3d", "--tasks.num_pairs", "2", "--tasks.split", "train",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=runs, env=env)
    return proc, runs


def test_ddp_fit_trains_validates_and_runs_tasks_on_two_ranks(ddp_run):
    proc, runs = ddp_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "MEMBER: 2/2" in log  # rank 1 joined the gloo process group
    run = runs / "ddp"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for k, v in ckpt["state_dict"].items() if k.startswith("net."))
    # Validation ran (novel-view pictures at steps 2 and 4) and the task loop wrote its reduced table.
    assert sorted(p.name for p in (run / "pictures").glob("novel_view_*.png")) == [
        "novel_view_obj0_step000002.png",
        "novel_view_obj0_step000004.png",
    ]
    results = json.loads((run / "tasks" / "results.json").read_text())
    assert "keypoints_3d" in json.dumps(results)


def test_ddp_ranks_share_one_run_folder(ddp_run):
    _, runs = ddp_run
    assert sorted(p.name for p in runs.iterdir()) == ["ddp"]
