"""Paired differences: ``featurenerf`` minus each baseline, pair by pair, on the study's shared test pairs.

The study's targets compare two independent intervals (they must not overlap). That is conservative:
every method is evaluated on the *same* pairs, so most of the pair-to-pair spread (an easy car, a hard
viewpoint) is common to both and cancels in their difference. This module reports that difference
directly. For each seed, it takes the pairs both methods have a finite value on (matched by the pair's
index in ``tasks/pairs.json``; a 2D keypoint pair with no visible keypoint has none) and subtracts. The
per-seed differences are then bootstrapped like any other per-pair value
(:func:`~featurenerf.results.bootstrap.bootstrap_interval`: resample within each seed, average the
seeds). An interval that excludes 0 is a difference these pairs resolve.

The seeds are paired too: ``featurenerf`` seed s is compared with the baseline trained with seed s.
"""

from __future__ import annotations

import numpy as np

from featurenerf.tasks.suite import format_value

from .bootstrap import DEFAULT_REPLICATES, DEFAULT_SEED, Interval, bootstrap_interval

#: Baselines ``featurenerf`` is compared with (column order).
BASELINES = ("pixelnerf", "teacher_2d", "featurenerf_nocoord", "copy_input")
#: The rows: (task, metric name) for both kinds of pair where the task has them.
ROWS = (("keypoints_3d", "PCK@0.1"), ("part_seg_3d", "mIoU"), ("novel_view", "PSNR"))


def paired_differences(
    ours: dict[int, tuple[list[int], list[float]]], theirs: dict[int, tuple[list[int], list[float]]]
) -> list[np.ndarray]:
    """Per-seed differences ``ours − theirs`` on the pairs both have a finite value for.

    Args:
        ours, theirs: seed → (pair indices (P,), values (P,)), the two methods' per-pair results.
    Returns:
        One array of differences per seed present in both (sorted by seed), matched by pair index.
    """
    out = []
    for seed in sorted(set(ours) & set(theirs)):
        a = {i: v for i, v in zip(*ours[seed]) if np.isfinite(v)}
        b = {i: v for i, v in zip(*theirs[seed]) if np.isfinite(v)}
        common = sorted(set(a) & set(b))
        out.append(np.array([a[i] - b[i] for i in common], dtype=np.float64))
    return out


def paired_intervals(
    values: dict, ids: dict, replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED
) -> dict[str, dict[str, Interval | None]]:
    """One category's paired intervals.

    Args:
        values: ``values[task][metric][column][seed]`` per-pair values (``metric`` is ``<kind>/<name>``),
            as :func:`featurenerf.results.report.gather` returns for a category.
        ids: ``ids[task][kind][column][seed]``: the pair indices of those values.
    Returns:
        ``{"<task> / <kind>/<name>": {baseline: Interval or None}}`` for the :data:`ROWS` present, with
        a baseline only where both it and ``featurenerf`` were evaluated.
    """
    out: dict[str, dict[str, Interval | None]] = {}
    for task, name in ROWS:
        for metric, per_col in values.get(task, {}).items():
            kind, metric_name = metric.split("/", 1)
            if metric_name != name or "featurenerf" not in per_col:
                continue
            cols = ids.get(task, {}).get(kind, {})
            ours = _series(per_col, cols, "featurenerf")
            row = out.setdefault(f"{task} / {metric}", {})
            for base in BASELINES:
                if base in per_col:
                    diffs = paired_differences(ours, _series(per_col, cols, base))
                    row[base] = bootstrap_interval(diffs, replicates=replicates, seed=seed)
    return out


def _series(per_col: dict, ids: dict, col: str) -> dict[int, tuple[list[int], list[float]]]:
    """seed → (pair indices, values) of one column, for the seeds whose indices are known."""
    return {s: (ids[col][s], per_col[col][s]) for s in per_col[col] if s in ids.get(col, {})}


def signed(metric: str, value: float) -> str:
    """A difference in the table's units with its sign (``+1.2``, ``−0.4``)."""
    text = format_value(metric, abs(value))
    return ("+" if value >= 0 else "−") + text


def paired_cell(metric: str, ci: Interval | None) -> str:
    """``+d [lo, hi]`` with the interval in bold when it excludes 0."""
    if ci is None:
        return "–"
    text = f"{signed(metric, ci.mean)} [{signed(metric, ci.lo)}, {signed(metric, ci.hi)}]"
    return f"**{text}**" if ci.lo > 0 or ci.hi < 0 else text


def paired_table(rows: dict[str, dict[str, Interval | None]]) -> list[str]:
    """Markdown lines of :func:`paired_intervals`' result (empty when there is nothing to compare)."""
    cols = [b for b in BASELINES if any(b in per for per in rows.values())]
    if not cols:
        return []
    lines = ["| featurenerf minus | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row, per in rows.items():
        metric = row.split(" / ", 1)[1]
        lines.append(f"| {row} | " + " | ".join(paired_cell(metric, per.get(c)) for c in cols) + " |")
    return lines
