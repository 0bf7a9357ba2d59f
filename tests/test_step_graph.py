"""``model.compile_step``: the training step's forward as one graph (what CUDA graphs need).

A CUDA graph replays one captured stream of kernels, so the step must trace without a graph break and
without host syncs, and the compiled step must compute what the eager one does from the same generator.
The CPU checks here trace with ``aot_eager`` (forward and backward through AOTAutograd, no code
generation); the slow test compiles with inductor.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from batches import camera_batch

from featurenerf.module import FeatureNeRF
from featurenerf.step_graph import compiled_losses, draw_noise

TINY = dict(feature_dim=5, encoder_layers=2, d_hidden=32, n_coarse=8, n_fine=4, n_fine_depth=4)


def _pair(**kw) -> tuple[FeatureNeRF, FeatureNeRF]:
    """An eager model and a compile_step one with the same (non-trivial) weights."""
    torch.manual_seed(0)
    eager = FeatureNeRF(**TINY, **kw)
    with torch.no_grad():
        for p in eager.net.mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    graph = FeatureNeRF(**TINY, compile_step=True, **kw)
    graph.load_state_dict(eager.state_dict())
    return eager, graph


def test_pre_drawn_noise_is_the_jitter_a_perturbed_render_draws():
    """compute_losses draws the jitter before the graph; the samples are those a perturb=True render
    takes from the same generator, so training is unchanged by moving the draw out."""
    model, _ = _pair()
    batch, rays = camera_batch(rays=24)
    cond = model.net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
    outputs = ("rgb", "features", "coords_mean")
    seed = lambda: torch.Generator().manual_seed(123)  # noqa: E731
    drawn = model.net.render_rays(
        cond, rays["origins"], rays["dirs"], outputs, perturb=True, generator=seed()
    )
    given = model.net.render_rays(
        cond, rays["origins"], rays["dirs"], outputs, noise=draw_noise(model, rays, seed())
    )
    for k in outputs:
        torch.testing.assert_close(given["fine"][k], drawn["fine"][k], rtol=0, atol=0)
    other = model.net.render_rays(
        cond, rays["origins"], rays["dirs"], outputs, perturb=True, generator=torch.Generator().manual_seed(7)
    )
    assert not torch.equal(other["fine"]["rgb"], drawn["fine"]["rgb"])  # the jitter does reach the render


@pytest.mark.parametrize("coord_loss", ["release", "pointwise"])
def test_the_step_traces_as_one_graph_without_breaks(coord_loss):
    """A graph break would split the CUDA-graph capture and put Python back between kernels."""
    model, _ = _pair(coord_loss=coord_loss)
    batch, rays = camera_batch(rays=16)
    noise = draw_noise(model, rays, model._generator())
    report = torch._dynamo.explain(model.losses_from_noise)(batch, rays, noise)
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1


def test_compiled_step_matches_eager_losses_and_gradients():
    eager, graph = _pair()
    graph._step_graph = compiled_losses(graph, backend="aot_eager")  # what compute_losses calls
    batch, rays = camera_batch(rays=24)
    a = eager.compute_losses(batch, rays)
    b = graph.compute_losses(batch, rays)
    for k in ("rgb_coarse", "rgb_fine", "distill_fine", "coord_fine", "loss"):
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    a["loss"].backward()
    b["loss"].backward()
    for (name, pa), pb in zip(eager.named_parameters(), graph.parameters()):
        if pa.grad is not None:  # float rounding of a different op order, relative to the tensor's scale
            scale = float(pa.grad.abs().max())
            torch.testing.assert_close(pb.grad, pa.grad, rtol=0, atol=1e-5 * scale + 1e-8, msg=name)
    # The graph is built once and reused while the shapes stay the same.
    compiled = graph._step_graph
    graph.compute_losses(batch, rays)
    assert graph._step_graph is compiled


def test_compile_step_is_a_model_option_and_off_by_default(capsys):
    from featurenerf.cli import main

    assert FeatureNeRF(**TINY).hparams.compile_step is False
    assert FeatureNeRF(**TINY, compile_step=True).hparams.compile_step is True
    config = str(Path(__file__).resolve().parent.parent / "configs" / "toy_cars.yaml")
    with pytest.raises(SystemExit) as done:  # --print_config prints and exits
        main(["fit", "--config", config, "--model.compile_step", "true", "--print_config"])
    assert done.value.code in (0, None)
    assert "compile_step: true" in capsys.readouterr().out
    assert main(["fit", "--config", config, "--model.compile_step", "maybe", "--print_config"]) != 0
    assert "model.compile_step\": Expected a <class 'bool'>" in capsys.readouterr().err


def test_one_non_finite_gradient_skips_the_step():
    """The finiteness check reads all gradients with one host sync; a single NaN still skips."""
    model, _ = _pair()
    batch, rays = camera_batch(rays=8)
    model.compute_losses(batch, rays)["loss"].backward()
    model.net.mlp.lin_out.weight.grad[0, 0] = float("nan")
    model._count_skip = lambda what: setattr(model, "_skipped", what)  # no trainer to log to
    model.on_before_optimizer_step(None)
    assert model._skipped == "gradient"
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_inductor_compiled_step_matches_eager():
    eager, graph = _pair()
    batch, rays = camera_batch(rays=24)
    a = eager.compute_losses(batch, rays)
    b = graph.compute_losses(batch, rays)  # compiles with inductor on the first call
    torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-4, atol=1e-5)
    a["loss"].backward()
    b["loss"].backward()
    torch.testing.assert_close(
        graph.net.mlp.lin_out.weight.grad, eager.net.mlp.lin_out.weight.grad, rtol=1e-3, atol=1e-5
    )
