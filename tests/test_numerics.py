"""Numerics: a step with a non-finite loss or gradient is skipped (weights and Adam state untouched),
counted, logged and reported; training goes on; past ``max_skip_fraction`` the run stops in one line."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from featurenerf.data.datamodule import FeatureNeRFData
from featurenerf.module import FeatureNeRF, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]
TINY = dict(encoder_layers=2, d_hidden=16, n_coarse=8, n_fine=2, n_fine_depth=2, feature_dim=0)


class Faulty(FeatureNeRF):
    """Injects a NaN loss at ``nan_loss_steps`` and NaN gradients (finite loss) at ``nan_grad_steps``."""

    def __init__(self, nan_loss_steps=(), nan_grad_steps=(), **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_loss_steps = set(nan_loss_steps)
        self.nan_grad_steps = set(nan_grad_steps)

    def compute_losses(self, batch, rays):
        terms = super().compute_losses(batch, rays)
        step = self.global_step
        if step in self.nan_loss_steps:
            terms["loss"] = terms["loss"] * float("nan")
        elif step in self.nan_grad_steps:
            # finite forward value, NaN backward: d/dx sqrt(x) at 0 is inf, times 0 is NaN
            zero = self.net.mlp.lin_in.weight.sum() * 0
            terms["loss"] = terms["loss"] + torch.sqrt(zero - zero.detach())
        return terms


class Recorder(L.Callback):
    """Parameters and Adam step counts before and after every batch."""

    def __init__(self) -> None:
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []
        self.adam_steps: list[float] = []

    @staticmethod
    def _params(module):
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before.append(self._params(module))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after.append(self._params(module))
        state = trainer.optimizers[0].state.get(module.net.mlp.lin_in.weight, {})
        self.adam_steps.append(float(state.get("step", 0)))


def _data(root: Path) -> FeatureNeRFData:
    return FeatureNeRFData(
        root=str(root),
        image_size=32,
        teacher=None,
        rays_per_object=16,
        batch_size=2,
        epoch_length=4,
        val_objects=1,
        val_views=1,
        check=False,
    )


def _fit(model: FeatureNeRF, root: Path, steps: int, tmp_path: Path) -> tuple[L.Trainer, Recorder]:
    rec = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[rec],
    )
    L.seed_everything(0)
    trainer.fit(model, datamodule=_data(root))
    return trainer, rec


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_and_gradient_steps_are_skipped_counted_and_logged(toy_root, tmp_path, capfd):
    model = Faulty(nan_loss_steps={1}, nan_grad_steps={3}, **TINY)
    trainer, rec = _fit(model, toy_root, 6, tmp_path)

    assert trainer.global_step == 6  # training went on to the end
    assert int(model.skipped_steps) == 2 and int(model.seen_steps) == 6
    # batch k runs at global_step k: the skipped ones leave every weight exactly as it was
    assert _same(rec.before[1], rec.after[1]) and _same(rec.before[3], rec.after[3])
    for k in (0, 2, 4, 5):
        assert not _same(rec.before[k], rec.after[k])
    # ... and Adam's step count (its bias correction) does not advance on them
    assert rec.adam_steps == [1, 1, 2, 2, 3, 4]
    for params in rec.after:
        assert all(torch.isfinite(p).all() for p in params.values())

    err = capfd.readouterr().err
    assert "step 1: non-finite loss, step skipped (1 so far)" in err
    assert "step 3: non-finite gradient, step skipped (2 so far)" in err
    metrics = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    col = header.index("train/skipped_steps")
    logged = [float(r.split(",")[col]) for r in metrics[1:] if r.split(",")[col]]
    assert logged == [1.0, 2.0]


def test_skip_rate_past_threshold_stops_the_run(toy_root, tmp_path):
    # every step from 0 on has a NaN loss; the grace period is 4 steps, the limit 25%
    model = Faulty(nan_loss_steps=range(100), max_skip_fraction=0.25, skip_grace_steps=4, **TINY)
    with pytest.raises(TrainingDiverged) as err:
        _fit(model, toy_root, 50, tmp_path)
    assert int(model.seen_steps) == 4  # stopped as soon as the grace period was over
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("4 of the last 4 steps had non-finite losses or gradients")
    assert "model.max_skip_fraction=0.25" in message and "lower model.lr" in message


def test_occasional_skips_below_threshold_do_not_stop(toy_root, tmp_path):
    # at most 1 skip in any 5 consecutive steps = 20%, not above the 20% limit: the run finishes
    model = Faulty(nan_loss_steps={1, 6}, max_skip_fraction=0.2, skip_grace_steps=5, **TINY)
    trainer, _ = _fit(model, toy_root, 7, tmp_path)
    assert trainer.global_step == 7 and int(model.skipped_steps) == 2


def test_late_divergence_stops_within_the_window(toy_root, tmp_path):
    # 4 good steps, then every step is NaN: the rate is over the last 2 steps, not the whole run, so the
    # second bad step (2 of the last 2 > 50%) stops it, where a whole-run rate would read 2/6.
    model = Faulty(nan_loss_steps=range(4, 100), max_skip_fraction=0.5, skip_grace_steps=2, **TINY)
    with pytest.raises(TrainingDiverged, match="^2 of the last 2 steps"):
        _fit(model, toy_root, 50, tmp_path)
    assert int(model.seen_steps) == 6 and int(model.skipped_steps) == 2


def test_skip_window_travels_with_the_checkpoint():
    model = FeatureNeRF(skip_grace_steps=4, **TINY)
    model.recent_skips.copy_(torch.tensor([True, False, True, False]))
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["skip_window"] == [True, False, True, False]  # plain bools (weights-only loadable)
    assert "recent_skips" not in model.state_dict()  # the state dict is the model alone
    resumed = FeatureNeRF(skip_grace_steps=4, **TINY)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.recent_skips.tolist() == [True, False, True, False]


def test_diverged_run_is_one_line_from_the_cli(toy_root, tmp_path, monkeypatch, capfd):
    from featurenerf.cli import main

    original = FeatureNeRF.compute_losses

    def nan_loss(self, batch, rays):
        terms = original(self, batch, rays)
        terms["loss"] = terms["loss"] * math.nan
        return terms

    monkeypatch.setattr(FeatureNeRF, "compute_losses", nan_loss)
    capfd.readouterr()
    rc = main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "toy_cars.yaml"),
            f"--data.root={toy_root}",
            "--data.teacher=null",
            "--data.check=false",
            "--data.image_size=32",
            "--data.rays_per_object=16",
            "--data.batch_size=2",
            "--data.epoch_length=4",
            "--data.num_workers=0",
            "--trainer.logger=false",
            "--trainer.max_time=null",
            "--trainer.max_steps=30",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--model.encoder_layers=2",
            "--model.d_hidden=16",
            "--model.n_coarse=8",
            "--model.n_fine=2",
            "--model.n_fine_depth=2",
            "--model.skip_grace_steps=3",
        ]
    )
    err = capfd.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [
        "featurenerf: error: 3 of the last 3 steps had non-finite losses or gradients "
        "(> model.max_skip_fraction=0.2); lower model.lr or check the data"
    ]
