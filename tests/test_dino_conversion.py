"""The original DINO ``.pth`` → transformers ``ViTModel`` conversion, on random state dicts with DINO's
key names, checked against a forward pass of DINO's ViT written out by hand from the original tensors."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from featurenerf.teachers import build_teacher
from featurenerf.teachers.dino_checkpoint import (
    CheckpointError,
    convert_dino_state_dict,
    load_dino_pth,
    vit_config_from_dino,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


C, DEPTH, HEADS, PATCH, GRID, MLP = 48, 3, 3, 8, 4, 96


def dino_state_dict(seed: int = 0, hidden: int = C, depth: int = DEPTH) -> dict[str, Tensor]:
    """Random weights under DINO's ``vision_transformer.py`` names (no head)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "cls_token": r(1, 1, hidden),
        "pos_embed": r(1, 1 + GRID * GRID, hidden),
        "patch_embed.proj.weight": r(hidden, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": r(hidden),
        "norm.weight": 1 + r(hidden),
        "norm.bias": r(hidden),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {
            p + "norm1.weight": 1 + r(hidden),
            p + "norm1.bias": r(hidden),
            p + "attn.qkv.weight": r(3 * hidden, hidden),
            p + "attn.qkv.bias": r(3 * hidden),
            p + "attn.proj.weight": r(hidden, hidden),
            p + "attn.proj.bias": r(hidden),
            p + "norm2.weight": 1 + r(hidden),
            p + "norm2.bias": r(hidden),
            p + "mlp.fc1.weight": r(MLP, hidden),
            p + "mlp.fc1.bias": r(MLP),
            p + "mlp.fc2.weight": r(hidden, MLP),
            p + "mlp.fc2.bias": r(hidden),
        }
    return sd


def reference_forward(sd: dict[str, Tensor], x: Tensor, heads: int) -> tuple[list[Tensor], Tensor]:
    """DINO's ViT from its own tensors: per-block key facets ``(B, N, C)`` and the final normed tokens."""
    hidden = sd["cls_token"].shape[-1]
    b = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t.flatten(2).transpose(1, 2)], dim=1) + sd["pos_embed"]
    n, d = t.shape[1], hidden // heads
    keys = []
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (hidden,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        keys.append(k.transpose(1, 2).reshape(b, n, hidden))  # heads concatenated, as DINO's descriptors
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(d)).softmax(-1)
        t = t + F.linear(
            (attn @ v).transpose(1, 2).reshape(b, n, hidden),
            sd[p + "attn.proj.weight"],
            sd[p + "attn.proj.bias"],
        )
        y = F.layer_norm(t, (hidden,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        t = t + F.linear(
            F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
            sd[p + "mlp.fc2.weight"],
            sd[p + "mlp.fc2.bias"],
        )
    return keys, F.layer_norm(t, (hidden,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


def test_qkv_split_and_names():
    sd = dino_state_dict()
    out = convert_dino_state_dict(sd)
    w, bias = sd["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.bias"]
    assert torch.equal(out["layers.1.attention.q_proj.weight"], w[:C])
    assert torch.equal(out["layers.1.attention.k_proj.weight"], w[C : 2 * C])
    assert torch.equal(out["layers.1.attention.v_proj.weight"], w[2 * C :])
    assert torch.equal(out["layers.1.attention.k_proj.bias"], bias[C : 2 * C])
    assert torch.equal(out["layers.2.attention.o_proj.weight"], sd["blocks.2.attn.proj.weight"])
    assert torch.equal(out["layers.0.layernorm_after.bias"], sd["blocks.0.norm2.bias"])
    assert torch.equal(out["embeddings.position_embeddings"], sd["pos_embed"])
    # Every parameter of the transformers model is set, nothing is left over.
    import transformers

    cfg = vit_config_from_dino(sd, num_attention_heads=HEADS)
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["patch_size"], cfg["image_size"]) == (
        C,
        3,
        8,
        32,
    )
    assert cfg["intermediate_size"] == MLP and cfg["qkv_bias"]
    model = transformers.ViTModel(transformers.ViTConfig(**cfg), add_pooling_layer=False)
    assert set(model.state_dict()) == set(out)


def test_converted_model_matches_dino_forward():
    import transformers

    sd = dino_state_dict()
    model = transformers.ViTModel(
        transformers.ViTConfig(**vit_config_from_dino(sd, num_attention_heads=HEADS)), add_pooling_layer=False
    )
    model.load_state_dict(convert_dino_state_dict(sd), strict=True)
    x = torch.randn(2, 3, 32, 32)
    _, expected = reference_forward(sd, x, HEADS)
    with torch.no_grad():
        got = model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_teacher_from_pth_gives_dinos_key_facet(tmp_path):
    sd = dino_state_dict(seed=1)
    torch.save(sd, tmp_path / "dino_tiny.pth")
    teacher = build_teacher(
        "dino_vits8",
        weights=str(tmp_path / "dino_tiny.pth"),
        layer=1,
        input_size=32,
        config={"num_attention_heads": HEADS},
    )
    assert teacher.weights_source == str(tmp_path / "dino_tiny.pth")
    images = torch.rand(2, 3, 32, 32)
    keys, _ = reference_forward(sd, teacher.preprocess(images), HEADS)
    expected = keys[1][:, 1:].transpose(1, 2).reshape(2, C, GRID, GRID)  # drop CLS, (h w) row-major
    torch.testing.assert_close(teacher(images), expected, rtol=1e-4, atol=1e-4)
    # At another size the position embeddings are interpolated: a 48-px input gives a 6 x 6 map.
    assert build_teacher(
        "dino_vits8",
        weights=str(tmp_path / "dino_tiny.pth"),
        layer=1,
        input_size=48,
        config={"num_attention_heads": 3},
    )(images).shape == (2, C, 6, 6)


def test_full_training_checkpoint_and_heads_from_width(tmp_path):
    sd = dino_state_dict(seed=2, hidden=128, depth=2)
    full = {
        "teacher": {f"module.backbone.{k}": v for k, v in sd.items()}
        | {"module.head.mlp.0.weight": torch.zeros(4, 128)},
        "student": {},
        "epoch": 3,
    }
    torch.save(full, tmp_path / "checkpoint.pth")
    state = load_dino_pth(tmp_path / "checkpoint.pth")
    assert set(state) == set(sd)  # prefixes stripped, the DINO head dropped
    assert vit_config_from_dino(state)["num_attention_heads"] == 2  # 64-channel heads, as DINO's ViTs
    teacher = build_teacher("dino_vits8", weights=str(tmp_path / "checkpoint.pth"), layer=-1, input_size=32)
    images = torch.rand(1, 3, 32, 32)
    keys, _ = reference_forward(sd, teacher.preprocess(images), heads=2)
    torch.testing.assert_close(
        teacher(images), keys[1][:, 1:].transpose(1, 2).reshape(1, 128, 4, 4), rtol=1e-4, atol=1e-4
    )


def test_pickled_objects_need_explicit_trust(tmp_path):
    sd = dino_state_dict()
    torch.save({"teacher": sd, "args": argparse.Namespace(arch="vit_small")}, tmp_path / "full.pth")
    with pytest.raises(CheckpointError, match=r"full\.pth: .*trust_checkpoint=True"):
        load_dino_pth(tmp_path / "full.pth")
    assert set(load_dino_pth(tmp_path / "full.pth", trust_checkpoint=True)) == set(sd)


def test_not_a_dino_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="missing cls_token"):
        vit_config_from_dino(load_dino_pth(tmp_path / "other.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth: unreadable checkpoint"):
        load_dino_pth(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="unexpected key 'blocks.0.attn.extra.weight'"):
        convert_dino_state_dict({"blocks.0.attn.extra.weight": torch.zeros(1)})
