"""A quiet, readable console for the Lightning commands: known noise filtered, one line about wandb.

Only specific messages are dropped (never whole categories): Lightning's "💡 Tip" advertisements, the
``torch.utils._pytree`` deprecation Lightning triggers on recent torch, and LightningCLI's warning about
receiving both ``args`` and ``sys.argv`` (our dispatcher passes ``args`` on purpose).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

#: Loggers Lightning's ``rank_zero_info`` writes through (the record is filtered where it is created).
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Filter Lightning's tips and two known harmless warnings (idempotent)."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings(
        "ignore", message=r".*torch\.utils\._pytree\._register_pytree_node` is deprecated"
    )
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within")


def wandb_offline_dirs(trainer) -> list[Path]:
    """Folders of the offline wandb runs a trainer logged to (empty for online runs or other loggers)."""
    dirs = []
    for logger in getattr(trainer, "loggers", []):
        if type(logger).__name__ != "WandbLogger" or getattr(logger, "_experiment", None) is None:
            continue
        offline = getattr(logger, "_offline", False) or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
        if offline:
            # experiment.dir is <run folder>/files; `wandb sync` takes the run folder.
            dirs.append(Path(logger.experiment.dir).parent)
    return dirs


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_wandb_hint(trainer, file=None) -> None:
    """One line per offline wandb run: where it is and how to upload it."""
    for run in wandb_offline_dirs(trainer):
        shown = _display(run)
        print(f"wandb: offline run in {shown}; upload with: wandb sync {shown}", file=file or sys.stderr)


def finish_wandb_runs(trainer) -> None:
    """End the wandb runs a finished command logged to. Lightning leaves them open, so a second command in
    the same process (``make demo``'s fit then validate) would warn and append to the first run."""
    for logger in getattr(trainer, "loggers", []):
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()


def bar_options(file=None) -> dict:
    """Extra ``tqdm`` arguments for a bar written to ``file`` (default stderr): none on a terminal; in a
    log file (nohup, CI, ``make demo > log``) an update every 30 s instead of several a second, in ASCII."""
    file = file or sys.stderr
    isatty = getattr(file, "isatty", None)
    if callable(isatty) and isatty():
        return {}
    return {"mininterval": 30.0, "ascii": True}
