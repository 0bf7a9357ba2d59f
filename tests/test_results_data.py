"""The study's data: made with the options it asks for, refused when made otherwise, and named in the report."""

from dataclasses import replace
from pathlib import Path

from featurenerf.data.synth import generate_dataset
from featurenerf.results.plan import CATEGORIES, Budget, make_plan
from featurenerf.results.provenance import data_versions, loss_weights, weights_line


def test_data_line_reads_each_categorys_record_not_the_studys_settings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Cars made with both non-default options and another size than the study's; chairs never made.
    generate_dataset(
        "toycar", data / "toy_cars", objects=2, views=2, size=16, seed=3, progress=False,
        split_fractions=(0.5, 0.0, 0.5), style="front_back", train_cameras="per_object",
    )  # fmt: skip
    cats = [replace(c, root=data / c.root.name) for c in (CATEGORIES["toy_cars"], CATEGORIES["toy_chairs"])]
    jobs = make_plan(cats, Budget(steps=3, seeds=(0, 1), pairs=3), tmp_path / "out")
    assert data_versions(jobs) == {
        "toy_cars": "version 2, 2 objects × 2 views × 16 px, seed 3, --style front_back, "
        "--train-cameras per_object",
        "toy_chairs": None,
    }


def test_loss_weights_are_read_from_each_fits_saved_config(tmp_path: Path) -> None:
    """The report names the weights the fits were trained with (their ``config.yaml``), not the study's
    options: a seed trained otherwise shows as a second setting, and a fit not run yet is left out."""
    jobs = make_plan([CATEGORIES["toy_cars"]], Budget(steps=3, seeds=(0, 1), pairs=3), tmp_path / "out")
    fits = {j.name: j for j in jobs if j.kind == "fit"}

    def save(name: str, distill: float, coord: float, teacher: object, encoder_lr: str = "null") -> None:
        run = fits[name].run_dir
        run.mkdir(parents=True)
        model = f"model:\n  rgb_weight: 1.0\n  distill_weight: {distill}\n  coord_weight: {coord}\n"
        rates = f"  lr: 0.001\n  encoder_lr: {encoder_lr}\n"
        (run / "config.yaml").write_text(model + "  coord_loss: release\n" + rates + "data:\n" + teacher)

    save("fit-toy_cars-featurenerf-s0", 2.0, 0.25, "  teacher: efficientnet_lite0\n", "0.002")
    save("fit-toy_cars-featurenerf-s1", 0.25, 0.25, "  teacher: efficientnet_lite0\n")
    save("fit-toy_cars-pixelnerf-s0", 0.0, 0.0, "  teacher:\n    class_path: a.b.PartsOracle\n")
    weights = loss_weights(jobs)
    assert weights == {
        "featurenerf": [
            {"rgb_weight": 1.0, "distill_weight": 2.0, "coord_weight": 0.25, "coord_loss": "release",
             "lr": 0.001, "encoder_lr": 0.002, "teacher": "efficientnet_lite0"},
            {"rgb_weight": 1.0, "distill_weight": 0.25, "coord_weight": 0.25, "coord_loss": "release",
             "lr": 0.001, "teacher": "efficientnet_lite0"},
        ],
        "pixelnerf": [
            {"rgb_weight": 1.0, "distill_weight": 0.0, "coord_weight": 0.0, "coord_loss": "release",
             "lr": 0.001, "teacher": "PartsOracle"},
        ],
    }  # fmt: skip
    assert weights_line(weights) == (
        "- loss weights and learning rates (each fit's saved `config.yaml`): featurenerf: rgb 1.0, "
        "distill 2.0, coord 0.25 (release), lr 0.001, encoder lr 0.002, teacher efficientnet_lite0 | "
        "rgb 1.0, distill 0.25, coord 0.25 (release), lr 0.001, teacher efficientnet_lite0; "
        "pixelnerf: rgb 1.0, distill 0.0, coord 0.0, lr 0.001, teacher PartsOracle"
    )


def test_prepare_makes_the_asked_data_and_refuses_data_made_otherwise(tmp_path: Path, capsys) -> None:
    from featurenerf.data.synth.generate import recorded_options
    from featurenerf.results.prepare import synth_if_missing

    root = tmp_path / "toy_cars"
    assert synth_if_missing("toycar", root, 2, 2, 16, "front_back", "per_object") == 0
    assert recorded_options(root) == {"style": "front_back", "train_cameras": "per_object"}
    capsys.readouterr()
    # Found again with the same options: used as it is; with others: one line naming the record.
    assert synth_if_missing("toycar", root, 5, 5, 16, "front_back", "per_object") == 0
    assert "exists, not regenerated" in capsys.readouterr().out
    assert synth_if_missing("toycar", root, 2, 2, 16) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"prepare: error: {root / 'synth.json'}: made with --style front_back --train-cameras per_object, "
        f"the study asks for --style box --train-cameras shared; delete {root} or give another --data-dir"
    )
    assert synth_if_missing("toycar", tmp_path / "other", 2, 2, 16, "round") == 2
    assert "unknown shape style 'round'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_results_command_passes_the_data_options_to_prepare_and_checks_them(capsys) -> None:
    from featurenerf.results.cli import main

    argv = ["--dry-run", "--categories", "toy_cars", "toy_chairs", "--no-oracle"]
    assert main([*argv, "--train-cameras", "per_object", "--style", "toy_cars=front_back"]) == 0
    cars, chairs = capsys.readouterr().out.splitlines()[:2]
    assert cars.endswith("--train-cameras per_object --style front_back --device cpu")
    assert chairs.endswith("--train-cameras per_object --device cpu")  # chairs keep their own style
    assert main([*argv, "--style", "toy_chairs=front_back"]) == 2
    assert capsys.readouterr().err.strip() == (
        "featurenerf results: error: --style 'toy_chairs=front_back': toychair: unknown shape style "
        "'front_back'; expected one of default"
    )


def test_the_study_makes_its_own_data_with_per_object_views_and_the_front_back_car(capsys) -> None:
    """Defaults: ``data/study/`` (never ``make demo``'s ``data/toy_cars``), per-object training views, the
    front/back car; ``--style toy_cars=box --train-cameras shared`` gives ``data synth``'s defaults."""
    from featurenerf.results.cli import main

    argv = ["--dry-run", "--categories", "toy_cars", "toy_chairs", "--no-oracle"]
    assert main(argv) == 0
    cars, chairs = capsys.readouterr().out.splitlines()[:2]
    assert "--root data/study/toy_cars " in cars and "--root data/study/toy_chairs " in chairs
    assert cars.endswith("--train-cameras per_object --style front_back --device cpu")
    assert chairs.endswith("--train-cameras per_object --device cpu")
    assert main([*argv, "--style", "toy_cars=box", "--train-cameras", "shared", "--data-dir", "data"]) == 0
    cars, chairs = capsys.readouterr().out.splitlines()[:2]
    assert "--root data/toy_cars " in cars
    assert cars.endswith("--train-cameras shared --style box --device cpu")
    assert chairs.endswith("--train-cameras shared --device cpu")


def test_non_default_data_options_join_the_prepare_marker_spec_default_ones_do_not(tmp_path: Path) -> None:
    cats = [CATEGORIES["toy_cars"]]
    plain = make_plan(cats, Budget(steps=3, pairs=3), tmp_path)[0]
    asked = make_plan(cats, Budget(steps=3, pairs=3, styles=(("toy_cars", "front_back"),)), tmp_path)[0]
    assert plain.spec == {"config": "configs/toy_cars.yaml", "root": "data/study/toy_cars", "extra": []}
    assert asked.spec == {**plain.spec, "style": "front_back"}


def test_a_variants_own_overrides_win_over_the_studys_extra_ones(tmp_path: Path) -> None:
    """``--model.distill_weight 1.0`` passed to the study reaches the distilling variants, never the
    ``pixelnerf`` baseline (its weight 0 comes after), nor ``featurenerf_nocoord``'s coordinate weight."""
    extra = ("--model.distill_weight", "1.0", "--model.coord_weight", "0.5")
    jobs = make_plan([CATEGORIES["toy_cars"]], Budget(steps=3, seeds=(0,), pairs=3, extra=extra), tmp_path)
    fits = {j.name: j.argv for j in jobs if j.kind == "fit"}

    def last(argv: list[str], key: str) -> str:
        return argv[len(argv) - 1 - argv[::-1].index(key) + 1]

    assert last(fits["fit-toy_cars-featurenerf-s0"], "--model.distill_weight") == "1.0"
    assert last(fits["fit-toy_cars-featurenerf-s0"], "--model.coord_weight") == "0.5"
    assert last(fits["fit-toy_cars-pixelnerf-s0"], "--model.distill_weight") == "0"
    assert last(fits["fit-toy_cars-pixelnerf-s0"], "--model.coord_weight") == "0"
    assert last(fits["fit-toy_cars-featurenerf_nocoord-s0"], "--model.coord_weight") == "0"
    assert last(fits["fit-toy_cars-featurenerf_nocoord-s0"], "--model.distill_weight") == "1.0"


def test_task_pairs_reach_each_evaluation_and_make_earlier_ones_stale(tmp_path: Path) -> None:
    """``--task-pairs``: the plan passes each evaluation the counts of the tasks it runs (the oracle has no
    keypoint task), records them in the evaluation's spec, and the first seed alone computes the
    seed-free baselines."""
    import pytest

    from featurenerf.results.cli import TASK_PAIRS, _task_pairs

    assert _task_pairs(None) == TASK_PAIRS
    assert _task_pairs(["none", "part_seg_3d=7"]) == (("part_seg_3d", 7),)
    assert _task_pairs(["keypoints_3d=0"]) == tuple(p for p in TASK_PAIRS if p[0] != "keypoints_3d")
    assert "expected TASK=N" in _task_pairs(["part_seg=4"])
    with pytest.raises(ValueError, match="task_pairs"):
        Budget(task_pairs=(("nope", 4),))

    budget = Budget(steps=3, seeds=(0, 1), pairs=3, task_pairs=(("part_seg_3d", 5), ("keypoints_3d", 3)))
    jobs = {j.name: j for j in make_plan([CATEGORIES["toy_cars"]], budget, tmp_path) if j.kind == "eval"}

    def option(job: str, name: str) -> str | None:
        argv = jobs[job].argv
        return argv[argv.index(name) + 1] if name in argv else None

    # keypoints_3d asks for --pairs: no option of its own
    assert option("eval-toy_cars-featurenerf-s0", "--tasks.task_pairs") == "{part_seg_3d: 5}"
    assert option("eval-toy_cars-parts_oracle-s0", "--tasks.task_pairs") == "{part_seg_3d: 5}"
    assert all(j.spec["task_pairs"] == {"part_seg_3d": 5} for j in jobs.values())
    plain = make_plan([CATEGORIES["toy_cars"]], replace(budget, task_pairs=()), tmp_path)
    assert all("task_pairs" not in j.spec and "--tasks.task_pairs" not in j.argv for j in plain)
    assert "teacher_2d" in option("eval-toy_cars-featurenerf-s0", "--tasks.methods")
    assert option("eval-toy_cars-featurenerf-s1", "--tasks.methods") == "[featurenerf, featurenerf_v]"


def test_evaluations_start_longest_first(tmp_path: Path) -> None:
    """Once the fits are done the evaluations run two at a time: the four-method ``featurenerf`` ones
    first, the untrained model's and the oracle's (fewer tasks) last, so the study's tail is short."""
    cats = [CATEGORIES["toy_cars"], CATEGORIES["toy_chairs"]]
    jobs = make_plan(cats, Budget(steps=3, seeds=(0, 1), pairs=3), tmp_path)
    kinds = [j.kind for j in jobs]
    assert kinds.index("eval") > max(i for i, k in enumerate(kinds) if k == "fit")
    variants = [j.variant for j in jobs if j.kind == "eval"]
    assert variants == sorted(
        variants,
        key=lambda v: ["featurenerf", "pixelnerf", "featurenerf_nocoord", "untrained", "parts_oracle"].index(
            v
        ),
    )
    assert variants[:4] == ["featurenerf"] * 4 and variants[-1] == "parts_oracle"


def test_the_untrained_model_is_evaluated_at_the_first_seed_only(tmp_path: Path) -> None:
    """The chance row is one random initialisation (the first seed's), whatever the seeds; the trained
    variants keep every seed. The report's budget line says so."""
    from featurenerf.results.report import _budget_lines

    cats = [CATEGORIES["toy_cars"], CATEGORIES["toy_chairs"]]
    budget = Budget(steps=3, seeds=(4, 1, 7), pairs=3)
    evals = [j for j in make_plan(cats, budget, tmp_path) if j.kind == "eval"]
    chance = sorted((j.category, j.seed) for j in evals if j.variant == "untrained")
    assert chance == [("toy_cars", 4), ("toy_chairs", 4)]
    assert all(
        j.run_dir == tmp_path / "runs" / f"{j.category}-untrained-s4" / "eval"
        for j in evals
        if j.variant == "untrained"
    )
    pixelnerf = sorted((j.category, j.seed) for j in evals if j.variant == "pixelnerf")
    assert pixelnerf == [(c, s) for c in ("toy_cars", "toy_chairs") for s in (1, 4, 7)]
    lines = _budget_lines(budget, {"per_job": {}}, None)
    assert "seeds 4, 1, 7 (`seed_everything`); `untrained`: seed 4 only (a chance reference)" in lines[0]
