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
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

from featurenerf.checkpoint_io import use_atomic_checkpoint_io
from featurenerf.checkpointing import load_checkpoint_file
from featurenerf.cli_types import accept_registry_names, short_parse_error
from featurenerf.cpu_allocator import keep_freed_memory
from featurenerf.data.datamodule import FeatureNeRFData, require_data_root
from featurenerf.errors import ConfigError, DataError, FeatureNeRFError, UnknownNameError
from featurenerf.module import FeatureNeRF
from featurenerf.precision import resolve_precision, use_tf32
from featurenerf.progress import ProgressLog, default_progress_bar, format_duration
from featurenerf.ranges import range_error_message
from featurenerf.teachers import TEACHERS, Teacher

accept_registry_names(Teacher, TEACHERS)  # data.teacher: hed_vgg16 (or a plugin's name) is a class path

DEFAULT_RUNS_ROOT = "outputs/runs"
AUTO_PRECISION_HELP = "bf16-mixed on a CPU with amx_bf16/avx512_bf16 or a bf16 GPU, else 32-true"
RUN_DIR_ENV = "FEATURENERF_RUN_DIR"
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
    if out:
        from featurenerf.tasks import TASKS

        unknown = [t for t in out if t not in TASKS]
        if unknown:
            known = ", ".join([*TASKS.list(), *TASK_GROUPS])
            raise UnknownNameError(f"--task: unknown task {unknown[0]!r}; known tasks: {known}")
    return out


def latest_run(runs_root: Path) -> Path | None:
    """The most recently modified run under ``runs_root`` that has a saved config."""
    runs = [p.parent for p in Path(runs_root).glob("*/config.yaml")]
    return max(runs, key=lambda p: (p / "config.yaml").stat().st_mtime) if runs else None


def _accept_auto_precision(parser) -> None:
    """Let ``trainer.precision`` also be "auto" (resolved in ``before_instantiate_classes``; Lightning's
    own type lists only concrete precisions)."""
    action = parser._option_string_actions.get("--trainer.precision")
    if action is not None and hasattr(action, "_typehint"):
        action._typehint = action._typehint | Literal["auto"]
        action.help = f'{action.help or ""} "auto": {AUTO_PRECISION_HELP}'.strip()


def _set_save_dir(logger_cfg, run_dir: Path) -> None:
    """Point configured loggers (WandbLogger, CSVLogger, TensorBoardLogger) at the run folder."""
    items = logger_cfg if isinstance(logger_cfg, list) else [logger_cfg]
    for item in items:
        init = getattr(item, "init_args", None)
        if init is not None:
            init["save_dir"] = str(run_dir)


class KeepFreedMemory(Callback):
    """Process set-up the CLI adds to every trainer: on a CPU run, each process (DDP workers included)
    keeps freed activation memory for reuse (:mod:`featurenerf.cpu_allocator`;
    ``FEATURENERF_KEEP_FREED_MEMORY=0`` opts out). Not the model's business, so not in the module."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cpu":
            keep_freed_memory()


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
        # Plain progress lines (step, rate, losses, ETA) when stdout is not a terminal.
        parser.add_lightning_class_args(ProgressLog, "progress")
        parser.add_argument(
            "--run_name", type=str | None, default=None, help="run folder name (default: timestamp)"
        )
        parser.add_argument(
            "--task",
            type=str,
            nargs="+",  # `--task part_seg keypoints` (a list[str] type would refuse a bare `--task part_seg`)
            default=None,
            help="tasks to evaluate as validation loops: keypoints_2d keypoints_3d part_seg_2d part_seg_3d "
            "novel_view, or the groups part_seg / keypoints",
        )
        # Every TaskSuite option is a --tasks.* argument, straight from its signature (a new constructor
        # argument needs no wiring here); the CLI supplies the rest when it builds the suite.
        from featurenerf.tasks.suite import TaskSuite

        parser.add_class_arguments(
            TaskSuite, "tasks", skip={"tasks", "datamodule", "out_dir"}, instantiate=False, fail_untyped=True
        )
        parser.add_argument(
            "--tf32",
            type=bool,
            default=False,
            help="let fp32 matrix products on CUDA use TensorFloat-32 (faster, ~10-bit mantissa; Ampere "
            "and later GPUs). Off by default",
        )
        _accept_auto_precision(parser)

    def instantiate_trainer(self, **kwargs):
        """The trainer, with :class:`~featurenerf.progress.EpochProgressBar` as its default bar and
        :class:`KeepFreedMemory` (process set-up for CPU runs)."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        callbacks += default_progress_bar(config, callbacks) + [KeepFreedMemory()]
        kwargs.setdefault("callbacks", callbacks)
        return super().instantiate_trainer(**kwargs)

    def _cfg(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def parse_arguments(self, parser, args) -> None:
        self.command_line = [str(a) for a in args or []]  # what the user typed, as opposed to config files
        super().parse_arguments(parser, args)
        self._check_arguments()

    def _check_arguments(self) -> None:
        """Refuse, right after parsing (before seeding or building anything), what is certain to fail:
        an unknown task name (teachers and task options are checked by the parser), a data root that is missing or a file, a missing --ckpt_path."""
        sub = self.config.get("subcommand")
        if sub is None:  # parse-and-build only (tests, notebooks)
            return
        cfg = self.config[sub]
        if expand_tasks(cfg.get("task")):
            from featurenerf.tasks.suite import check_pair_options

            t = cfg.tasks
            check_pair_options(t.match_camera, t.baseline_min_deg, t.baseline_max_deg)
        require_data_root(cfg.data.root)
        if cfg.model.far <= cfg.model.near:  # each is range-checked by its type, the pair only here
            raise ConfigError(
                f"model.far: {cfg.model.far} must be greater than model.near ({cfg.model.near})"
            )
        ckpt = cfg.get("ckpt_path")
        named = ckpt in ("last", "best", "hpc", "registry") or "://" in str(ckpt)
        if ckpt and not named and not Path(ckpt).is_file():
            raise ConfigError(
                f"--ckpt_path {ckpt}: no such checkpoint file; pass a run's checkpoints/last.ckpt "
                "(or --ckpt_path last to resume the latest run)"
            )

    def _parse_ckpt_path(self) -> None:
        """Lightning's hyper-parameter merge from ``--ckpt_path``, reading the file with our safe loader:
        an unsafe or unreadable checkpoint is one line naming it, and ``--weights_only=false`` trusts it."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        trust = self.config[sub].get("weights_only") is False
        hparams = load_checkpoint_file(ckpt_path, trust=trust, mmap=True).get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        # Lightning lets the checkpoint's hyper-parameters win over everything; a model option typed on
        # the command line (a render setting such as --model.occupancy_resolution) wins over them here.
        for key in typed_model_keys(getattr(self, "command_line", [])):
            if key in hparams:
                old = hparams.pop(key)
                new = self.config[sub].model.get(key)
                if old != new:
                    print(
                        f"{sub}: model.{key} {new} from the command line (the checkpoint's is {old})",
                        file=sys.stderr,
                    )
        if hparams:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        cfg = self._cfg()
        # Resolved first so the run's saved config records the choice; said once nothing can fail.
        cfg.trainer.precision, note = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
        tf32_note = use_tf32(bool(cfg.get("tf32")))
        note = "\n".join(n for n in (note, tf32_note) if n) or None
        root = Path(cfg.trainer.default_root_dir or DEFAULT_RUNS_ROOT)
        self.saved_config = None
        if sub == "fit":
            if cfg.ckpt_path == "last":
                run = latest_run(root)
                if run is None or not (run / "checkpoints" / "last.ckpt").exists():
                    raise ConfigError(
                        f"--ckpt_path last: no run with checkpoints/last.ckpt under {root}; "
                        "start one with featurenerf fit, or set --trainer.default_root_dir to its runs folder"
                    )
                cfg.ckpt_path = str(run / "checkpoints" / "last.ckpt")
                print(f"fit: resuming {cfg.ckpt_path}", file=sys.stderr)
            else:
                shared = os.environ.get(RUN_DIR_ENV)
                if shared:  # a DDP worker Lightning launched: use the folder rank 0 chose
                    run = Path(shared)
                else:
                    run = root / (cfg.run_name or time.strftime("%Y%m%d-%H%M%S"))
                    if (run / "config.yaml").exists() and cfg.ckpt_path is None:
                        run = run.with_name(run.name + f"-{os.getpid()}")
                    # Lightning starts the other DDP ranks as copies of this process after this point;
                    # they inherit the environment, so every rank writes into this one folder.
                    os.environ[RUN_DIR_ENV] = str(run)
                # The config saved with the run is the resolved one, minus the resume pointer.
                saved = cfg.clone()
                saved.ckpt_path = None
                self.saved_config = self._parser(sub).dump(saved, skip_none=False)
        else:
            ckpt = cfg.get("ckpt_path")
            run = Path(ckpt).resolve().parent.parent if ckpt and Path(ckpt).exists() else root / "eval"
            self._evaluate_every_pair(cfg)
        if note:
            print(note, file=sys.stderr)
        if sub is None:  # parse-and-build only (tests, notebooks): no run folder
            self.run_dir = root
            return
        run.mkdir(parents=True, exist_ok=True)
        self.run_dir = run
        cfg.trainer.default_root_dir = str(run)
        if cfg.trainer.logger not in (None, True, False):
            _set_save_dir(cfg.trainer.logger, run)

    def _evaluate_every_pair(self, cfg) -> None:
        """A validate that names tasks evaluates every pair: a config's ``trainer.limit_val_batches`` (a
        fit config's quick check during training) is dropped unless the command line sets it."""
        limit = cfg.trainer.get("limit_val_batches")
        typed = any(a.startswith("--trainer.limit_val_batches") for a in getattr(self, "command_line", []))
        if not expand_tasks(cfg.get("task")) or not caps_val_batches(limit) or typed:
            return
        cfg.trainer.limit_val_batches = None
        print(
            f"{self.subcommand}: evaluating every pair (the config's trainer.limit_val_batches {limit} is for "
            "fit; pass --trainer.limit_val_batches to cap the tasks)",
            file=sys.stderr,
        )

    def after_instantiate_classes(self) -> None:
        sub = self.subcommand
        if self.saved_config is not None:
            from featurenerf.io import atomic_write

            with atomic_write(self.run_dir / "config.yaml", "w") as fh:
                fh.write(self.saved_config)
        use_atomic_checkpoint_io(self.trainer)  # a kill mid-save never leaves a truncated last.ckpt
        for logger in self.trainer.loggers:
            init = getattr(logger, "_wandb_init", None)
            if isinstance(init, dict) and init.get("anonymous") is None:
                init.pop("anonymous", None)  # Lightning passes None, which wandb warns about on every run
        cfg = self._cfg()
        if sub is None:
            return
        ckpt_cb = self.trainer.checkpoint_callback
        if ckpt_cb is not None:
            if ckpt_cb.dirpath is None:
                # The real path, as validate derives the run from the resolved --ckpt_path: the dirpath
                # saved in the checkpoint then matches (Lightning warns "The dirpath has changed" otherwise).
                ckpt_cb.dirpath = os.path.realpath(self.run_dir / "checkpoints")
            ckpt_cb.save_last = True
            # One last.ckpt per run, overwritten: a run resumed from a checkpoint written in another folder
            # (a copied or moved run) would otherwise save `last-v1.ckpt` beside the old `last.ckpt`,
            # which `validate` and the results runner would then read.
            ckpt_cb._enable_version_counter = False
            if (
                sub == "fit"
                and self.trainer.limit_val_batches == 0
                and ckpt_cb._save_on_train_epoch_end is None
            ):
                # Checkpoints follow validation, and with `val_check_interval` in steps Lightning never
                # saves at epoch ends: without validation (the results runner's fits) a fit saved only
                # when it finished, so a killed one started over. Save at every epoch end instead.
                ckpt_cb._save_on_train_epoch_end = True
        check_checkpoint_width(cfg.get("ckpt_path"), self.model, trust=cfg.get("weights_only") is False)
        tasks = expand_tasks(cfg.get("task"))
        if tasks:
            from featurenerf.tasks.suite import TaskSuite

            options = cfg.tasks.as_dict() if hasattr(cfg.tasks, "as_dict") else dict(cfg.tasks)
            self.model.tasks = TaskSuite(
                tasks, datamodule=self.datamodule, out_dir=self.run_dir / "tasks", **options
            )
            # The task loaders are built before Lightning attaches the datamodule to the trainer: attach
            # it now, as Lightning will, so `num_workers: auto` counts the workers for the trainer's device.
            self.datamodule.trainer = self.trainer
            self.datamodule.extra_val_loaders = self.model.tasks.dataloaders()


def check_checkpoint_width(ckpt_path: str | None, model: FeatureNeRF, trust: bool = False) -> None:
    """Refuse, in one line, a checkpoint whose feature head has another width than the teacher gives."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return
    ckpt = load_checkpoint_file(ckpt_path, trust=trust, mmap=True)
    width = ckpt.get("hyper_parameters", {}).get("feature_dim")
    if width is not None and width != model.net.feature_dim:
        raise DataError(
            f"{ckpt_path}: checkpoint has feature width {width} but the configured teacher gives "
            f"{model.net.feature_dim}; use the teacher it was trained with (data.teacher)"
        )


def _task_args(args: list[str]) -> list[str]:
    """The raw values of ``--task`` on a command line (``--task a b``, ``--task=a,b``), before parsing."""
    names: list[str] = []
    taking = False
    for arg in args:
        if arg.startswith("--task="):
            names.append(arg.split("=", 1)[1])
            taking = False
        elif arg == "--task":
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            names.append(arg)
    return names


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
        raise ConfigError(
            f"{command}: no --config/--ckpt_path given and no run under {DEFAULT_RUNS_ROOT}/ "
            "(train one with `featurenerf fit --config configs/toy_cars.yaml`)"
        )
    last = run / "checkpoints" / "last.ckpt"
    if not last.exists():
        raise ConfigError(
            f"{command}: latest run {run} has no checkpoints/last.ckpt; pass --ckpt_path and --config"
        )
    print(
        f"{command}: using the latest run's config {run / 'config.yaml'} and checkpoint {last}",
        file=sys.stderr,
    )
    return ["--config", str(run / "config.yaml"), "--ckpt_path", str(last), *args]


def _find_cause(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """``err`` or the first exception in its ``raise ... from`` chain that is one of ``types``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, types):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def typed_model_keys(args: list[str]) -> list[str]:
    """The model options a command line sets (``--model.occupancy_resolution 32`` or ``--model.x=1``):
    their top-level names, in order, once each."""
    keys = [a[len("--model.") :].split("=", 1)[0].split(".", 1)[0] for a in args if a.startswith("--model.")]
    return list(dict.fromkeys(k for k in keys if k))


def caps_val_batches(limit: int | float | None) -> bool:
    """Whether ``trainer.limit_val_batches`` leaves batches out: an int counts batches (``1`` is one
    batch), a float is a fraction (``1.0``: all of them)."""
    return limit is not None and not (isinstance(limit, float) and limit == 1.0)


def run_lightning(command: str, args: list[str]) -> int:
    """Run a LightningCLI subcommand; our own errors print one line and return 2."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import featurenerf.teachers as teachers

    teachers.TEACHERS.load_plugins()  # third-party teachers are registered before the config is parsed
    from featurenerf.console import finish_wandb_runs, print_wandb_hint, quiet_lightning

    quiet_lightning()
    # DrawSampler resumes mid-epoch exactly (the position comes from the restored step count); Lightning
    # cannot see that and would warn on every mid-epoch resume.
    warnings.filterwarnings(
        "ignore", message=r"You're resuming from a checkpoint that ended before the epoch"
    )
    # Errors whose message is already one line naming the file/setting and what to do.
    ours = (FeatureNeRFError, FileNotFoundError)
    owns_run_dir = RUN_DIR_ENV not in os.environ  # DDP workers inherit it; a later in-process run must not
    started = time.monotonic()
    try:
        if command in ("validate", "test") and not any(a in ("-h", "--help", "--print_config") for a in args):
            expand_tasks(_task_args(args))  # an unknown task is named before any run or checkpoint lookup
            args = _implicit_validate_args(command, args)
        cli = FeatureNeRFCLI(
            FeatureNeRF,
            FeatureNeRFData,
            args=[command, *args],
            seed_everything_default=0,
            save_config_callback=None,
            auto_configure_optimizers=True,
            # parse errors raise instead of printing the whole usage: we print one line
            parser_kwargs={"exit_on_error": False},
        )
    except ArgumentError as err:  # an unknown key, a bad value: jsonargparse's message, on one line
        message = range_error_message(str(err)) or short_parse_error(str(err))
        print(f"featurenerf: error: {message}; see `featurenerf {command} --help`", file=sys.stderr)
        return 2
    except Exception as err:
        # jsonargparse wraps errors raised while building classes (e.g. an unknown teacher inside the
        # teacher-width link); report ours, whatever wraps them.
        cause = _find_cause(err, ours)
        if cause is None:
            raise
        print(f"featurenerf: error: {cause}", file=sys.stderr)
        return 2
    finally:
        if owns_run_dir:
            os.environ.pop(RUN_DIR_ENV, None)
    if command == "fit":
        print_wandb_hint(cli.trainer)
    elif command in ("validate", "test"):
        print(f"{command}: finished in {format_duration(time.monotonic() - started)}", file=sys.stderr)
    finish_wandb_runs(cli.trainer)
    return 0
