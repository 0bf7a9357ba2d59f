"""Bad arguments: each is exit status 2 and one stderr line that names the problem and what to do.

Everything except the checkpoint-width case is refused right after parsing, before Lightning seeds or
builds anything, so stderr is exactly that one line. The width is only known once the teacher is built;
there Lightning's own start-up lines (seed, accelerator) come first and the error is the one line after.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from featurenerf.cli import main
from featurenerf.module import FeatureNeRF

REPO = Path(__file__).resolve().parents[1]
TOY = str(REPO / "configs" / "toy_cars.yaml")
TINY = dict(encoder_layers=2, d_hidden=16, n_coarse=8, n_fine=2, n_fine_depth=2)
#: Lightning's start-up lines (not errors) that precede errors found after the trainer is built.
LIGHTNING_INFO = ("Seed set to", "GPU available", "TPU available", "HPU available", "INFO: ")


def _run(args: list[str], capfd) -> tuple[int, list[str]]:
    capfd.readouterr()
    rc = main(args)
    return rc, [line for line in capfd.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def fit(toy_root, tmp_path):
    def args(*extra: str) -> list[str]:
        return [
            "fit",
            "--config",
            TOY,
            f"--data.root={toy_root}",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
            *extra,
        ]

    return args


def test_unknown_teacher_lists_the_known_ones(fit, capfd):
    rc, err = _run(fit("--data.teacher=dino_vit_s8"), capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(
        "featurenerf: error: data.teacher: unknown teacher 'dino_vit_s8'; known teachers:"
    )
    assert "dino_vits8" in err[0] and "hed_vgg16" in err[0]


def test_unknown_teacher_inside_a_mapping(fit, capfd):
    rc, err = _run(fit('--data.teacher={"class_path": "nope", "init_args": {"weights": null}}'), capfd)
    assert rc == 2 and len(err) == 1 and "unknown teacher 'nope'; known teachers:" in err[0]


def test_misspelled_teacher_option_fails_at_parse_time(fit, capfd):
    rc, err = _run(fit("--data.teacher.init_args.wieghts=x"), capfd)
    assert rc == 2 and len(err) == 1
    teacher = "featurenerf.teachers.efficientnet.EfficientNetLite0Teacher"  # the toy config's
    assert err[0].startswith(f"featurenerf: error: data.teacher: {teacher}")
    assert "does not accept option 'wieghts'" in err[0]
    # The mapping form of older configs is checked the same way.
    rc, err = _run(fit('--data.teacher={"name": "hed_vgg16", "wieghts": "x"}'), capfd)
    assert rc == 2 and len(err) == 1 and "does not accept option 'wieghts'" in err[0]


def test_misspelled_task_option_fails_at_parse_time(fit, capfd):
    rc, err = _run(fit("--tasks.num_paris=3"), capfd)
    assert rc == 2 and len(err) == 1 and "--tasks.num_paris" in err[0]


def test_unknown_task_lists_tasks_and_groups(toy_root, tmp_path, capfd):
    args = ["validate", "--config", TOY, f"--data.root={toy_root}", "--task", "part_seg", "keypoint_2d"]
    rc, err = _run(args, capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("featurenerf: error: --task: unknown task 'keypoint_2d'; known tasks: ")
    for name in ("keypoints_2d", "part_seg_3d", "novel_view", "part_seg", "keypoints"):
        assert name in err[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model.nope=1"], "unrecognized arguments: --model.nope=1"),
        (["--trainer.max_stepz=3"], "unrecognized arguments: --trainer.max_stepz=3"),
        (
            ["--trainer.max_steps=abc"],
            "Parser key \"trainer.max_steps\": Expected a <class 'int'>. Got value: abc",
        ),
    ],
)
def test_unknown_key_or_bad_value_on_the_command_line(fit, capfd, extra, expected):
    rc, err = _run(fit(*extra), capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0] == f"featurenerf: error: {expected}; see `featurenerf fit --help`"


def test_unknown_key_in_a_config_file(fit, tmp_path, capfd):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  lr: 1.0e-4\n  d_hiden: 64\n")
    rc, err = _run(fit("--config", str(extra)), capfd)
    assert rc == 2 and len(err) == 1, err
    assert "'model.d_hiden'" in err[0] and err[0].endswith("; see `featurenerf fit --help`")


def test_data_root_that_is_a_file(fit, tmp_path, capfd):
    not_a_folder = tmp_path / "cars.zip"
    not_a_folder.write_bytes(b"PK")
    rc, err = _run([*fit(), f"--data.root={not_a_folder}"], capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"featurenerf: error: {not_a_folder}: data root is a file, expected a folder;")
    assert "featurenerf data synth" in err[0]  # how to get data


def test_missing_checkpoint_file(fit, tmp_path, capfd):
    missing = tmp_path / "nowhere" / "last.ckpt"
    rc, err = _run(fit(f"--ckpt_path={missing}"), capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (
        f"featurenerf: error: --ckpt_path {missing}: no such checkpoint file; pass a run's "
        "checkpoints/last.ckpt (or --ckpt_path last to resume the latest run)"
    )


def test_resume_last_without_any_run(fit, tmp_path, capfd):
    rc, err = _run(fit("--ckpt_path=last"), capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(
        f"featurenerf: error: --ckpt_path last: no run with checkpoints/last.ckpt under {tmp_path}"
    )


def test_checkpoint_from_another_teacher_width(toy_root, tmp_path, capfd):
    # a checkpoint whose feature head is 6 wide, validated with no teacher (width 0)
    model = FeatureNeRF(feature_dim=6, **TINY)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    ckpt = tmp_path / "wide.ckpt"
    trainer.save_checkpoint(ckpt)
    args = [
        "validate",
        f"--ckpt_path={ckpt}",
        f"--data.root={toy_root}",
        "--data.teacher=null",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    rc, err = _run(args, capfd)
    assert rc == 2
    errors = [line for line in err if not line.startswith(LIGHTNING_INFO)]
    assert errors == [
        f"featurenerf: error: {ckpt}: checkpoint has feature width 6 but the configured teacher gives 0; "
        "use the teacher it was trained with (data.teacher)"
    ]
    assert "Traceback" not in "\n".join(err)


def test_unknown_task_is_named_before_the_latest_run_is_looked_up(tmp_path, monkeypatch, capfd):
    # `validate --task nonsense` exactly as typed, where the latest run has no checkpoint yet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "runs" / "unfinished").mkdir(parents=True)
    (tmp_path / "outputs" / "runs" / "unfinished" / "config.yaml").write_text("{}\n")
    rc, err = _run(["validate", "--task", "nonsense"], capfd)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("featurenerf: error: --task: unknown task 'nonsense'; known tasks: ")
    assert "part_seg_2d" in err[0] and "keypoints" in err[0]
