"""Where a training step's time goes: torch.profiler self time by category (GPU kernel time on a GPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from harness import timed

if TYPE_CHECKING:
    from train_step import Stepper

CATEGORIES = (
    "matmul (MLP GEMMs)",
    "encoder (conv, bn, pool, upsample)",
    "feature lookup (gather / grid_sample + backward)",
    "sampling & compositing",
    "copies",
    "optimizer (Adam)",
    "elementwise (relu, adds, bias sums, posenc)",
)
_GEMM = {"aten::mm", "aten::addmm", "aten::addmm_"}
_ENCODER_OPS = (
    "convolution",
    "batch_norm",
    "max_pool",
    "upsample",
    "Convolution",
    "BatchNorm",
    "MaxPool",
    "Upsample",
)
_LOOKUP = ("BilinearGather", "embedding_bag", "EmbeddingBag", "grid_sample", "GridSample", "sparse", "Sparse")
_COMPOSITE = (
    "sort", "searchsorted", "cumsum", "cumprod", "gather", "scatter", "bmm", "index_add", "index_put",
    "nonzero", "exp", "Sort", "Gather", "Scatter", "Bmm", "Cumprod", "Cumsum", "Exp", "IndexPut", "IndexAdd",
)  # fmt: skip
_COPIES = ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::index")


def _category(evt) -> str:
    chain, node = [], evt
    while node is not None:
        chain.append(node.name)
        node = node.cpu_parent
    names = " ".join(chain)
    if "Optimizer." in names:
        return CATEGORIES[5]
    if any(s in names for s in _LOOKUP):
        return CATEGORIES[2]
    shapes = getattr(evt, "input_shapes", None) or []
    first = shapes[0] if shapes and isinstance(shapes[0], (list, tuple)) else []
    # Encoder maps are (N, C >= 64, H, W); the reference MLP's 4-D tensors are (B, V <= 4, P, d).
    if any(s in names for s in _ENCODER_OPS) or (len(first) == 4 and first[1] > 4 and evt.name not in _GEMM):
        return CATEGORIES[1]
    if evt.name in _GEMM:
        return CATEGORIES[0]
    if any(s in evt.name for s in _COMPOSITE) or any(s in names for s in ("Sort", "Cumprod", "Bmm")):
        return CATEGORIES[3]
    if evt.name in _COPIES:
        return CATEGORIES[4]
    return CATEGORIES[6]


def profile_step(stepper: Stepper, row: dict) -> dict:
    """Self CPU time of one step by category (torch.profiler; op names and parents decide the category).

    On a GPU, ``fraction`` and ``seconds`` are GPU kernel time instead, each kernel attributed to the op
    that launched it (its self device time); the host side's self CPU time is ``host_fraction``."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = stepper.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        wall = timed(lambda: stepper.step(row))
    by_cat = dict.fromkeys(CATEGORIES, 0.0)
    dev_cat = dict.fromkeys(CATEGORIES, 0.0)
    by_op: dict[str, float] = {}
    dev_op: dict[str, float] = {}
    for evt in prof.events():
        if on_cuda and evt.device_type != torch.autograd.DeviceType.CPU:
            continue  # a kernel's own record: its time is counted on the op that launched it
        cat = _category(evt)
        self_s = evt.self_cpu_time_total / 1e6
        by_cat[cat] += self_s
        by_op[evt.name] = by_op.get(evt.name, 0.0) + self_s
        if on_cuda:
            dev_s = getattr(evt, "self_device_time_total", None)
            if dev_s is None:  # torch < 2.4
                dev_s = evt.self_cuda_time_total
            dev_cat[cat] += dev_s / 1e6
            dev_op[evt.name] = dev_op.get(evt.name, 0.0) + dev_s / 1e6
    total = sum(by_cat.values())
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    out = {
        "row": "fast",
        "wall_s_under_profiler": wall,
        "cpu_s_total": total,
        "fraction": {k: v / total for k, v in by_cat.items()},
        "seconds": by_cat,
        "top_ops": dict(top),
        "note": "self CPU time per op summed over both threads' work as torch.profiler attributes it; "
        "categories from op names, autograd node names and input shapes",
    }
    dev_total = sum(dev_cat.values())
    if on_cuda:
        out["host_fraction"] = out["fraction"]
        out["host_seconds"] = by_cat
        out["host_top_ops"] = out["top_ops"]
        out["device_s_total"] = dev_total
    if on_cuda and dev_total > 0:
        out["fraction"] = {k: v / dev_total for k, v in dev_cat.items()}
        out["seconds"] = dev_cat
        out["top_ops"] = dict(sorted(dev_op.items(), key=lambda kv: -kv[1])[:12])
        out["measure"] = "gpu"
        out["note"] = (
            "GPU kernel time per op (self device time: kernels attributed to the op that launched them); "
            "categories from op names, autograd node names and input shapes; host_* is the CPU side"
        )
    elif on_cuda:
        out["measure"] = "host"
        out["note"] += "; the profiler recorded no GPU kernel time, so these are host (CPU) times"
    return out
