"""One error family: every deliberate error is a FeatureNeRFError, old import places still work, and the
CLI prints any of them as one line with exit status 2."""

from __future__ import annotations

import pytest

from featurenerf import errors
from featurenerf.cli import main


def test_old_import_places_give_the_one_class():
    from featurenerf.checkpointing import CheckpointError
    from featurenerf.data.feature_cache import CacheError
    from featurenerf.data.srn import DataError
    from featurenerf.module import TrainingDiverged
    from featurenerf.registry import UnknownNameError
    from featurenerf.teachers import WeightsNotFoundError
    from featurenerf.teachers.dino_checkpoint import CheckpointError as DinoCheckpointError

    assert CheckpointError is DinoCheckpointError is errors.CheckpointError
    assert (DataError, CacheError, UnknownNameError) == (
        errors.DataError,
        errors.CacheError,
        errors.UnknownNameError,
    )
    assert (TrainingDiverged, WeightsNotFoundError) == (errors.TrainingDiverged, errors.WeightsNotFoundError)


@pytest.mark.parametrize(
    "cls, family, builtin",
    [
        (errors.DataError, errors.FeatureNeRFError, ValueError),
        (errors.CacheError, errors.DataError, ValueError),
        (errors.CheckpointError, errors.DataError, ValueError),
        (errors.WeightsNotFoundError, errors.TeacherError, FileNotFoundError),
        (errors.UnknownNameError, errors.ConfigError, KeyError),
        (errors.TrainingDiverged, errors.FeatureNeRFError, RuntimeError),
    ],
)
def test_hierarchy_keeps_the_builtin_bases(cls, family, builtin):
    assert issubclass(cls, family) and issubclass(cls, errors.FeatureNeRFError) and issubclass(cls, builtin)


def test_messages_print_plain():
    assert str(errors.UnknownNameError("unknown teacher 'x'; known teachers: a, b")) == (
        "unknown teacher 'x'; known teachers: a, b"
    )  # KeyError alone would quote it
    err = errors.CacheError("/tmp/c.npy", "stale")
    assert str(err) == "/tmp/c.npy: stale" and err.reason == "stale"


def test_cli_command_prints_a_family_error_as_one_line(monkeypatch, capsys):
    import featurenerf.commands.data as data_command

    def broken(_args):
        raise errors.DataError("data/x/meta.json: not valid JSON")

    monkeypatch.setattr(data_command, "main", broken)
    assert main(["data", "check"]) == 2
    err = capsys.readouterr().err
    assert err == "featurenerf: error: data/x/meta.json: not valid JSON\n"


def test_lightning_command_prints_a_config_error_as_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    code = main(["fit", "--data.root", str(root), "--ckpt_path", str(tmp_path / "nope.ckpt")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("featurenerf: error: --ckpt_path ") and "no such checkpoint file" in err
    assert "\n" not in err
