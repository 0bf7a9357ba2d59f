"""``featurenerf teachers``: list the registered teachers, or fill a dataset's teacher feature cache.

featurenerf teachers list
featurenerf teachers cache --teacher hed_vgg16 --data data/toycars [--size 128] [--split train val]
featurenerf teachers cache --teacher dino_vits8 --set weights=weights/dino_deitsmall8_pretrain.pth ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DESCRIPTION = "List the registered 2D teachers, or precompute a dataset's teacher feature cache"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featurenerf teachers", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="name, feature width, stride, input size and weights source of each teacher")
    cache = sub.add_parser("cache", help="compute the teacher maps of every view and store them (float16)")
    cache.add_argument("--teacher", required=True, help="registry name (see `featurenerf teachers list`)")
    cache.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="teacher constructor argument (VALUE parsed as JSON when it parses, else a string); repeatable",
    )
    cache.add_argument("--data", required=True, type=Path, help="dataset root holding <category>_<split>/")
    cache.add_argument("--category", default=None, help="only this category (default: all)")
    cache.add_argument("--split", nargs="+", default=["train", "val", "test"], help="splits to cache")
    cache.add_argument("--size", type=int, default=128, help="image side the training loads (default 128)")
    cache.add_argument("--background", choices=("white", "black"), default=None, help="default: the data's")
    cache.add_argument("--cache-dir", type=Path, default=None, help="default: <data>/.cache/features")
    cache.add_argument("--batch-size", type=int, default=8, help="views per teacher call")
    cache.add_argument("--no-mask", action="store_true", help="keep background features (default: zeroed)")
    cache.add_argument("--device", default="cpu", help="torch device for the teacher (cpu, cuda, ...)")
    cache.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    cache.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def list_command() -> int:
    """Print one aligned row per teacher, from class-level metadata (no big weights are loaded)."""
    from featurenerf.teachers import TEACHERS

    rows = [("name", "feature_dim", "stride", "input", "weights")]
    for name in TEACHERS.list():
        try:
            info = TEACHERS.get(name).describe()
        except Exception as err:  # a plugin whose defaults cannot be built is still listed
            rows.append((name, "?", "?", "?", f"unavailable: {str(err).splitlines()[0]}"))
            continue
        size = "any" if info.input_size is None else str(info.input_size)
        rows.append((name, str(info.feature_dim), str(info.stride), size, info.weights_source))
    print(_table(rows))
    return 0


def _parse_sets(items: list[str]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
        if isinstance(kwargs[key], list):
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def _records(root: Path, splits: list[str], category: str | None) -> list:
    try:  # every format the data layer knows, when it offers that; else the SRN layout
        from featurenerf.data.formats import list_objects_any
    except ImportError:
        from featurenerf.data.srn import list_objects

        return [r for s in splits for r in list_objects(root, s, category)]
    return [r for s in splits for r in list_objects_any(root, s, category, None)]


def _background(root: Path, given: str | None) -> str:
    if given is not None:
        return given
    try:
        from featurenerf.data.annotations import read_meta

        return read_meta(root).background
    except Exception:  # unannotated data (plain SRN): SRN composites on white
        return "white"


def cache_command(args: argparse.Namespace) -> int:
    """Fill the cache; print the report, the time and the size on disk."""
    import torch

    from featurenerf.data.feature_cache import FeatureCache
    from featurenerf.teachers import build_teacher

    if args.threads:
        torch.set_num_threads(args.threads)
    records = _records(args.data, args.split, args.category)
    if not records:
        print(
            f"featurenerf teachers cache: no objects under {args.data} for splits {args.split}",
            file=sys.stderr,
        )
        return 1
    teacher = build_teacher(args.teacher, **_parse_sets(args.set)).to(args.device)
    cache_dir = args.cache_dir or args.data / ".cache" / "features"
    cache = FeatureCache(
        cache_dir,
        teacher,
        args.size,
        background=_background(args.data, args.background),
        batch_size=args.batch_size,
        mask_background=not args.no_mask,
    )
    start = time.perf_counter()
    report = cache.ensure(records, progress=not args.quiet)
    seconds = time.perf_counter() - start
    views = sum(r.num_views for r in records)
    size = cache.size_on_disk()
    print(f"teacher {cache.key}: {len(records)} objects, {views} views at {args.size}px -> {cache.directory}")
    print(f"{report}; total {seconds:.1f} s on {torch.get_num_threads()} threads")
    print(
        f"cache size on disk: {size / 2**20:.1f} MiB ({size / max(len(records), 1) / 2**20:.2f} MiB per object)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "list":
            return list_command()
        return cache_command(args)
    except (ValueError, FileNotFoundError, KeyError, ImportError, RuntimeError) as err:
        print(f"featurenerf teachers: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
