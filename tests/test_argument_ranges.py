"""Numbers outside their range are refused when the config is parsed: exit 2, one line naming the option,
the value and the range, no traceback (before Adam, a DataLoader or a renderer sees them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featurenerf.cli import main
from featurenerf.ranges import range_error_message

REPO = Path(__file__).resolve().parents[1]
TOY = str(REPO / "configs" / "toy_cars.yaml")

#: (option, bad value, the range the message must state); model, data and task arguments.
BAD_NUMBERS = [
    ("model.lr", "-1", "> 0"),
    ("model.lr", "0", "> 0"),
    ("model.rgb_weight", "-0.5", ">= 0"),
    ("model.distill_weight", "-1", ">= 0"),
    ("model.coord_weight", "-0.25", ">= 0"),
    ("model.n_coarse", "0", "> 0"),
    ("model.n_fine", "-1", ">= 0"),
    ("model.n_fine_depth", "-2", ">= 0"),
    ("model.d_hidden", "0", "> 0"),
    ("model.encoder_layers", "6", ">= 1 and <= 5"),
    ("model.depth_std", "-0.01", ">= 0"),
    ("model.near", "-0.1", ">= 0"),
    ("model.scene_radius", "0", "> 0"),  # Optional: the message is jsonargparse's union wall otherwise
    ("model.stop_transmittance", "1.0", ">= 0 and < 1"),
    ("model.max_skip_fraction", "1.5", ">= 0 and <= 1"),
    ("model.chunk", "0", "> 0"),
    ("data.image_size", "0", "> 0"),
    ("data.rays_per_object", "0", "> 0"),
    ("data.batch_size", "-4", "> 0"),
    ("data.num_src_views", "0", "> 0"),
    ("data.epoch_length", "0", "> 0"),
    ("data.val_views", "0", "> 0"),
    ("data.num_workers", "-1", ">= 0"),
    ("tasks.num_pairs", "0", "> 0"),
    ("tasks.image_size", "-64", "> 0"),
]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(("option", "value", "bound"), BAD_NUMBERS)
def test_out_of_range_number_is_one_line(option, value, bound, toy_root, tmp_path, capfd):
    command = "validate" if option.startswith("tasks.") else "fit"
    args = [command, "--config", TOY, f"--data.root={toy_root}", "--trainer.logger=false"]
    args += [f"--trainer.default_root_dir={tmp_path}", f"--{option}", value]
    capfd.readouterr()
    assert main(args) == 2
    captured = capfd.readouterr()
    err = _lines(captured.err)
    assert err == [
        f"featurenerf: error: {option}: {value} is out of range; it must be {bound}; "
        f"see `featurenerf {command} --help`"
    ]
    assert "Traceback" not in captured.out + captured.err
    assert not list(Path(tmp_path).iterdir())  # refused before any run folder was made


def test_out_of_range_number_in_a_config_file(toy_root, tmp_path, capfd):
    extra = tmp_path / "bad.yaml"
    extra.write_text("data:\n  batch_size: 0\n")
    args = ["fit", "--config", TOY, "--config", str(extra), f"--data.root={toy_root}"]
    capfd.readouterr()
    assert main([*args, "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / 'runs'}"]) == 2
    err = _lines(capfd.readouterr().err)
    assert len(err) == 1 and "data.batch_size: 0 is out of range; it must be > 0" in err[0], err


def test_far_not_beyond_near_is_one_line(toy_root, tmp_path, capfd):
    args = ["fit", "--config", TOY, f"--data.root={toy_root}", "--model.near=2", "--model.far=1.5"]
    capfd.readouterr()
    assert main([*args, "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]) == 2
    err = _lines(capfd.readouterr().err)
    assert err == ["featurenerf: error: model.far: 1.5 must be greater than model.near (2.0)"]


def test_negative_learning_rate_from_the_console_script(toy_root, tmp_path):
    # Exactly as the issue typed it, in a fresh interpreter: no Adam traceback, no usage wall.
    cmd = [sys.executable, "-m", "featurenerf.cli", "fit", "--config", TOY, f"--data.root={toy_root}"]
    cmd += ["--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", "--model.lr", "-1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert _lines(proc.stderr) == [
        "featurenerf: error: model.lr: -1 is out of range; it must be > 0; see `featurenerf fit --help`"
    ]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_help_shows_the_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--model.lr LR" in out and "type: PositiveFloat" in out
    assert "type: EncoderLayers" in out and "type: UnitIntervalBelowOne" in out


def test_checkpoint_hyper_parameters_are_plain_numbers():
    from jsonargparse.typing import PositiveFloat, PositiveInt

    from featurenerf.module import FeatureNeRF

    model = FeatureNeRF(feature_dim=0, encoder_layers=1, d_hidden=PositiveInt(8), lr=PositiveFloat(0.5))
    assert type(model.hparams.d_hidden) is int and type(model.hparams.lr) is float


def test_other_parse_errors_keep_their_wording():
    assert (
        range_error_message("Parser key \"trainer.max_steps\": Expected a <class 'int'>. Got value: abc")
        is None
    )
