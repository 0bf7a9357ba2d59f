"""LightningCLI wiring: run folders, the teacher-width link, task selection and one-line errors.

Runs live in ``<trainer.default_root_dir>/<run_name>/`` (default ``outputs/runs/<timestamp>``) with the
resolved ``config.yaml``, ``checkpoints/last.ckpt`` and the logger's files. ``fit --ckpt_path last``
resumes the latest run in place; ``validate`` without ``--config``/``--ckpt_path`` takes the latest run's
config and last checkpoint and says which it took.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from featurenerf.data.datamodule import FeatureNeRFData
from featurenerf.module import FeatureNeRF, TrainingDiverged

DEFAULT_RUNS_ROOT = "outputs/runs"
TASK_GROUPS = {
    "part_seg": ["part_seg_2d", "part_seg_3d"],
    "keypoints": ["keypoints_2d", "keypoints_3d"],
}


def expand_tasks(names: list[str] | None) -> list[str]:
    """``part_seg`` → both part tasks, ``keypoints`` likewise; comma lists allowed; order kept, no repeats."""
    out: list[str] = []
    for raw in names or []:
        for name in str(raw).split(","):
            name = name.strip()
            if not name:
                continue
            for task in TASK_GROUPS.get(name, [name]):
                if task not in out:
                    out.append(task)
    return out


def latest_run(runs_root: Path) -> Path | None:
    """The most recently modified run under ``runs_root`` that has a saved config."""
    runs = [p.parent for p in Path(runs_root).glob("*/config.yaml")]
    return max(runs, key=lambda p: (p / "config.yaml").stat().st_mtime) if runs else None


def _set_save_dir(logger_cfg, run_dir: Path) -> None:
    """Point configured loggers (WandbLogger, CSVLogger, TensorBoardLogger) at the run folder."""
    items = logger_cfg if isinstance(logger_cfg, list) else [logger_cfg]
    for item in items:
        init = getattr(item, "init_args", None)
        if init is not None:
            init["save_dir"] = str(run_dir)


class FeatureNeRFCLI(LightningCLI):
    """LightningCLI with FeatureNeRF's links, run folders and task loops."""

    def add_arguments_to_parser(self, parser) -> None:
        # The head width comes from the teacher, never typed twice; the background from the data's meta.
        parser.link_arguments(
            "data", "model.feature_dim", compute_fn=lambda d: d.feature_dim, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.background", compute_fn=lambda d: d.background, apply_on="instantiate"
        )
        parser.add_argument(
            "--run_name", type=str | None, default=None, help="run folder name (default: timestamp)"
        )
        parser.add_argument(
            "--task",
            type=list[str] | None,
            default=None,
            help="tasks to evaluate as validation loops: keypoints_2d keypoints_3d part_seg_2d part_seg_3d "
            "novel_view, or the groups part_seg / keypoints",
        )
        parser.add_argument("--tasks.num_pairs", type=int, default=1000, help="pairs per kind (paper: 1000)")
        parser.add_argument(
            "--tasks.pairs_file", type=str | None, default=None, help="FeatureNeRF pairs JSON"
        )
        parser.add_argument("--tasks.split", type=str, default="test", help="split pairs are drawn from")
        parser.add_argument("--tasks.seed", type=int, default=0)
        parser.add_argument(
            "--tasks.pixelnerf_ckpt",
            type=str | None,
            default=None,
            help="checkpoint of a model trained without distillation",
        )
        parser.add_argument(
            "--tasks.image_size", type=int | None, default=None, help="default: data.image_size"
        )

    def _cfg(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        cfg = self._cfg()
        root = Path(cfg.trainer.default_root_dir or DEFAULT_RUNS_ROOT)
        self.saved_config = None
        if sub == "fit":
            if cfg.ckpt_path == "last":
                run = latest_run(root)
                if run is None or not (run / "checkpoints" / "last.ckpt").exists():
                    raise SystemExit(
                        f"featurenerf: error: --ckpt_path last: no run with checkpoints/last.ckpt under {root}"
                    )
                cfg.ckpt_path = str(run / "checkpoints" / "last.ckpt")
                print(f"fit: resuming {cfg.ckpt_path}", file=sys.stderr)
            else:
                run = root / (cfg.run_name or time.strftime("%Y%m%d-%H%M%S"))
                if (run / "config.yaml").exists() and cfg.ckpt_path is None:
                    run = run.with_name(run.name + f"-{os.getpid()}")
                # The config saved with the run is the resolved one, minus the resume pointer.
                saved = cfg.clone()
                saved.ckpt_path = None
                self.saved_config = self._parser(sub).dump(saved, skip_none=False)
        else:
            ckpt = cfg.get("ckpt_path")
            run = Path(ckpt).resolve().parent.parent if ckpt and Path(ckpt).exists() else root / "eval"
        if sub is None:  # parse-and-build only (tests, notebooks): no run folder
            self.run_dir = root
            return
        run.mkdir(parents=True, exist_ok=True)
        self.run_dir = run
        cfg.trainer.default_root_dir = str(run)
        if cfg.trainer.logger not in (None, True, False):
            _set_save_dir(cfg.trainer.logger, run)

    def after_instantiate_classes(self) -> None:
        sub = self.subcommand
        if self.saved_config is not None:
            from featurenerf.io import atomic_write

            with atomic_write(self.run_dir / "config.yaml", "w") as fh:
                fh.write(self.saved_config)
        cfg = self._cfg()
        if sub is None:
            return
        ckpt_cb = self.trainer.checkpoint_callback
        if ckpt_cb is not None:
            if ckpt_cb.dirpath is None:
                ckpt_cb.dirpath = str(self.run_dir / "checkpoints")
            ckpt_cb.save_last = True
        check_checkpoint_width(cfg.get("ckpt_path"), self.model)
        tasks = expand_tasks(cfg.get("task"))
        if tasks:
            from featurenerf.tasks.suite import TaskSuite

            t = cfg.tasks
            self.model.tasks = TaskSuite(
                tasks,
                datamodule=self.datamodule,
                num_pairs=t.num_pairs,
                pairs_file=t.pairs_file,
                split=t.split,
                seed=t.seed,
                pixelnerf_ckpt=t.pixelnerf_ckpt,
                image_size=t.image_size,
                out_dir=self.run_dir / "tasks",
            )
            self.datamodule.extra_val_loaders = self.model.tasks.dataloaders()


def check_checkpoint_width(ckpt_path: str | None, model: FeatureNeRF) -> None:
    """Refuse, in one line, a checkpoint whose feature head has another width than the teacher gives."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return
    import torch

    from featurenerf.data.srn import DataError

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise DataError(
            f"{ckpt_path}: not a readable featurenerf checkpoint ({type(err).__name__}: {err})"
        ) from err
    width = ckpt.get("hyper_parameters", {}).get("feature_dim")
    if width is not None and width != model.net.feature_dim:
        raise DataError(
            f"{ckpt_path}: checkpoint has feature width {width} but the configured teacher gives "
            f"{model.net.feature_dim}; use the teacher it was trained with (data.teacher)"
        )


def _implicit_validate_args(command: str, args: list[str]) -> list[str]:
    """``validate``/``test`` with no config or checkpoint: take the latest run's (and say so)."""
    has_config = any(a in ("-c", "--config") or a.startswith("--config=") for a in args)
    ckpt = next((a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")), None)
    if ckpt is None and "--ckpt_path" in args and args.index("--ckpt_path") + 1 < len(args):
        ckpt = args[args.index("--ckpt_path") + 1]
    if has_config and ckpt:
        return args
    if ckpt and not has_config:
        cfg = Path(ckpt).resolve().parent.parent / "config.yaml"
        if cfg.exists():
            print(f"{command}: using config {cfg} (saved with the checkpoint)", file=sys.stderr)
            return ["--config", str(cfg), *args]
        return args
    if has_config and not ckpt:
        return args
    run = latest_run(Path(DEFAULT_RUNS_ROOT))
    if run is None:
        raise SystemExit(
            f"featurenerf: error: {command}: no --config/--ckpt_path given and no run under {DEFAULT_RUNS_ROOT}/ "
            "(train one with `featurenerf fit --config configs/toy_cars.yaml`)"
        )
    last = run / "checkpoints" / "last.ckpt"
    if not last.exists():
        raise SystemExit(f"featurenerf: error: {command}: latest run {run} has no checkpoints/last.ckpt")
    print(
        f"{command}: using the latest run's config {run / 'config.yaml'} and checkpoint {last}",
        file=sys.stderr,
    )
    return ["--config", str(run / "config.yaml"), "--ckpt_path", str(last), *args]


def run_lightning(command: str, args: list[str]) -> int:
    """Run a LightningCLI subcommand; our own errors print one line and return 2."""
    from featurenerf.data.srn import DataError
    from featurenerf.registry import UnknownNameError

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import featurenerf.teachers as teachers

    teachers.TEACHERS.load_plugins()  # third-party teachers are registered before the config is parsed
    if command in ("validate", "test") and not any(a in ("-h", "--help", "--print_config") for a in args):
        args = _implicit_validate_args(command, args)
    try:
        FeatureNeRFCLI(
            FeatureNeRF,
            FeatureNeRFData,
            args=[command, *args],
            seed_everything_default=0,
            save_config_callback=None,
            auto_configure_optimizers=True,
        )
    except (DataError, UnknownNameError, TrainingDiverged, FileNotFoundError) as err:
        print(f"featurenerf: error: {err}", file=sys.stderr)
        return 2
    return 0
