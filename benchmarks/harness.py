"""What every benchmark section shares: configs, synthetic batches, timing, memory, FLOPs, matmul baseline.

The machine is noisy (other processes share the cores), so sections time their rows *interleaved*, one
repeat of each row per round, and report medians of the per-round times and of the per-round ratios.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"toy": REPO / "configs" / "toy_cars.yaml", "srn_cars": REPO / "configs" / "srn_cars.yaml"}


# ---------------------------------------------------------------------- configs
def load_config(name: str) -> dict:
    """The model and data sections of a shipped config, with the teacher width resolved.

    Returns ``{"model": FeatureNeRF kwargs (feature_dim included), "data": {...}, "teacher": name}``.
    The teacher's width comes from the registry's metadata, without loading its weights.
    """
    import yaml

    from featurenerf.teachers import TEACHERS

    cfg = yaml.safe_load(CONFIGS[name].read_text())
    data = dict(cfg.get("data", {}))
    spec = data.get("teacher")
    teacher = (spec.get("class_path") or spec.get("name")) if isinstance(spec, dict) else spec
    feature_dim = 0 if teacher is None else int(TEACHERS.get(teacher).describe().feature_dim)
    model = dict(cfg.get("model", {}))
    model["feature_dim"] = feature_dim
    return {"model": model, "data": data, "teacher": teacher}


def build_module(model_kwargs: dict, **overrides):
    """The LightningModule (as training uses it), in train mode."""
    from featurenerf.module import FeatureNeRF

    module = FeatureNeRF(**{**model_kwargs, **overrides})
    module.train()
    return module


def resolve_device(name: str) -> str:
    """``auto`` is ``cuda`` when a CUDA device is present, else ``cpu``; other names as they are (run.py's
    argument parser refuses ``cuda`` without one)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def to_device(obj, device: torch.device | str):
    """``obj`` with every tensor in it (nested dicts, lists, tuples) moved to ``device``; other values as
    they are. Tensors already there are returned as they are (no copy)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


# ---------------------------------------------------------------------- synthetic data
def cameras(views: int, seed: int) -> torch.Tensor:
    """(V, 4, 4) camera-to-world poses on the toy/SRN camera sphere, looking at the origin."""
    import numpy as np

    from featurenerf.data.synth.render import sample_cameras

    return torch.as_tensor(sample_cameras("toycar", views, np.random.default_rng(seed)), dtype=torch.float32)


def intrinsics(size: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    from featurenerf.data.synth.render import focal_for

    f = focal_for(size)
    return torch.full((b, 2), float(f)), torch.full((b, 2), size / 2)


def synthetic_batch(
    b: int, views: int, size: int, rays: int, feature_dim: int, seed: int = 0
) -> tuple[dict, dict]:
    """A training batch of random images with real camera geometry: ``(batch, rays)`` as
    :meth:`FeatureNeRF.compute_losses` takes them. Target rays go through random pixels of random views."""
    from featurenerf.geometry.cameras import rays_from_pixels

    g = torch.Generator().manual_seed(seed)
    focal, c = intrinsics(size, b)
    src_poses = torch.stack([cameras(views, seed * 1000 + i) for i in range(b)])
    batch = {
        "src_images": torch.rand(b, views, 3, size, size, generator=g),
        "src_poses": src_poses,
        "focal": focal,
        "c": c,
    }
    tgt = torch.stack([cameras(rays, seed * 1000 + 500 + i) for i in range(b)])  # one view per ray
    uv = torch.rand(b, rays, 2, generator=g) * size
    origins, dirs = rays_from_pixels(uv, tgt, focal[:, None], c[:, None])
    ray_batch = {
        "origins": origins,
        "dirs": dirs,
        "rgb": torch.rand(b, rays, 3, generator=g),
        "teacher": torch.randn(b, rays, feature_dim, generator=g),
    }
    return batch, ray_batch


# ---------------------------------------------------------------------- timing
def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (synchronising CUDA when present)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


_PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident set size while the block runs, sampled every ``interval`` seconds by a thread
    (``ru_maxrss`` never goes down, so it cannot give per-row peaks in one process)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        # Freed memory is kept for reuse (featurenerf.cpu_allocator), so the process would otherwise sit
        # at the previous rows' high-water mark: hand free pages back first, then measure this block.
        from featurenerf.cpu_allocator import release_free_memory

        release_free_memory()
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def cuda_peak_bytes() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def reset_cuda_peak() -> None:
    """Start a new CUDA high-water mark (what :func:`cuda_peak_bytes` reports next); no-op without CUDA."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------- FLOPs
def _mm_flops(*args, out_val=None, **kwargs) -> int:
    """FLOPs of (add)mm; a sparse operand counts its stored entries, not its dense shape."""
    a, b = (args[1], args[2]) if len(args) >= 3 else (args[0], args[1])
    if a.layout != torch.strided:
        return 2 * a._nnz() * b.shape[1]
    if b.layout != torch.strided:
        return 2 * b._nnz() * a.shape[0]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


_mm_flops._get_raw = True  # FlopCounterMode passes the tensors, not only their shapes


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one call of ``fn`` counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmul,
    conv and bmm; elementwise work is not counted), and the count per op."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    counter = FlopCounterMode(
        display=False, custom_mapping={aten.mm: _mm_flops, aten.addmm: _mm_flops, aten.addmm_: _mm_flops}
    )
    with counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


# ---------------------------------------------------------------------- matmul baseline
class MatmulBaseline:
    """Dense-GEMM FLOP/s at the MLP's shapes, measured in this process with this thread count.

    One measurement runs the three GEMMs a linear layer does per training step on ``n`` points of width
    ``d``: forward ``(n, d) @ (d, d)``, input gradient ``(n, d) @ (d, d)^T`` and weight gradient
    ``(d, n) @ (n, d)``, into preallocated outputs (no allocation in the timed region).

    On a GPU the tensors are made on ``device`` for each measurement and freed after it (so the training
    rows' CUDA memory peaks do not include them), and one measurement repeats the three GEMMs ``inner``
    times (calibrated to about ``GPU_MEASURE_S``), so launch and synchronisation latency do not dominate.

    Each measurement times the GEMMs ``repeats`` times back to back and keeps the best rate: on a shared
    machine a single timing is often slowed by a descheduled thread (one run saw 185-275 GFLOP/s within
    one process, and a row's matmul fraction of 1.11 against the slow baseline). Every timing is kept in
    :attr:`samples` (for the spread, :meth:`spread`), each measurement's best in :attr:`bests`, and
    :attr:`gflops` is the median of the bests (the rows' times are medians too).
    """

    GPU_MEASURE_S = 0.005
    REPEATS = 5

    def __init__(
        self,
        n: int,
        d: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        repeats: int | None = None,
    ) -> None:
        self.n, self.d, self.dtype = n, d, dtype
        self.repeats = max(1, repeats or self.REPEATS)
        self.bests: list[float] = []
        self.device = torch.device(device)
        self.transient = self.device.type == "cuda"
        self.x = self.w = self.out = self.wout = None
        if not self.transient:
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(n, d, generator=g).to(dtype)
            self.w = torch.randn(d, d, generator=g).to(dtype)
            self.out = torch.empty(n, d, dtype=dtype)
            self.wout = torch.empty(d, d, dtype=dtype)
        self.inner = 1
        self.samples: list[float] = []  # every timing (GFLOP/s)
        self.measure()  # warm-up (first-touch of the outputs, MKL / cuBLAS initialisation)
        if self.transient:
            self._alloc()
            t = timed(self._gemms)
            self._free()
            self.inner = max(1, min(1000, math.ceil(self.GPU_MEASURE_S / max(t, 1e-7))))
            self.measure()
        self.samples.clear()
        self.bests.clear()

    def _alloc(self) -> None:
        g = torch.Generator(device=self.device).manual_seed(0)
        kw = {"device": self.device, "dtype": self.dtype}
        self.x = torch.randn(self.n, self.d, generator=g, **kw)
        self.w = torch.randn(self.d, self.d, generator=g, **kw)
        self.out = torch.empty(self.n, self.d, **kw)
        self.wout = torch.empty(self.d, self.d, **kw)

    def _free(self) -> None:
        self.x = self.w = self.out = self.wout = None

    def _gemms(self) -> None:
        torch.mm(self.x, self.w, out=self.out)
        torch.mm(self.x, self.w.t(), out=self.out)
        torch.mm(self.x.t(), self.x, out=self.wout)

    def measure(self) -> float:
        """One measurement: the best of ``repeats`` timings (GFLOP/s); remembered for :attr:`gflops`."""
        if self.transient:
            self._alloc()
        flops = 3 * 2 * self.n * self.d * self.d * self.inner
        rates = []
        for _ in range(self.repeats):
            if self.inner == 1:
                t = timed(self._gemms)
            else:
                t = timed(lambda: [self._gemms() for _ in range(self.inner)])
            rates.append(flops / t / 1e9)
        if self.transient:
            self._free()
        self.samples.extend(rates)
        self.bests.append(max(rates))
        return max(rates)

    @property
    def gflops(self) -> float:
        return median(self.bests)

    def spread(self) -> dict:
        """min / median / max GFLOP/s over every timing, and how many there were."""
        return gflops_spread(self.samples)


def gflops_spread(rates: list[float]) -> dict:
    """``{"min", "median", "max", "n"}`` of a list of GFLOP/s figures (``None`` values when empty)."""
    if not rates:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": min(rates), "median": median(rates), "max": max(rates), "n": len(rates)}


#: A matmul fraction above this is a measurement error: no step does its GEMMs faster than GEMMs alone.
FRACTION_LIMIT = 1.0


def fraction_error(fraction: float | None, baseline: dict | None = None) -> str | None:
    """A one-line note when a matmul fraction exceeds :data:`FRACTION_LIMIT`, else ``None``.

    Args:
        fraction: step FLOP/s ÷ baseline GEMM FLOP/s.
        baseline: the baseline's :func:`gflops_spread`, quoted in the note.
    """
    if fraction is None or not fraction > FRACTION_LIMIT:
        return None
    note = f"matmul fraction {fraction:.2f} > 1 is a measurement error (the baseline GEMMs were timed slower "
    note += "than the step's own GEMMs ran"
    if baseline and baseline.get("n"):
        note += f"; baseline {baseline['min']:.1f}-{baseline['max']:.1f} GFLOP/s over {baseline['n']} timings"
    return note + ")"


def environment() -> dict:
    """What the numbers were measured on."""
    import platform

    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda_version": torch.version.cuda,
        "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory
        if torch.cuda.is_available()
        else None,
        # fp32 GEMMs on a GPU run in full fp32 at "highest" (the default), on TF32 tensor cores otherwise.
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "load_average_at_start": load,
        # bf16 matrix units (AMX) or instructions: bf16-mixed speeds up CPU steps only where present.
        "bf16_hardware": sorted(flags & {"amx_bf16", "avx512_bf16"}),
    }
