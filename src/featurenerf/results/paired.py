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

from collections.abc import Sequence

import numpy as np

from featurenerf.tasks.tables import format_value

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
    values: dict,
    ids: dict,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    comparisons: Sequence[tuple[str, str, str]] | None = None,
    other: tuple[dict, dict] | None = None,
) -> dict[str, dict[str, Interval | None]]:
    """One category's paired intervals.

    Args:
        values: ``values[task][metric][column][seed]`` per-pair values (``metric`` is ``<kind>/<name>``),
            as :func:`featurenerf.results.report.gather` returns for a category.
        ids: ``ids[task][kind][column][seed]``: the pair indices of those values.
        comparisons: ``(label, column of values, column of the other values)`` per result column;
            default: ``featurenerf`` minus each of :data:`BASELINES`, labelled by the baseline.
        other: ``(values, ids)`` to subtract (another study's, on the same pairs); default: the same.
    Returns:
        ``{"<task> / <kind>/<name>": {label: Interval or None}}`` for the :data:`ROWS` present, with a
        label only where both of its columns were evaluated.
    """
    if comparisons is None:
        comparisons = [(base, "featurenerf", base) for base in BASELINES]
    other_values, other_ids = other or (values, ids)
    out: dict[str, dict[str, Interval | None]] = {}
    for task, name in ROWS:
        for metric, per_col in values.get(task, {}).items():
            kind, metric_name = metric.split("/", 1)
            theirs = other_values.get(task, {}).get(metric)
            if metric_name != name or theirs is None or not any(a in per_col for _, a, _ in comparisons):
                continue
            ours_ids, their_ids = ids.get(task, {}).get(kind, {}), other_ids.get(task, {}).get(kind, {})
            row = out.setdefault(f"{task} / {metric}", {})
            for label, a, b in comparisons:
                if a in per_col and b in theirs:
                    diffs = paired_differences(_series(per_col, ours_ids, a), _series(theirs, their_ids, b))
                    row[label] = bootstrap_interval(diffs, replicates=replicates, seed=seed)
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


def paired_table(
    rows: dict[str, dict[str, Interval | None]],
    corner: str = "featurenerf minus",
    order: Sequence[str] = BASELINES,
) -> list[str]:
    """Markdown lines of :func:`paired_intervals`' result (empty when there is nothing to compare):
    its labels as columns, in ``order``, under the header ``corner``."""
    cols = [b for b in order if any(b in per for per in rows.values())]
    if not cols:
        return []
    lines = [f"| {corner} | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row, per in rows.items():
        metric = row.split(" / ", 1)[1]
        lines.append(f"| {row} | " + " | ".join(paired_cell(metric, per.get(c)) for c in cols) + " |")
    return lines
