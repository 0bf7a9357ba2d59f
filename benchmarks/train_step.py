"""Training-step benchmark: step time, rays/s, samples/s, FLOP efficiency, memory, profile, scaling.

A *step* is what Lightning runs per batch, without Lightning's bookkeeping: ``zero_grad``,
:meth:`FeatureNeRF.compute_losses` (encode, coarse + fine render, the three losses on both passes),
``backward``, ``optimizer.step`` (the module's own Adam), on synthetic tensors at the config's real sizes.

Rows (same module, same batch, timed interleaved in one process):

* ``naive`` — pixelNeRF's way: the fine pass re-evaluates all 96 sorted samples after the 64 coarse ones
  (160 evaluations per ray), per-point ``grid_sample`` + injection layers, per-sample feature head.
* ``reuse`` — exact fine-pass reuse only (96 evaluations per ray), otherwise as ``naive``.
* ``fast`` — the default: reuse + the fast field (maps projected once, one gather, head per ray).
* ``fast_bf16`` — ``fast`` under ``torch.autocast("cpu", torch.bfloat16)`` (what ``bf16-mixed`` does).
* ``fast_compile`` — ``fast`` with ``model.compile: true`` (first-step compile time reported separately).
"""

from __future__ import annotations

import contextlib
import time

import torch
from harness import (
    MatmulBaseline,
    PeakRSS,
    build_module,
    count_flops,
    cuda_peak_bytes,
    load_config,
    median,
    synthetic_batch,
    timed,
)

ROWS = {
    "naive": {"fast_field": False, "reuse_coarse": False},
    "reuse": {"fast_field": False, "reuse_coarse": True},
    "fast": {"fast_field": True, "reuse_coarse": True},
    "fast_bf16": {"fast_field": True, "reuse_coarse": True, "autocast": torch.bfloat16},
    "fast_compile": {"fast_field": True, "reuse_coarse": True, "compile": True},
}


class Stepper:
    """One module + optimizer + batch; ``step(row)`` runs one training step the way ``row`` says."""

    def __init__(self, model_kwargs: dict, b: int, views: int, size: int, rays: int, seed: int = 0) -> None:
        self.model_kwargs = model_kwargs
        self.module = build_module(model_kwargs)
        self.optimizer = self._optimizer(self.module)
        self.batch, self.rays = synthetic_batch(b, views, size, rays, model_kwargs["feature_dim"], seed)
        self.compiled = None  # (module, optimizer), built on first use of a compile row
        self.b, self.r = b, rays

    @staticmethod
    def _optimizer(module):
        opt = module.configure_optimizers()
        if isinstance(opt, dict):
            opt = opt["optimizer"]
        return opt[0] if isinstance(opt, (list, tuple)) else opt

    def _target(self, row: dict):
        if row.get("compile"):
            if self.compiled is None:
                module = build_module(self.model_kwargs, compile=True)
                self.compiled = (module, self._optimizer(module))
            return self.compiled
        return self.module, self.optimizer

    def step(self, row: dict) -> float:
        module, opt = self._target(row)
        module.net.fast_field = row["fast_field"]
        module.net.reuse_coarse = row["reuse_coarse"]
        dtype = row.get("autocast")
        ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
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


def bench_config(
    name: str,
    rows: list[str],
    repeats: int,
    profile: bool,
    size_override: dict | None = None,
    model_override: dict | None = None,
) -> dict:
    """Interleaved timing of ``rows`` at config ``name``; first call of each row counts FLOPs.
    The overrides shrink the data and model sections (``--quick`` only)."""
    cfg = load_config(name)
    data = {**cfg["data"], **(size_override or {})}
    b, r, size, views = data["batch_size"], data["rays_per_object"], data["image_size"], data["num_src_views"]
    stepper = Stepper({**cfg["model"], **(model_override or {})}, b, views, size, r)
    net = stepper.module.net
    n_points = b * r * net.n_coarse
    # One baseline per dtype the rows compute in: a row's fraction is against GEMMs of its own dtype.
    baselines = {torch.float32: MatmulBaseline(n_points, net.d_hidden)}
    for k in rows:
        dt = ROWS[k].get("autocast")
        if dt is not None and dt not in baselines:
            baselines[dt] = MatmulBaseline(n_points, net.d_hidden, dt)

    out: dict = {
        "config": name,
        "overrides": {**(size_override or {}), **(model_override or {})} or None,
        "sizes": {
            "objects": b,
            "rays_per_object": r,
            "image_size": size,
            "source_views": views,
            "samples": [net.n_coarse, net.n_fine, net.n_fine_depth],
            "d_hidden": net.d_hidden,
            "feature_dim": net.feature_dim,
        },
        "rows": {},
    }
    times: dict[str, list[float]] = {k: [] for k in rows}
    for k in rows:  # warm-up step per row, under the FLOP counter, with the memory high-water mark
        row = ROWS[k]
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            if row.get("compile"):
                # Compiles. (Dynamo does not compile under FlopCounterMode's dispatch mode, and the counter
                # cannot see inside compiled graphs: the FLOPs are the eager ``fast`` row's, same math.)
                stepper.step(row)
                flops, per_op = None, {}
            else:
                flops, per_op = count_flops(lambda row=row: stepper.step(row))
            first = time.perf_counter() - t0
        out["rows"][k] = {
            "flops": flops,
            "flops_per_op": per_op,
            "first_step_s": first,
            "peak_rss_bytes": mem.peak,
            "rss_increase_bytes": mem.peak - mem.start,
            "cuda_peak_bytes": cuda_peak_bytes(),
            "samples_per_step": stepper.samples_per_step(row),
        }
    for k in rows:
        if out["rows"][k]["flops"] is None:
            out["rows"][k]["flops"] = out["rows"]["fast"]["flops"]
            out["rows"][k]["flops_from"] = "fast"
    for _ in range(repeats):
        for base in baselines.values():
            base.measure()
        for k in rows:
            times[k].append(timed(lambda k=k: stepper.step(ROWS[k])))
    for base in baselines.values():
        base.measure()

    ref = rows[0]
    for k in rows:
        t = median(times[k])
        rec = out["rows"][k]
        rec.update(
            {
                "step_s": t,
                "step_s_all": times[k],
                "rays_per_s": b * r / t,
                "samples_per_s": rec["samples_per_step"] / t,
                "gflops_per_s": rec["flops"] / t / 1e9,
                "matmul_fraction": rec["flops"]
                / t
                / 1e9
                / baselines[ROWS[k].get("autocast", torch.float32)].gflops,
                "matmul_dtype": str(ROWS[k].get("autocast", torch.float32)).removeprefix("torch."),
                f"step_ratio_vs_{ref}": median([a / n for a, n in zip(times[k], times[ref])]),
            }
        )
        if ROWS[k].get("compile"):
            # The first step compiles; the counted FLOPs are eager ones, so its fraction is comparable.
            rec["compile_s"] = rec["first_step_s"] - t
    out["matmul_baseline"] = {
        str(dt).removeprefix("torch."): {
            "gflops_per_s": base.gflops,
            "all": base.samples,
            "shape": f"({base.n}, {base.d}) x ({base.d}, {base.d}): forward, input-grad and weight-grad GEMMs",
        }
        for dt, base in baselines.items()
    }
    if profile:
        out["profile"] = profile_step(stepper, ROWS["fast"])
    return out


# ---------------------------------------------------------------------- profile
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
    """Self CPU time of one step by category (torch.profiler; op names and parents decide the category)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        wall = timed(lambda: stepper.step(row))
    by_cat = dict.fromkeys(CATEGORIES, 0.0)
    by_op: dict[str, float] = {}
    for evt in prof.events():
        self_s = evt.self_cpu_time_total / 1e6
        by_cat[_category(evt)] += self_s
        by_op[evt.name] = by_op.get(evt.name, 0.0) + self_s
    total = sum(by_cat.values())
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    return {
        "row": "fast",
        "wall_s_under_profiler": wall,
        "cpu_s_total": total,
        "fraction": {k: v / total for k, v in by_cat.items()},
        "seconds": by_cat,
        "top_ops": dict(top),
        "note": "self CPU time per op summed over both threads' work as torch.profiler attributes it; "
        "categories from op names, autograd node names and input shapes",
    }


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
