"""Test support (not a test module): a callback that SIGKILLs its own process, for the resume tests.

Imported by a ``featurenerf fit`` subprocess through ``--trainer.callbacks+=resume_support.KillAtStep``
with ``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL the process when the batch after optimizer step ``step`` starts.

    Checkpoint callbacks run their ``on_train_batch_end`` after every other callback, so by the time the
    next batch starts, the checkpoint of step ``step`` is on disk: the kill lands right after it, with no
    chance for Lightning (or Python) to clean up, as a crash or an out-of-memory kill would.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
