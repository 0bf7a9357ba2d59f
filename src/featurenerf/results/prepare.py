"""Prepare one category for the study: make its toy data when missing, then fill its teacher cache.

``python -m featurenerf.results.prepare --config configs/toy_cars.yaml --category toycar --root
data/toy_cars [overrides]`` runs ``featurenerf data synth`` when ``<root>/meta.json`` is missing, then
builds the datamodule exactly as ``fit`` would from the config plus overrides (so the teacher, its
arguments and the image size are the config's) and computes the teacher maps of every split once, before
the parallel fits and evaluations read them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featurenerf.data.synth_options import TRAIN_CAMERAS


def synth_if_missing(
    category: str,
    root: Path,
    objects: int,
    views: int,
    size: int,
    style: str | None = None,
    train_cameras: str = "shared",
) -> int:
    """``featurenerf data synth`` into ``root`` unless it already holds a dataset; returns an exit status.

    ``style`` (None: the category's default) and ``train_cameras`` are ``data synth``'s options. A
    dataset from an older generator version, or one made with other options than these, is refused
    (status 2, one line naming its ``synth.json``): the study would measure other objects than it says.
    A dataset found with another size is used as it is (the report names its size).
    """
    from featurenerf.data.synth.generate import recorded_options, stale_dataset
    from featurenerf.data.synth.shapes import resolve_style

    try:
        want = {"style": resolve_style(category, style), "train_cameras": train_cameras}
    except ValueError as err:
        print(f"prepare: error: {err}", file=sys.stderr)
        return 2
    if (stale := stale_dataset(root)) is not None:
        print(f"prepare: error: {stale}", file=sys.stderr)
        return 2
    if (root / "meta.json").exists():
        made = recorded_options(root)
        if made is not None and made != want:
            print(
                f"prepare: error: {root / 'synth.json'}: made with {_options(made)}, the study asks for "
                f"{_options(want)}; delete {root} or give another --data-dir",
                file=sys.stderr,
            )
            return 2
        print(f"prepare: {root} exists, not regenerated", flush=True)
        return 0
    from featurenerf.cli import main as cli_main

    argv = ["data", "synth", "--category", category, "--out", str(root), "--objects", str(objects)]
    argv += ["--views", str(views), "--size", str(size), "--seed", "0", "--quiet"]
    argv += ["--style", want["style"], "--train-cameras", train_cameras]
    print("prepare: featurenerf " + " ".join(argv), flush=True)
    return cli_main(argv)


def _options(options: dict[str, str]) -> str:
    return f"--style {options['style']} --train-cameras {options['train_cameras']}"


def fill_teacher_cache(config: Path, root: Path, device: str, overrides: list[str]) -> int:
    """Build the config's datamodule (no run folder, no training) and cache its teacher on every split."""
    from featurenerf.data.srn import DataError
    from featurenerf.lightning_cli import FeatureNeRFCLI
    from featurenerf.module import FeatureNeRF

    args = ["--config", str(config), "--data.root", str(root), "--trainer.logger", "false", *overrides]
    try:
        cli = FeatureNeRFCLI(
            FeatureNeRF,
            _datamodule_class(),
            args=args,
            run=False,
            save_config_callback=None,
            parser_kwargs={"exit_on_error": False},
        )
    except Exception as err:  # a bad override or config: one line
        print(f"prepare: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    dm = cli.datamodule
    if dm.cache is None:
        print("prepare: no teacher configured; nothing to cache", flush=True)
        return 0
    try:
        dm.run_check()
        records = [r for split in ("train", "val", "test") for r in dm.records(split)]
        if device == "cuda":
            dm.teacher.to("cuda")
        report = dm.cache.ensure(records, progress=False)
    except DataError as err:
        print(f"prepare: error: {err}", file=sys.stderr)
        return 2
    print(f"prepare: teacher cache {dm.cache.directory}: {report}", flush=True)
    return 0


def _datamodule_class():
    from featurenerf.data.datamodule import FeatureNeRFData

    return FeatureNeRFData


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m featurenerf.results.prepare", description=__doc__.splitlines()[0]
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--category", required=True, help="data synth category (toycar, toychair)")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--objects", type=int, default=64)
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--style", default=None, help="data synth shape style (default: the category's)")
    p.add_argument("--train-cameras", default="shared", choices=TRAIN_CAMERAS)
    p.add_argument("--device", default="cpu")
    args, overrides = p.parse_known_args(argv)
    rc = synth_if_missing(
        args.category, args.root, args.objects, args.views, args.size, args.style, args.train_cameras
    )
    if rc:
        return rc
    return fill_teacher_cache(args.config, args.root, args.device, overrides)


if __name__ == "__main__":
    sys.exit(main())
