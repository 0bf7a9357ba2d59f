"""The training step's forward as one graph: ``model.compile_step``.

At the paper batch (4 objects × 128 rays) a GPU step is host-bound: Python and kernel launches take more
time than the kernels (65 ms per step of which 28 ms kernel time on an H100). Compiling the whole loss
computation (encode, both render passes, the three losses) into one graph removes the per-op Python and
launch cost; on CUDA the graph is also captured with CUDA graphs (``mode="reduce-overhead"``), so a step
replays recorded kernels. Shapes are static (the ray batch is fixed), so it compiles once.

What stays outside the graph, and why:

* the sample jitter. A ``torch.Generator`` cannot be traced; the jitter is drawn eagerly from the same
  generator, in the same order and flat shapes a ``perturb=True`` render draws it
  (:meth:`~featurenerf.rendering.sampling.SampleNoise.draw`), and passed in, so the compiled and the eager
  step see the same samples;
* the backward pass and the optimiser step, which Lightning runs (AOTAutograd compiles the backward of
  the traced forward along with it);
* bookkeeping: logging and the finiteness checks read the returned tensors after the graph has run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from featurenerf.rendering.sampling import SampleNoise

if TYPE_CHECKING:
    from featurenerf.module import FeatureNeRF

#: (batch, rays, noise) → loss terms; :meth:`FeatureNeRF.losses_from_noise` or its compiled graph.
LossFn = Callable[[dict, dict, SampleNoise], dict[str, Tensor]]


def draw_noise(module: FeatureNeRF, rays: dict, generator: torch.Generator) -> SampleNoise:
    """The jitter of one training render of ``rays["origins"]`` (B, R, 3): the draws a ``perturb=True``
    render would take from ``generator``, as (B, R, n) tensors."""
    net = module.net
    counts = (net.n_coarse, net.n_fine, net.n_fine_depth)
    origins = rays["origins"]
    return SampleNoise.draw(tuple(origins.shape[:2]), counts, generator, origins.dtype)


def compile_mode(device: torch.device) -> str | None:
    """``torch.compile`` mode for the step on ``device``: CUDA graphs on CUDA (the step is launch-bound
    there), the default elsewhere (no graphs to capture on a CPU)."""
    return "reduce-overhead" if device.type == "cuda" else None


def compiled_losses(module: FeatureNeRF, backend: str = "inductor") -> LossFn:
    """``module.losses_from_noise`` compiled with static shapes for the module's current device
    (``backend``: ``torch.compile``'s; tests trace with ``aot_eager``, which skips code generation)."""
    mode = compile_mode(module.device) if backend == "inductor" else None
    return torch.compile(module.losses_from_noise, dynamic=False, mode=mode, backend=backend)
