"""Volume compositing with hand-computed alphas, transmittances and weights."""

from __future__ import annotations

import math

import torch

from featurenerf.rendering.compositing import composite, compositing_weights

LN2 = math.log(2.0)


def test_two_samples_hand_computed_last_interval_ends_at_far():
    z = torch.tensor([[1.0, 2.0]])
    far = torch.tensor([4.0])
    sigma = torch.tensor([[LN2, LN2]])
    # deltas: 2 - 1 = 1 and far - 2 = 2 (the last interval ends at far, not at infinity).
    # alpha_0 = 1 - exp(-ln2 * 1) = 1/2;  alpha_1 = 1 - exp(-ln2 * 2) = 3/4.
    # T_0 = 1, T_1 = 1 - alpha_0 = 1/2.
    # w = [1 * 1/2, 1/2 * 3/4] = [0.5, 0.375]; background share 1 - 0.875 = 0.125 = T_0 T_1' (1/2 * 1/4).
    w = compositing_weights(z, sigma, far)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.375]]))
    torch.testing.assert_close(w.sum(-1), torch.tensor([0.875]))


def test_three_samples_uneven_spacing():
    z = torch.tensor([[0.0, 0.5, 2.0]])
    far = torch.tensor([3.0])
    sigma = torch.tensor([[2 * LN2, 0.0, LN2]])
    # deltas 0.5, 1.5, 1.0 -> alpha = [1 - 2^-1, 0, 1 - 2^-1] = [0.5, 0, 0.5]
    # T = [1, 0.5, 0.5] (the empty sample lets all light through) -> w = [0.5, 0, 0.25].
    w = compositing_weights(z, sigma, far)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.0, 0.25]]))


def test_last_interval_clamped_when_far_is_before_last_sample():
    z = torch.tensor([[1.0, 2.0]])
    sigma = torch.tensor([[LN2, 100.0]])
    # far = 1.5 < z_last: the last delta is clamped to 0, so the last sample is transparent.
    w = compositing_weights(z, sigma, torch.tensor([1.5]))
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.0]]))


def test_empty_and_opaque_rays():
    z = torch.tensor([[1.0, 2.0, 3.0]] * 2)
    far = torch.tensor([4.0, 4.0])
    sigma = torch.tensor([[0.0, 0.0, 0.0], [1e4, 5.0, 5.0]])
    w = compositing_weights(z, sigma, far)
    # No density -> no weight (all background); a wall at the first sample takes everything.
    torch.testing.assert_close(w[0], torch.zeros(3), rtol=0, atol=0)
    torch.testing.assert_close(w[1], torch.tensor([1.0, 0.0, 0.0]), rtol=0, atol=1e-8)


def test_weights_are_differentiable_in_sigma():
    sigma = torch.tensor([[LN2, LN2]], requires_grad=True)
    w = compositing_weights(torch.tensor([[1.0, 2.0]]), sigma, torch.tensor([4.0]))
    w.sum().backward()
    # sum w = 1 - exp(-s0 * 1) exp(-s1 * 2); d/ds0 = 1 * exp(-s0 - 2 s1) = 1/8, d/ds1 = 2 * 1/8 = 1/4.
    torch.testing.assert_close(sigma.grad, torch.tensor([[0.125, 0.25]]))


def test_composite_any_channel_count():
    w = torch.tensor([[0.5, 0.375]])
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    # 0.5 * (1, 0, 0) + 0.375 * (0, 1, 1) = (0.5, 0.375, 0.375)
    torch.testing.assert_close(composite(w, rgb), torch.tensor([[0.5, 0.375, 0.375]]))
    depth = torch.tensor([[[1.0], [2.0]]])
    # expected depth 0.5 * 1 + 0.375 * 2 = 1.25 (not normalised by opacity)
    torch.testing.assert_close(composite(w, depth), torch.tensor([[1.25]]))
    feats = torch.arange(2 * 384, dtype=torch.float32).reshape(1, 2, 384)
    torch.testing.assert_close(composite(w, feats), 0.5 * feats[:, 0] + 0.375 * feats[:, 1])
