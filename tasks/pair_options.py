"""The suite's pair options, checked, and its pair protocol in words.

Checked right after parsing (:func:`check_pair_options`, before Lightning builds anything) and when the
suite is built (:func:`check_task_pairs`, once the task names are expanded); each refusal is one line
naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from featurenerf.errors import ConfigError

from .pairs import MATCH_CAMERA


def check_pair_options(match_camera: str, baseline_min_deg: float, baseline_max_deg: float) -> None:
    """Refuse, in one line naming the option, pair-protocol options out of range (ConfigError)."""
    if match_camera not in MATCH_CAMERA:
        raise ConfigError(
            f"--tasks.match_camera: expected one of {', '.join(MATCH_CAMERA)}, got {match_camera!r}"
        )
    if not 0.0 <= baseline_min_deg <= baseline_max_deg <= 180.0:
        raise ConfigError(
            "--tasks.baseline_min_deg / --tasks.baseline_max_deg: need 0 <= min <= max <= 180 degrees, "
            f"got {baseline_min_deg:g} and {baseline_max_deg:g}"
        )


def check_task_pairs(task_pairs: Mapping[str, int], tasks: Sequence[str]) -> dict[str, int]:
    """``--tasks.task_pairs`` as ``{task: count}``; a task that is not among ``tasks`` (the evaluated
    ones) or a count below 1 is a one-line ConfigError."""
    for name, count in task_pairs.items():
        if name not in tasks:
            raise ConfigError(
                f"--tasks.task_pairs: {name!r} is not an evaluated task (evaluated: {', '.join(tasks)})"
            )
        if int(count) < 1:
            raise ConfigError(f"--tasks.task_pairs: {name} needs at least 1 pair, got {count}")
    return {name: int(count) for name, count in task_pairs.items()}


def protocol_sentences(
    protocol: dict, baseline_deg: tuple[float, float], from_file: bool, match_camera: str
) -> list[str]:
    """The pair protocol (the suite's ``protocol``: measured camera angles of the pairs used) as the
    results table's sentences."""
    measured = protocol["measured_deg"]

    def stats(kind: str) -> str:
        m = measured[kind]
        return "none" if m is None else f"{m['min']:.1f}-{m['max']:.1f} degrees, median {m['median']:.1f}"

    lo, hi = baseline_deg
    how = "from the pairs file" if from_file else f"drawn at {lo:g}-{hi:g} degrees"
    camera = "same camera (view k on both)" if match_camera == "same" else "nearest camera"
    return [
        f"cross-view baseline (angle between the two viewing directions): {how}; used pairs: "
        f"{stats('cross_view')}",
        f"cross-instance pairs: {camera}; camera gap of used pairs: {stats('cross_inst')}",
    ]
