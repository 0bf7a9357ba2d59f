"""The plain model and the LightningModule's losses: heads, gradients, conventions, checkpoints."""

from __future__ import annotations

import pytest
import torch
from batches import camera_batch

from featurenerf.data.datasets import sample_teacher_at
from featurenerf.module import FeatureNeRF
from featurenerf.nerf.model import FeatureNeRFNet

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4)


@pytest.mark.parametrize("feature_dim", [0, 7, 384])
def test_head_widths_follow_feature_dim(feature_dim):
    net = FeatureNeRFNet(feature_dim=feature_dim, **TINY)
    batch, rays = camera_batch(feature_dim=max(feature_dim, 1))
    cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    out = net.query(cond, torch.rand(2, 10, 3) - 0.5)
    assert out["features"].shape == (2, 10, feature_dim)
    assert out["coords"].shape == (2, 10, 3)
    assert out["hidden"].shape == (2, 10, 32)
    assert net.mlp.lin_out.out_features == 4 + feature_dim + 3


def test_gradients_reach_every_head_and_the_encoder():
    model = FeatureNeRF(feature_dim=5, **TINY)
    with torch.no_grad():  # a dense field, so every ray has non-zero compositing weights
        model.net.mlp.lin_out.bias[3] = 3.0
    batch, rays = camera_batch(feature_dim=5)
    terms = model.compute_losses(batch, rays)
    assert {"rgb_coarse", "rgb_fine", "distill_coarse", "distill_fine", "coord_coarse", "coord_fine"} <= set(
        terms
    )
    terms["loss"].backward()
    w = model.net.mlp.lin_out.weight.grad
    d = model.net.feature_dim
    assert w[:3].abs().sum() > 0, "rgb head"
    assert w[3].abs().sum() > 0, "density head"
    assert w[4 : 4 + d].abs().sum() > 0, "feature head"
    assert w[4 + d :].abs().sum() > 0, "coordinate head"
    assert model.net.encoder.conv1.weight.grad.abs().sum() > 0, "encoder trained end to end"


def test_each_loss_term_reaches_its_head_only():
    model = FeatureNeRF(feature_dim=5, rgb_weight=0.0, coord_weight=0.0, **TINY)
    with torch.no_grad():
        model.net.mlp.lin_out.bias[3] = 3.0
    batch, rays = camera_batch(feature_dim=5)
    model.compute_losses(batch, rays)["loss"].backward()
    w = model.net.mlp.lin_out.weight.grad
    assert w[4:9].abs().sum() > 0
    assert w[:3].abs().sum() == 0  # distillation alone does not train colour
    assert w[9:].abs().sum() == 0  # ... nor the canonical coordinate


@pytest.mark.parametrize("encoder_lr", [None, 0.0, 1e-5])
def test_encoder_lr_sets_the_encoders_own_step(encoder_lr):
    model = FeatureNeRF(feature_dim=5, lr=1e-3, encoder_lr=encoder_lr, **TINY)
    opt = model.configure_optimizers()
    enc = {id(p) for p in model.net.encoder.parameters()}
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert set(lrs) == {id(p) for p in model.parameters()}  # every parameter once
    assert all(lrs[i] == (1e-3 if encoder_lr is None else encoder_lr) for i in enc)
    assert all(lr == 1e-3 for i, lr in lrs.items() if i not in enc)
    before = model.net.encoder.conv1.weight.detach().clone()
    mlp_before = model.net.mlp.lin_out.weight.detach().clone()
    with torch.no_grad():
        model.net.mlp.lin_out.bias[3] = 3.0
    batch, rays = camera_batch(feature_dim=5)
    model.compute_losses(batch, rays)["loss"].backward()
    opt.step()
    moved = (model.net.encoder.conv1.weight - before).abs().max()
    assert (moved == 0) == (encoder_lr == 0.0)  # a zero rate freezes the encoder, nothing else does
    assert moved <= 1.01 * (1e-3 if encoder_lr is None else encoder_lr)  # Adam's first step: at most lr
    assert (model.net.mlp.lin_out.weight - mlp_before).abs().max() > 0


class _PerfectCoords(FeatureNeRFNet):
    """A field whose canonical-coordinate head returns the true sample position."""

    def query(self, cond, xyz, viewdirs=None):
        out = super().query(cond, xyz, viewdirs)
        out["coords"] = xyz.clone()
        return out


def test_coordinate_loss_is_zero_for_a_perfect_prediction():
    model = FeatureNeRF(feature_dim=3, **TINY)
    model.net = _PerfectCoords(feature_dim=3, **TINY)
    with torch.no_grad():
        model.net.mlp.lin_out.bias[3] = 5.0  # dense field: non-trivial weights along every ray
    batch, rays = camera_batch(feature_dim=3)
    terms = model.compute_losses(batch, rays)
    assert terms["coord_coarse"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["coord_fine"].item() == pytest.approx(0.0, abs=1e-10)
    model.net = FeatureNeRFNet(feature_dim=3, **TINY)
    with torch.no_grad():
        model.net.mlp.lin_out.bias[3] = 5.0
    assert model.compute_losses(batch, rays)["coord_fine"].item() > 1e-4


def test_teacher_map_sampling_hits_the_right_cell():
    # A 4x4 map over a 16x16 image: cell (r, s) covers pixels 4r..4r+3 and has its centre at pixel
    # coordinate 4r + 2 (pixel centres are at i + 0.5, so the cell centre is the edge between pixels).
    fmap = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    uv = torch.tensor([[[2.0, 2.0], [6.0, 2.0], [2.0, 6.0], [14.0, 10.0], [4.0, 2.0]]])  # (u, v)
    got = sample_teacher_at(fmap, uv, 16, 16)[0, :, 0]
    # (u=2,v=2) → cell (0,0)=0; (6,2) → (0,1)=1; (2,6) → (1,0)=4; (14,10) → (2,3)=11;
    # (4,2) is halfway between the centres of cells (0,0) and (0,1): 0.5.
    assert got.tolist() == [0.0, 1.0, 4.0, 11.0, 0.5]


def test_fine_reuse_matches_naive_evaluation():
    torch.manual_seed(0)  # unseeded, about one draw in three rounded a value 2e-6 apart (atol was 1e-6)
    net = FeatureNeRFNet(feature_dim=4, **TINY)
    with torch.no_grad():
        for p in net.mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    batch, rays = camera_batch()
    cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    names = ("rgb", "depth", "opacity", "features", "coords", "hidden")
    a = net.render_rays(cond, rays["origins"], rays["dirs"], names)
    net.reuse_coarse = False
    b = net.render_rays(cond, rays["origins"], rays["dirs"], names)
    for name in names:
        torch.testing.assert_close(a["fine"][name], b["fine"][name], rtol=1e-5, atol=1e-5)


def test_render_image_is_chunk_independent():
    net = FeatureNeRFNet(feature_dim=2, **TINY)
    batch, _ = camera_batch(b=1)
    cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    pose = batch["src_poses"][:, 0]
    kw = dict(outputs=("rgb", "features", "hidden"), skip_empty=False)
    small = net.render_image(cond, pose, batch["focal"], batch["c"], 8, 8, chunk=7, **kw)
    big = net.render_image(cond, pose, batch["focal"], batch["c"], 8, 8, chunk=1000, **kw)
    assert small["rgb"].shape == (1, 8, 8, 3) and small["hidden"].shape == (1, 8, 8, 32)
    for k in small:
        torch.testing.assert_close(small[k], big[k])
    feats = net.render_features(cond, pose, batch["focal"], batch["c"], 8, 8)
    torch.testing.assert_close(feats, big["hidden"])


def test_cpu_field_blocks_bound_the_points_per_trunk_call_and_keep_the_values(monkeypatch):
    from featurenerf.nerf import model as model_module

    torch.manual_seed(0)
    net = FeatureNeRFNet(feature_dim=2, **TINY).eval()
    batch, _ = camera_batch(b=1)
    cond = net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    xyz = torch.rand(1, 1000, 3) - 0.5
    calls = []
    trunk = net._trunk_impl

    def counting():
        impl = trunk()
        return lambda x, *a: (calls.append(len(x)), impl(x, *a))[1]

    monkeypatch.setattr(net, "_trunk_impl", counting)
    with torch.no_grad():
        whole = net.point_features(cond, xyz)
        assert calls == [1000]  # under the default CPU block
        calls.clear()
        monkeypatch.setattr(model_module, "CPU_FIELD_BLOCK", 300)
        blocked = net.point_features(cond, xyz)
    assert calls == [300, 300, 300, 100]
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)


def test_checkpoint_has_no_teacher_and_reloads_to_identical_point_features(tmp_path):
    import lightning as L

    model = FeatureNeRF(feature_dim=6, **TINY)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain types only
    assert not any("teacher" in k for k in ckpt["state_dict"])
    assert all(k.startswith("net.") or k in ("skipped_steps", "seen_steps") for k in ckpt["state_dict"])
    loaded = FeatureNeRF.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    model.eval()
    loaded.eval()
    batch, _ = camera_batch(b=1)
    xyz = torch.rand(50, 3) - 0.5
    with torch.no_grad():
        a = model.point_features(
            model.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"]), xyz
        )
        b = loaded.point_features(
            loaded.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"]), xyz
        )
    assert a.shape == (50, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_module_builds_its_net_from_the_net_config_fields():
    """The module's net hyper-parameters are NetConfig's fields: defaults when not given, given values
    reach the net's config, and all of them are saved flat beside the module's own."""
    from featurenerf.nerf.config import NetConfig

    model = FeatureNeRF(feature_dim=5, **TINY)
    assert model.net.config == NetConfig(feature_dim=5, **TINY)
    assert model.net.n_coarse == TINY["n_coarse"] and model.net.d_hidden == TINY["d_hidden"]
    assert {**model.hparams} == {**model.hparams, "feature_dim": 5, **TINY, "lr": 1e-4}
    with pytest.raises(TypeError, match="d_hiden"):
        FeatureNeRF(d_hiden=8)


def test_net_config_and_keyword_overrides_build_the_same_net():
    from featurenerf.nerf.config import NetConfig

    a = FeatureNeRFNet(NetConfig(feature_dim=3, encoder_layers=1, d_hidden=16, n_blocks=2, n_inject=1,
                                 combine_layer=1, background="black"))  # fmt: skip
    b = FeatureNeRFNet(feature_dim=3, encoder_layers=1, d_hidden=16, n_blocks=2, n_inject=1,
                       combine_layer=1, background="black")  # fmt: skip
    assert a.config == b.config and a.background_value == 0.0 and len(a.mlp.blocks) == 2
    assert (
        FeatureNeRFNet.from_hparams({**b.config.__dict__, "lr": 0.1, "_instantiator": "x"}).config == a.config
    )
    with pytest.raises(ValueError, match="background"):
        NetConfig(background="grey")


def test_non_finite_loss_skips_the_step_and_is_counted():
    model = FeatureNeRF(feature_dim=5, skip_grace_steps=100, **TINY)
    batch, rays = camera_batch(feature_dim=5)
    rays["rgb"][0, 0, 0] = float("nan")
    out = model.training_step({**batch, "rays": {"bbox": rays, "full": rays}}, 0)
    assert out is None
    assert int(model.skipped_steps) == 1


def test_global_feature_gives_every_point_the_views_mean_code():
    """``global_feature``: every cell of the encoder map also carries the view's mean code, and the
    field reads it (the MLP's injections are twice as wide and the output moves with that half)."""
    import dataclasses

    torch.manual_seed(0)
    net = FeatureNeRFNet(feature_dim=2, global_feature=True, **TINY).eval()
    plain = FeatureNeRFNet(feature_dim=2, **TINY)
    assert net.mlp.lin_z[0].in_features == 2 * plain.mlp.lin_z[0].in_features
    pose, focal, c = torch.eye(4), torch.tensor([[32.0, 32.0]]), torch.tensor([[16.0, 16.0]])
    pose[2, 3] = -1.5
    cond = net.encode(torch.rand(1, 1, 3, 32, 32), pose[None, None], focal, c)
    local, mean = cond.features[0, 0].chunk(2)
    assert torch.allclose(mean, local.mean((-2, -1), keepdim=True).expand_as(local))
    feats = cond.features.clone()
    feats[:, :, local.shape[0] :] = 0  # the same local codes without the view's mean
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [0.1, -0.1, 0.05]]])
    with torch.no_grad():
        full = net.query(cond, xyz)["hidden"]
        no_mean = net.query(dataclasses.replace(cond, features=feats), xyz)["hidden"]
    assert not torch.allclose(full, no_mean)
