"""Progress where there is no terminal, and a progress bar that reads well when ``max_epochs`` is unset.

Run with output to a file (``nohup``, CI, ``make demo > log``), the live progress bar shows nothing
between validations; :class:`ProgressLog` prints one plain line every N training steps instead (step,
steps/s, losses, ETA) and a line every N pairs of a long validation. Training is bounded by steps or time
in our configs, so Lightning sets ``max_epochs`` to -1 and its rich bar would read "Epoch 0/-2";
:class:`EpochProgressBar` shows "Epoch 0" then.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, Timer

from featurenerf.ranges import PositiveInt


def format_duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 07 s`` or ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressLog(Callback):
    """Plain progress lines on stdout for logs.

    Args:
        every_n_steps: a line every this many training steps (and validation batches of a loader).
        when: ``auto``: only when stdout is not a terminal (a live bar is there otherwise); ``always``;
            ``never``.
    """

    def __init__(self, every_n_steps: PositiveInt = 50, when: Literal["auto", "always", "never"] = "auto"):
        super().__init__()
        self.every_n_steps = int(every_n_steps)
        self.when = when
        self._start: tuple[float, int] | None = None
        self._last_step = -1
        self._loader_start: dict[int, float] = {}  # dataloader index → when its first batch began

    @property
    def active(self) -> bool:
        if self.when == "auto":
            return not sys.stdout.isatty()
        return self.when == "always"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.monotonic(), trainer.global_step)  # a resumed run's rate counts its own steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if (
            not self.active
            or step == self._last_step
            or step % self.every_n_steps
            or not trainer.is_global_zero
        ):
            return
        self._last_step = step
        print(self.train_line(trainer), flush=True)

    def train_line(self, trainer: L.Trainer) -> str:
        """``step 120/3000 | epoch 0 | 2.41 steps/s | loss 0.0412 rgb_fine 0.0101 ... | ETA 19 min 55 s``."""
        step = trainer.global_step
        t0, step0 = self._start or (time.monotonic(), step)
        elapsed = time.monotonic() - t0
        rate = (step - step0) / elapsed if elapsed > 0 else math.nan
        parts = [f"step {step}" + (f"/{trainer.max_steps}" if trainer.max_steps > 0 else "")]
        parts.append(f"epoch {trainer.current_epoch}")
        parts.append(f"{rate:.2f} steps/s")
        losses = {
            k.removeprefix("train/"): float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("train/") and k != "train/skipped_steps"
        }
        if losses:
            losses = {k: losses[k] for k in sorted(losses, key=lambda k: k != "loss")}  # the total first
            parts.append(" ".join(f"{k} {v:.4g}" for k, v in losses.items()))
        eta = self._eta(trainer, rate)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return " | ".join(parts)

    @staticmethod
    def _eta(trainer: L.Trainer, rate: float) -> float | None:
        """Seconds until ``max_steps`` at the current rate or ``max_time``, whichever comes first."""
        left = []
        if trainer.max_steps > 0 and rate > 0:
            left.append((trainer.max_steps - trainer.global_step) / rate)
        for cb in trainer.callbacks:
            if isinstance(cb, Timer) and cb.time_remaining("train") is not None:
                left.append(cb.time_remaining("train"))
        return max(0.0, min(left)) if left else None

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0:
            self._loader_start[dataloader_idx] = time.monotonic()

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.active or trainer.sanity_checking or not trainer.is_global_zero:
            return
        done = batch_idx + 1
        totals = list(trainer.num_val_batches or [])
        total = int(totals[dataloader_idx]) if dataloader_idx < len(totals) else 0
        if done % self.every_n_steps == 0 or done == total:
            # the time since the loader's first batch tells which task an evaluation spends its time on
            elapsed = time.monotonic() - self._loader_start.get(dataloader_idx, time.monotonic())
            print(
                f"validation {_loader_name(pl_module, dataloader_idx)}: {done}/{total} batches"
                f" ({format_duration(elapsed)})",
                flush=True,
            )


def _loader_name(pl_module, dataloader_idx: int) -> str:
    """Loader 0 is the module's novel views; loaders 1.. are the task suite's tasks, in order."""
    if dataloader_idx == 0:
        return "novel views"
    tasks = getattr(getattr(pl_module, "tasks", None), "tasks", None) or []
    if dataloader_idx - 1 < len(tasks):
        return str(getattr(tasks[dataloader_idx - 1], "name", f"loader {dataloader_idx}"))
    return f"loader {dataloader_idx}"


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar, minus the "Epoch 0/-2" it shows when ``max_epochs`` is unset (-1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = super()._get_train_description(current_epoch)
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            text = text.replace(
                f"Epoch {current_epoch}/{self.trainer.max_epochs - 1}", f"Epoch {current_epoch}"
            )
        return text


def default_progress_bar(trainer_config: dict[str, Any], callbacks: list[Callback]) -> list[Callback]:
    """``[EpochProgressBar()]`` where Lightning would otherwise add its default bar, else ``[]``: the bar
    is enabled, no bar is configured, and ``rich`` is installed (Lightning falls back to tqdm without)."""
    if trainer_config.get("enable_progress_bar") is False or any(
        isinstance(c, ProgressBar) for c in callbacks
    ):
        return []
    try:
        import rich  # noqa: F401
    except ImportError:
        return []
    return [EpochProgressBar()]
