"""``featurenerf data``: make a synthetic annotated dataset, or check a dataset folder for problems.

Examples::

    featurenerf data synth --category toycar --out data/toycar --objects 64 --views 50 --size 128 --seed 0
    featurenerf data check data/toycar
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featurenerf.data.synth_options import TRAIN_CAMERAS

DESCRIPTION = "Generate synthetic annotated data (synth) or validate a dataset folder (check)."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featurenerf data", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="action", required=True)

    synth = sub.add_parser(
        "synth",
        help="procedurally generate part-annotated toy objects in the SRN layout "
        "(the objects of a split share one camera set: view k is the same camera for all)",
    )
    synth.add_argument("--category", required=True, choices=("toycar", "toychair"))
    synth.add_argument("--out", required=True, type=Path, help="dataset root to create (or complete)")
    synth.add_argument("--objects", type=int, default=64, help="number of objects (default 64)")
    synth.add_argument("--views", type=int, default=50, help="views per object (default 50)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--split-fractions",
        type=float,
        nargs=3,
        default=(0.7, 0.1, 0.2),
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of objects per split (default 0.7 0.1 0.2)",
    )
    synth.add_argument(
        "--train-cameras",
        choices=TRAIN_CAMERAS,
        default="shared",
        help="training objects share the split's camera set (default) or each draw their own views",
    )
    synth.add_argument(
        "--style",
        default=None,
        help="shape style (toycar: box (default), front_back: a low hood and a set-back cabin)",
    )
    synth.add_argument("--workers", type=int, default=1, help="processes rendering objects in parallel")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")

    check = sub.add_parser("check", help="list every problem of a dataset folder, one per line")
    check.add_argument("root", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from featurenerf.data.srn import DataError

    if args.action == "synth":
        from featurenerf.data.synth import generate_dataset

        try:
            root = generate_dataset(
                args.category,
                args.out,
                objects=args.objects,
                views=args.views,
                size=args.size,
                seed=args.seed,
                split_fractions=tuple(args.split_fractions),
                progress=not args.quiet,
                workers=args.workers,
                train_cameras=args.train_cameras,
                style=args.style,
            )
        except (DataError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(root)
        return 0

    from featurenerf.data.check import check_dataset, summarise

    problems = check_dataset(args.root)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    objects, views = summarise(args.root)
    print(f"ok: {objects} objects, {views} views")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
