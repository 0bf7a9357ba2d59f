"""Ray sampling: stratified, importance (inverse CDF over coarse strata) and depth-guided samples."""

from __future__ import annotations

import torch

from featurenerf.rendering.sampling import (
    Sampling,
    depth_guided_samples,
    importance_samples,
    stratified_samples,
)


def test_stratified_without_perturb_gives_stratum_midpoints():
    near, far = torch.tensor([1.0, 0.0]), torch.tensor([3.0, 8.0])
    z = stratified_samples(near, far, 4)
    # Ray 0: [1, 3] in 4 strata of width 0.5 -> midpoints 1.25, 1.75, 2.25, 2.75.
    # Ray 1: [0, 8] in 4 strata of width 2   -> midpoints 1, 3, 5, 7.
    torch.testing.assert_close(z, torch.tensor([[1.25, 1.75, 2.25, 2.75], [1.0, 3.0, 5.0, 7.0]]))


def test_stratified_perturbed_has_one_sample_per_stratum_and_is_reproducible():
    near, far = torch.full((200,), 1.0), torch.full((200,), 3.0)
    g = torch.Generator().manual_seed(0)
    z = stratified_samples(near, far, 4, Sampling(perturb=True, generator=g))
    lo = torch.tensor([1.0, 1.5, 2.0, 2.5])  # stratum k is [1 + 0.5 k, 1 + 0.5 (k + 1)]
    assert ((z >= lo) & (z <= lo + 0.5)).all()
    # The jitter is really random: it covers both halves of each stratum across rays.
    assert ((z - lo) < 0.25).any(0).all() and ((z - lo) > 0.25).any(0).all()
    again = Sampling(perturb=True, generator=torch.Generator().manual_seed(0))
    z_again = stratified_samples(near, far, 4, again)
    torch.testing.assert_close(z, z_again, rtol=0, atol=0)


def test_importance_all_weight_in_one_bin_samples_that_bin():
    # K = 4 coarse strata of [0, 4]: bins [0,1], [1,2], [2,3], [3,4]; all weight in bin 2.
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    near, far = torch.tensor([0.0]), torch.tensor([4.0])
    z = importance_samples(weights, near, far, 4)
    # With 1e-5 added to each bin, bin 2 covers cdf [2e-5, 1 - 1e-5] / (1 + 4e-5), i.e. almost all of
    # [0, 1]; the deterministic u = (i + 0.5) / 4 = 0.125, 0.375, 0.625, 0.875 map (to ~1e-4) to
    # 2 + u: 2.125, 2.375, 2.625, 2.875.
    torch.testing.assert_close(z, torch.tensor([[2.125, 2.375, 2.625, 2.875]]), rtol=0, atol=1e-4)
    drawn = Sampling(perturb=True, generator=torch.Generator().manual_seed(1))
    zp = importance_samples(weights.expand(500, 4), near.expand(500), far.expand(500), 8, drawn)
    # Each other bin keeps probability 1e-5 / (1 + 4e-5): 4000 samples land outside [2, 3] with
    # probability about 3 * 1e-5 * 4000 = 0.12 (fixed seed: none do).
    assert ((zp >= 2.0) & (zp <= 3.0)).all()


def test_importance_two_bins_split_by_weight():
    # Weights 1 : 3 on bins 0 and 3 of [10, 14]; deterministic u = 0.125, 0.375, 0.625, 0.875:
    # u < 0.25 (approximately) falls in bin 0, the rest in bin 3.
    weights = torch.tensor([[1.0, 0.0, 0.0, 3.0]])
    z = importance_samples(weights, torch.tensor([10.0]), torch.tensor([14.0]), 4)
    # u = 0.125 is half-way through bin 0's cdf range [0, 0.25] -> 10.5.
    # u = 0.375: (0.375 - 0.25) / 0.75 = 1/6 into bin 3 -> 13 + 1/6; similarly 13.5 and 13 + 5/6.
    expected = torch.tensor([[10.5, 13.0 + 1 / 6, 13.5, 13.0 + 5 / 6]])
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-4)


def test_importance_samples_do_not_backpropagate_into_weights():
    weights = torch.rand(3, 8, requires_grad=True)
    z = importance_samples(weights, torch.zeros(3), torch.ones(3), 5)
    assert not z.requires_grad


def test_depth_guided_without_perturb_repeats_depth_and_clamps():
    depth = torch.tensor([1.5, 0.5, 9.0])
    near, far = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, 2.0, 2.0])
    z = depth_guided_samples(depth, near, far, 3, std=0.01)
    # 1.5 is inside [1, 2]; 0.5 clamps to near = 1; 9 clamps to far = 2.
    expected = torch.tensor([[1.5] * 3, [1.0] * 3, [2.0] * 3])
    torch.testing.assert_close(z, expected, rtol=0, atol=0)


def test_depth_guided_perturbed_is_gaussian_around_depth():
    n = 20000
    drawn = Sampling(perturb=True, generator=torch.Generator().manual_seed(0))
    z = depth_guided_samples(torch.tensor([1.5]), torch.tensor([0.8]), torch.tensor([1.8]), n, 0.01, drawn)
    # Mean 1.5 (standard error 0.01 / sqrt(20000) ~ 7e-5) and std 0.01 (relative error ~ 0.5 %).
    assert abs(z.mean().item() - 1.5) < 5e-4
    assert abs(z.std().item() - 0.01) < 5e-4
    # Near the bound, the Gaussian is clamped: half the samples of depth = near sit exactly at near.
    near = torch.tensor([0.8])
    zc = depth_guided_samples(near, near, torch.tensor([1.8]), n, std=0.01, how=drawn)
    assert zc.min() == near
    frac_at_near = (zc == near).float().mean().item()
    assert 0.45 < frac_at_near < 0.55


def test_depth_guided_samples_do_not_backpropagate_into_depth():
    depth = torch.tensor([1.2], requires_grad=True)
    z = depth_guided_samples(
        depth, torch.tensor([1.0]), torch.tensor([2.0]), 4, std=0.1, how=Sampling(perturb=True)
    )
    assert not z.requires_grad
