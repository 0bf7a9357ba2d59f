"""Bootstrap intervals over pairs, pooled over seeds: hand-checked cases, coverage, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from featurenerf.results.bootstrap import bootstrap_interval, bootstrap_replicates


def test_constant_values_give_a_point_interval():
    ci = bootstrap_interval([[0.4] * 7, [0.6] * 5])
    # Mean over seeds of the per-seed means: (0.4 + 0.6) / 2, not the pooled pair mean (0.483).
    assert ci.mean == pytest.approx(0.5) and ci.lo == pytest.approx(0.5) and ci.hi == pytest.approx(0.5)
    assert (ci.pairs, ci.seeds) == (12, 2)


def test_two_point_distribution_by_hand():
    # One seed, pairs 0 and 1: a replicate's mean is k / 2, k ~ Binomial(2, 1/2): 0, 0.5, 1 with
    # probabilities 1/4, 1/2, 1/4. The 2.5th percentile is 0 and the 97.5th is 1.
    reps = bootstrap_replicates([[0.0, 1.0]], replicates=20000, seed=3)
    assert set(np.unique(reps)) == {0.0, 0.5, 1.0}
    assert np.mean(reps == 0.5) == pytest.approx(0.5, abs=0.02)
    ci = bootstrap_interval([[0.0, 1.0]], replicates=20000, seed=3)
    assert (ci.lo, ci.mean, ci.hi) == (0.0, 0.5, 1.0)


def test_interval_width_matches_the_standard_error():
    # Normal values: the bootstrap interval of a mean is about mean +- 1.96 sd / sqrt(n).
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=400)
    ci = bootstrap_interval([x], replicates=4000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert ci.mean == pytest.approx(x.mean())
    assert (ci.hi - ci.lo) / 2 == pytest.approx(half, rel=0.1)
    # Two seeds with the same spread: the pooled mean's error shrinks by sqrt(2).
    y = rng.normal(12.0, 2.0, size=400)
    both = bootstrap_interval([x, y], replicates=4000)
    assert both.mean == pytest.approx((x.mean() + y.mean()) / 2)
    assert (both.hi - both.lo) / 2 == pytest.approx(half / np.sqrt(2), rel=0.1)


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = 0
    trials = 200
    for _ in range(trials):
        ci = bootstrap_interval(
            [rng.exponential(1.0, size=60), rng.exponential(1.0, size=60)], replicates=500
        )
        hits += ci.lo <= 1.0 <= ci.hi
    assert 0.88 <= hits / trials <= 0.99


def test_deterministic_and_paired_across_methods():
    a = [[0.1, 0.5, 0.9, 0.3], [0.2, 0.4]]
    assert bootstrap_interval(a) == bootstrap_interval(a)
    assert not np.array_equal(bootstrap_replicates(a, seed=1), bootstrap_replicates(a, seed=2))
    # The same pair counts draw the same indices: a method that is another plus a constant has its
    # replicates shifted by exactly that constant (a paired comparison).
    b = [[v + 0.25 for v in seed] for seed in a]
    assert bootstrap_replicates(b) == pytest.approx(bootstrap_replicates(a) + 0.25)


def test_missing_values_and_empty_input():
    ci = bootstrap_interval([[0.2, float("nan"), 0.4], []])
    assert ci.mean == pytest.approx(0.3) and (ci.pairs, ci.seeds) == (2, 1)
    assert bootstrap_interval([[], [float("nan")]]) is None
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([[1.0]], level=1.5)
    with pytest.raises(ValueError, match="replicates"):
        bootstrap_replicates([[1.0]], replicates=0)


def test_a_seed_independent_method_is_one_sample_not_two():
    """The 2D teacher gives both seeds the same per-pair values: its interval is that of one seed (pooling
    two resamples of the same pairs would narrow it by about 1/sqrt(2)); distinct seeds still pool."""
    x = np.random.default_rng(2).normal(0.5, 0.2, 400)
    once = bootstrap_interval([x], replicates=4000)
    twice = bootstrap_interval([x, x.copy()], replicates=4000)
    assert (twice.lo, twice.mean, twice.hi, twice.pairs, twice.seeds) == (once.lo, once.mean, once.hi, 400, 1)
    other = bootstrap_interval([x, x[::-1].copy()], replicates=4000)  # same values, other pairs: two samples
    assert other.seeds == 2 and (other.hi - other.lo) < 0.8 * (once.hi - once.lo)
