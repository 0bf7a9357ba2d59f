"""Keep freed CPU memory for reuse: the CPU counterpart of PyTorch's CUDA caching allocator.

PyTorch's CPU allocator is plain ``malloc``. glibc serves every block above its mmap threshold (at most
32 MB) with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each (N, 512) fp32
activation of a training step (32-64 MB at the paper's sizes) is new memory that the kernel must fault in
and zero, page by page, on every step. Measured on the srn_cars training step (``make bench``'s ``fast``
row, 2-core CPU, fp32, two pairs of runs under different load): 5.25 -> 4.0 s and 5.1 -> 4.6 s per step.

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve large blocks from its heap and never give
freed memory back to the kernel, so a step reuses the previous step's pages. The process keeps its peak
resident memory (it would reach that peak on every step anyway). It is process-wide and takes effect for
allocations made afterwards. ``featurenerf fit/validate/test`` call it in every process of a CPU run
(the CLI's :class:`~featurenerf.lightning_cli.KeepFreedMemory` callback; a script that builds its own
Trainer calls it itself); set ``FEATURENERF_KEEP_FREED_MEMORY=0`` to leave glibc's defaults alone. Without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

ENV = "FEATURENERF_KEEP_FREED_MEMORY"


def _libc() -> ctypes.CDLL | None:
    """The C library, when it is glibc (the one with ``mallopt``/``malloc_trim``); else ``None``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # musl, macOS: no


def keep_freed_memory(top_pad_bytes: int = 256 << 20) -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (see the module docstring).
    Idempotent: a second call sets the same values again.

    Args:
        top_pad_bytes: extra memory the heap grows by at a time (fewer, larger growth steps).
    Returns:
        whether the setting is in effect (``False`` without glibc or when the environment variable
        ``FEATURENERF_KEEP_FREED_MEMORY`` is ``0``).
    """
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    libc = _libc()
    if libc is None:  # not glibc: nothing to tune
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Order matters: with mmap off and trimming off, freed blocks stay in the heap for the next step.
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, 2**31 - 1),
            (_M_TOP_PAD, min(top_pad_bytes, 2**31 - 1)),
        )
    )


def release_free_memory() -> bool:
    """Give the heap's free pages back to the kernel now (glibc ``malloc_trim``), e.g. after training and
    before a memory-hungry render, or before measuring a peak. Returns whether anything was released."""
    libc = _libc()
    if libc is None:
        return False
    trim = libc.malloc_trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
