"""Stable Diffusion teachers (diffusers): ``sd_vae`` (VAE encoder features) and ``sd_unet`` (U-Net decoder
features of a noised latent, FeatureNeRF's 960-d "latent diffusion" teacher).

``sd_unet`` encodes the image with the VAE, adds noise at timestep ``t`` (default 261), runs the U-Net once
with the empty prompt's text embedding and returns the outputs of chosen decoder up-blocks. In SD 1.5
(block widths 320, 640, 1280, 1280) ``up_blocks[2]`` outputs 640 channels and ``up_blocks[3]`` 320, both at
the latent resolution (1/8 of the image), so the default ``(2, 3)`` gives the paper's 960 channels on a
64 x 64 grid for 512-px images. The paper does not say which timestep or levels it used; t = 261 and the
last two decoder levels follow common diffusion-feature practice (e.g. DIFT) and are arguments.
Each level is rescaled per location (as ``hed_vgg16``) because raw U-Net activations differ in scale
between levels; ``normalize=False`` returns raw activations. With several ``noise_seeds`` the raw features
are averaged over the noise draws before rescaling.

diffusers (and transformers, for the text encoder) are imported only when a teacher is built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Teacher, TeacherInfo, normalize_per_location, parse_dtype, register_teacher
from .weights import describe_source, fingerprint, locate, seeded, warn_random

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
#: SD 1.5's noise schedule, used when the weights folder has no ``scheduler/``.
SD15_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
_PATTERNS = ("*.json", "*.safetensors", "*.txt")
#: What to fetch from the hub (configs, tokenizer files and the full-precision safetensors weights only).
_VAE_FILES = ("*.json", "diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors")
_PIPELINE_FILES = (
    "*.json",
    "*.txt",
    "vae/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("Stable Diffusion teachers need diffusers: pip install 'diffusers>=0.30'") from err
    return diffusers


def _subfolder(root: Path, name: str) -> tuple[Path, str | None]:
    """A component inside a pipeline folder (``root/name``) or the component's own folder (``root``)."""
    if (root / name).is_dir():
        return root, name
    if (root / "config.json").is_file():
        return root, None
    raise FileNotFoundError(f"{root}: no {name}/ folder and no config.json; pass a diffusers pipeline folder")


def _load_component(cls: Any, root: Path, name: str) -> nn.Module:
    folder, sub = _subfolder(root, name)
    return cls.from_pretrained(folder, subfolder=sub, local_files_only=True)


def _cast(module: nn.Module, dtype: str) -> nn.Module:
    # Only when needed: diffusers warns on every dtype cast of its models, even a no-op one.
    target = parse_dtype(dtype)
    if any(p.dtype != target for p in module.parameters()):
        module.to(target)
    return module


def _vae_factor(vae: nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


class _SDTeacher(Teacher):
    """Shared: [-1, 1] input normalisation, weights location and identity."""

    def _locate(self, weights: str, patterns: tuple[str, ...]) -> Path:
        """Local folder of ``weights``; records their source and identity (a fingerprint of the folder)."""
        root = locate(weights, self.registry_name or type(self).__name__, allow_patterns=patterns)
        self._source, self._identity = weights, fingerprint(root, _PATTERNS)
        return root

    @property
    def mean(self) -> tuple[float, float, float]:
        return (0.5, 0.5, 0.5)

    @property
    def std(self) -> tuple[float, float, float]:
        return (0.5, 0.5, 0.5)

    @property
    def input_size(self) -> int | None:
        return self._input_size

    @property
    def weights_source(self) -> str:
        return self._source


def _build_vae(
    teacher: _SDTeacher,
    weights: str | None,
    config: dict[str, Any] | None,
    seed: int,
    patterns: tuple[str, ...],
) -> nn.Module:
    diffusers = _diffusers()
    if weights is None:
        warn_random(teacher.registry_name or type(teacher).__name__)
        with seeded(seed):
            vae = diffusers.AutoencoderKL(**{**SD15_VAE, **(config or {})})
        teacher._source, teacher._identity = "random init", f"random:{seed}:{sorted((config or {}).items())}"
        return vae
    root = teacher._locate(weights, patterns)
    return _load_component(diffusers.AutoencoderKL, root, "vae")


@register_teacher("sd_vae")
class SDVAETeacher(_SDTeacher):
    """Stable Diffusion VAE encoder features.

    Args:
        weights: a diffusers pipeline folder (with ``vae/``) or a VAE folder, a hub id (fetched only
            when online), or ``None`` for random init of SD 1.5's VAE architecture.
        layer: ``"latent"`` (the posterior mean times the VAE's scaling factor, so entries are O(1)),
            ``"down{i}"`` (output of encoder down-block ``i``) or ``"mid"`` (the mid block).
        input_size: square side images are resized to; ``None`` keeps their size (rounded to the
            VAE's downsampling factor).
        vae_config: ``AutoencoderKL`` fields overriding the architecture (random init).
        dtype: compute and output dtype.
        seed: seed of the random init.
    """

    def __init__(
        self,
        weights: str | None = SD15,
        layer: str = "latent",
        input_size: int | None = 512,
        vae_config: dict[str, Any] | None = None,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._input_size = input_size
        self.vae = _cast(_build_vae(self, weights, vae_config, seed, _VAE_FILES), dtype)
        widths = list(self.vae.config.block_out_channels)
        levels = {"latent": None, "mid": len(widths) - 1, **{f"down{i}": i for i in range(len(widths))}}
        if layer not in levels:
            raise ValueError(f"sd_vae: layer must be one of {', '.join(levels)}, got {layer!r}")
        self.layer = layer

    @property
    def feature_dim(self) -> int:
        widths = self.vae.config.block_out_channels
        if self.layer == "latent":
            return self.vae.config.latent_channels
        return widths[-1] if self.layer == "mid" else widths[int(self.layer[4:])]

    @property
    def stride(self) -> int:
        if self.layer in ("latent", "mid"):
            return _vae_factor(self.vae)
        i = int(self.layer[4:])  # every down block but the last halves the resolution at its end
        return min(2 ** (i + 1), _vae_factor(self.vae))

    @property
    def input_multiple(self) -> int:
        return _vae_factor(self.vae)

    def cache_fields(self) -> dict[str, Any]:
        return {"weights": self._identity, "layer": self.layer}

    @classmethod
    def describe(cls) -> TeacherInfo:
        return TeacherInfo(SD15_VAE["latent_channels"], 8, 512, describe_source(SD15))

    def extract(self, images: Tensor) -> Tensor:
        if self.layer == "latent":
            return self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor
        encoder = self.vae.encoder
        module = encoder.mid_block if self.layer == "mid" else encoder.down_blocks[int(self.layer[4:])]
        return _capture(encoder, [module], images)[0]


class _Stop(Exception):
    """Raised by a hook once every wanted activation is captured, to skip the rest of the network."""


def _capture(net: nn.Module, modules: list[nn.Module], *args: Any, **kwargs: Any) -> list[Tensor]:
    """Run ``net(*args, **kwargs)`` and return the outputs of ``modules`` (in order), stopping early."""
    outputs: dict[int, Tensor] = {}

    def hook(index: int) -> Any:
        def fn(_module: nn.Module, _inputs: Any, out: Any) -> None:
            outputs[index] = out[0] if isinstance(out, tuple) else out
            if len(outputs) == len(modules):
                raise _Stop

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        net(*args, **kwargs)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return [outputs[i] for i in range(len(modules))]


@register_teacher("sd_unet")
class SDUNetTeacher(_SDTeacher):
    """Stable Diffusion U-Net decoder features of a noised latent (default 960-d, stride 8, 512 px).

    Args:
        weights: a diffusers pipeline folder (``unet/``, ``vae/``, and ``text_encoder/`` + ``tokenizer/``
            for the empty prompt), a hub id (fetched only when online), or ``None`` for random init of
            SD 1.5's U-Net and VAE architectures.
        timestep: diffusion timestep of the added noise (0 = clean latent).
        up_blocks: decoder up-block indices whose outputs are concatenated; coarser ones are upsampled
            (bilinear) to the finest chosen grid.
        input_size: square side images are resized to; ``None`` keeps any size, rounded to a multiple
            the U-Net can halve ``len(levels) - 1`` times.
        noise_seeds: one noise draw per seed (the same draw for every image); features are averaged.
        prompt_embedding: a ``.safetensors`` (first tensor) or ``.pt`` file holding the empty prompt's
            text embedding ``(1, tokens, cross_attention_dim)``; default: computed once with the
            pipeline's text encoder, or zeros for random init.
        normalize: rescale each level per location (see the module docstring).
        unet_config: ``UNet2DConditionModel`` fields overriding the architecture (random init).
        vae_config: ``AutoencoderKL`` fields overriding the architecture (random init).
        dtype: compute and output dtype.
        seed: seed of the random init.
    """

    def __init__(
        self,
        weights: str | None = SD15,
        timestep: int = 261,
        up_blocks: tuple[int, ...] = (2, 3),
        input_size: int | None = 512,
        noise_seeds: tuple[int, ...] = (0,),
        prompt_embedding: str | None = None,
        normalize: bool = True,
        unet_config: dict[str, Any] | None = None,
        vae_config: dict[str, Any] | None = None,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__()
        diffusers = _diffusers()
        self._input_size = input_size
        self.timestep = int(timestep)
        self.noise_seeds = tuple(int(s) for s in noise_seeds)
        self.normalize = normalize
        if not self.noise_seeds:
            raise ValueError("sd_unet: noise_seeds must name at least one seed")
        self.vae = _build_vae(self, weights, vae_config, seed, _PIPELINE_FILES)
        if weights is None:
            with seeded(seed + 1):
                self.unet = diffusers.UNet2DConditionModel(**{**SD15_UNET, **(unet_config or {})})
            scheduler = diffusers.DDPMScheduler(**SD15_SCHEDULE)
            self._identity += f":unet:{sorted((unet_config or {}).items())}"
            root = None
        else:
            root = locate(weights, "sd_unet", allow_patterns=_PIPELINE_FILES)  # found by _build_vae already
            self.unet = _load_component(diffusers.UNet2DConditionModel, root, "unet")
            if (root / "scheduler").is_dir():
                scheduler = diffusers.DDPMScheduler.from_pretrained(root, subfolder="scheduler")
            else:
                scheduler = diffusers.DDPMScheduler(**SD15_SCHEDULE)
        n = len(self.unet.config.block_out_channels)
        if not up_blocks or any(not 0 <= i < n for i in up_blocks):
            raise ValueError(f"sd_unet: up_blocks must be indices in [0, {n}), got {tuple(up_blocks)}")
        if not 0 <= self.timestep < scheduler.config.num_train_timesteps:
            raise ValueError(f"sd_unet: timestep must be in [0, {scheduler.config.num_train_timesteps})")
        self.up_blocks = tuple(int(i) for i in up_blocks)
        alpha_bar = float(scheduler.alphas_cumprod[self.timestep])
        self._signal, self._noise = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        prompt = self._empty_prompt(prompt_embedding, root)
        self.register_buffer("prompt", prompt, persistent=False)
        self._prompt_id = hashlib.sha1(prompt.float().numpy().tobytes()).hexdigest()[:16]
        _cast(self, dtype)

    def _empty_prompt(self, path: str | None, root: Path | None) -> Tensor:
        width = self.unet.config.cross_attention_dim
        if path is not None:
            emb = _read_tensor(Path(path))
        elif root is not None and (root / "text_encoder").is_dir() and (root / "tokenizer").is_dir():
            emb = _encode_empty_prompt(root)
        elif root is None:
            emb = torch.zeros(1, 77, width)  # random init: no text encoder to ask
        else:
            raise FileNotFoundError(
                f"sd_unet: {root} has no text_encoder/ and tokenizer/; pass prompt_embedding=FILE holding the "
                "empty prompt's embedding"
            )
        if emb.dim() == 2:
            emb = emb[None]
        if emb.dim() != 3 or emb.shape[0] != 1 or emb.shape[-1] != width:
            raise ValueError(
                f"sd_unet: prompt embedding must be (1, tokens, {width}), got {tuple(emb.shape)}"
            )
        return emb.float()

    # ---- metadata ----
    def _level_stride(self, i: int) -> int:
        """Input pixels per cell of up-block ``i``'s output: all but the last block upsample at their end."""
        n = len(self.unet.config.block_out_channels)
        return _vae_factor(self.vae) * 2 ** max(n - 2 - i, 0)

    @property
    def feature_dim(self) -> int:
        widths = list(reversed(self.unet.config.block_out_channels))
        return sum(widths[i] for i in self.up_blocks)

    @property
    def stride(self) -> int:
        return min(self._level_stride(i) for i in self.up_blocks)

    @property
    def input_multiple(self) -> int:
        return _vae_factor(self.vae) * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def cache_fields(self) -> dict[str, Any]:
        return {
            "weights": self._identity,
            "timestep": self.timestep,
            "up_blocks": list(self.up_blocks),
            "noise_seeds": list(self.noise_seeds),
            "prompt": self._prompt_id,
            "normalize": self.normalize,
        }

    @classmethod
    def describe(cls) -> TeacherInfo:
        return TeacherInfo(640 + 320, 8, 512, describe_source(SD15))

    # ---- compute ----
    def extract(self, images: Tensor) -> Tensor:
        latents = self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor
        b = latents.shape[0]
        grid = (images.shape[-2] // self.stride, images.shape[-1] // self.stride)
        t = torch.full((b,), self.timestep, device=latents.device, dtype=torch.long)
        prompt = self.prompt.expand(b, -1, -1).to(latents.dtype)
        modules = [self.unet.up_blocks[i] for i in self.up_blocks]
        summed: list[Tensor] | None = None
        for s in self.noise_seeds:
            # One draw per seed, shared by every image, so a view's features do not depend on its batch.
            g = torch.Generator().manual_seed(s)
            noise = torch.randn((1, *latents.shape[1:]), generator=g).to(latents)
            noisy = self._signal * latents + self._noise * noise
            maps = _capture(self.unet, modules, noisy, t, encoder_hidden_states=prompt)
            maps = [m if m.shape[-2:] == grid else F.interpolate(m, grid, mode="bilinear") for m in maps]
            summed = maps if summed is None else [a + m for a, m in zip(summed, maps)]
        assert summed is not None
        maps = [m / len(self.noise_seeds) for m in summed]
        if self.normalize:
            maps = normalize_per_location(maps)
        return torch.cat(maps, dim=1)


def _read_tensor(path: Path) -> Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"sd_unet: prompt embedding file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(path)
        if not tensors:
            raise ValueError(f"{path}: no tensors")
        return next(iter(tensors.values()))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Tensor):
        raise ValueError(f"{path}: expected one tensor, found {type(obj).__name__}")
    return obj


def _encode_empty_prompt(root: Path) -> Tensor:
    """The text encoder's last hidden state for ``""`` padded to the tokenizer's length (what SD
    pipelines feed the U-Net as the unconditional embedding)."""
    import transformers

    tokenizer = transformers.CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    encoder = transformers.CLIPTextModel.from_pretrained(
        root, subfolder="text_encoder", local_files_only=True
    )
    ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return encoder(ids)[0].float()
