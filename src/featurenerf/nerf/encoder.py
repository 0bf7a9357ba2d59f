"""pixelNeRF's multi-scale image encoder on a ResNet-34 trunk.

The trunk's parameter names match torchvision's ``resnet34`` so a torchvision state dict loads as is
(``weights=PATH``); we do not depend on torchvision itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
            ``weights_only=True``, or ``.safetensors``). Random initialisation by default.
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
        if weights:
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
            raise ValueError(f"{p}: cannot read as a plain state dict ({type(exc).__name__})") from exc
        if not isinstance(state, Mapping):
            raise ValueError(f"{p}: expected a state dict (name -> tensor), got a {type(state).__name__}")
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"{p}: not a torchvision resnet34 state dict (missing e.g. {missing[0]!r})")
        wrong = [k for k, v in own.items() if getattr(state[k], "shape", None) != v.shape]
        if wrong:
            k = wrong[0]
            raise ValueError(
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
        size = levels[0].shape[-2:]
        # align_corners=True as in pixelNeRF: level corners coincide with the image corners' pixels.
        ups = [levels[0]] + [
            F.interpolate(t, size=size, mode="bilinear", align_corners=True) for t in levels[1:]
        ]
        return torch.cat(ups, dim=1)
