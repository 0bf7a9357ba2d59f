"""pixelNeRF encoder, positional encoding and residual MLP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from featurenerf.nerf.encoder import ResNetEncoder
from featurenerf.nerf.encoding import PositionalEncoding
from featurenerf.nerf.mlp import ResidualBlock, ResnetMLP

# ---------------------------------------------------------------- encoder


@pytest.fixture(scope="module")
def encoder4() -> ResNetEncoder:
    torch.manual_seed(0)
    return ResNetEncoder(num_layers=4).eval()


def test_encoder_output_shape_pixelnerf_setting(encoder4):
    with torch.no_grad():
        out = encoder4(torch.rand(2, 3, 32, 48))
    # conv1 64 + layer1 64 + layer2 128 + layer3 256 = 512 channels at H/2 x W/2.
    assert out.shape == (2, 512, 16, 24)
    assert encoder4.out_channels == 512


@pytest.mark.parametrize(
    ("num_layers", "channels"),
    [(1, 64), (2, 64 + 64), (3, 64 + 64 + 128), (5, 64 + 64 + 128 + 256 + 512)],
)
def test_encoder_channels_for_other_depths(num_layers, channels):
    enc = ResNetEncoder(num_layers=num_layers).eval()
    with torch.no_grad():
        out = enc(torch.rand(1, 3, 32, 32))
    assert enc.out_channels == channels
    assert out.shape == (1, channels, 16, 16)


@pytest.mark.parametrize("num_layers", [0, 6])
def test_encoder_rejects_bad_depth(num_layers):
    with pytest.raises(ValueError, match="num_layers"):
        ResNetEncoder(num_layers=num_layers)


def test_encoder_maps_unit_range_to_minus_one_one(encoder4):
    seen = []
    handle = encoder4.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            encoder4(torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8), torch.full((3, 8, 8), 0.25)]))
    finally:
        handle.remove()
    x = seen[0]
    # 0 -> 2 * 0 - 1 = -1;  1 -> 1;  0.25 -> 2 * 0.25 - 1 = -0.5.
    torch.testing.assert_close(x[0], torch.full((3, 8, 8), -1.0))
    torch.testing.assert_close(x[1], torch.full((3, 8, 8), 1.0))
    torch.testing.assert_close(x[2], torch.full((3, 8, 8), -0.5))


def _torchvision_resnet34_keys(num_stages: int) -> set[str]:
    """torchvision resnet34 state-dict names for the stem and the first ``num_stages`` stages."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight"} | {f"bn1.{s}" for s in bn}
    for stage, blocks in zip(range(1, num_stages + 1), (3, 4, 6, 3)):
        for b in range(blocks):
            pre = f"layer{stage}.{b}"
            keys |= {f"{pre}.conv1.weight", f"{pre}.conv2.weight"}
            keys |= {f"{pre}.bn1.{s}" for s in bn} | {f"{pre}.bn2.{s}" for s in bn}
        if stage > 1:  # stride-2 stages change width: a 1x1 projection on the first block
            keys |= {f"layer{stage}.0.downsample.0.weight"} | {f"layer{stage}.0.downsample.1.{s}" for s in bn}
    return keys


def test_encoder_state_dict_uses_torchvision_resnet34_names(encoder4):
    sd = encoder4.state_dict()
    assert set(sd) == _torchvision_resnet34_keys(3)
    assert "layer3.5.bn2.running_var" in sd and "layer1.0.downsample.0.weight" not in sd
    # A few shapes as torchvision has them.
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.2.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["layer2.0.conv1.weight"].shape == (128, 64, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer3.5.bn2.weight"].shape == (256,)
    assert set(ResNetEncoder(num_layers=5).state_dict()) == _torchvision_resnet34_keys(4)


@pytest.fixture(scope="module")
def torchvision_state() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """A full resnet34-shaped state dict (layer4 and fc included, non-trivial BN statistics), test
    images, and the expected 4-level features: the first 512 channels of the full-depth encoder."""
    torch.manual_seed(1)
    full = ResNetEncoder(num_layers=5)
    with torch.no_grad():
        for name, v in full.state_dict().items():
            if name.endswith("running_var") or (name.endswith("weight") and v.ndim == 1):
                v.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bias")):
                v.normal_(0.0, 0.1)
    state = {k: v.clone() for k, v in full.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 512) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = full.eval()(images)[:, :512]
    return state, images, expected


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_encoder_loads_torchvision_state_dict(tmp_path, suffix, torchvision_state):
    state, images, expected = torchvision_state
    path = tmp_path / f"resnet34{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    with torch.no_grad():
        loaded = ResNetEncoder(num_layers=4, weights=str(path)).eval()
        torch.testing.assert_close(loaded(images), expected)
        fresh = ResNetEncoder(num_layers=4).eval()
        assert not torch.allclose(fresh(images), expected)
    torch.testing.assert_close(loaded.bn1.running_var, state["bn1.running_var"])
    torch.testing.assert_close(loaded.layer3[5].bn2.running_mean, state["layer3.5.bn2.running_mean"])


def test_encoder_weights_with_wrong_keys_name_the_file(tmp_path):
    path = tmp_path / "not_resnet.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match="not_resnet.pth") as err:
        ResNetEncoder(weights=str(path))
    assert "\n" not in str(err.value) and "conv1.weight" in str(err.value)


def test_encoder_weights_with_wrong_shapes_name_the_file(tmp_path):
    # Right names, wrong architecture (e.g. a resnet50 shares many names with resnet34).
    state = ResNetEncoder(num_layers=4).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "wrong_shapes.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="wrong_shapes.pth") as err:
        ResNetEncoder(weights=str(path))
    assert "\n" not in str(err.value) and "layer1.0.conv1.weight" in str(err.value)


@pytest.mark.parametrize("content", ["tensor", "module", "garbage"])
def test_encoder_weights_unreadable_or_not_a_state_dict_name_the_file(tmp_path, content):
    path = tmp_path / f"{content}.pth"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "module":  # a pickled module needs weights_only=False: refused
        torch.save(torch.nn.Linear(2, 2), path)
    else:
        path.write_text("hello")
    with pytest.raises(ValueError, match=f"{content}.pth") as err:
        ResNetEncoder(weights=str(path))
    assert "\n" not in str(err.value)


def test_encoder_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        ResNetEncoder(weights=str(tmp_path / "absent.pth"))


# ---------------------------------------------------------------- positional encoding


def test_positional_encoding_width_and_hand_values():
    pe = PositionalEncoding(num_freqs=6, freq_factor=1.5, d_in=3)
    assert pe.d_out == 39  # 3 + 3 * 2 * 6
    x = torch.tensor([0.1, -0.2, 0.3])
    out = pe(x)
    assert out.shape == (39,)
    # Documented layout [x, sin(f_k x), cos(f_k x)], f_k = 1.5 * 2^k: the raw input, then all sines,
    # then all cosines; inside each block frequency-major: (f_0 x_0, f_0 x_1, f_0 x_2, f_1 x_0, ...).
    freqs = [1.5, 3.0, 6.0, 12.0, 24.0, 48.0]
    xs = [0.1, -0.2, 0.3]
    expected = (
        xs + [math.sin(f * v) for f in freqs for v in xs] + [math.cos(f * v) for f in freqs for v in xs]
    )
    torch.testing.assert_close(out, torch.tensor(expected))
    # e.g. out[3 + 3*1 + 2] = sin(3.0 * 0.3) = sin(0.9); out[21] = cos(1.5 * 0.1) = cos(0.15).
    assert out[8].item() == pytest.approx(math.sin(0.9), abs=1e-6)
    assert out[21].item() == pytest.approx(math.cos(0.15), abs=1e-6)


def test_positional_encoding_batches_and_without_input():
    pe = PositionalEncoding(num_freqs=2, freq_factor=1.0, include_input=False, d_in=2)
    assert pe.d_out == 8
    x = torch.zeros(4, 5, 2)
    # sin(0) = 0, cos(0) = 1.
    torch.testing.assert_close(pe(x), torch.cat([torch.zeros(4, 5, 4), torch.ones(4, 5, 4)], -1))


# ---------------------------------------------------------------- residual MLP


def test_residual_block_is_identity_at_init():
    block = ResidualBlock(16)
    assert torch.count_nonzero(block.fc1.weight) == 0 and torch.count_nonzero(block.fc1.bias) == 0
    x = torch.randn(5, 16)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def random_block(width: int = 16) -> ResidualBlock:
    """A residual block with non-zero weights everywhere (fc1 starts at zero), seeded."""
    torch.manual_seed(0)
    block = ResidualBlock(width)
    with torch.no_grad():
        block.fc1.weight.normal_(0, 0.3)
        block.fc1.bias.normal_(0, 0.3)
        block.fc0.bias.normal_(0, 0.3)
    return block


@pytest.mark.parametrize("with_extra", [False, True])
def test_residual_block_in_place_training_path_matches_autograd(with_extra, monkeypatch):
    """Eager float32 CPU training runs the block through its in-place autograd function: the same values
    and the same gradients (input, injection, both layers) as the plain ops."""
    from featurenerf.nerf import mlp

    applies = mlp._in_place_applies
    block = random_block()
    x0, e0 = torch.randn(2, 7, 16), torch.randn(2, 7, 16)

    def run(in_place: bool):
        calls = []
        real = mlp._InPlaceBlock.apply
        monkeypatch.setattr(mlp, "_in_place_applies", lambda h: in_place)
        monkeypatch.setattr(mlp._InPlaceBlock, "apply", lambda *a: calls.append(1) or real(*a))
        block.zero_grad()
        x, e = x0.clone().requires_grad_(), e0.clone().requires_grad_()
        out = block(x, (e * 1.0) if with_extra else None)  # extra is a fresh tensor (it is written to)
        (out * torch.linspace(-1, 1, 16)).sum().backward()
        grads = [x.grad, e.grad if with_extra else None]
        grads += [None if p.grad is None else p.grad.clone() for p in block.parameters()]
        return out.detach(), grads, len(calls)

    out_fast, g_fast, n_fast = run(True)
    out_ref, g_ref, n_ref = run(False)
    assert (n_fast, n_ref) == (1, 0)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_fast, g_ref):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert applies(torch.ones(2)) and not applies(torch.ones(2, dtype=torch.float64))
    with torch.no_grad():
        assert not applies(torch.ones(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not applies(torch.ones(2))


@pytest.mark.parametrize("with_extra", [False, True])
def test_residual_block_inference_path_matches_the_plain_ops(with_extra, monkeypatch):
    """Renders (no gradients, float32, CPU) fuse the inner bias and ReLU in place: same values as
    F.linear + relu_, and the injection tensor is used as the accumulator as before."""
    from featurenerf.nerf import mlp

    applies = mlp._inference_applies
    block = random_block()
    x, e = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    outs = []
    for fused in (True, False):
        monkeypatch.setattr(mlp, "_inference_applies", lambda h, fused=fused: fused)
        with torch.no_grad():
            outs.append(block(x, e.clone() if with_extra else None))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    if with_extra:  # the reference: h + fc1(relu(fc0(relu(h)))) with the injection in place of fc1's bias
        ref = x + F.linear(torch.relu(block.fc0(torch.relu(x))), block.fc1.weight) + e
        torch.testing.assert_close(outs[0], ref.detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert applies(torch.ones(2)) and not applies(torch.ones(2, dtype=torch.float64))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not applies(torch.ones(2))
    assert not applies(torch.ones(2))  # training keeps autograd (or the in-place autograd function)


def small_mlp(**kwargs) -> ResnetMLP:
    torch.manual_seed(0)
    return ResnetMLP(d_in=6, d_latent=5, d_hidden=8, d_out=3, **kwargs)


def randomise_blocks(mlp: ResnetMLP) -> None:
    """Give every fc1 non-zero weights so blocks are no longer the identity."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for b in mlp.blocks:
            b.fc1.weight.copy_(torch.randn(b.fc1.weight.shape, generator=g) * 0.3)
            b.fc1.bias.copy_(torch.randn(b.fc1.bias.shape, generator=g) * 0.3)


def test_mlp_output_shapes_and_zero_init_blocks():
    mlp = small_mlp()
    for b in mlp.blocks:
        assert torch.count_nonzero(b.fc1.weight) == 0 and torch.count_nonzero(b.fc1.bias) == 0
    out, hidden = mlp(torch.randn(2, 1, 7, 6), torch.randn(2, 1, 7, 5))
    assert out.shape == (2, 7, 3) and hidden.shape == (2, 7, 8)
    # Every block is the identity at init, so hidden = lin_in(x) + sum_i lin_z[i](latent).
    x, lat = torch.randn(2, 1, 7, 6), torch.randn(2, 1, 7, 5)
    out, hidden = mlp(x, lat)
    expected = mlp.lin_in(x) + sum(lz(lat) for lz in mlp.lin_z)
    torch.testing.assert_close(hidden, expected.squeeze(1))
    torch.testing.assert_close(out, mlp.lin_out(torch.relu(hidden)))


def test_mlp_defaults_are_pixelnerf_sizes():
    mlp = ResnetMLP()
    assert mlp.lin_in.in_features == 42 and mlp.lin_in.out_features == 512
    assert len(mlp.blocks) == 5 and len(mlp.lin_z) == 3 and mlp.combine_layer == 3
    assert all(lz.in_features == 512 for lz in mlp.lin_z)


def test_mlp_rejects_inconsistent_layers():
    with pytest.raises(ValueError):
        ResnetMLP(n_blocks=5, n_inject=4, combine_layer=3)


def test_mlp_identical_views_equal_one_view():
    mlp = small_mlp()
    randomise_blocks(mlp)
    x, lat = torch.randn(2, 1, 4, 6), torch.randn(2, 1, 4, 5)
    out1, hid1 = mlp(x, lat)
    out3, hid3 = mlp(x.expand(2, 3, 4, 6), lat.expand(2, 3, 4, 5))
    torch.testing.assert_close(out3, out1)
    torch.testing.assert_close(hid3, hid1)


def test_mlp_views_are_averaged_before_combine_layer():
    mlp = small_mlp()
    randomise_blocks(mlp)
    captured = []
    handle = mlp.blocks[mlp.combine_layer].register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    g = torch.Generator().manual_seed(4)
    x, lat = torch.randn(1, 2, 4, 6, generator=g), torch.randn(1, 2, 4, 5, generator=g)
    with torch.no_grad():
        mlp(x[:, :1], lat[:, :1])  # view a alone
        mlp(x[:, 1:], lat[:, 1:])  # view b alone
        out, hidden = mlp(x, lat)  # both views
    handle.remove()
    h_a, h_b, h_ab = captured
    # Before the combine layer each view is processed independently; block 3 sees their mean.
    torch.testing.assert_close(h_ab, (h_a + h_b) / 2)
    # ... and the rest of the network continues from that mean: no views left in the outputs.
    h = h_ab
    for block in mlp.blocks[mlp.combine_layer :]:
        h = block(h)
    torch.testing.assert_close(hidden, h.squeeze(1))
    torch.testing.assert_close(out, mlp.lin_out(torch.relu(hidden)))
    # The mean is symmetric in the views.
    out_swapped, _ = mlp(x.flip(1), lat.flip(1))
    torch.testing.assert_close(out_swapped, out)


def test_mlp_combine_after_last_block_averages_outputs():
    mlp = small_mlp(n_blocks=2, n_inject=1, combine_layer=2)
    randomise_blocks(mlp)
    x, lat = torch.randn(1, 2, 3, 6), torch.randn(1, 2, 3, 5)
    _, h_both = mlp(x, lat)
    _, h_a = mlp(x[:, :1], lat[:, :1])
    _, h_b = mlp(x[:, 1:], lat[:, 1:])
    torch.testing.assert_close(h_both, (h_a + h_b) / 2)


def test_mlp_latent_enters_only_the_first_n_inject_blocks():
    mlp = small_mlp()  # 5 blocks, n_inject 3, combine 3
    randomise_blocks(mlp)
    ins = {}
    hooks = [
        b.register_forward_pre_hook(lambda _m, a, i=i: ins.__setitem__(i, a[0].clone()))
        for i, b in enumerate(mlp.blocks)
    ]
    x, lat = torch.randn(1, 1, 4, 6), torch.randn(1, 1, 4, 5)
    with torch.no_grad():
        mlp(x, lat)
        for h in hooks:
            h.remove()
        # Block 0 input = lin_in(x) + lin_z[0](latent); block i input = block i-1 of its input
        # (+ lin_z[i] for i < 3).
        torch.testing.assert_close(ins[0], mlp.lin_in(x) + mlp.lin_z[0](lat))
        for i in range(1, 5):
            prev = mlp.blocks[i - 1]
            plain = ins[i - 1] + prev.fc1(torch.relu(prev.fc0(torch.relu(ins[i - 1]))))
            injected = mlp.lin_z[i](lat) if i < 3 else torch.zeros_like(plain)
            torch.testing.assert_close(ins[i] - plain, injected, atol=1e-6, rtol=0)


def test_mlp_output_depends_on_latent_with_gradient():
    mlp = small_mlp()
    randomise_blocks(mlp)
    x = torch.randn(2, 2, 4, 6)
    lat = torch.randn(2, 2, 4, 5, requires_grad=True)
    out, hidden = mlp(x, lat)
    out2, _ = mlp(x, lat.detach() + 0.5)
    assert not torch.allclose(out, out2)
    (out.sum() + hidden.sum()).backward()
    # Every view's latent of every point matters (through its own view before the mean).
    assert (lat.grad.abs().sum(-1) > 0).all()
