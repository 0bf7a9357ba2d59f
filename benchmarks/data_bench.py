"""Data that keeps up: time spent waiting for the next batch against the training step's time.

Two measurements on a real dataset through :class:`FeatureNeRFData`'s own training loader:

* ``breakdown`` (``num_workers=0``, everything in this process): per batch, the time spent decoding
  images (PNG read, alpha compositing, resize), reading teacher maps from the cache, and the rest of the
  item (ray sampling, teacher lookup at the rays, collation);
* ``wait``: the loader with the configured workers, consumed by real training steps of the config's
  model (the ``fast`` row), timing each ``next()`` (what the trainer waits) and each step. With
  ``--device cuda`` the steps run on the GPU and batches come page-locked and are copied without blocking,
  as Lightning does on a CUDA trainer (the copy counts as step time).

Usage (stand-alone; prints JSON)::

    python benchmarks/data_bench.py --root data/toy_cars [--config toy] [--teacher hed_vgg16] [--batches 12]
    python benchmarks/data_bench.py --root data/toy_cars --teacher efficientnet_lite0 --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from harness import load_config, median, timed

import featurenerf.data.datasets as datasets


class _Clock:
    """Accumulates the seconds spent inside wrapped callables."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn):
        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed_call


@contextlib.contextmanager
def _instrumented(views) -> Iterator[dict[str, _Clock]]:
    """Clocks around image decoding and teacher-cache reads of ``views`` (restored afterwards)."""
    clocks = {"decode": _Clock(), "teacher_cache": _Clock()}
    decode, cache = datasets.load_image_and_mask, views.cache
    datasets.load_image_and_mask = clocks["decode"].wrap(decode)
    if cache is not None:
        views.cache = type(
            "TimedCache", (), {"load": staticmethod(clocks["teacher_cache"].wrap(cache.load))}
        )()
    try:
        yield clocks
    finally:
        datasets.load_image_and_mask = decode
        views.cache = cache


def _datamodule(
    root: str, config: str, teacher: str | None, cache_dir: str, workers: int, batches: int, pin: bool = False
):
    """The config's datamodule on ``root``, set up for fitting; ``pin``: page-locked batches (a CUDA trainer's)."""
    from featurenerf.data.datamodule import FeatureNeRFData

    data = load_config(config)["data"]
    keep = ("image_size", "num_src_views", "rays_per_object", "batch_size", "background")
    kwargs = {k: data[k] for k in keep if k in data}
    dm = FeatureNeRFData(
        root=root,
        teacher=teacher,
        cache_dir=cache_dir,
        epoch_length=kwargs.get("batch_size", 4) * batches,
        num_workers=workers,
        **kwargs,
    )
    dm.prepare_data()
    dm.setup("fit")
    if pin:  # outside a trainer the datamodule cannot see the device; pin as it does for a CUDA trainer
        dm._pin_memory = lambda: True
    return dm


def breakdown(dm, batches: int) -> dict:
    """Per-batch loading time in this process, split into decode / teacher cache / the rest."""
    loader = dm.train_dataloader()  # num_workers=0: items are made by this process on next()
    totals = []
    with _instrumented(dm.train_set.views) as clocks:
        it = iter(loader)
        for _ in range(batches):
            totals.append(timed(lambda: next(it)))
    n = len(totals)
    total = sum(totals)
    decode, cache = clocks["decode"].seconds, clocks["teacher_cache"].seconds
    return {
        "batch_s": total / n,
        "decode_s": decode / n,
        "teacher_cache_s": cache / n,
        "rays_and_collate_s": (total - decode - cache) / n,
        "batches": n,
    }


def wait_vs_step(dm, config: str, batches: int, warmup: int = 2, device: str = "cpu") -> dict:
    """Real training steps (``fast`` row, on ``device``) fed by the loader: time waiting in ``next()`` vs
    step time (on a GPU the step includes the batch's non-blocking copy and ends synchronised)."""
    from train_step import ROWS, Stepper

    cfg = load_config(config)
    d = dm
    stepper = Stepper(
        {**cfg["model"], "feature_dim": dm.feature_dim}, d.batch_size, d.num_src_views, d.image_size,
        d.rays_per_object, device=device,
    )  # fmt: skip
    dev = stepper.device
    waits, steps = [], []
    it = iter(dm.train_dataloader())
    for i in range(batches):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        # The step trains on the loader's batch (its ray set "full"), as FeatureNeRF.training_step does.
        stepper.batch = {
            k: batch[k].to(dev, non_blocking=True) for k in ("src_images", "src_poses", "focal", "c")
        }
        rays = batch["rays"]["full"]
        stepper.rays = {k: v.to(dev, non_blocking=True) for k, v in rays.items() if k != "uv"}
        stepper.step(ROWS["fast"])  # returns the loss as a float: the step has finished on the device too
        t2 = time.perf_counter()
        if i >= warmup:  # worker start-up and first-step allocation are not steady state
            waits.append(t1 - t0)
            steps.append(t2 - t1)
    return {
        "num_workers": dm.workers,
        "device": dev.type,
        "pin_memory": dm._pin_memory(),
        "wait_s": median(waits),
        "step_s": median(steps),
        "wait_fraction_of_step": median(waits) / median(steps),
        "wait_s_all": waits,
        "step_s_all": steps,
    }


def bench_data(
    root: str,
    config: str = "toy",
    teacher: str | None = "hed_vgg16",
    batches: int = 12,
    workers: int | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
) -> dict:
    """Both measurements; ``workers`` defaults to the config's ``num_workers``; the teacher cache is
    built in ``cache_dir`` (kept) or in a temporary folder; the steps of ``wait`` run on ``device``."""
    workers = load_config(config)["data"].get("num_workers", 0) if workers is None else workers
    if workers == "auto":  # what a trainer on `device` would start
        from featurenerf.data.workers import auto_workers, usable_cpus

        workers = auto_workers(device, usable_cpus())
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="featurenerf-data-bench-"))
        dm0 = _datamodule(root, config, teacher, cache_dir, 0, batches)
        out = {
            "config": config,
            "teacher": teacher,
            "threads": torch.get_num_threads(),
            "breakdown_num_workers_0": breakdown(dm0, batches),
        }
        dm = _datamodule(root, config, teacher, cache_dir, workers, batches + 2, pin=device == "cuda")
        out["wait"] = wait_vs_step(dm, config, batches + 2, device=device)
    b = out["breakdown_num_workers_0"]
    out["load_vs_step"] = b["batch_s"] / out["wait"]["step_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="dataset root (e.g. data/toy_cars)")
    p.add_argument("--config", default="toy", choices=("toy", "srn_cars"))
    p.add_argument("--teacher", default="hed_vgg16", help="teacher name, or 'null' for none")
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--workers", type=int, default=None, help="default: the config's data.num_workers")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--cache-dir", default=None, help="teacher cache folder to build/reuse (default: temporary)"
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the training steps run")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    teacher = None if args.teacher in ("null", "none", "") else args.teacher
    result = bench_data(
        args.root, args.config, teacher, args.batches, args.workers, args.cache_dir, args.device
    )
    text = json.dumps(result, indent=2) + "\n"
    sys.stdout.write(text)
    if args.out:
        from featurenerf.io import atomic_write

        with atomic_write(Path(args.out), "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
