"""Reading checkpoint files without unpickling code unless the user says they trust them.

Our checkpoints hold tensors and plain-typed hyper-parameters only, so :func:`load_checkpoint_file` reads
with ``weights_only=True``; a file that needs full unpickling is either not ours or not to be trusted, and
is refused in one line naming it unless the caller passes ``trust``. No Lightning import (the notebook API
can use it); the Lightning side, atomic writes included, is :mod:`featurenerf.checkpoint_io`.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from featurenerf.errors import CheckpointError

#: How a CLI user says "I trust this file" (Lightning's ``fit/validate --weights_only`` argument).
CLI_TRUST_HINT = "if you trust the file, pass --weights_only=false"


__all__ = ["CLI_TRUST_HINT", "CheckpointError", "load_checkpoint_file"]


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


def looks_like_torch_save(path: Path) -> bool:
    """Whether ``path`` starts the way ``torch.save`` files do: a zip archive (the default since torch 1.6;
    a complete one must hold ``<name>/data.pkl``, a cut-short one may be a truncated checkpoint) or a
    legacy pickle (protocol 2+ header). Random bytes, text, images and other archives do not."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return True
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return True
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle PROTO opcode


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
        if not looks_like_torch_save(path):
            raise CheckpointError(
                f"{path}: not a checkpoint (not a file torch.save writes); pass the .ckpt a run saved, "
                "e.g. outputs/runs/<run>/checkpoints/last.ckpt"
            ) from None
        if not trust and isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):
            raise CheckpointError(
                f"{path}: refusing to unpickle a file that holds more than tensors and plain types "
                f"({_unpickler_reason(str(err))}); {trust_hint}"
            ) from None
        first = str(err).strip().splitlines()[0].split(". ")[0][:160] if str(err).strip() else "empty"
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {first}); "
            "it may be truncated or of another format"
        ) from None
