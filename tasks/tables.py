"""Task results as Markdown: one table of ``{task: {method: {metric: value}}}`` and how each value is
written (percentages, dB, fractions, world units)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .descriptors import METHODS


def format_value(metric: str, value: float | None) -> str:
    """mIoU / PCK / acc as percentages, PSNR in dB, SSIM and R² as fractions, distances (err, drift) in
    world units; missing values as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    name = metric.rsplit("/", 1)[-1]
    if name.startswith("PSNR"):
        return f"{value:.2f}"
    if name.startswith(("SSIM", "R2", "err", "drift")):
        return f"{value:.3f}"
    return f"{100 * value:.1f}"


def results_table(results: dict, header: str = "", notes: Sequence[str] = ()) -> str:
    """Markdown table of ``{task: {method: {metric: value}}}``: rows ``task / metric``, columns methods.

    mIoU and PCK are percentages; 2D PCK thresholds are pixels at 128 px, 3D ones world units.
    """
    methods = [m for m in METHODS if any(m in per for per in results.values())]
    methods += [m for per in results.values() for m in per if m not in methods]
    lines = [header, ""] if header else []
    lines.append("| task / metric | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---:|" * len(methods))
    for task, per in results.items():
        metrics = list(dict.fromkeys(k for vals in per.values() for k in vals))
        for metric in metrics:
            cells = [format_value(metric, per.get(m, {}).get(metric)) for m in methods]
            lines.append(f"| {task} / {metric} | " + " | ".join(cells) + " |")
    lines += ["", "mIoU and PCK in %; 2D PCK thresholds in pixels at 128 px (scaled), 3D in world units."]
    lines += [f"- {n}" for n in dict.fromkeys(notes)]
    return "\n".join(lines)
