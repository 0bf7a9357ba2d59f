"""Reading the original DINO (Caron et al. 2021) ``.pth`` checkpoints into a transformers ``ViTModel``.

Users often have the checkpoints the DINO authors released (``dino_deitsmall8_pretrain.pth``, or a full
training checkpoint holding ``teacher``/``student``). Their keys follow DINO's own ViT::

    cls_token (1, 1, C)            pos_embed (1, 1 + N, C)        patch_embed.proj.{weight, bias}
    blocks.{i}.norm1.*             blocks.{i}.attn.qkv.*  (3C rows: query, key, value)
    blocks.{i}.attn.proj.*         blocks.{i}.norm2.*             blocks.{i}.mlp.fc{1,2}.*
    norm.*

and map one to one onto ``ViTModel`` (transformers 5 names), except the fused ``qkv`` projection, which is
split into ``q_proj`` / ``k_proj`` / ``v_proj``: DINO reshapes the ``3C`` outputs as ``(3, heads, C/heads)``,
so rows ``[0, C)`` are the query, ``[C, 2C)`` the key and ``[2C, 3C)`` the value.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from featurenerf.errors import CheckpointError  # importable from here too, as before

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TOP_NAMES = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
#: DINO's ViTs all use 64-channel heads (ViT-S: 6 heads, ViT-B: 12); the weights cannot tell us.
HEAD_DIM = 64


def load_dino_pth(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Tensor]:
    """The backbone state dict in a DINO ``.pth`` (plain, or a full checkpoint's ``teacher``).

    Reads with ``weights_only=True`` (no arbitrary code runs). Full training checkpoints also pickle
    their ``argparse.Namespace``, which that refuses: pass ``trust_checkpoint=True`` for a file you trust.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as err:
        if not trust_checkpoint and "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path}: the checkpoint holds pickled Python objects beyond tensors; if you trust the file, "
                "pass trust_checkpoint=True"
            ) from None
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    if isinstance(obj, dict):
        for key in ("teacher", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no tensor state dict found")
    state = {}
    for key, value in obj.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if not key.startswith("head."):  # the DINO projection head is not part of the backbone
            state[key] = value
    return state


def vit_config_from_dino(state: dict[str, Tensor], **overrides: Any) -> dict[str, Any]:
    """``ViTConfig`` keyword arguments describing the architecture of a DINO state dict."""
    missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight") if k not in state]
    if missing:
        raise CheckpointError(f"not an original DINO ViT state dict (missing {', '.join(missing)})")
    hidden = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": depth,
        "num_attention_heads": max(1, hidden // HEAD_DIM),
        "intermediate_size": state["blocks.0.mlp.fc1.weight"].shape[0],
        "patch_size": patch,
        "image_size": grid * patch,
        "num_channels": state["patch_embed.proj.weight"].shape[1],
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "layer_norm_eps": 1e-6,  # DINO builds its LayerNorms with eps=1e-6
        "hidden_act": "gelu",  # exact (erf) GELU, as torch.nn.GELU
    }
    config.update(overrides)
    if config["hidden_size"] % config["num_attention_heads"]:
        raise CheckpointError(
            f"hidden size {config['hidden_size']} is not divisible by {config['num_attention_heads']} heads"
        )
    return config


def convert_dino_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and split ``qkv``) a DINO backbone state dict into transformers ``ViTModel`` keys."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = value
            continue
        m = _BLOCK.match(key)
        if m is None:
            raise CheckpointError(f"unexpected key {key!r} in a DINO ViT state dict")
        i, rest = m.group(1), m.group(2)
        module, _, kind = rest.rpartition(".")
        if module == "attn.qkv":
            q, k, v = value.chunk(3, dim=0)
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"layers.{i}.attention.{name}.{kind}"] = part.clone()
        elif module in _BLOCK_NAMES:
            out[f"layers.{i}.{_BLOCK_NAMES[module]}.{kind}"] = value
        else:
            raise CheckpointError(f"unexpected key {key!r} in a DINO ViT state dict")
    return out
