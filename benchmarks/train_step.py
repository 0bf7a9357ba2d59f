"""Training-step benchmark: step time, rays/s, samples/s, FLOP efficiency, memory, profile, scaling.

A *step* is what Lightning runs per batch, without Lightning's bookkeeping: ``zero_grad``,
:meth:`FeatureNeRF.compute_losses` (encode, coarse + fine render, the three losses on both passes),
``backward``, ``optimizer.step`` (the module's own Adam), on synthetic tensors at the config's real sizes.

Rows (same module, same batch, timed interleaved in one process):

* ``naive`` — pixelNeRF's way: the fine pass re-evaluates all 96 sorted samples after the 64 coarse ones
  (160 evaluations per ray), per-point ``grid_sample`` + injection layers, per-sample feature head.
* ``reuse`` — exact fine-pass reuse only (96 evaluations per ray), otherwise as ``naive``.
* ``fast`` — the default: reuse + the fast field (maps projected once, one gather, head per ray).
* ``fast_bf16`` — ``fast`` under ``torch.autocast(device, torch.bfloat16)`` (what ``bf16-mixed`` does).
* ``fast_compile`` — ``fast`` with ``model.compile: true`` (first-step compile time reported separately).
* ``fast_graph`` — ``fast`` with ``model.compile_step: true``: the whole forward (encode, both passes, losses)
  as one compiled graph, captured with CUDA graphs on a GPU (:mod:`featurenerf.step_graph`).

On a GPU each row also gets ``kernel_fraction``: GPU kernel time ÷ wall time of one profiled step (how far
the step is from being host-bound; 1 means the GPU never waits for the host).

``device="cuda"`` runs the same steps on the GPU: module, optimizer state and batch on the device, autocast
on ``cuda``, the matmul baseline on the device, and per row the CUDA memory high-water mark of its warm-up
step and of its timed steps. A compile row that fails is recorded as ``{"error": ...}`` and left out.
"""

from __future__ import annotations

import contextlib
import time
import traceback

import torch
from harness import (
    MatmulBaseline,
    PeakRSS,
    build_module,
    count_flops,
    cuda_peak_bytes,
    fraction_error,
    gflops_spread,
    load_config,
    median,
    reset_cuda_peak,
    synthetic_batch,
    timed,
    to_device,
)
from step_profile import profile_step

ROWS = {
    "naive": {"fast_field": False, "reuse_coarse": False},
    "reuse": {"fast_field": False, "reuse_coarse": True},
    "fast": {"fast_field": True, "reuse_coarse": True},
    "fast_bf16": {"fast_field": True, "reuse_coarse": True, "autocast": torch.bfloat16},
    "fast_compile": {"fast_field": True, "reuse_coarse": True, "compile": {"compile": True}},
    "fast_graph": {"fast_field": True, "reuse_coarse": True, "compile": {"compile_step": True}},
}


class Stepper:
    """One module + optimizer + batch on ``device``; ``step(row)`` runs one training step the way ``row``
    says. The batch is made on the CPU (same numbers on every device) and moved."""

    def __init__(
        self,
        model_kwargs: dict,
        b: int,
        views: int,
        size: int,
        rays: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model_kwargs = model_kwargs
        self.device = torch.device(device)
        self.module = build_module(model_kwargs).to(self.device)  # before the optimizer sees the params
        self.optimizer = self._optimizer(self.module)
        batch, rays_batch = synthetic_batch(b, views, size, rays, model_kwargs["feature_dim"], seed)
        self.batch, self.rays = to_device(batch, self.device), to_device(rays_batch, self.device)
        self.compiled: dict[str, tuple] = {}  # compile option -> (module, optimizer), built on first use
        self.b, self.r = b, rays

    @staticmethod
    def _optimizer(module):
        opt = module.configure_optimizers()
        if isinstance(opt, dict):
            opt = opt["optimizer"]
        return opt[0] if isinstance(opt, (list, tuple)) else opt

    def _target(self, row: dict):
        options = row.get("compile")
        if options:
            key = repr(sorted(options.items()))
            if key not in self.compiled:
                module = build_module(self.model_kwargs, **options).to(self.device)
                self.compiled[key] = (module, self._optimizer(module))
            return self.compiled[key]
        return self.module, self.optimizer

    def step(self, row: dict) -> float:
        module, opt = self._target(row)
        module.net.fast_field = row["fast_field"]
        module.net.reuse_coarse = row["reuse_coarse"]
        dtype = row.get("autocast")
        ctx = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        opt.zero_grad(set_to_none=True)
        with ctx:  # bf16-mixed: autocast around the forward only, as Lightning does
            loss = module.compute_losses(self.batch, self.rays)["loss"]
        loss.backward()
        opt.step()
        return float(loss.detach())

    def samples_per_step(self, row: dict) -> int:
        net = self.module.net
        n_new = net.n_fine + net.n_fine_depth
        per_ray = net.n_coarse + n_new if row["reuse_coarse"] else 2 * net.n_coarse + n_new
        return self.b * self.r * per_ray


class CompileGuard:
    """Runs a row's step: a compile row's exception is recorded in ``failed`` (the row is then dropped),
    any other row's propagates."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}

    def __call__(self, k: str, fn):
        if not ROWS[k].get("compile"):
            return fn()
        try:
            return fn()
        except Exception as err:  # e.g. no working inductor/triton toolchain on this machine
            self.failed[k] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            return None

    def alive(self, rows: list[str]) -> list[str]:
        """``rows`` without the failed ones."""
        return [k for k in rows if k not in self.failed]


def bench_config(
    name: str,
    rows: list[str],
    repeats: int,
    profile: bool,
    size_override: dict | None = None,
    model_override: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Interleaved timing of ``rows`` at config ``name`` on ``device``; first call of each row counts FLOPs.
    The overrides change the data and model sections (``--quick`` shrinks them; on a GPU a bigger batch)."""
    cfg = load_config(name)
    data = {**cfg["data"], **(size_override or {})}
    b, r = data["batch_size"], data["rays_per_object"]
    model = {**cfg["model"], **(model_override or {})}
    stepper = Stepper(model, b, data["num_src_views"], data["image_size"], r, device=device)
    baselines = matmul_baselines(stepper, rows)
    out = config_record(name, stepper, data, {**(size_override or {}), **(model_override or {})} or None)
    guard = CompileGuard()
    out["rows"].update(warm_up_rows(stepper, rows, guard))
    rows = guard.alive(rows)
    on_cuda = stepper.device.type == "cuda"
    if on_cuda:  # one more untimed step per row: cuBLAS heuristics, caching allocator at its working set
        for k in rows:
            guard(k, lambda k=k: stepper.step(ROWS[k]))
        rows = guard.alive(rows)
    times, timed_peak = timed_rounds(stepper, rows, baselines, repeats, guard)
    for k, err in guard.failed.items():
        if "flops" in out["rows"][k]:  # failed while timed: drop the partial numbers
            out["rows"][k] = {"error": err, "first_step_s": out["rows"][k]["first_step_s"]}
    rows = guard.alive(rows)
    add_rates(out["rows"], rows, times, timed_peak, baselines, b * r, on_cuda)
    if on_cuda:
        for k in rows:
            out["rows"][k].update(kernel_fraction(stepper, ROWS[k]))
    out["matmul_baseline"] = baseline_record(baselines)
    if "fast" in rows:
        out["fast_alone"] = fast_alone(
            stepper, out["rows"]["fast"]["flops"], baselines[torch.float32], repeats
        )
    if profile:
        try:
            out["profile"] = profile_step(stepper, ROWS["fast"])
        except Exception as err:  # the profiler (CUPTI on a GPU) must not lose the timings
            out["profile"] = {"error": f"{type(err).__name__}: {err}"}
            traceback.print_exc()
    return out


def kernel_fraction(stepper: Stepper, row: dict) -> dict:
    """GPU kernel time ÷ wall time of one step of ``row`` under torch.profiler (kernels of captured CUDA
    graphs included); the profiler's own overhead makes the fraction a lower bound."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            wall = timed(lambda: stepper.step(row))
        kernel_us = sum(
            getattr(e, "self_device_time_total", 0.0)
            for e in prof.events()
            if e.device_type != torch.autograd.DeviceType.CPU
        )
    except Exception as err:  # CUPTI missing or busy: the timings stand without it
        return {"kernel_fraction_error": f"{type(err).__name__}: {err}"}
    return {"kernel_s": kernel_us / 1e6, "profiled_wall_s": wall, "kernel_fraction": kernel_us / 1e6 / wall}


def matmul_baselines(stepper: Stepper, rows: list[str]) -> dict[torch.dtype, MatmulBaseline]:
    """One GEMM baseline per dtype the rows compute in: a row's fraction is against GEMMs of its own dtype.
    The GEMMs are (coarse points, d_hidden) x (d_hidden, d_hidden), the MLP's shape."""
    net = stepper.module.net
    n_points = stepper.b * stepper.r * net.n_coarse
    baselines = {torch.float32: MatmulBaseline(n_points, net.d_hidden, device=stepper.device)}
    for k in rows:
        dt = ROWS[k].get("autocast")
        if dt is not None and dt not in baselines:
            baselines[dt] = MatmulBaseline(n_points, net.d_hidden, dt, device=stepper.device)
    return baselines


def config_record(name: str, stepper: Stepper, data: dict, overrides: dict | None) -> dict:
    """A config's result before any row ran: its sizes, device and an empty ``rows`` table."""
    net = stepper.module.net
    out: dict = {
        "config": name,
        "overrides": overrides,
        "device": stepper.device.type,
        "sizes": {
            "objects": data["batch_size"],
            "rays_per_object": data["rays_per_object"],
            "image_size": data["image_size"],
            "source_views": data["num_src_views"],
            "samples": [net.n_coarse, net.n_fine, net.n_fine_depth],
            "d_hidden": net.d_hidden,
            "feature_dim": net.feature_dim,
        },
        "rows": {},
    }
    if stepper.device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(stepper.device)
    return out


def warm_up_rows(stepper: Stepper, rows: list[str], guard: CompileGuard) -> dict[str, dict]:
    """One warm-up step per row, under the FLOP counter, with its memory high-water marks.

    A compile row's FLOPs are the eager ``fast`` row's (same math): Dynamo does not compile under
    FlopCounterMode's dispatch mode, and the counter cannot see inside compiled graphs."""
    on_cuda = stepper.device.type == "cuda"
    records: dict[str, dict] = {}
    for k in rows:
        row = ROWS[k]
        reset_cuda_peak()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            if row.get("compile"):  # compiles
                guard(k, lambda row=row: stepper.step(row))
                flops, per_op = None, {}
            else:
                flops, per_op = count_flops(lambda row=row: stepper.step(row))
            first = time.perf_counter() - t0
        if k in guard.failed:
            records[k] = {"error": guard.failed[k], "first_step_s": first}
            continue
        records[k] = {
            "flops": flops,
            "flops_per_op": per_op,
            "first_step_s": first,
            "peak_rss_bytes": mem.peak,
            "rss_increase_bytes": mem.peak - mem.start,
            "cuda_peak_bytes": cuda_peak_bytes() if on_cuda else None,
            "samples_per_step": stepper.samples_per_step(row),
        }
    for k in guard.alive(rows):
        if records[k]["flops"] is None:
            records[k]["flops"] = records["fast"]["flops"]
            records[k]["flops_from"] = "fast"
    return records


def timed_rounds(
    stepper: Stepper, rows: list[str], baselines: dict, repeats: int, guard: CompileGuard
) -> tuple[dict[str, list[float]], dict[str, int | None]]:
    """``repeats`` rounds of one timed step per row, each round after one measurement of every baseline
    (and one more at the end). Returns the step times per row and, on a GPU, the CUDA peak of its steps."""
    on_cuda = stepper.device.type == "cuda"
    times: dict[str, list[float]] = {k: [] for k in rows}
    timed_peak: dict[str, int | None] = dict.fromkeys(rows)
    for _ in range(repeats):
        for base in baselines.values():
            base.measure()
        for k in guard.alive(rows):
            reset_cuda_peak()
            t = guard(k, lambda k=k: timed(lambda: stepper.step(ROWS[k])))
            if t is None:
                continue
            times[k].append(t)
            if on_cuda:
                timed_peak[k] = max(timed_peak[k] or 0, cuda_peak_bytes())
    for base in baselines.values():
        base.measure()
    return times, timed_peak


def add_rates(
    records: dict[str, dict],
    rows: list[str],
    times: dict[str, list[float]],
    timed_peak: dict[str, int | None],
    baselines: dict,
    rays_per_step: int,
    on_cuda: bool,
) -> None:
    """Adds each row's median step time and what follows from it (rates, matmul fraction, ratio to the
    first row) to its record; on a GPU also the CUDA peak of its timed steps."""
    ref = rows[0]
    for k in rows:
        t = median(times[k])
        rec = records[k]
        dtype = ROWS[k].get("autocast", torch.float32)
        gflops = rec["flops"] / t / 1e9
        rec.update(
            {
                "step_s": t,
                "step_s_all": times[k],
                "steps_per_s": 1 / t,
                "rays_per_s": rays_per_step / t,
                "samples_per_s": rec["samples_per_step"] / t,
                "gflops_per_s": gflops,
                "matmul_fraction": gflops / baselines[dtype].gflops,
                "matmul_dtype": str(dtype).removeprefix("torch."),
                f"step_ratio_vs_{ref}": median([a / n for a, n in zip(times[k], times[ref])]),
            }
        )
        if on_cuda:
            rec["cuda_peak_bytes_timed"] = timed_peak[k]
        if ROWS[k].get("compile"):
            # The first step compiles; the counted FLOPs are eager ones, so its fraction is comparable.
            rec["compile_s"] = rec["first_step_s"] - t


def baseline_record(baselines: dict) -> dict:
    """The GEMM baselines by dtype name: median GFLOP/s, every timing and the shape."""
    return {
        str(dt).removeprefix("torch."): {
            "gflops_per_s": base.gflops,
            "all": list(base.samples),
            "shape": f"({base.n}, {base.d}) x ({base.d}, {base.d}): forward, input-grad and weight-grad GEMMs",
        }
        for dt, base in baselines.items()
    }


def fast_alone(stepper: Stepper, flops: int, base: MatmulBaseline, repeats: int) -> dict:
    """The ``fast`` step on its own, alternating only with the matmul baseline: what a training run (which
    runs nothing else) sees, and the matmul fraction the issue's target is about.

    In the interleaved rounds the ``naive`` row's steps (2x the memory) leave the CPU allocator's kept heap
    fragmented and the caches cold for the step after them; measured here, that slows the fast step by
    up to 15 %. So free pages go back first and two warm-up steps let the heap settle on this step alone.
    """
    from featurenerf.cpu_allocator import release_free_memory

    release_free_memory()
    row = ROWS["fast"]
    stepper.step(row)
    stepper.step(row)
    times, rates = [], []
    first = len(base.samples)
    for _ in range(repeats):
        rates.append(base.measure())
        times.append(timed(lambda: stepper.step(row)))
    rates.append(base.measure())
    t, g = median(times), median(rates)
    spread = gflops_spread(base.samples[first:])
    out = {
        "step_s": t,
        "step_s_all": times,
        "matmul_baseline_gflops_per_s": g,
        "matmul_baseline_all": rates,
        "matmul_baseline_spread": spread,
        "gflops_per_s": flops / t / 1e9,
        "matmul_fraction": flops / t / 1e9 / g,
    }
    error = fraction_error(out["matmul_fraction"], spread)
    if error:
        out["matmul_fraction_error"] = error
    return out


# ---------------------------------------------------------------------- scaling
def bench_scaling(name: str, rays_totals: list[int], views_list: list[int], repeats: int) -> dict:
    """Step time of the ``fast`` row vs rays per batch and vs source views (per-ray cost should be flat)."""
    cfg = load_config(name)
    data = cfg["data"]
    b, size = data["batch_size"], data["image_size"]
    row = ROWS["fast"]
    out: dict = {"config": name, "rays": [], "views": []}

    def run(rays_per_object: int, views: int) -> float:
        stepper = Stepper(cfg["model"], b, views, size, rays_per_object)
        stepper.step(row)
        return median([timed(lambda: stepper.step(row)) for _ in range(repeats)])

    for total in rays_totals:
        t = run(total // b, data["num_src_views"])
        out["rays"].append({"rays_per_batch": total, "step_s": t, "s_per_1k_rays": t / total * 1000})
    base_rays = 1024 if 1024 in rays_totals else rays_totals[0]
    for v in views_list:
        t = run(base_rays // b, v)
        out["views"].append({"source_views": v, "rays_per_batch": base_rays, "step_s": t})
    # Linear scaling: time(n) = a + c·n, least squares over the points; the residual says how linear.
    xs = torch.tensor([e["rays_per_batch"] / 1000 for e in out["rays"]], dtype=torch.float64)
    ys = torch.tensor([e["step_s"] for e in out["rays"]], dtype=torch.float64)
    design = torch.stack([torch.ones_like(xs), xs], dim=1)
    fixed, slope = torch.linalg.lstsq(design, ys[:, None]).solution.reshape(-1)
    fit = design @ torch.stack([fixed, slope])
    out["rays_fit"] = {
        "s_per_1k_rays_marginal": float(slope),
        "fixed_s": float(fixed),
        "max_relative_residual": float(((ys - fit).abs() / ys).max()),
    }
    v0 = out["views"][0]["step_s"]
    out["views_ratio"] = {str(e["source_views"]): e["step_s"] / v0 for e in out["views"]}
    return out
