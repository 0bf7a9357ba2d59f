"""The field's and the renderer's hyper-parameters, named once.

:class:`NetConfig` is the one list of them: :class:`~featurenerf.nerf.model.FeatureNeRFNet` is built from
one, and the LightningModule (:class:`~featurenerf.module.FeatureNeRF`) takes its fields as keyword
arguments and passes them on, so the config parser shows them as ``model.d_hidden``, ``model.n_coarse``, ...
with the types, ranges, defaults and help written here. Every default is the paper's value (PAPER.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from featurenerf.nerf.encoder import EncoderName
from featurenerf.ranges import (
    EncoderLayers,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitIntervalBelowOne,
)


@dataclass(frozen=True)
class NetConfig:
    """Hyper-parameters of the feature field and its renderer.

    Args:
        feature_dim: width D of the distilled feature head (the teacher's ``feature_dim``; the CLI links
            it from ``data.feature_dim``).
        encoder: image encoder trunk: ``resnet34`` (the paper's) or ``efficientnet_lite0`` (ImageNet
            weights); the MLP's input width follows from it.
        encoder_layers: encoder levels kept (ResNet-34: 4 gives 512-channel maps; EfficientNet-Lite0: 4
            gives 192).
        encoder_weights: None for the encoder's default initialisation (ResNet-34 random,
            EfficientNet-Lite0 ImageNet), a local state dict of its layout, or ``random``.
        global_feature: append the encoder map's spatial mean to every cell (pixelNeRF's optional global
            image code, off in the paper): each point also sees the whole view, e.g. the object's pose.
        d_hidden: MLP width.
        n_blocks: residual blocks of the MLP.
        n_inject: blocks that receive the image feature.
        combine_layer: block before which the hidden state is averaged over source views.
        num_freqs: frequencies of the positional encoding of the camera-frame position.
        freq_factor: base frequency factor of the positional encoding.
        use_viewdirs: append the camera-frame view direction to the MLP input.
        n_coarse: stratified samples per ray.
        n_fine: importance samples per ray.
        n_fine_depth: samples around the coarse expected depth, with standard deviation ``depth_std``.
        depth_std: standard deviation of the depth-guided samples.
        near: ray start in world units.
        far: ray end in world units (must be above ``near``).
        background: ``white`` or ``black``: the colour composited behind the object.
        reuse_coarse: the fine pass evaluates only its new samples (exact).
        scene_radius: empty-space skipping at render time: samples farther than this from the origin get
            zero density and skip the MLP, rays that miss the sphere are background; None turns it off.
        stop_transmittance: render-time early ray termination: samples behind the point where the
            transmittance falls below this are not evaluated; 0 turns it off.
        occupancy_resolution: render-time occupancy grid (needs a scene bound): after ``encode``, density
            on this many cells per axis of the bound decides which samples are evaluated at all
            (:mod:`featurenerf.nerf.render_occupancy`); 0 turns it off. Training never uses it.
        chunk: rays per MLP call when rendering whole images (memory does not grow with image size).
    """

    feature_dim: NonNegativeInt = 384
    encoder: EncoderName = "resnet34"
    encoder_layers: EncoderLayers = 4
    encoder_weights: str | None = None
    global_feature: bool = False
    d_hidden: PositiveInt = 512
    n_blocks: PositiveInt = 5
    n_inject: NonNegativeInt = 3
    combine_layer: NonNegativeInt = 3
    num_freqs: NonNegativeInt = 6
    freq_factor: PositiveFloat = 1.5
    use_viewdirs: bool = True
    n_coarse: PositiveInt = 64
    n_fine: NonNegativeInt = 16
    n_fine_depth: NonNegativeInt = 16
    depth_std: NonNegativeFloat = 0.01
    near: NonNegativeFloat = 0.8
    far: PositiveFloat = 1.8
    background: str = "white"
    reuse_coarse: bool = True
    scene_radius: PositiveFloat | None = None
    stop_transmittance: UnitIntervalBelowOne = 0.0
    occupancy_resolution: NonNegativeInt = 64
    chunk: PositiveInt = 4096

    def __post_init__(self) -> None:
        if self.background not in ("white", "black"):
            raise ValueError(f"background must be 'white' or 'black', got {self.background!r}")
        if self.feature_dim < 0:
            raise ValueError(f"feature_dim must be >= 0, got {self.feature_dim}")
        if self.occupancy_resolution < 0:
            raise ValueError(
                f"occupancy_resolution must be >= 0 (0: no grid), got {self.occupancy_resolution}"
            )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> NetConfig:
        """The config of a flat mapping (a checkpoint's or the LightningModule's hyper-parameters): the keys
        that are fields are taken (``overrides`` win), the others ignored; missing ones keep the defaults."""
        names = set(cls.names())
        return cls(**{k: v for k, v in {**values, **overrides}.items() if k in names})
