"""Checkpoint files: written atomically, read without unpickling code unless the user says they trust them.

Lightning's own writer stages a checkpoint in the system temp folder and then *moves* it; across
filesystems a move is a copy, so a kill mid-copy leaves a truncated ``last.ckpt`` that a resumed run would
try to load. :class:`AtomicCheckpointIO` writes next to the target, fsyncs and renames instead (see
:mod:`featurenerf.io`), and reads with ``weights_only=True`` unless the caller passes ``False`` on purpose
(``featurenerf fit --weights_only=false``): our checkpoints hold tensors and plain-typed hyper-parameters
only, so a file that needs full unpickling is either not ours or not to be trusted.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from featurenerf.data.srn import DataError
from featurenerf.io import atomic_write

#: How a CLI user says "I trust this file" (Lightning's ``fit/validate --weights_only`` argument).
CLI_TRUST_HINT = "if you trust the file, pass --weights_only=false"


class CheckpointError(DataError):
    """A checkpoint that cannot be read, or would need unpickling arbitrary objects; names the file."""


def _unpickler_reason(message: str) -> str:
    """The informative part of torch's long weights-only refusal (e.g. ``Unsupported global: GLOBAL os.system``)."""
    if "WeightsUnpickler error:" in message:
        reason = message.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        reason = reason.split(" was not an allowed global")[0]
    else:
        boilerplate = ("Weights only load failed", "Check the documentation")
        lines = [ln.strip() for ln in message.splitlines()]
        reason = " ".join(ln for ln in lines if ln and not ln.startswith(boilerplate))
    return reason.strip()[:200] or "not a weights-only pickle"


def load_checkpoint_file(
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    map_location: Any = "cpu",
    mmap: bool = False,
    trust_hint: str = CLI_TRUST_HINT,
) -> Any:
    """``torch.load`` a local checkpoint; ``weights_only=True`` unless ``trust``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a one-line message naming the file: unsafe content (the forbidden global and
            ``trust_hint``), or not a torch checkpoint at all (truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        # torch warns about pickle protocols before refusing; the one line reported is ours
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location=map_location, weights_only=not trust, mmap=mmap)
            except RuntimeError as err:
                if not (mmap and "mmap" in str(err)):
                    raise
                # a legacy (non-zip) file cannot be memory-mapped; read it whole
                return torch.load(path, map_location=map_location, weights_only=not trust)
    except Exception as err:
        if not trust and isinstance(err, pickle.UnpicklingError):
            raise CheckpointError(
                f"{path}: refusing to unpickle a file that holds more than tensors and plain types "
                f"({_unpickler_reason(str(err))}); {trust_hint}"
            ) from None
        first = str(err).strip().splitlines()[0].split(". ")[0][:160] if str(err).strip() else "empty"
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {first}); "
            "it may be truncated or of another format"
        ) from None


def _is_local(path: str | os.PathLike[str]) -> bool:
    return "file" in (get_filesystem(path).protocol or ("file",))


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.fabric.plugins.io.TorchCheckpointIO` with atomic local writes and safe reads.

    Remote paths (``s3://`` ...) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path, "wb") as fh:
            torch.save(checkpoint, fh)

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
