"""DINO teachers on transformers ViTs: ``dino_vits8`` (DINO v1, the paper's teacher) and ``dinov2`` (ViT-L/14 by default).

A ViT "facet" of block ``L`` is one of the tensors inside that block, per patch token: ``query``,
``key`` or ``value`` (the attention projections, all heads concatenated) or ``token`` (the block's
output). FeatureNeRF distils the *key* facet of block 9 (0-based) of DINO ViT-S/8 at 256 px: 6 heads x 64
= 384 channels on a 32 x 32 grid. Blocks after ``L`` are dropped at load time; they never run.

transformers is imported when a teacher is built, not when this module is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from einops import rearrange
from torch import Tensor, nn

from .base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherInfo, parse_dtype, register_teacher
from .dino_checkpoint import convert_dino_state_dict, load_dino_pth, vit_config_from_dino
from .weights import describe_source, fingerprint, locate, seeded, warn_random

FACETS = ("query", "key", "value", "token")
_PROJ = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
_HF_FILES = ("*.json", "*.safetensors")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("DINO teachers need transformers: pip install 'transformers>=5'") from err
    return transformers


class _ViTFacetTeacher(Teacher):
    """Shared machinery: load a transformers ViT, keep blocks ``0..layer``, return one facet per patch."""

    default_weights: str
    default_config: dict[str, Any]
    #: ``token`` facet: apply the model's final LayerNorm (DINOv2's normalised patch tokens).
    norm_tokens: bool = False

    def __init__(
        self,
        weights: str | None,
        layer: int,
        facet: str,
        input_size: int | None,
        config: dict[str, Any] | None,
        dtype: str,
        trust_checkpoint: bool,
        seed: int,
    ) -> None:
        super().__init__()
        if facet not in FACETS:
            raise ValueError(f"{self._name}: facet must be one of {', '.join(FACETS)}, got {facet!r}")
        self.facet = facet
        self._input_size = input_size
        model, self._source, self._identity = self._load(weights, config or {}, trust_checkpoint, seed)
        blocks = self._blocks(model)
        depth = len(blocks)
        if not -depth <= layer < depth:
            raise ValueError(
                f"{self._name}: layer must be in [-{depth}, {depth}), the model has {depth} blocks"
            )
        self.layer = layer % depth
        self._truncate(model, self.layer + 1)
        cfg = model.config
        self._hidden = cfg.hidden_size
        self._patch = cfg.patch_size
        self.model = model.to(parse_dtype(dtype))

    # ---- loading ----
    @property
    def _name(self) -> str:
        return self.registry_name or type(self).__name__

    def _load(
        self, weights: str | None, config: dict[str, Any], trust: bool, seed: int
    ) -> tuple[nn.Module, str, str]:
        tf = _transformers()
        if weights is None:
            warn_random(self._name)
            with seeded(seed):
                model = self._new_model(tf, {**self.default_config, **config})
            return model, "random init", f"random:{seed}:{sorted(config.items())}"
        path = locate(weights, self._name, allow_patterns=_HF_FILES)
        if path.is_file():
            model = self._from_file(tf, path, config, trust)
        else:
            model = self._from_pretrained(tf, path, config)
        return model, weights, fingerprint(path, _HF_FILES)

    def _from_file(self, tf: Any, path: Path, config: dict[str, Any], trust: bool) -> nn.Module:
        raise ValueError(f"{self._name}: {path} is a file; pass a Hugging Face model folder")

    def _new_model(self, tf: Any, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def _from_pretrained(self, tf: Any, path: Path, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def _blocks(model: nn.Module) -> nn.ModuleList:
        return model.layers if hasattr(model, "layers") else model.encoder.layer

    @staticmethod
    def _truncate(model: nn.Module, keep: int) -> None:
        holder = model if hasattr(model, "layers") else model.encoder
        name = "layers" if hasattr(model, "layers") else "layer"
        setattr(holder, name, nn.ModuleList(list(getattr(holder, name))[:keep]))

    def _run(self, images: Tensor) -> None:
        raise NotImplementedError

    # ---- metadata ----
    @property
    def feature_dim(self) -> int:
        return self._hidden

    @property
    def stride(self) -> int:
        return self._patch

    @property
    def input_size(self) -> int | None:
        return self._input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD

    @property
    def weights_source(self) -> str:
        return self._source

    def cache_fields(self) -> dict[str, Any]:
        return {"weights": self._identity, "layer": self.layer, "facet": self.facet}

    # ---- compute ----
    def extract(self, images: Tensor) -> Tensor:
        block = self._blocks(self.model)[self.layer]
        module = block if self.facet == "token" else getattr(block.attention, _PROJ[self.facet])
        captured: list[Tensor] = []
        handle = module.register_forward_hook(
            lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
        )
        try:
            self._run(images)
        finally:
            handle.remove()
        tokens = captured[0]
        if self.facet == "token" and self.norm_tokens:
            tokens = self.model.layernorm(tokens)
        h, w = images.shape[-2] // self.stride, images.shape[-1] // self.stride
        # The sequence is [CLS, (registers,) patches in row-major order]: the patches are the last h*w.
        return rearrange(tokens[:, -h * w :], "b (h w) c -> b c h w", h=h, w=w)


@register_teacher("dino_vits8")
class DinoTeacher(_ViTFacetTeacher):
    """DINO v1 ViT facets (default ViT-S/8, key facet of block 9, 256 px → 384 x 32 x 32).

    Args:
        weights: a local Hugging Face folder (``ViTModel``), an original DINO ``.pth`` (converted on
            load), a hub id (only fetched when online), or ``None`` for random init of the architecture.
        layer: block index (0-based; negative counts from the end).
        facet: ``query`` | ``key`` | ``value`` | ``token``.
        input_size: square side images are resized to; ``None`` keeps their size (rounded to the patch).
        config: ``ViTConfig`` fields overriding the architecture (random init, or heads of a ``.pth``).
        dtype: compute and output dtype.
        trust_checkpoint: allow full unpickling of a ``.pth`` (only for files you trust).
        seed: seed of the random init.
    """

    default_weights = "facebook/dino-vits8"
    default_config = {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "patch_size": 8,
        "image_size": 224,
        "qkv_bias": True,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
    }

    def __init__(
        self,
        weights: str | None = "facebook/dino-vits8",
        layer: int = 9,
        facet: str = "key",
        input_size: int | None = 256,
        config: dict[str, Any] | None = None,
        dtype: str = "float32",
        trust_checkpoint: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(weights, layer, facet, input_size, config, dtype, trust_checkpoint, seed)

    @classmethod
    def describe(cls) -> TeacherInfo:
        return TeacherInfo(384, 8, 256, describe_source(cls.default_weights))

    def _new_model(self, tf: Any, config: dict[str, Any]) -> nn.Module:
        return tf.ViTModel(tf.ViTConfig(**config), add_pooling_layer=False)

    def _from_pretrained(self, tf: Any, path: Path, config: dict[str, Any]) -> nn.Module:
        return tf.ViTModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True, **config)

    def _from_file(self, tf: Any, path: Path, config: dict[str, Any], trust: bool) -> nn.Module:
        state = load_dino_pth(path, trust_checkpoint=trust)
        model = self._new_model(tf, vit_config_from_dino(state, **config))
        model.load_state_dict(convert_dino_state_dict(state), strict=True)
        return model

    def _run(self, images: Tensor) -> None:
        self.model(pixel_values=images, interpolate_pos_encoding=True)


@register_teacher("dinov2")
class Dinov2Teacher(_ViTFacetTeacher):
    """DINOv2 patch tokens (default ViT-L/14, last block, final LayerNorm: 1024-d), any input size.

    Args:
        weights: a local Hugging Face folder (``Dinov2Model``), a hub id (only fetched when online), or
            ``None`` for random init of the architecture.
        layer: block index (0-based; negative counts from the end).
        facet: ``token`` (normalised patch tokens) | ``query`` | ``key`` | ``value``.
        input_size: square side images are resized to (448 → 32 x 32, DINO's grid); ``None`` keeps any
            size, rounded to a multiple of 14 (position embeddings are interpolated).
        config: ``Dinov2Config`` fields overriding the architecture.
        dtype: compute and output dtype.
        trust_checkpoint: unused (DINOv2 loads only from safetensors folders); kept for a uniform signature.
        seed: seed of the random init.
    """

    default_weights = "facebook/dinov2-large"
    default_config = {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "mlp_ratio": 4,
        "patch_size": 14,
        "image_size": 518,
        "layerscale_value": 1.0,
    }
    norm_tokens = True

    def __init__(
        self,
        weights: str | None = "facebook/dinov2-large",
        layer: int = -1,
        facet: str = "token",
        input_size: int | None = 448,
        config: dict[str, Any] | None = None,
        dtype: str = "float32",
        trust_checkpoint: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(weights, layer, facet, input_size, config, dtype, trust_checkpoint, seed)

    @classmethod
    def describe(cls) -> TeacherInfo:
        return TeacherInfo(1024, 14, 448, describe_source(cls.default_weights))

    def _new_model(self, tf: Any, config: dict[str, Any]) -> nn.Module:
        return tf.Dinov2Model(tf.Dinov2Config(**config))

    def _from_pretrained(self, tf: Any, path: Path, config: dict[str, Any]) -> nn.Module:
        return tf.Dinov2Model.from_pretrained(path, local_files_only=True, **config)

    def _run(self, images: Tensor) -> None:
        self.model(pixel_values=images)
