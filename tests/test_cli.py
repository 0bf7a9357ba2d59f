"""The command line: help, shipped configs, fit/validate end to end on a tiny generated set, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from featurenerf.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TEACHER_CONFIGS = sorted((REPO / "configs" / "teachers").glob("*.yaml"))

# A real (random-init) DINO ViT small enough for a test; 10 blocks so the paper's block 9 exists.
TINY_DINO = json.dumps(
    {
        "name": "dino_vits8",
        "weights": None,
        "input_size": 32,
        "config": {
            "hidden_size": 24,
            "num_hidden_layers": 10,
            "num_attention_heads": 2,
            "intermediate_size": 48,
        },
    }
)
TINY_MODEL = [
    "--model.encoder_layers=2",
    "--model.d_hidden=16",
    "--model.n_coarse=8",
    "--model.n_fine=2",
    "--model.n_fine_depth=2",
]


def tiny_fit_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "toy_cars.yaml"),
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.rays_per_object=16",
        "--data.batch_size=2",
        "--data.epoch_length=4",
        "--data.num_workers=0",
        "--data.val_objects=1",
        "--data.val_views=1",
        f"--data.cache_dir={runs / 'cache'}",
        "--trainer.logger=false",
        "--trainer.max_time=null",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        *TINY_MODEL,
        *extra,
    ]


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"fit", "validate", "test", "predict", "data", "teachers"} <= listed


def test_unknown_command_is_one_line(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown command 'fitt'" in err


def _build(args: list[str]):
    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.lightning_cli import FeatureNeRFCLI
    from featurenerf.module import FeatureNeRF

    return FeatureNeRFCLI(FeatureNeRF, FeatureNeRFData, args=args, run=False, save_config_callback=None)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses_and_instantiates(config, tmp_path):
    args = ["--config", str(config), f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    if "srn" in config.name:
        args.append(f"--data.teacher={TINY_DINO}")  # no DINO weights on CI: same architecture, random init
    cli = _build(args)
    teacher = cli.datamodule.teacher
    assert cli.model.net.feature_dim == teacher.feature_dim  # linked, never typed twice
    assert cli.model.hparams.feature_dim == teacher.feature_dim
    if "srn" in config.name:
        assert cli.datamodule.image_size == 128 and cli.datamodule.rays_per_object == 128
        assert cli.datamodule.batch_size == 4 and cli.model.hparams.lr == 1e-4
        assert (cli.model.net.n_coarse, cli.model.net.n_fine, cli.model.net.n_fine_depth) == (64, 16, 16)
        assert cli.model.hparams.bbox_steps == 100_000
        assert cli.model.net.d_hidden == 512 and cli.model.net.encoder.out_channels == 512
        assert type(teacher).__name__ == "DinoTeacher"
    else:
        assert type(teacher).__name__ == "EfficientNetLite0Teacher" and teacher.feature_dim == 152


@pytest.mark.parametrize("config", TEACHER_CONFIGS, ids=lambda p: p.name)
def test_teacher_configs_compose(config):
    """``--config configs/toy_cars.yaml --config configs/teachers/X.yaml`` swaps only the teacher."""
    import inspect

    import yaml

    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.lightning_cli import FeatureNeRFCLI
    from featurenerf.module import FeatureNeRF
    from featurenerf.teachers import TEACHERS

    class ParseOnly(FeatureNeRFCLI):  # parse, build nothing (DINO/SD weights live on users' disks)
        def before_instantiate_classes(self):
            pass

        def instantiate_classes(self):
            pass

        def after_instantiate_classes(self):
            pass

    spec = yaml.safe_load(config.read_text())["data"]["teacher"]
    cli = ParseOnly(
        FeatureNeRF,
        FeatureNeRFData,
        args=["--config", str(REPO / "configs" / "toy_cars.yaml"), "--config", str(config)],
        run=False,
    )
    parsed = cli.config.data.teacher
    cls = TEACHERS.get(spec["class_path"])  # the config names the teacher by its registry name
    assert parsed.class_path == f"{cls.__module__}.{cls.__qualname__}"
    kwargs = spec.get("init_args") or {}
    assert {k: parsed.init_args[k] for k in kwargs} == kwargs
    assert cli.config.data.image_size == 64  # the rest of the toy config is kept
    inspect.signature(cls).bind(**kwargs)  # every key is a constructor argument


def test_missing_data_root_is_one_clear_line(tmp_path, capsys):
    rc = main(tiny_fit_args(tmp_path / "nowhere", tmp_path / "runs", "--trainer.max_steps=1"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "nowhere" in err[0] and "featurenerf data synth" in err[0]


def test_fast_dev_run_fit(toy_root, tmp_path):
    runs = tmp_path / "runs"
    assert main(tiny_fit_args(toy_root, runs, "--trainer.fast_dev_run=true")) == 0
    (run,) = [p for p in runs.iterdir() if (p / "config.yaml").exists()]
    assert "featurenerf.teachers.efficientnet.EfficientNetLite0Teacher" in (run / "config.yaml").read_text()
    assert any((runs / "cache").rglob("*.safetensors"))  # the teacher cache was filled on first fit


@pytest.fixture(scope="module")
def trained_run(toy_root, tmp_path_factory):
    """Two real optimisation steps with checkpoints, in a runs folder of its own."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(tiny_fit_args(toy_root, runs, "--trainer.max_steps=2", "--run_name=tiny")) == 0
    return runs / "tiny"


def test_fit_writes_config_and_checkpoint(trained_run):
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["feature_dim"] == 152  # efficientnet_lite0's width, linked
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])
    assert (trained_run / "config.yaml").exists()
    # the sampling jitter and the rays are seeded: the saved model differs from its initialisation
    from featurenerf.module import FeatureNeRF

    init = FeatureNeRF(**{k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")})
    w0 = init.net.mlp.lin_in.weight
    assert not torch.equal(w0, ckpt["state_dict"]["net.mlp.lin_in.weight"])


def test_validate_without_config_takes_the_latest_run(trained_run, monkeypatch, capsys):
    monkeypatch.chdir(trained_run.parent.parent)
    link = Path("outputs/runs")
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(trained_run.parent, target_is_directory=True)
    assert main(["validate", "--trainer.enable_progress_bar=false"]) == 0
    captured = capsys.readouterr()
    assert "config.yaml" in captured.err and "last.ckpt" in captured.err and "latest run" in captured.err
    assert "val/psnr" in captured.out


def test_validate_naming_tasks_evaluates_every_pair_and_says_how_long(trained_run, monkeypatch, capsys):
    # As a user types it: the latest run's fit config caps validation at limit_val_batches 6, which must
    # not cap the task loops (8 pairs here: 4 cross-instance + 4 cross-view).
    monkeypatch.chdir(trained_run.parent.parent)
    link = Path("outputs/runs")
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(trained_run.parent, target_is_directory=True)
    assert "limit_val_batches: 6" in (trained_run / "config.yaml").read_text()
    args = ["validate", "--task", "part_seg_2d", "--tasks.num_pairs", "4", "--tasks.split", "train"]
    assert main([*args, "--trainer.enable_progress_bar=false"]) == 0
    captured = capsys.readouterr()
    assert "evaluating every pair (the config's trainer.limit_val_batches 6 is for fit" in captured.err
    assert re.search(r"^validate: finished in \d", captured.err, re.M), captured.err
    # progress lines (stdout is not a terminal), each with the time the task has taken so far
    assert re.search(r"^validation part_seg_2d: 8/8 batches \(\d+\.\d s\)$", captured.out, re.M), captured.out
    results = (trained_run / "tasks" / "results.md").read_text()
    assert "4 cross-instance and 4 cross-view pairs" in results and "limit_val_batches" not in results

    # Typed on the command line, the cap holds (and the results say so).
    assert main([*args, "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=3"]) == 0
    assert "only 3 of 8 pairs" in (trained_run / "tasks" / "results.md").read_text()


def test_checkpoint_from_another_teacher_width_is_refused(trained_run, capsys):
    rc = main(
        [
            "validate",
            "--config",
            str(trained_run / "config.yaml"),
            "--ckpt_path",
            str(trained_run / "checkpoints" / "last.ckpt"),
            f"--data.teacher={TINY_DINO}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "feature width 152" in err[0] and "24" in err[0]


def test_an_integer_limit_of_one_batch_is_a_cap():
    """``limit_val_batches: 1`` (one batch) in a run's config is dropped by a task validate like any
    other cap; only the fraction ``1.0`` (all batches) or no limit leaves nothing to drop."""
    from featurenerf.lightning_cli import caps_val_batches

    assert caps_val_batches(1) and caps_val_batches(6) and caps_val_batches(0.5)
    assert not caps_val_batches(1.0) and not caps_val_batches(None)


def test_output_piped_to_a_reader_that_stops_is_not_a_traceback() -> None:
    """``featurenerf results --dry-run | head -1`` used to end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    # 40 seeds print over 64 KB, more than a pipe holds: the writes after `head` exits must fail.
    seeds = " ".join(map(str, range(40)))
    run = subprocess.run(
        f"'{sys.executable}' -m featurenerf.cli results --dry-run --seeds {seeds} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.stdout.startswith("python -m featurenerf.results.prepare") and run.stdout.count("\n") == 1
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr
