"""Logger configs (TensorBoard, CSV, wandb offline) write their files; the console stays quiet."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from featurenerf.cli import main

REPO = Path(__file__).resolve().parents[1]


def one_step_fit(root: Path, runs: Path, *configs: str) -> list[str]:
    args = ["fit", "--config", str(REPO / "configs" / "toy_cars.yaml")]
    for name in configs:
        args += ["--config", str(REPO / "configs" / "loggers" / f"{name}.yaml")]
    return [
        *args,
        f"--data.root={root}",
        "--data.teacher=null",  # no distillation: the logger is what is tested
        "--data.image_size=32",
        "--data.rays_per_object=8",
        "--data.batch_size=1",
        "--data.epoch_length=2",
        "--data.num_workers=0",
        "--trainer.max_steps=1",
        "--trainer.max_time=null",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={runs}",
        "--run_name=one",
        "--model.encoder_layers=2",
        "--model.d_hidden=16",
        "--model.n_coarse=4",
        "--model.n_fine=2",
        "--model.n_fine_depth=2",
    ]


def test_csv_logger_config_writes_metrics(toy_root, tmp_path):
    assert main(one_step_fit(toy_root, tmp_path, "csv")) == 0
    (metrics,) = (tmp_path / "one" / "csv").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert len(rows) == 1 and rows[0]["step"] == "0"
    assert float(rows[0]["train/loss"]) > 0
    assert not (tmp_path / "one" / "wandb").exists()  # the composed config replaced the wandb logger


def test_tensorboard_logger_config_writes_events(toy_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(one_step_fit(toy_root, tmp_path, "tensorboard")) == 0
    (events,) = (tmp_path / "one" / "tensorboard").glob("version_*/events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("train/loss")] == [0]


def test_wandb_offline_fit_prints_the_sync_line_and_no_tips(toy_root, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(one_step_fit(toy_root, Path("runs"))) == 0
    err = capfd.readouterr().err
    hints = [line for line in err.splitlines() if line.startswith("wandb: offline run in ")]
    assert len(hints) == 1
    run = hints[0].split("upload with: wandb sync ", 1)[1]
    assert hints[0] == f"wandb: offline run in {run}; upload with: wandb sync {run}"
    assert Path(run).is_dir() and Path(run).parent == Path("runs/one/wandb")
    assert list(Path(run).glob("*.wandb"))  # the offline log `wandb sync` uploads
    assert "💡 Tip" not in err and "LeafSpec" not in err and "args parameter is intended" not in err


def test_fit_then_validate_in_one_process_is_quiet_and_names_the_trained_step(
    toy_root, tmp_path, capfd, monkeypatch
):
    # `make demo` runs fit then validate in one process, with the wandb logger of the toy config.
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    run = Path("runs/one")
    validate = [
        "validate",
        "--config",
        str(run / "config.yaml"),
        "--ckpt_path",
        str(run / "checkpoints/last.ckpt"),
    ]
    validate += ["--task", "part_seg_2d", "--tasks.num_pairs", "1", "--tasks.split", "train"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the suite's config hides UserWarnings; these are what users saw
        assert main(one_step_fit(toy_root, Path("runs"))) == 0
        assert main([*validate, "--trainer.enable_progress_bar=false"]) == 0
    shown = [str(w.message) for w in caught]
    out = capfd.readouterr().out
    assert not [m for m in shown if "wandb run already in progress" in m], shown
    assert not [m for m in shown if "dirpath has changed" in m], shown
    # validate restores the weights but not the trainer's step: the reports name the checkpoint's step
    assert "Tasks at step 1: " in out and "at step 0" not in out
    assert (run / "tasks" / "results.md").read_text().startswith("Tasks at step 1: ")
    assert "held-out objects at step 1: PSNR" in out
