"""``featurenerf results``: the study behind ``docs/results.md`` (see :mod:`featurenerf.results.cli`)."""

from __future__ import annotations

DESCRIPTION = (
    "Train every variant on the toy categories, evaluate all tasks with intervals, write docs/results.md"
)


def main(argv: list[str] | None = None) -> int:
    from featurenerf.results.cli import main as results_main

    return results_main(argv)
