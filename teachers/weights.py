"""Finding, identifying and describing teacher weights without surprises.

A teacher's ``weights`` argument is a local path (file or folder) or a Hugging Face hub id. Hub ids are
tried from the local hub cache first and downloaded only when the machine is online
(``HF_HUB_OFFLINE`` unset); a failure is one line that says what to pass instead. ``None`` means random
initialisation of the real architecture, with a warning, for tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from featurenerf.errors import WeightsNotFoundError  # importable from here too, as before

_SAMPLE = 1 << 20  # bytes hashed at each end of a large file


def is_hub_id(weights: str) -> bool:
    """``"org/name"`` that is not an existing local path."""
    return weights.count("/") == 1 and not Path(weights).exists() and not weights.startswith((".", "/", "~"))


def locate(weights: str, teacher: str, allow_patterns: Sequence[str] | None = None) -> Path:
    """A local path for ``weights``: the path itself, or the hub snapshot folder of a hub id.

    Raises:
        WeightsNotFoundError: not a local path, and the hub id is neither cached nor downloadable.
    """
    path = Path(weights).expanduser()
    if path.exists():
        return path
    if not is_hub_id(weights):
        raise WeightsNotFoundError(f"{teacher}: weights path {weights} does not exist")
    try:
        from huggingface_hub import snapshot_download

        try:  # the local hub cache first: no network, no waiting
            return Path(snapshot_download(weights, allow_patterns=allow_patterns, local_files_only=True))
        except Exception:
            if _offline():
                raise
            return Path(snapshot_download(weights, allow_patterns=allow_patterns))
    except Exception as err:
        how = (
            "the machine is offline (HF_HUB_OFFLINE)"
            if _offline()
            else f"download failed ({type(err).__name__})"
        )
        raise WeightsNotFoundError(
            f"{teacher}: weights {weights!r} are not a local path and not in the hub cache, and {how}; "
            "pass weights=PATH to a local copy"
        ) from None


def describe_source(weights: str | None) -> str:
    """What ``teachers list`` shows for a ``weights`` argument, without loading or downloading."""
    if weights is None:
        return "random init"
    path = Path(weights).expanduser()
    if path.exists():
        return str(path)
    if is_hub_id(weights):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(weights, "config.json")
            if isinstance(cached, str) or _any_cached_file(weights):
                return f"hub {weights} (cached)"
        except Exception:
            pass
        return f"hub {weights} (not downloaded: pass weights=PATH)"
    return f"not found: {weights} (pass weights=PATH)"


def _any_cached_file(repo_id: str) -> bool:
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def fingerprint(path: str | os.PathLike[str], patterns: Sequence[str] = ("*",)) -> str:
    """Identity of weights on disk: a hash of each file's name, size and first and last MiB.

    Hashing samples rather than whole files keeps multi-GB checkpoints cheap to identify; two different
    checkpoints of one architecture differ in practically every byte, so the samples differ too. For a
    folder, files matching ``patterns`` (recursively, sorted) are included.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted({f for p in patterns for f in path.rglob(p) if f.is_file()})
    h = hashlib.sha1()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if f != path else f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_SAMPLE))
            if size > 2 * _SAMPLE:
                fh.seek(size - _SAMPLE)
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (random initialisation) with a fixed seed, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def warn_random(teacher: str) -> None:
    warnings.warn(
        f"{teacher}: weights=None, using a randomly initialised network (fine for tests, useless as a teacher)",
        stacklevel=3,
    )
