"""Mixed precision and torch.compile.

bf16 tolerance: bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 ≈ 0.2 %), and a step chains ~15
matmuls, so the losses may move by about 1 % (measured: 0.2 % on colour, 1.4 % on the coordinate loss,
whose squared residuals of ~130 round to steps of 0.5-1). We require 3 % on each loss term and 0.02 on
rendered colours in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from batches import camera_batch

from featurenerf.compiled import unwrap_compiled
from featurenerf.module import FeatureNeRF

TINY = dict(encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4)
REPO = Path(__file__).resolve().parent.parent


def _model(**kw) -> FeatureNeRF:
    torch.manual_seed(0)
    model = FeatureNeRF(feature_dim=5, **TINY, **kw)
    with torch.no_grad():
        for p in model.net.mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.net.mlp.lin_out.bias[3] = 2.0  # non-trivial weights on every ray
    return model


@pytest.mark.parametrize("fast", [True, False], ids=["fast-field", "reference-field"])
def test_bf16_autocast_on_cpu_matches_fp32(fast):
    model = _model()
    model.net.fast_field = fast
    batch, rays = camera_batch(rays=24)
    fp32 = {k: float(v) for k, v in model.compute_losses(batch, rays).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.compute_losses(batch, rays)
    for k, v in fp32.items():
        assert float(terms[k]) == pytest.approx(v, rel=0.03), k
    terms["loss"].backward()  # backward outside autocast, as Lightning's bf16-mixed does
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # Rendered colours agree to 0.02.
    cond = model.net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    with torch.no_grad():
        ref = model.net.render_rays(cond, rays["origins"], rays["dirs"], ("rgb",))["fine"]["rgb"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.net.render_rays(cond, rays["origins"], rays["dirs"], ("rgb",))["fine"]["rgb"]
    assert (low.float() - ref).abs().max() < 0.02


def test_bf16_mixed_fit_runs_from_the_cli(toy_root, tmp_path):
    from featurenerf.cli import main

    status = main(
        [
            "fit", "--config", str(REPO / "configs" / "toy_cars.yaml"),
            "--data.root", str(toy_root), "--data.teacher", "null", "--data.image_size", "32",
            "--data.rays_per_object", "16", "--data.batch_size", "2", "--data.num_workers", "0",
            "--model.d_hidden", "32", "--model.encoder_layers", "2",
            "--model.n_coarse", "8", "--model.n_fine", "4", "--model.n_fine_depth", "4",
            "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "2", "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
            "--run_name", "bf16",
        ]
    )  # fmt: skip
    assert status == 0
    ckpt = torch.load(tmp_path / "bf16" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["d_hidden"] == 32
    weights = [v for k, v in ckpt["state_dict"].items() if k.startswith("net.")]
    assert all(torch.isfinite(w).all() for w in weights)


@pytest.mark.slow
def test_compile_matches_eager():
    """model.compile: true (the MLP and the fast field trunk go through torch.compile)."""
    eager = _model()
    compiled = _model(compile=True)
    compiled.net.encoder.load_state_dict(eager.net.encoder.state_dict())
    unwrap_compiled(compiled.net.mlp).load_state_dict(eager.net.mlp.state_dict())
    batch, rays = camera_batch(rays=24)
    a = eager.compute_losses(batch, rays)
    b = compiled.compute_losses(batch, rays)
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-4, atol=1e-5)
    a["loss"].backward()
    b["loss"].backward()
    ga = eager.net.mlp.lin_out.weight.grad
    gb = unwrap_compiled(compiled.net.mlp).lin_out.weight.grad
    torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-5)
    assert compiled.net._compiled_trunk is not None  # the fast path was compiled, not just the MLP module


def test_validation_runs_in_float32_under_a_bf16_trainer(monkeypatch):
    """Lightning wraps validation_step in bf16 autocast under bf16-mixed; the module turns it off, so
    novel-view metrics and the task loops' cosine matching are float32 whatever trainer.precision is."""
    from featurenerf.module import FeatureNeRF

    model = FeatureNeRF(feature_dim=3, encoder_layers=2, d_hidden=16, n_coarse=4, n_fine=2, n_fine_depth=2)
    seen = []
    monkeypatch.setattr(
        model, "_novel_view_step", lambda batch, i: seen.append(torch.is_autocast_enabled("cpu"))
    )

    class Suite:  # records what the task loop would see
        def validation_step(self, module, batch, i, loader):
            seen.append((loader, torch.is_autocast_enabled("cpu"), torch.ones(2, 2) @ torch.ones(2, 2)))

    model.tasks = Suite()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        model.validation_step({}, 0, 0)
        model.validation_step({}, 0, 1)
    assert seen[0] is False
    loader, enabled, product = seen[1]
    assert loader == 1 and enabled is False and product.dtype == torch.float32
