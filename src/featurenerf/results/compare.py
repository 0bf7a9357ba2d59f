"""``featurenerf results compare A/results.json B/results.json``: two studies, pair by pair.

Does a data option, a loss or a longer budget change a variant's transfer? Two studies evaluated on the
*same* test pairs of the *same* test images answer it pair by pair: for each trained variant both have,
study A's value of a pair minus study B's value of that pair (seed s against seed s), bootstrapped as
the report's paired differences are (:mod:`featurenerf.results.paired`).

Both conditions are checked from each report's ``digests`` (see :func:`study_digests`): the pair list
(``tasks/pairs.json`` of the category's evaluations) and the files of the test split. Pair lists may
differ in length only: a study on 200 pairs and one whose tasks took up to 600 of the same draw compare on
the first 200 (pairs are matched by index). Training data may
differ (that is often the point, e.g. ``--train-cameras per_object``); test data may not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from featurenerf.errors import ConfigError

from .bootstrap import DEFAULT_REPLICATES, DEFAULT_SEED
from .paired import paired_intervals, paired_table
from .plan import Job

#: The trained variants a comparison covers (teacher_2d, copy_input and untrained do not train).
TRAINED = ("featurenerf", "featurenerf_v", "featurenerf_nocoord", "featurenerf_pointwise", "pixelnerf")


def _digest(obj: object) -> str:
    """Digest of a JSON value (key order and layout do not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sha256_json(path: Path) -> str:
    """Digest of a JSON file's content (key order and layout do not matter)."""
    return _digest(json.loads(path.read_text()))


def digest_of_test_split(root: Path) -> str | None:
    """Digest of every file of ``root``'s test split (relative paths and bytes); None when it has none."""
    from featurenerf.data.srn import split_dirs

    dirs = split_dirs(root, "test") if root.is_dir() else []
    files = sorted(f for d in dirs for f in d.rglob("*") if f.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _head(raw: dict, count: int) -> dict:
    """The first ``count`` pairs of each kind of a loaded pairs file."""
    return {k: v[:count] for k, v in raw.items()}


def study_digests(jobs: list[Job]) -> dict[str, dict]:
    """Category → ``{"pairs": ..., "test_data": ..., "pairs_head": {count: ...}}`` digests (None where
    unknown, or where the category's evaluations did not all use the same pairs). ``pairs_head`` has the
    digest of the first ``count`` pairs for every count a task was evaluated on (``--task-pairs``), so a
    study whose pairs are a prefix of this one's compares on them."""
    files: dict[str, list[Path]] = {}
    counts: dict[str, set[int]] = {}
    roots: dict[str, Path] = {}
    for job in jobs:
        if job.kind == "prepare" and "--root" in job.argv:
            roots[job.category] = Path(job.argv[job.argv.index("--root") + 1])
        path = job.run_dir / "tasks" / "pairs.json"
        if job.kind == "eval" and path.is_file():
            files.setdefault(job.category, []).append(path)
            n = {job.spec.get("pairs"), *job.spec.get("task_pairs", {}).values()} - {None}
            counts.setdefault(job.category, set()).update(n)
    # An evaluation whose tasks took fewer pairs (the oracle has no keypoint task) wrote the first ones:
    # the category's pairs are the longest list when every other is its prefix.
    pairs: dict[str, set[str]] = {}
    heads: dict[str, dict[str, str]] = {}
    for cat, paths in files.items():
        loaded = [json.loads(p.read_text()) for p in paths]  # each file read once
        longest = max(loaded, key=lambda raw: len(raw.get("cross_inst_pairs", [])))
        for raw in loaded:
            n = len(raw.get("cross_inst_pairs", []))
            prefix = raw == _head(longest, n)
            pairs.setdefault(cat, set()).add(_digest(longest if prefix else raw))
        heads[cat] = {str(n): _digest(_head(longest, n)) for n in sorted(counts.get(cat, ()))}
    out = {}
    for cat in {**roots, **pairs}:
        found = pairs.get(cat, set())
        root = roots.get(cat)
        out[cat] = {
            "pairs": next(iter(found)) if len(found) == 1 else None,
            "test_data": digest_of_test_split(root) if root else None,
        }
        if len(found) == 1 and heads.get(cat):
            out[cat]["pairs_head"] = heads[cat]
    return out


def common_prefix(da: dict, db: dict) -> str | None:
    """The count of first pairs two studies' digests share when their pair lists differ in length only
    (one study's pairs are the other's first ones), else None."""
    for x, y in ((da, db), (db, da)):
        for count, digest in (x.get("pairs_head") or {}).items():
            if digest == y.get("pairs"):
                return count
    return None


def _check_same_pairs(cat: str, a: dict, b: dict, names: tuple[str, str]) -> None:
    da = a.get("digests", {}).get(cat) or {}
    db = b.get("digests", {}).get(cat) or {}
    for key, what in (("pairs", "test pairs"), ("test_data", "test images")):
        for name, d in zip(names, (da, db)):
            if not d.get(key):
                raise ConfigError(
                    f"{name}: {cat}: no digest of its {what} (a report written before `compare` existed, "
                    "or its data is gone): rewrite it with `featurenerf results ... --report-only`"
                )
        if da[key] != db[key] and not (key == "pairs" and common_prefix(da, db)):
            raise ConfigError(
                f"{names[1]}: {cat}: its {what} differ from {names[0]}'s: a pair-by-pair comparison needs "
                "the same test pairs of the same test images"
            )


def compare(
    a: dict,
    b: dict,
    names: tuple[str, str],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    categories: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Per category both studies have (or of ``categories``), ``A minus B`` per row and trained variant.

    Returns:
        The Markdown lines, and one line per category left out because its test pairs or images differ.
    Raises:
        ConfigError: when no category can be compared (the first reason), or one of ``categories`` is
            not in both studies.
    """
    lines = [f"A = {names[0]}", f"B = {names[1]}"]
    common = [c for c in a.get("per_pair", {}) if c in b.get("per_pair", {})]
    for cat in categories or []:
        if cat not in common:
            raise ConfigError(f"{names[1] if cat in a.get('per_pair', {}) else names[0]}: no category {cat}")
    skipped = []
    for cat in categories or common:
        try:
            _check_same_pairs(cat, a, b, names)
        except ConfigError as err:
            skipped.append(str(err))
            continue
        rows = paired_intervals(
            a["per_pair"][cat],
            a["pair_ids"][cat],
            replicates,
            seed,
            comparisons=[(col, col, col) for col in TRAINED],
            other=(b["per_pair"][cat], b["pair_ids"][cat]),
        )
        lines += ["", f"## {cat}", ""]
        da, db = (x.get("digests", {}).get(cat) or {} for x in (a, b))
        if da.get("pairs") != db.get("pairs"):
            n = common_prefix(da, db)
            lines += [f"On the pairs both studies evaluated: the first {n} of each kind, by index.", ""]
        lines += paired_table(rows, "A minus B", TRAINED)
    if len(skipped) == len(categories or common):
        raise ConfigError(skipped[0] if skipped else f"{names[1]}: no category in common with {names[0]}")
    return lines, skipped


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from err
    except ValueError as err:
        raise ConfigError(f"{path}: not JSON ({err})") from err
    if not isinstance(data, dict) or "per_pair" not in data:
        raise ConfigError(f"{path}: not a `featurenerf results` report (no per_pair values)")
    if "pair_ids" not in data:
        raise ConfigError(
            f"{path}: has no pair indices: rewrite it with `featurenerf results ... --report-only`"
        )
    return data


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="featurenerf results compare",
        description="Pair-by-pair differences (A minus B) of two studies evaluated on the same test pairs.",
    )
    p.add_argument("a", type=Path, help="study A's results.json")
    p.add_argument("b", type=Path, help="study B's results.json")
    p.add_argument("--categories", nargs="+", help="only these (default: every category both studies have)")
    p.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, help="bootstrap replicates")
    args = p.parse_args(argv)
    names = (str(args.a), str(args.b))
    try:
        lines, skipped = compare(
            _load(args.a), _load(args.b), names, args.replicates, DEFAULT_SEED, args.categories
        )
    except ConfigError as err:
        print(f"featurenerf results compare: error: {err}", file=sys.stderr)
        return 2
    for reason in skipped:
        print(f"featurenerf results compare: not compared: {reason}", file=sys.stderr)
    intro = (
        "Each cell: mean over seeds of A's value of a pair minus B's value of the same pair (seed s "
        "against seed s), and its 95 % percentile-bootstrap interval; bold where it excludes 0."
    )
    print("\n".join([intro, "", *lines]))
    return 0
