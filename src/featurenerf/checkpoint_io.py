"""Lightning checkpoint IO for featurenerf runs: atomic writes, weights-only reads.

Lightning's own writer stages a checkpoint in the system temp folder and then *moves* it; across
filesystems a move is a copy, so a kill mid-copy leaves a truncated ``last.ckpt`` that a resumed run would
try to load. :class:`AtomicCheckpointIO` writes next to the target, fsyncs and renames instead (see
:mod:`featurenerf.io`), and reads with ``weights_only=True`` unless the caller passes ``False`` on purpose
(``featurenerf fit --weights_only=false``).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from featurenerf.checkpointing import load_checkpoint_file
from featurenerf.io import atomic_write


def _is_local(path: str | os.PathLike[str]) -> bool:
    return "file" in (get_filesystem(path).protocol or ("file",))


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.fabric.plugins.io.TorchCheckpointIO` with atomic local writes and safe reads.

    A save writes a temporary next to the target and renames it over the target; a kill at any instant
    leaves the previous file or the new one. Remote paths (``s3://`` ...) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path, "wb") as fh:
            torch.save(checkpoint, fh)
        # A writer killed mid-save leaves its temporary (never the target) behind; once a newer complete
        # file is in place, those are garbage. Only this target's temporaries: one writer per file.
        target = Path(path)
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            stale.unlink(missing_ok=True)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location, weights_only)
        # None means "the default", and ours is safe whatever torch's default or environment says.
        return load_checkpoint_file(path, trust=weights_only is False, map_location=map_location)


def use_atomic_checkpoint_io(trainer: Any) -> None:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` unless a plugin chose another checkpoint IO."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
