"""How many DataLoader workers ``data.num_workers: auto`` starts.

Measured with ``benchmarks/data_bench.py`` on toy cars: one worker makes a batch in ~0.07-0.12 s (teacher maps
read and cast, rays sampled; images decoded once per worker). A 2-core CPU step takes ~0.5 s, so one worker
keeps up there; an H200 step takes ~0.03 s, and one worker left the GPU waiting 79 % of a step while eight
left it waiting 0.5 % (``docs/gpu_h200.md``).
"""

from __future__ import annotations

import os

#: Workers per process on a GPU: 8 measured 0.5 % data wait on toy cars; more only add start-up and memory
#: (each worker keeps its own decoded-image store, ``data.image_cache_mb``).
GPU_WORKERS = 8


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers(device_type: str, cpus: int, processes_per_node: int = 1) -> int:
    """Workers per training process for ``num_workers: auto``.

    Args:
        device_type: the trainer's device type (``"cuda"``, ``"cpu"``, ...).
        cpus: CPUs usable on this node.
        processes_per_node: training processes sharing them (DDP ranks on one node).
    Returns:
        On a GPU, up to :data:`GPU_WORKERS`, leaving each process one CPU of its share for its own work;
        on a CPU, 1 when the process has two or more CPUs (loading overlaps the step), else 0.
    """
    share = max(1, cpus // max(1, processes_per_node))
    if device_type == "cuda":
        return max(0, min(GPU_WORKERS, share - 1))
    return 1 if share >= 2 else 0
