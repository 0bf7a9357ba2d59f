"""The notebook API: load a trained model as a plain ``torch.nn.Module`` and prepare an input view.

No Lightning is imported: a checkpoint is read with ``torch.load(..., weights_only=True)`` (its
hyper-parameters are plain types) and the net is rebuilt from them. See ``docs/python_api.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from featurenerf.checkpointing import CheckpointError, load_checkpoint_file
from featurenerf.compiled import uncompiled_key
from featurenerf.data.srn import load_image_and_mask, read_intrinsics, read_pose
from featurenerf.nerf.encoder import RANDOM
from featurenerf.nerf.model import FeatureNeRFNet
from featurenerf.orbit import default_camera, default_intrinsics


def _read_checkpoint(path: Path, trust: bool, trust_hint: str) -> dict:
    ckpt = load_checkpoint_file(path, trust=trust, trust_hint=trust_hint)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a featurenerf checkpoint (no state_dict)")
    if not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path}: not a featurenerf checkpoint (no hyper_parameters)")
    return ckpt


def load(
    ckpt: str | Path,
    device: str | torch.device = "cpu",
    trust: bool = False,
    *,
    trust_hint: str = "if you trust the file, pass trust=True",
) -> FeatureNeRFNet:
    """A trained :class:`~featurenerf.nerf.model.FeatureNeRFNet` in eval mode, from a fit checkpoint.

    The net is rebuilt from the checkpoint's hyper-parameters and its ``net.*`` weights; Lightning is not
    imported. ``encoder_weights`` (an initialisation used for training: a file, or a package's ImageNet
    weights) is not needed and not read: the checkpoint holds the trained encoder.
    The file is read with ``weights_only=True``; ``trust=True`` allows full unpickling (files you trust).
    ``trust_hint`` ends the refusal of a file that would need it (commands name their own flag there).

    Raises:
        FileNotFoundError: no such file.
        featurenerf.checkpointing.CheckpointError: (a ``DataError``) one line naming the file when it is
            not a readable featurenerf checkpoint.
    """
    path = Path(ckpt)
    raw = _read_checkpoint(path, trust, trust_hint)
    hparams = raw["hyper_parameters"]
    # A run with model.compile saved the MLP under torch.compile's wrapper; the plain net has no such level.
    state = {
        uncompiled_key(k.removeprefix("net.")): v
        for k, v in raw["state_dict"].items()
        if k.startswith("net.")
    }
    if not state:
        raise CheckpointError(f"{path}: not a featurenerf checkpoint (no net.* weights)")
    net = FeatureNeRFNet.from_hparams(hparams, encoder_weights=RANDOM)  # the checkpoint holds the encoder
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit the model its hyper-parameters describe ({first})"
        ) from err
    return net.to(device).eval()


def background_name(net: FeatureNeRFNet) -> str:
    """The background the net composites on, as the image loaders name it ("white" or "black")."""
    return "white" if net.background_value == 1.0 else "black"


@dataclass
class SourceView:
    """One input image and its camera, batched (B = V = 1) for :meth:`FeatureNeRFNet.encode`.

    Attributes:
        images: (1, 1, 3, H, W) in [0, 1], composited on the net's background.
        poses: (1, 1, 4, 4) camera-to-world (OpenCV axes). focal, c: (1, 2) in pixels at H x W.
        mask: (H, W) bool object mask (alpha > 0.5, or pixels unlike the background).
        default_pose: True when no pose file was given and the default camera was assumed.
    """

    images: Tensor
    poses: Tensor
    focal: Tensor
    c: Tensor
    mask: Tensor
    default_pose: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return tuple(self.images.shape[-2:])

    @property
    def pose(self) -> Tensor:
        """(4, 4) camera-to-world of the view."""
        return self.poses[0, 0]

    def to(self, device: str | torch.device) -> SourceView:
        return SourceView(
            self.images.to(device),
            self.poses.to(device),
            self.focal.to(device),
            self.c.to(device),
            self.mask.to(device),
            self.default_pose,
        )


def load_view(
    image: str | Path,
    net: FeatureNeRFNet,
    pose: str | Path | None = None,
    intrinsics: str | Path | None = None,
    size: int | None = None,
) -> SourceView:
    """Read an input image (and optionally its SRN pose and intrinsics files) for ``net``.

    Args:
        image: PNG/JPEG; alpha (when present) is composited onto the net's background.
        pose: SRN pose file (16 numbers, camera-to-world, OpenCV axes). Without it the default camera of
            :func:`featurenerf.orbit.default_camera` is assumed (radius (near+far)/2, elevation 20°,
            looking at the origin, world up +z).
        intrinsics: SRN ``intrinsics.txt``. Without it SRN's focal length 1.0254 x side, centred.
        size: resize to ``size`` x ``size`` (intrinsics scale along); default: the image's own size.
    """
    img, mask = load_image_and_mask(Path(image), size, background_name(net))
    h, w = img.shape[-2:]
    if intrinsics is not None:
        focal, c = read_intrinsics(Path(intrinsics)).at_size(h, w)
    else:
        focal, c = default_intrinsics(h, w)
    c2w = read_pose(Path(pose)) if pose is not None else default_camera(net.near, net.far)
    return SourceView(img[None, None], c2w[None, None], focal[None], c[None], mask, pose is None)


def training_image_size(ckpt: str | Path) -> int | None:
    """``data.image_size`` of the run a checkpoint belongs to (``<run>/config.yaml`` beside
    ``<run>/checkpoints/``), or None when that file is absent or does not say."""
    config = Path(ckpt).resolve().parent.parent / "config.yaml"
    if not config.is_file():
        return None
    import yaml

    try:
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    except (yaml.YAMLError, OSError, AttributeError):
        return None
    size = data.get("image_size") if isinstance(data, dict) else None
    return int(size) if isinstance(size, int) and size > 0 else None
