"""Crash-safe file writing: every file featurenerf writes goes through :func:`atomic_write`.

A kill at any instant leaves either the old file or the complete new one, never a half-written file,
because the bytes go to a temporary file in the same directory that is fsynced and then renamed
over the target (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _default_mode() -> int:
    """Permissions a plain ``open()`` would give (0666 minus the umask); mkstemp files are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` only when the block succeeds.

    Example::

        with atomic_write(out / "result.json", "w") as f:
            json.dump(result, f)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def atomic_save_via(path: str | os.PathLike[str], save: Any) -> None:
    """Atomically write a file produced by a library saver that takes a path (``save(tmp_path)``).

    Used for savers such as ``PIL.Image.save`` or ``safetensors.torch.save_file`` that want a filename.
    The temporary name keeps the target's suffix so format detection by extension still works.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
