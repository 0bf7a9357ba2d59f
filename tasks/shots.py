"""Few-shot transfer (``--tasks.shots K``): which further annotated objects a cross-instance pair's target
is labelled from.

The paper transfers labels from one annotated object (one-shot). With ``K`` shots, the pair's source is
joined by ``K - 1`` other objects of the evaluated split, each seen from the pair's view; the target
elements are labelled by a vote over their nearest neighbour in each source
(:func:`featurenerf.tasks.metrics.vote_labels`). The extra objects are drawn once per pair, from a seed and
the object names, so two runs (and two values of ``K``: the ``K``-shot sources are the first ``K - 1``
of the largest draw) see the same objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featurenerf.data.srn import ObjectRecord
from featurenerf.errors import ConfigError

from .pairs import CrossInstancePair


def normalise_shots(shots: int | Sequence[int]) -> tuple[int, ...]:
    """``5`` or ``[1, 5]`` → sorted distinct positive counts (a ``ConfigError``, a ``ValueError``, naming the option otherwise)."""
    values = [shots] if isinstance(shots, int) else list(shots)
    if not values or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in values):
        raise ConfigError(f"--tasks.shots: expected positive integers (e.g. 1 or [1, 5]), got {shots!r}")
    return tuple(sorted(set(values)))


def draw_extra_sources(
    pairs: Sequence[CrossInstancePair], records: Sequence[ObjectRecord], count: int, seed: int = 0
) -> dict[int, tuple[str, ...]]:
    """For each cross-instance pair (by index), up to ``count`` further source objects.

    Candidates are the objects other than the pair's source and target that have the pair's view; fewer
    than ``count`` are returned when the split is too small.
    """
    by_name = sorted(records, key=lambda r: r.name)
    out: dict[int, tuple[str, ...]] = {}
    for i, pair in enumerate(pairs):
        candidates = [
            r.name for r in by_name if r.name not in (pair.src, pair.trg) and r.num_views > pair.view
        ]
        rng = np.random.default_rng([seed, 2, i])
        take = min(count, len(candidates))
        out[i] = tuple(candidates[j] for j in rng.choice(len(candidates), size=take, replace=False))
    return out
