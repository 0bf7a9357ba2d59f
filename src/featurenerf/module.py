"""The LightningModule: a thin layer of losses, optimiser, logging and validation around the plain net.

Hyper-parameters are flat plain types (so checkpoints load with ``weights_only=True``): the module's own
(losses, optimiser, skip statistics) and the fields of :class:`~featurenerf.nerf.config.NetConfig`, which
it passes on to :class:`~featurenerf.nerf.model.FeatureNeRFNet`. The teacher is not part of the module: the
datamodule provides its (cached) maps with each batch, so frozen teacher weights never enter a checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from featurenerf.errors import TrainingDiverged  # importable from here too, as before
from featurenerf.image_metrics import psnr_uint8, ssim_uint8
from featurenerf.nerf.config import NetConfig
from featurenerf.nerf.model import Conditioning, FeatureNeRFNet
from featurenerf.ranges import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    plain_numbers,
)
from featurenerf.rendering.sampling import SampleNoise
from featurenerf.step_graph import LossFn, compiled_losses, draw_noise
from featurenerf.visualize import feature_pca_pair, save_image_grid


def coord_loss(residual: Tensor, kind: str) -> Tensor:
    """L_coord of one pass from per-ray residuals (B, R, 3) of the canonical-coordinate head.

    ``release``: ``residual`` is the unweighted mean of x̂ − x over the ray's samples; the loss is its
    square averaged over the three axes and the rays (the authors' ``MSELoss(mean, 0)``). ``weighted``:
    ``residual`` is the colour-weighted Σ w (x̂ − x); the loss is its squared norm averaged over the rays.
    ``pointwise``: ``residual`` is the per-ray unweighted mean of (x̂ − x)² (R, 3); the loss averages it
    over the axes and rays, so every sample's own coordinate is supervised.
    """
    if kind == "release":
        return residual.pow(2).mean()
    if kind == "pointwise":  # already the per-ray mean of the squared residual
        return residual.mean()
    return residual.pow(2).sum(-1).mean()


class FeatureNeRF(L.LightningModule):
    """Generalizable NeRF with FeatureNeRF's distillation and canonical-coordinate heads.

    Args:
        rgb_weight, distill_weight, coord_weight: loss weights (paper: 1 / 0.25 / 0.25), each applied to
            the coarse and the fine pass.
        coord_loss: how L_coord reduces the canonical-coordinate residual x̂ − x along a ray.
            ``release`` (the authors' code): its unweighted mean over all the pass's samples, squared and
            averaged over the three axes and the rays. ``weighted``: its colour-weighted ray average
            (Σ w (x̂ − x)), squared and summed over the axes, averaged over the rays. ``pointwise``: the
            mean over all samples of (x̂ − x)², averaged over the axes. The release's mean constrains only
            each ray's average prediction, which a near-constant x̂ already meets (its loss stays at that
            floor in toy runs); ``pointwise`` teaches x̂ = x at every sample, the surface included.
        lr: Adam learning rate (1e-4, no decay).
        encoder_lr: the image encoder's own learning rate (default ``None``: ``lr``, as pixelNeRF
            fine-tunes its ResNet with the MLP). A pretrained trunk can be kept closer to its weights.
        bbox_steps: draw training rays inside the object's 2D box for this many steps (paper: 100k).
        max_skip_fraction: stop with an error when more than this fraction of the last
            ``skip_grace_steps`` steps had non-finite losses or gradients (such steps are skipped). A
            window, not the whole run: a run that diverges late stops within ``skip_grace_steps`` steps.
        skip_grace_steps: the window, and how many steps run before the check starts.
        val_pictures: how many validation objects get picture grids per validation run.
        compile: ``torch.compile`` the MLP (opt-in).
        compile_step: compile the whole loss computation (encode, both passes, losses) as one graph with
            static shapes, captured with CUDA graphs on a GPU (:mod:`featurenerf.step_graph`; opt-in: the
            first step compiles, minutes on a CPU).
        **net: the field's and the renderer's hyper-parameters, the fields of
            :class:`~featurenerf.nerf.config.NetConfig` (``feature_dim``, ``d_hidden``, ``n_coarse``, ...;
            its types, ranges, defaults and help). The config parser lists them as ``model.<name>``.
    """

    def __init__(
        self,
        rgb_weight: NonNegativeFloat = 1.0,
        distill_weight: NonNegativeFloat = 0.25,
        coord_weight: NonNegativeFloat = 0.25,
        coord_loss: Literal["release", "weighted", "pointwise"] = "release",
        lr: PositiveFloat = 1e-4,
        encoder_lr: NonNegativeFloat | None = None,
        bbox_steps: NonNegativeInt = 100_000,
        max_skip_fraction: ClosedUnitInterval = 0.2,
        skip_grace_steps: NonNegativeInt = 20,
        val_pictures: NonNegativeInt = 2,
        compile: bool = False,
        compile_step: bool = False,
        **net: Any,
    ) -> None:
        super().__init__()
        if coord_loss not in ("release", "weighted", "pointwise"):
            raise ValueError(
                f"model.coord_loss: expected 'release', 'weighted' or 'pointwise', got {coord_loss!r}"
            )
        self.save_hyperparameters()
        # jsonargparse hands range-checked numbers over as int/float subclasses (LightningCLI saves its
        # plain config dump instead); checkpoints, loaded with weights_only=True, hold plain numbers.
        self.hparams.update(plain_numbers(self.hparams))
        # Spelled `NetConfig(**net)` so that jsonargparse reads the fields as this class's arguments.
        net = plain_numbers(net)
        self.net = FeatureNeRFNet(NetConfig(**net))
        if compile:
            self.net.mlp = torch.compile(self.net.mlp)
        self._step_graph: LossFn | None = None  # model.compile_step: built on the first step
        # Counted in the checkpoint so a resumed run keeps its skip statistics.
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        # Which of the last skip_grace_steps steps were skipped (slot = step count mod window); saved in
        # the checkpoint beside the weights (on_save_checkpoint), so state_dict holds only the model.
        self.register_buffer(
            "recent_skips", torch.zeros(max(skip_grace_steps, 1), dtype=torch.bool), persistent=False
        )
        self.register_buffer("seen_steps", torch.zeros((), dtype=torch.long))
        self.tasks = None  # set by the CLI / datamodule wiring for task validation loops

    # ------------------------------------------------------------------ public API (delegates to net)
    def encode(self, images: Tensor, poses: Tensor, focal: Tensor, c: Tensor) -> Conditioning:
        """See :meth:`FeatureNeRFNet.encode`."""
        return self.net.encode(images, poses, focal, c)

    def point_features(self, cond: Conditioning, xyz: Tensor, viewdirs: Tensor | None = None) -> Tensor:
        """See :meth:`FeatureNeRFNet.point_features`."""
        return self.net.point_features(cond, xyz, viewdirs)

    def render_features(
        self, cond: Conditioning, pose: Tensor, focal: Tensor, c: Tensor, height: int, width: int
    ):
        """See :meth:`FeatureNeRFNet.render_features`."""
        return self.net.render_features(cond, pose, focal, c, height, width)

    # ------------------------------------------------------------------ training
    def _generator(self) -> torch.Generator:
        # Sample jitter is a pure function of (seed, step, rank): a resumed run draws the same samples.
        seed = (torch.initial_seed() % (2**31)) * 1_000_003 + self.global_step * 97 + self.global_rank
        return torch.Generator(device=self.device).manual_seed(seed % (2**63))

    def compute_losses(self, batch: dict, rays: dict) -> dict[str, Tensor]:
        """RGB, distillation and coordinate losses on both passes; ``loss`` is their weighted sum.

        The sample jitter is drawn here, from the step's generator (:func:`~featurenerf.step_graph.
        draw_noise`); the rest runs as :meth:`losses_from_noise`, compiled as one graph when
        ``compile_step`` is set."""
        noise = draw_noise(self, rays, self._generator())
        if not self.hparams.get("compile_step", False):
            return self.losses_from_noise(batch, rays, noise)
        if self._step_graph is None:
            self._step_graph = compiled_losses(self)
        return self._step_graph(batch, rays, noise)

    def losses_from_noise(self, batch: dict, rays: dict, noise: SampleNoise) -> dict[str, Tensor]:
        """:meth:`compute_losses` with the sample jitter given (B, R, n): no generator, no host sync, so
        it traces into one graph."""
        h = self.hparams
        cond = self.net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
        use_distill = h.distill_weight > 0 and self.net.feature_dim > 0 and "teacher" in rays
        outputs = ["rgb"]
        if use_distill:
            outputs.append("features")
        coords = {"release": "coords_mean", "weighted": "coords", "pointwise": "coords_sq"}[h.coord_loss]
        if h.coord_weight > 0:
            outputs.append(coords)
        out = self.net.render_rays(cond, rays["origins"], rays["dirs"], outputs, noise=noise)
        terms: dict[str, Tensor] = {}
        total = rays["origins"].new_zeros(())
        for pass_name in ("coarse", "fine"):
            res = out[pass_name]
            terms[f"rgb_{pass_name}"] = F.mse_loss(res["rgb"], rays["rgb"])
            total = total + h.rgb_weight * terms[f"rgb_{pass_name}"]
            if use_distill:
                terms[f"distill_{pass_name}"] = F.mse_loss(res["features"], rays["teacher"])
                total = total + h.distill_weight * terms[f"distill_{pass_name}"]
            if coords in res:
                terms[f"coord_{pass_name}"] = coord_loss(res[coords], h.coord_loss)
                total = total + h.coord_weight * terms[f"coord_{pass_name}"]
        terms["loss"] = total
        with torch.no_grad():
            terms["psnr"] = -10 * torch.log10(terms["rgb_fine"].clamp_min(1e-10))
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        key = "bbox" if self.global_step < self.hparams.bbox_steps else "full"
        terms = self.compute_losses(batch, batch["rays"][key])
        self.seen_steps += 1
        self.recent_skips[(int(self.seen_steps) - 1) % len(self.recent_skips)] = False
        loss = terms["loss"]
        if not torch.isfinite(loss):
            self._count_skip("loss")
            return None  # Lightning skips backward and the optimiser step
        bs = batch["src_images"].shape[0]
        logged = {f"train/{k}": v.detach() for k, v in terms.items() if k != "psnr"}
        self.log_dict(logged, batch_size=bs)
        self.log("train/psnr", terms["psnr"], prog_bar=True, batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        # One host sync for all gradients (foreach norms, then one isfinite), not one per parameter: on a
        # GPU each sync stalls the launch queue. A gradient whose norm overflows float32 counts as
        # non-finite too (a divergent step either way).
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            for p in self.parameters():
                p.grad = None  # Adam leaves parameters without gradients untouched: the step is skipped
            self._count_skip("gradient")

    def _count_skip(self, what: str) -> None:
        self.skipped_steps += 1
        window = len(self.recent_skips)
        self.recent_skips[(int(self.seen_steps) - 1) % window] = True
        self.log("train/skipped_steps", self.skipped_steps.float(), batch_size=1)
        seen = int(self.seen_steps)
        recent = int(self.recent_skips.sum())
        print(
            f"step {self.global_step}: non-finite {what}, step skipped ({int(self.skipped_steps)} so far)",
            file=sys.stderr,
        )
        if seen >= self.hparams.skip_grace_steps and recent / window > self.hparams.max_skip_fraction:
            raise TrainingDiverged(
                f"{recent} of the last {window} steps had non-finite losses or gradients "
                f"(> model.max_skip_fraction={self.hparams.max_skip_fraction}); lower model.lr or check the data"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skip_window"] = self.recent_skips.tolist()  # plain bools: loads with weights_only

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # validate/test restore the weights but not the trainer's step; reports name the trained step
        self._checkpoint_step = int(checkpoint.get("global_step", 0))
        window = checkpoint.get("skip_window")
        if window is not None and len(window) == len(self.recent_skips):
            self.recent_skips.copy_(torch.tensor(window, dtype=torch.bool))

    @property
    def trained_steps(self) -> int:
        """Optimisation steps behind the current weights: the trainer's step during ``fit``, the loaded
        checkpoint's step in ``validate``/``test`` (where the trainer's own count starts at 0)."""
        return max(self.global_step, getattr(self, "_checkpoint_step", 0))

    def configure_optimizers(self):
        # On CUDA the fused Adam updates every parameter in one kernel (the foreach default launches a
        # few per parameter group and step, host time that a launch-bound step cannot hide).
        fused = self.device.type == "cuda"
        encoder_lr = self.hparams.get("encoder_lr")
        if encoder_lr is None:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=fused)
        encoder = list(self.net.encoder.parameters())
        mine = {id(p) for p in encoder}
        rest = [p for p in self.parameters() if id(p) not in mine]
        groups = [{"params": rest}, {"params": encoder, "lr": encoder_lr}]
        return torch.optim.Adam(groups, lr=self.hparams.lr, fused=fused)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Evaluation is float32 whatever trainer.precision says: under bf16 autocast the cosine matmuls
        # of label transfer pick other nearest neighbours (the 2D teacher's 3D part mIoU, which no
        # training touches, read 34.8 % under bf16 and 37.5 % in float32 on the same 100 pairs).
        with torch.autocast(self.device.type, enabled=False):
            if dataloader_idx == 0:
                self._novel_view_step(batch, batch_idx)
            elif self.tasks is not None:
                self.tasks.validation_step(self, batch, batch_idx, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._novel_view_values: dict[str, list[float]] = {}

    def on_validation_epoch_end(self) -> None:
        self._report_novel_views()
        # The task suite reduces its metrics over ranks, logs them and writes its results table.
        if self.tasks is not None:
            self.tasks.on_validation_epoch_end(self)

    def _report_novel_views(self) -> None:
        """One readable line per validation (and ``<run>/novel_view.json``): held-out novel-view quality
        next to the copy-the-input baseline. Rank 0's share of the objects; the logged values are global."""
        values = getattr(self, "_novel_view_values", {})
        if (
            not values
            or self.trainer is None
            or self.trainer.sanity_checking
            or not self.trainer.is_global_zero
        ):
            return
        means = {k: sum(v) / len(v) for k, v in values.items()}
        means["objects"] = len(values["val/psnr"])
        means["step"] = self.trained_steps
        line = (
            f"novel views of {means['objects']} held-out objects at step {self.trained_steps}: "
            f"PSNR {means['val/psnr']:.2f} dB (copy-the-input baseline {means['val/psnr_copy_input']:.2f} dB), "
            f"SSIM {means['val/ssim']:.3f}"
        )
        if "val/feature_cosine" in means:
            line += f", feature cosine to the teacher {means['val/feature_cosine']:.3f}"
        print(line, flush=True)
        from featurenerf.io import atomic_write_json

        atomic_write_json(Path(self.trainer.default_root_dir) / "novel_view.json", means)

    def _novel_view_step(self, batch: dict, batch_idx: int) -> None:
        cond = self.net.encode(batch["src_images"], batch["src_poses"], batch["focal"], batch["c"])
        tgt = batch["tgt_images"][0]  # (T, 3, H, W)
        t, _, hgt, wid = tgt.shape
        cond = self.net.with_occupancy(cond, t * hgt * wid)  # one grid for the T target views
        want = ("rgb", "features") if self.net.feature_dim > 0 and "tgt_teacher" in batch else ("rgb",)
        preds, feats = [], []
        for i in range(t):
            out = self.net.render_image(
                cond, batch["tgt_poses"][:, i], batch["focal"], batch["c"], hgt, wid, outputs=want
            )
            preds.append(out["rgb"][0].permute(2, 0, 1))
            if "features" in out:
                feats.append(out["features"][0].permute(2, 0, 1))
        pred = torch.stack(preds).clamp(0, 1)
        copy = batch["src_images"][0, :1].expand_as(tgt)  # the trivial baseline: copy the input view
        # Per-view PSNR / SSIM as pixelNeRF reports them (uint8 images, 7x7 uniform SSIM), averaged.
        log = {
            "val/psnr": psnr_uint8(pred, tgt).mean().to(pred.dtype),
            "val/ssim": ssim_uint8(pred, tgt).mean().to(pred.dtype),
            "val/psnr_copy_input": psnr_uint8(copy, tgt).mean().to(pred.dtype),
        }
        if feats:
            teacher = batch["tgt_teacher"][0]  # (T, D, h, w)
            rendered = F.adaptive_avg_pool2d(torch.stack(feats), teacher.shape[-2:])
            log["val/feature_cosine"] = masked_cosine(rendered, teacher)
        self.log_dict(log, batch_size=1, add_dataloader_idx=False, sync_dist=True)
        if hasattr(self, "_novel_view_values"):
            for k, v in log.items():
                self._novel_view_values.setdefault(k, []).append(float(v))
        if (
            batch_idx < self.hparams.val_pictures
            and self.trainer is not None
            and not self.trainer.sanity_checking
        ):
            self._save_pictures(batch, pred, feats, batch_idx)

    def _save_pictures(self, batch: dict, pred: Tensor, feats: list[Tensor], batch_idx: int) -> None:
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "pictures"
        step = self.trained_steps
        src = batch["src_images"][0, 0]
        rows = [[src, p, t] for p, t in zip(pred, batch["tgt_images"][0])]
        path = save_image_grid(
            rows,
            out_dir / f"novel_view_obj{batch_idx}_step{step:06d}.png",
            header=["input", "prediction", "truth"],
        )
        paths = [path]
        if feats:
            teacher = batch["tgt_teacher"][0]
            rendered = F.adaptive_avg_pool2d(torch.stack(feats), teacher.shape[-2:])
            t_rgb, r_rgb = feature_pca_pair(teacher, rendered)
            size = pred.shape[-2:]
            up = lambda x: F.interpolate(x, size=size, mode="nearest")  # noqa: E731
            rows = [[a, b] for a, b in zip(up(t_rgb), up(r_rgb))]
            paths.append(
                save_image_grid(
                    rows,
                    out_dir / f"features_obj{batch_idx}_step{step:06d}.png",
                    header=["teacher (PCA)", "rendered v (PCA)"],
                )
            )
        log_image = getattr(self.logger, "log_image", None)
        if callable(log_image):
            for p in paths:
                try:
                    log_image(key=f"val/{p.stem.rsplit('_step', 1)[0]}", images=[str(p)], step=step)
                except Exception:  # a logger without image support must not break validation
                    pass


def masked_cosine(rendered: Tensor, teacher: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean cosine similarity over cells where the teacher map is non-zero (the object, when the teacher
    zeroes the background). rendered, teacher: (T, D, h, w) → scalar."""
    cos = F.cosine_similarity(rendered, teacher, dim=1, eps=eps)  # (T, h, w)
    mask = teacher.norm(dim=1) > eps
    if not mask.any():
        return cos.mean()
    return cos[mask].mean()
