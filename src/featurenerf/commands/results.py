"""``featurenerf results``: the study behind ``docs/results.md`` (see :mod:`featurenerf.results.cli`)."""

from __future__ import annotations

DESCRIPTION = (
    "Train every variant on the toy categories, evaluate all tasks with intervals, write docs/results.md"
)


def main(argv: list[str] | None = None) -> int:
    if argv and argv[0] == "compare":  # featurenerf results compare A/results.json B/results.json
        from featurenerf.results.compare import main as compare_main

        return compare_main(argv[1:])
    from featurenerf.results.cli import main as results_main

    return results_main(argv)
