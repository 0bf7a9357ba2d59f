"""Run the featurenerf benchmarks; write ``bench.json`` and a readable ``bench.md``.

    python benchmarks/run.py --out benchmarks/results            # everything (make bench)
    python benchmarks/run.py --quick --out /tmp/bench             # smoke run, seconds
    python benchmarks/run.py --sections train render --out ...    # some sections

Sections: ``train`` (training step rows at the toy and the paper's srn_cars config), ``render`` (full-image
render time, untrained weights), ``psnr`` (render time and PSNR cost of skipping on held-out views of a
trained toy checkpoint: ``--toy-ckpt``/``--toy-data``, else the latest ``make demo`` run), ``occupancy``
(the occupancy grid on that checkpoint: exactness, samples per ray, build cost, a 128² render and a
24-frame orbit against pixelNeRF's way), ``cache``
(teacher cache vs on-the-fly epoch time), ``data`` (time the training step waits for the next batch, with
the toy config's loader workers, on ``--device``), ``scaling`` (step time vs rays per batch and source views).
Every ratio compares rows measured in the same process, interleaved; times are medians over repeats.

``--device cuda`` (what ``auto`` picks when ``torch.cuda.is_available()``) runs the ``train`` section on the
GPU: toy, srn_cars with 4x the rays per object (a batch that keeps the GPU busy) and srn_cars (naive, fast,
fast_bf16), then ``srn_cars_graph`` (naive, fast, fast_graph: the whole step as one CUDA graph), each with
10 repeats, fp32 vs ``torch.autocast("cuda", torch.bfloat16)``,
matmul fractions against same-dtype GEMMs on the GPU, and CUDA peak memory per row. The other sections
have no GPU path, except ``occupancy``, which runs on the GPU when named: ``render`` still runs on the CPU;
``psnr``, ``occupancy``, ``cache`` and ``scaling`` are skipped (the reason is recorded) unless named with
``--sections``.

    python benchmarks/run.py --device cuda --sections train --out /tmp/bench   # GPU rows only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

SECTIONS = ("train", "render", "psnr", "occupancy", "cache", "data", "scaling")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="folder for bench.json and bench.md")
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes, one repeat, toy config only (smoke test)"
    )
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=None, help="default: all")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (default 2, the reference figures' setting). On a machine whose cores are busy "
        "with other processes use 1: every OpenMP parallel op then waits for descheduled threads",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per row (default per section)")
    p.add_argument("--toy-ckpt", default=None, help="trained toy checkpoint for the psnr section")
    p.add_argument("--toy-data", default=None, help="its data root (default: from the run's config.yaml)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the train section runs (default auto: cuda when torch.cuda.is_available())",
    )
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    return args


def find_toy_run(ckpt: str | None, data: str | None) -> tuple[str, str] | None:
    """(checkpoint, data root) for the psnr section: the arguments, else the newest demo/toy run."""
    import yaml

    candidates = (
        [Path(ckpt)]
        if ckpt
        else sorted(
            Path("outputs").glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True
        )
    )
    for path in candidates:
        if not path.is_file():
            continue
        root = data
        config = path.resolve().parent.parent / "config.yaml"
        if root is None and config.is_file():
            root = ((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("root")
        if root and Path(root).is_dir():
            return str(path), str(root)
    return None


QUICK_SIZES = {"rays_per_object": 32, "batch_size": 2, "image_size": 32}
QUICK_MODEL = {"d_hidden": 64, "n_coarse": 16, "n_fine": 4, "n_fine_depth": 4, "encoder_layers": 2}
CPU_ONLY = {  # no GPU path in these: on a GPU machine `make bench` reports the GPU rows and the CPU render rows
    "psnr": "CPU-only section (trained-checkpoint render); run with --device cpu",
    "occupancy": "trained-checkpoint render: name it (--sections occupancy) to run it on the GPU",
    "cache": "CPU-only section (data loading); run with --device cpu",
    "scaling": "CPU-only section; run with --device cpu",
}


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen sections one after another, writes ``bench.json``/``bench.md`` and prints the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from featurenerf.cpu_allocator import keep_freed_memory

    # As CLI training does on CPU (the KeepFreedMemory callback): freed activations are reused, not faulted in anew.
    kept = keep_freed_memory()
    # A cold compiler cache, so the compile row reports the real compilation time.
    compile_cache = tempfile.TemporaryDirectory(prefix="featurenerf-bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache.name
    import harness
    import report

    device = harness.resolve_device(args.device)
    sections, skipped = choose_sections(args, device)
    result = new_result(args, device, kept)
    if skipped:
        result["skipped"] = skipped
    if "render" in sections and device == "cuda":
        result["render_device"] = "cpu"  # render_bench has no GPU path
    started = time.perf_counter()
    for name, fill in section_plan(args, device, sections):
        run_section(name, fill, result, Path(args.out))
    result["summary"] = report.summary(result)
    result["total_s"] = time.perf_counter() - started
    write(Path(args.out), result)
    print(report.markdown(result))
    return 0


def choose_sections(args: argparse.Namespace, device: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The sections to run, and the skipped ones with why (CPU-only sections on a GPU unless named)."""
    sections = tuple(args.sections or (("train", "render") if args.quick else SECTIONS))
    if device != "cuda" or args.sections:
        return sections, {}
    skipped = {name: why for name, why in CPU_ONLY.items() if name in sections}
    return tuple(s for s in sections if s not in skipped), skipped


def new_result(args: argparse.Namespace, device: str, kept: bool) -> dict:
    """The result before any section ran: environment, methods, empty tables, a load warning."""
    import harness

    result: dict = {
        "environment": {**harness.environment(), "cpu_keep_freed_memory": kept},
        "device": device,
        "mode": "quick" if args.quick else "full",
        "flops_method": "torch.utils.flop_counter.FlopCounterMode on one full training step (forward, "
        "backward, Adam): matmul/conv/bmm FLOPs; sparse products count 2*nnz*width; elementwise not counted",
        "timing_method": "rows timed interleaved in one process; medians over repeats; ratios are medians of "
        "per-round ratios",
        "train_step": {},
        "render": {},
        "errors": {},
    }
    load = result["environment"]["load_average_at_start"]
    cores = result["environment"]["cpu_count"] or 1
    if args.threads > 1 and load and load[0] > cores:
        result["warning"] = (
            f"load average {load[0]:.1f} on {cores} cores with {args.threads} threads: OpenMP threads contend "
            "with other processes and small ops wait for descheduled threads; --threads 1 measures cleanly"
        )
    return result


def run_section(name: str, fill: Store, result: dict, out_dir: Path) -> None:
    """Runs one section; its exception is recorded, not raised. Writes what is done so far afterwards."""
    t0 = time.perf_counter()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        fill(result)
    except Exception as err:  # one broken section must not lose the others' numbers
        result["errors"][name] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    try:  # what is done so far, in case the run is cut short; the final write replaces it
        write(out_dir, {**result, "partial": f"written after section {name!r}"})
    except Exception:
        traceback.print_exc()


class Store:
    """One section's work: stores ``compute()`` at ``result[keys[0]]...[keys[-1]]``."""

    def __init__(self, *keys: str, compute: Callable[[], object]) -> None:
        self.keys, self.compute = keys, compute

    def __call__(self, result: dict) -> None:
        target = result
        for key in self.keys[:-1]:
            target = target[key]
        target[self.keys[-1]] = self.compute()


def section_plan(args: argparse.Namespace, device: str, sections: tuple[str, ...]) -> list[tuple[str, Store]]:
    """(name, work) of every section to run, in order."""
    plan: list[tuple[str, Store]] = []
    if "train" in sections:
        plan += train_cuda_sections(args) if device == "cuda" else train_cpu_sections(args)
    if "render" in sections:
        plan += render_sections(args)
    if "psnr" in sections:
        plan.append(
            ("psnr", Store("psnr", compute=partial(trained_toy_render, args.toy_ckpt, args.toy_data)))
        )
    if "occupancy" in sections:
        grid = partial(trained_toy_occupancy, args.toy_ckpt, args.toy_data, args.repeats or 1, device)
        plan.append(("occupancy", Store("occupancy", compute=grid)))
    if "cache" in sections:
        plan.append(("cache", Store("cache", compute=partial(teacher_cache, args.repeats or 2))))
    if "data" in sections:
        plan.append(("data", Store("data", compute=partial(data_wait, device, args.quick))))
    if "scaling" in sections:
        import train_step

        scaling = partial(
            train_step.bench_scaling, "toy", [256, 512, 1024, 2048, 4096], [1, 2, 4], args.repeats or 2
        )
        plan.append(("scaling", Store("scaling", compute=scaling)))
    return plan


def train_cuda_sections(args: argparse.Namespace) -> list[tuple[str, Store]]:
    """Training-step rows on the GPU: toy, srn_cars with 4x the rays, srn_cars (compile row last)."""
    import harness
    import train_step

    rows = ["naive", "fast", "fast_bf16"]
    if args.quick:
        plan = [("toy", "toy", rows, args.repeats or 1, True, QUICK_SIZES, QUICK_MODEL)]
    else:
        reps = args.repeats or 10  # a GPU step takes milliseconds
        rays = harness.load_config("srn_cars")["data"]["rays_per_object"]
        # Cheap configs first, the compile rows last and in their own section (beside the eager rows they
        # are compared with): a run cut short (gpu_check.sh's timeout) during a slow compilation keeps the
        # sections it finished, since the result is written after each one. Only the whole-step graph (the
        # row with a target) is compiled: the MLP-only compile is the CPU table's row.
        plan = [
            ("toy", "toy", rows, reps, True, None, None),
            # The paper's 4 x 128 rays can leave a big GPU latency-bound; 4x the rays shows throughput.
            ("srn_cars_x4rays", "srn_cars", rows, reps, False, {"rays_per_object": 4 * rays}, None),
            ("srn_cars", "srn_cars", rows, reps, True, None, None),
        ]
        if not args.no_compile:
            graph_rows = ["naive", "fast", "fast_graph"]
            plan.append(("srn_cars_graph", "srn_cars", graph_rows, reps, False, None, None))
    return [
        (
            f"train {key} (cuda)",
            Store("train_step", key, compute=partial(train_step.bench_config, *bench, device="cuda")),
        )
        for key, *bench in plan
    ]


def train_cpu_sections(args: argparse.Namespace) -> list[tuple[str, Store]]:
    """Training-step rows on the CPU: toy (shrunk with ``--quick``), else toy and srn_cars."""
    import train_step

    if args.quick:
        toy = partial(
            train_step.bench_config,
            "toy",
            ["naive", "fast", "fast_bf16"],
            args.repeats or 1,
            True,
            QUICK_SIZES,
            QUICK_MODEL,
        )
        return [("train toy", Store("train_step", "toy", compute=toy))]
    rows = ["naive", "reuse", "fast", "fast_bf16"] + ([] if args.no_compile else ["fast_compile"])
    toy = partial(train_step.bench_config, "toy", rows, args.repeats or 5, profile=True)
    # 4 rounds: memory-bound parts of the step swing with the neighbours' traffic.
    cars = partial(train_step.bench_config, "srn_cars", rows, args.repeats or 4, profile=True)
    return [
        ("train toy", Store("train_step", "toy", compute=toy)),
        ("train srn_cars", Store("train_step", "srn_cars", compute=cars)),
    ]


def render_sections(args: argparse.Namespace) -> list[tuple[str, Store]]:
    """Full-image render time with untrained weights (on the CPU whatever ``--device`` says)."""
    import render_bench

    if args.quick:
        toy = partial(render_bench.bench_untrained, "toy", 16, 1)
        return [("render toy", Store("render", "toy", compute=toy))]
    toy = partial(render_bench.bench_untrained, "toy", None, args.repeats or 3)
    cars = partial(render_bench.bench_untrained, "srn_cars", 32, args.repeats or 1)
    return [
        ("render toy", Store("render", "toy", compute=toy)),
        ("render srn_cars", Store("render", "srn_cars", compute=cars)),
    ]


def trained_toy_render(ckpt: str | None, data: str | None) -> dict:
    """Render time and PSNR cost of skipping on a trained toy checkpoint (skipped without one)."""
    import render_bench

    found = find_toy_run(ckpt, data)
    if found is None:
        return {"skipped": "no trained toy checkpoint: run `make demo` or pass --toy-ckpt/--toy-data"}
    ckpt, root = found
    return render_bench.bench_trained(ckpt, root, "test", objects=4, views=2, repeats=1)


def trained_toy_occupancy(ckpt: str | None, data: str | None, repeats: int, device: str = "cpu") -> dict:
    """The occupancy grid on a trained toy checkpoint (skipped without one): exactness on 4 held-out
    objects x 2 views, a 128² render and a 24-frame orbit against pixelNeRF's way, grids 32³ and 64³,
    on ``device``."""
    import occupancy_bench

    found = find_toy_run(ckpt, data)
    if found is None:
        return {"skipped": "no trained toy checkpoint: run `make demo` or pass --toy-ckpt/--toy-data"}
    ckpt, root = found
    return occupancy_bench.bench_occupancy(
        ckpt, root, "test", objects=4, views=2, size=128, frames=24, repeats=repeats, device=device
    )


def small_toy_dataset(folder: Path) -> Path:
    """8 toy cars x 10 views at 64 px generated under ``folder``: the data of the cache and data sections."""
    from featurenerf.data.synth import generate_dataset

    return generate_dataset("toycar", folder / "data", objects=8, views=10, size=64, seed=0, progress=False)


def teacher_cache(repeats: int) -> dict:
    """Teacher cache vs on-the-fly epoch time on a small generated toy dataset."""
    import cache_bench
    import harness

    with tempfile.TemporaryDirectory() as tmp:
        root = small_toy_dataset(Path(tmp))
        cfg = harness.load_config("toy")
        d = cfg["data"]
        return cache_bench.bench_cache(
            str(root),
            cfg["teacher"],
            d["image_size"],
            items=16,
            repeats=repeats,
            rays_per_object=d["rays_per_object"],
            batch_size=d["batch_size"],
        )


def data_wait(device: str, quick: bool) -> dict:
    """Data loading against the training step (:mod:`data_bench`) on a small generated toy dataset, with the
    toy config's teacher and loader workers (``auto`` resolved for ``device``); the steps run on ``device``."""
    import data_bench
    import harness

    with tempfile.TemporaryDirectory() as tmp:
        root = small_toy_dataset(Path(tmp))
        return data_bench.bench_data(
            str(root),
            "toy",
            harness.load_config("toy")["teacher"],
            batches=3 if quick else 24,
            cache_dir=str(Path(tmp) / "cache"),
            device=device,
        )


def write(out_dir: Path, result: dict) -> None:
    import report

    from featurenerf.io import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "bench.json", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    with atomic_write(out_dir / "bench.md", "w") as fh:
        fh.write(report.markdown(result))


if __name__ == "__main__":
    sys.exit(main())
