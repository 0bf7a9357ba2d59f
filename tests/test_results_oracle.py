"""The ``parts_oracle`` diagnostic in the results study: planned once, reported in its own table."""

from pathlib import Path

from featurenerf.results.bootstrap import Interval
from featurenerf.results.plan import CATEGORIES, ORACLE, Budget, make_plan
from featurenerf.results.report import oracle_section, row_methods, table


def test_oracle_is_planned_once_for_the_first_category_and_seed(tmp_path: Path) -> None:
    cats = [CATEGORIES["toy_cars"], CATEGORIES["toy_chairs"]]
    jobs = make_plan(cats, Budget(steps=3, seeds=(0, 1), pairs=3), tmp_path)
    oracle = [j for j in jobs if j.variant == ORACLE]
    assert [(j.kind, j.category, j.seed) for j in oracle] == [("fit", "toy_cars", 0), ("eval", "toy_cars", 0)]
    fit, ev = oracle
    assert fit.argv[fit.argv.index("--data.teacher") + 1] == "parts_oracle"
    assert ev.argv[ev.argv.index("--tasks.methods") + 1] == "[featurenerf, featurenerf_v, teacher_2d]"
    tasks = ev.argv[ev.argv.index("--task") + 1 : ev.argv.index("--tasks.num_pairs")]
    assert tasks == ["part_seg_2d", "part_seg_3d"]
    # Read part by part; its done-spec says so (a finished oracle evaluation without it is redone).
    assert ev.argv[ev.argv.index("--tasks.per_part") + 1] == "true" and ev.spec["per_part"] is True
    others = [j for j in jobs if j.kind == "eval" and j.variant != ORACLE]
    assert others and not any("--tasks.per_part" in j.argv or "per_part" in j.spec for j in others)
    # The distillation-free baselines and the 2D teacher are not recomputed for the oracle.
    assert row_methods(ORACLE, "featurenerf_v") == "parts_oracle:featurenerf_v"


def _ci(mean: float) -> Interval:
    return Interval(mean=mean, lo=mean - 0.02, hi=mean + 0.02, pairs=10, seeds=1)


def test_oracle_section_tables_its_columns_and_checks_the_80_percent_target() -> None:
    stats = {
        "part_seg_3d": {
            "cross_inst/mIoU": {"featurenerf": _ci(0.5), f"{ORACLE}:featurenerf_v": _ci(0.85)},
            "cross_view/mIoU": {f"{ORACLE}:featurenerf_v": _ci(0.6), f"{ORACLE}:featurenerf": _ci(0.7)},
        },
        "keypoints_3d": {"cross_inst/PCK@0.1": {"featurenerf": _ci(0.3)}},
    }
    lines, checks = oracle_section(stats)
    assert lines[0] == "| task / metric | parts_oracle:featurenerf | parts_oracle:featurenerf_v |"
    # Its per-part rows are in its own table only: the category table leaves out rows none of its
    # columns measured.
    stats["part_seg_3d"]["cross_inst/IoU/wheel"] = {f"{ORACLE}:featurenerf_v": _ci(0.11)}
    assert "| part_seg_3d / cross_inst/IoU/wheel | – | 11.0 [9.0, 13.0] |" in oracle_section(stats)[0]
    assert "IoU/wheel" not in table(stats) and "| part_seg_3d / cross_inst/mIoU | 50.0" in table(stats)
    del stats["part_seg_3d"]["cross_inst/IoU/wheel"]
    assert len(lines) == 4  # header, rule, two part_seg_3d rows; the keypoint row has no oracle column
    assert "85.0 [83.0, 87.0]" in lines[2]
    assert [c["met"] for c in checks] == [True, False]
    assert oracle_section({"part_seg_3d": {"cross_inst/mIoU": {"featurenerf": _ci(0.5)}}}) == ([], [])


def test_variants_choose_the_fits_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    """``--variants`` trains only the named variants (the pointwise-L_coord one only when asked for); the
    oracle comes with ``featurenerf``; the untrained row and the CLI refuse nothing else."""
    import pytest

    from featurenerf.results.cli import main
    from featurenerf.results.plan import DEFAULT_VARIANTS

    cars = [CATEGORIES["toy_cars"]]
    default = make_plan(cars, Budget(steps=3, seeds=(0,), pairs=3), tmp_path)
    fits = {j.variant for j in default if j.kind == "fit"}
    assert fits == {*DEFAULT_VARIANTS, ORACLE}
    two = make_plan(
        cars, Budget(steps=3, seeds=(0,), pairs=3, variants=("pixelnerf", "featurenerf_pointwise")), tmp_path
    )
    fits = [j for j in two if j.kind == "fit"]
    assert [j.variant for j in fits] == ["pixelnerf", "featurenerf_pointwise"]
    pw = fits[1].argv
    assert pw[pw.index("--model.coord_loss") + 1] == "pointwise"
    assert {j.variant for j in two if j.kind == "eval"} == {"pixelnerf", "featurenerf_pointwise", "untrained"}
    assert row_methods("featurenerf_pointwise", "featurenerf") == "featurenerf_pointwise"
    with pytest.raises(ValueError, match="variants: unknown"):
        Budget(variants=("featurenerf_mystery",))
    with pytest.raises(SystemExit):
        main(["--variants", "featurenerf_mystery", "--dry-run"])


def test_variants_trained_with_l_coord_also_measure_the_coordinate_head(tmp_path: Path) -> None:
    """``canonical_coords`` is evaluated for featurenerf and featurenerf_pointwise only; the other
    evaluations keep the task list (and so the done-spec) they always had, so a finished study re-runs
    only the evaluations that gain the task."""
    from featurenerf.results.plan import TASKS

    variants = ("featurenerf", "featurenerf_nocoord", "pixelnerf", "featurenerf_pointwise")
    jobs = make_plan(
        [CATEGORIES["toy_cars"]], Budget(steps=3, seeds=(0,), pairs=3, variants=variants), tmp_path
    )
    evals = {j.variant: j for j in jobs if j.kind == "eval"}
    for variant, job in evals.items():
        tasks = job.argv[job.argv.index("--task") + 1 : job.argv.index("--tasks.num_pairs")]
        assert ("canonical_coords" in tasks) == (variant in ("featurenerf", "featurenerf_pointwise")), variant
        assert job.spec["tasks"] == (tasks if variant != "untrained" else list(TASKS)), variant
    assert evals["pixelnerf"].spec == {"pairs": 3, "pair_seed": 0, "tasks": list(TASKS)}


def test_no_oracle_plans_neither_its_fit_nor_its_evaluation(tmp_path: Path, capsys) -> None:
    from featurenerf.results.cli import main

    cars = [CATEGORIES["toy_cars"]]
    jobs = make_plan(cars, Budget(steps=3, seeds=(0,), pairs=3, oracle=False), tmp_path)
    assert not [j for j in jobs if j.variant == ORACLE]
    assert {j.variant for j in jobs if j.kind == "fit"} == {"featurenerf", "featurenerf_nocoord", "pixelnerf"}
    common = ["--out", str(tmp_path / "o"), "--docs", str(tmp_path / "d"), "--categories", "toy_cars"]
    assert main([*common, "--seeds", "0", "1", "--dry-run"]) == 0
    assert "parts_oracle" in capsys.readouterr().out
    assert main([*common, "--seeds", "0", "1", "--no-oracle", "--dry-run"]) == 0
    assert "parts_oracle" not in capsys.readouterr().out


def test_a_missed_oracle_check_points_to_what_was_tried_and_a_met_one_does_not() -> None:
    from featurenerf.results.report import ORACLE_MISS_NOTE, _category_section

    def section(value: float) -> str:
        stats = {
            "part_seg_3d": {
                "cross_inst/mIoU": {"featurenerf": _ci(0.5), f"{ORACLE}:featurenerf_v": _ci(0.9)},
                "cross_view/mIoU": {"featurenerf": _ci(0.5), f"{ORACLE}:featurenerf_v": _ci(value)},
            }
        }
        return "\n".join(_category_section("toy_cars", stats, {}, [], {})[0])

    missed, met = section(0.6), section(0.85)
    assert "- NOT met: part_seg_3d / cross_view/mIoU >= 80% (oracle, featurenerf_v)" in missed
    assert f"- {ORACLE_MISS_NOTE}" in missed and "`docs/oracle.md`" in ORACLE_MISS_NOTE
    assert "- met: part_seg_3d / cross_view/mIoU >= 80% (oracle, featurenerf_v)" in met
    assert ORACLE_MISS_NOTE not in met
