"""The study report says how each category's data was made, from the data's own ``synth.json``."""

from dataclasses import replace
from pathlib import Path

from featurenerf.data.synth import generate_dataset
from featurenerf.results.plan import CATEGORIES, Budget, make_plan
from featurenerf.results.report import data_versions


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
