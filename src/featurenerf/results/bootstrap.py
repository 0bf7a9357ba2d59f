"""Bootstrap confidence intervals over evaluation pairs, pooled over training seeds.

Method (stated in ``docs/results.md``): a method's figure is the mean over seeds of its per-seed mean over
pairs. One bootstrap replicate resamples, *within each seed*, that seed's pairs with replacement (as many
as it has) and averages the resampled per-seed means over the seeds; the interval is the 2.5th and 97.5th
percentile of the replicates (percentile bootstrap). The random generator is seeded with a fixed
``seed``, and the resampled indices depend only on that seed and the pair counts, so every method with
the same pairs is resampled with the *same* indices (a paired comparison) and reruns give equal intervals.

Seeds whose per-pair values are identical are one sample, counted once: a method that does not depend on
the training seed (the 2D teacher, copying the input) gives every seed the same values, and averaging two
independent resamples of one sample would make its interval about 1/sqrt(2) as wide as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Replicates per interval.
DEFAULT_REPLICATES = 2000
#: Seed of the bootstrap's generator.
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A pooled mean and its bootstrap interval.

    Attributes:
        mean: mean over seeds of the per-seed means over pairs.
        lo, hi: the interval's bounds (``level`` percentile bootstrap).
        pairs: pairs per seed (summed over seeds); seeds: how many seeds had pairs.
    """

    mean: float
    lo: float
    hi: float
    pairs: int
    seeds: int

    def to_json(self) -> dict:
        return asdict(self)

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point."""
        return self.lo <= other.hi and other.lo <= self.hi


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    return x[np.isfinite(x)]


def bootstrap_replicates(
    per_seed: Sequence[Sequence[float] | np.ndarray],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Bootstrap replicates of the seed-pooled mean.

    Args:
        per_seed: one array of per-pair values (P_s,) per seed; non-finite values are dropped, and a seed
            left with no value is skipped.
        replicates: number of replicates ``B``.
        seed: seed of the generator (fixed: equal inputs give equal replicates).
    Returns:
        (B,) replicate means (empty when no seed has a value).
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    seeds = [x for x in (_clean(v) for v in per_seed) if x.size]
    if not seeds:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)
    for x in seeds:
        idx = rng.integers(0, x.size, size=(replicates, x.size))  # (B, P_s): pairs drawn with replacement
        total += x[idx].mean(axis=1)
    return total / len(seeds)


def distinct_samples(per_seed: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``per_seed`` without the arrays equal to an earlier one (a seed-independent method's repeats)."""
    out: list[np.ndarray] = []
    for x in per_seed:
        if not any(x.shape == y.shape and np.array_equal(x, y) for y in out):
            out.append(x)
    return out


def bootstrap_interval(
    per_seed: Sequence[Sequence[float] | np.ndarray],
    level: float = 0.95,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
) -> Interval | None:
    """Seed-pooled mean and percentile bootstrap interval (see the module docstring).

    Args:
        per_seed: one array of per-pair values (P_s,) per seed.
        level: coverage of the interval (0.95: the 2.5th to 97.5th percentile).
    Returns:
        The :class:`Interval`, or ``None`` when there is no finite value at all.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seeds = distinct_samples([x for x in (_clean(v) for v in per_seed) if x.size])
    if not seeds:
        return None
    mean = float(np.mean([x.mean() for x in seeds]))
    reps = bootstrap_replicates(seeds, replicates, seed)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(reps, [tail, 100.0 - tail])
    return Interval(mean, float(lo), float(hi), int(sum(x.size for x in seeds)), len(seeds))
