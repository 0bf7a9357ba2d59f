"""``make demo``: toy-car data → fit → validate with the transfer tasks → pictures, on 2 CPU cores.

Steps (each skipped when its output already exists, so a second run is quick):
1. ``featurenerf data synth --category toycar --out data/toy_cars`` (48 objects x 24 views x 128 px: the teacher cache and training fit the budget).
2. ``featurenerf fit --config configs/toy_cars.yaml`` into ``outputs/runs/demo-<time>/``.
3. ``featurenerf validate --task novel_view part_seg keypoints`` on that run's last checkpoint.
4. Pictures and results gathered into ``--out`` (default ``outputs/demo``), whose path is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from featurenerf.cli import main as cli_main
from featurenerf.data.synth.generate import stale_dataset
from featurenerf.io import atomic_save_via, atomic_write_bytes, atomic_write_json


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.time()


def run_demo(
    out: Path,
    data: Path,
    config: Path,
    category: str = "toycar",
    objects: int = 48,
    views: int = 24,
    size: int = 128,
    extra: list[str] | None = None,
    task_pairs: int = 30,
) -> int:
    """Run the whole demo; returns an exit status."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    if (stale := stale_dataset(data)) is not None:
        # Training on it would work, but the README's figures are for today's generator.
        print(f"error: {stale}", file=sys.stderr)
        return 2
    if not (data / "meta.json").exists():
        t = _step(f"making {category} data in {data}")
        rc = cli_main(
            [
                "data",
                "synth",
                "--category",
                category,
                "--out",
                str(data),
                "--objects",
                str(objects),
                "--views",
                str(views),
                "--size",
                str(size),
                "--seed",
                "0",
            ]
        )
        if rc:
            return rc
        print(f"   data: {time.time() - t:.0f} s")
    run_name = f"demo-{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    t = _step(f"training with {config} (run outputs/runs/{run_name})")
    rc = cli_main(
        ["fit", "--config", str(config), "--data.root", str(data), "--run_name", run_name, *(extra or [])]
    )
    if rc:
        return rc
    print(f"   fit: {time.time() - t:.0f} s")
    run = Path("outputs/runs") / run_name
    t = _step("validating: novel views, part segmentation and keypoint transfer")
    rc = cli_main(
        [
            "validate",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--task",
            "novel_view",
            "part_seg",
            "keypoints",
            "--tasks.num_pairs",
            str(task_pairs),
            "--tasks.split",
            "test",
            "--data.val_objects",
            "8",
            "--verbose=false",  # the task table is printed; Lightning's metric wall would repeat it
        ]
    )
    if rc:
        return rc
    print(f"   validate: {time.time() - t:.0f} s")
    gather(run, out)
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. Pictures and results: {out.resolve()}")
    return 0


def gather(run: Path, out: Path) -> None:
    """Copy the latest pictures and the task results of ``run`` into ``out`` and make the picture strip."""
    pictures = out / "pictures"
    if pictures.exists():
        shutil.rmtree(pictures)
    pictures.mkdir(parents=True)
    latest: dict[Path, Path] = {}
    for p in sorted(run.rglob("*.png")):  # sorted by step within a folder: the last one wins
        rel = p.relative_to(run).parent
        if "wandb" in rel.parts:  # the logger's own copies of the same pictures
            continue
        parts = [q for q in rel.parts if q not in ("pictures", "tasks")]
        latest[Path(*parts, p.stem.rsplit("_step", 1)[0] + ".png")] = p
    for key, p in latest.items():
        atomic_write_bytes(pictures / key, p.read_bytes())
    for name in ("results.json", "results.md", "novel_view.json"):
        found = sorted(run.rglob(name), key=lambda q: q.stat().st_mtime)
        if found:
            atomic_write_bytes(out / name, found[-1].read_bytes())
    strip = make_strip(pictures, out / "strip.png")
    if (out / "results.md").exists():
        print((out / "results.md").read_text())
    if (out / "novel_view.json").exists():
        nv = json.loads((out / "novel_view.json").read_text())
        print(
            f"Held-out novel views ({nv['objects']} objects): PSNR {nv['val/psnr']:.2f} dB vs "
            f"{nv['val/psnr_copy_input']:.2f} dB for copying the input view; SSIM {nv['val/ssim']:.3f}"
            + (f"; feature cosine {nv['val/feature_cosine']:.3f}" if "val/feature_cosine" in nv else "")
        )
    summary = {"run": str(run.resolve()), "strip": str(strip) if strip else None}
    atomic_write_json(out / "run.json", summary)


def make_strip(pictures: Path, path: Path, height: int = 160) -> Path | None:
    """One picture for the README: input → novel view vs truth, teacher vs rendered features, parts."""
    from PIL import Image

    wanted = [pictures / "novel_view_obj0.png", pictures / "features_obj0.png"]
    wanted += sorted((pictures / "part_seg_2d").glob("cross_inst*.png"))[:1]
    found = [p for p in wanted if p.exists()]
    if not found:
        return None
    ims = [Image.open(p).convert("RGB") for p in found]
    ims = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in ims]
    strip = Image.new("RGB", (sum(im.width for im in ims) + 8 * (len(ims) - 1), height), "white")
    x = 0
    for im in ims:
        strip.paste(im, (x, 0))
        x += im.width + 8
    atomic_save_via(path, lambda tmp: strip.save(tmp, format="PNG"))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m featurenerf.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--data", type=Path, default=Path("data/toy_cars"))
    p.add_argument("--config", type=Path, default=Path("configs/toy_cars.yaml"))
    p.add_argument("--category", default="toycar")
    p.add_argument("--objects", type=int, default=48)
    p.add_argument("--views", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--task-pairs", type=int, default=30)
    args, extra = p.parse_known_args(argv)
    return run_demo(
        args.out,
        args.data,
        args.config,
        args.category,
        args.objects,
        args.views,
        args.size,
        extra,
        args.task_pairs,
    )


if __name__ == "__main__":
    sys.exit(main())
