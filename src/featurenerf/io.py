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
def _replacing(path: Path, prefix: str, suffix: str) -> Iterator[tuple[int, str]]:
    """A temporary file ``(fd, name)`` beside ``path`` that replaces it when the block succeeds and is
    removed when the block fails (the caller writes, fsyncs and closes ``fd``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        yield fd, tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` only when the block succeeds.

    Example::

        with atomic_write(out / "result.json", "w") as f:
            json.dump(result, f)
    """
    path = Path(path)
    with _replacing(path, f".{path.name}.", ".tmp") as (fd, _), os.fdopen(fd, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


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
    with _replacing(path, f".{path.stem}.", f".tmp{path.suffix}") as (fd, tmp):
        os.close(fd)
        save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
