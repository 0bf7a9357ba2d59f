"""``featurenerf results`` end to end at tiny scale: every row with an interval in results.md, the JSON
beside it, and a second invocation that trains and evaluates nothing again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TINY_MODEL = {
    "encoder_layers": 1,
    "d_hidden": 16,
    "n_blocks": 1,
    "n_inject": 1,
    "combine_layer": 1,
    "n_coarse": 4,
    "n_fine": 2,
    "n_fine_depth": 2,
    "scene_radius": 0.8,
    "chunk": 4096,
    "lr": 1.0e-3,
    "bbox_steps": 1,
}
#: The study's ``--task-pairs`` (below): the 3D part task on 5 pairs of each kind, the others on 3.
TASK_PAIRS = (("part_seg_3d", 5),)
TEACHER_MODULE = '''
import torch
import torch.nn.functional as F
from featurenerf.teachers import Teacher


class PoolTeacher(Teacher):
    """4x4 average pool, 3 -> 4 channels (a fixed projection): a teacher that costs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(12.0).view(4, 3, 1, 1) / 6 - 1.0)
            self.proj.bias.zero_()

    feature_dim = property(lambda self: 4)
    stride = property(lambda self: 4)
    input_size = property(lambda self: None)
    mean = property(lambda self: (0.5, 0.5, 0.5))
    std = property(lambda self: (0.5, 0.5, 0.5))
    weights_source = property(lambda self: "test")

    def cache_fields(self):
        return {}

    def extract(self, images):
        return self.proj(F.avg_pool2d(images, 4))
'''


def _config(path: Path) -> Path:
    lines = [
        "seed_everything: 0",
        "trainer:",
        "  accelerator: cpu",
        "  devices: 1",
        "  max_steps: 1000",
        '  max_time: "00:00:10:00"',
        "  enable_model_summary: false",
        "  num_sanity_val_steps: 0",
        "model:",
        *[f"  {k}: {v}" for k, v in TINY_MODEL.items()],
        "data:",
        "  root: unused",
        "  image_size: 32",
        "  teacher: tinyteacher.PoolTeacher",
        "  rays_per_object: 16",
        "  batch_size: 2",
        "  epoch_length: 4",
        "  val_objects: 1",
        "  val_views: 1",
        "  num_workers: 0",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """One tiny study (toy cars only, seeds 0 and 1, 3 steps, 3 pairs), run twice in a clean folder."""
    import os
    import subprocess

    from featurenerf.data.synth import generate_dataset

    work = tmp_path_factory.mktemp("study")
    # The study's data options (per-object training views, the front/back car): other data is refused.
    generate_dataset(
        "toycar", work / "data" / "toy_cars", objects=5, views=3, size=32, seed=0,
        split_fractions=(0.4, 0.2, 0.4), progress=False, train_cameras="per_object", style="front_back",
    )  # fmt: skip
    _config(work / "configs" / "toy_cars.yaml")
    (work / "tinyteacher.py").write_text(TEACHER_MODULE)
    argv = [sys.executable, "-m", "featurenerf.results", "--categories", "toy_cars", "--seeds", "0", "1"]
    argv += ["--steps", "3", "--pairs", "3", "--val-objects", "1", "--jobs", "2", "--replicates", "200"]
    # The default task counts cleared, one task with its own count (TASK_PAIRS).
    argv += ["--task-pairs", "none", "part_seg_3d=5"]
    argv += ["--config-dir", "configs", "--data-dir", "data", "--out", "out", "--docs", "docs"]
    env = dict(os.environ, PYTHONPATH=str(work), OMP_NUM_THREADS="1")
    first = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    md_first = (work / "docs" / "results.md").read_text()
    logs = {p.name: p.stat().st_mtime for p in (work / "out" / "logs").glob("*.log")}
    second = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"work": work, "first": first, "second": second, "md_first": md_first, "logs": logs}


def test_results_md_has_every_row_with_an_interval(study):
    md = (study["work"] / "docs" / "results.md").read_text()
    header = "| task / metric | featurenerf | featurenerf_v | featurenerf_nocoord | pixelnerf | teacher_2d | untrained | copy_input |"
    assert header in md
    # The study's table: the rows right under its header (the oracle's own table follows further down).
    lines = md.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        rows.append(line)
    names = {line.split(" | ")[0][2:] for line in rows}
    for task, metrics in {
        "part_seg_2d": ["mIoU"],
        "part_seg_3d": ["mIoU"],
        "keypoints_2d": ["PCK@2.5", "PCK@10"],
        "keypoints_3d": ["PCK@0.025", "PCK@0.1"],
    }.items():
        for kind in ("cross_inst", "cross_view"):
            for metric in metrics:
                assert f"{task} / {kind}/{metric}" in names
    assert "novel_view / cross_view/PSNR" in names and "novel_view / cross_view/SSIM" in names
    # Which generator made the data: figures of different toy-car versions are not comparable.
    assert "; toy_cars: data synth version 2, 5 objects × 3 views × 32 px, seed 0" in md
    for metric in ("err", "R2", "R2_z", "acc@0.1", "drift"):
        assert f"canonical_coords / cross_view/{metric}" in names
    # The parts_oracle diagnostic has its own table and its 80 % check, both kinds of pair.
    assert "the `parts_oracle` check" in md and "| task / metric | parts_oracle:featurenerf |" in md
    assert md.count("part_seg_3d / cross_inst/mIoU >= 80%") == 1
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        label_transfer = "novel_view" not in line
        # Label-transfer rows: every method but copy_input has "mean [lo, hi]"; novel views: the trained
        # fields and copy_input (the untrained model's novel views are not evaluated); the coordinate
        # head: featurenerf alone (the only variant here trained with L_coord).
        want = [0, 1, 2, 3, 4, 5] if label_transfer else [0, 2, 3, 6]
        if line.startswith("| canonical_coords /"):
            want = [0]
            assert all(c == "–" for c in cells[1:]), line
        if "keypoints_2d / cross_inst" in line and all(cells[i] == "–" for i in want):
            continue  # at 32 px no keypoint may be visible on both objects: no pair counted, for any method
        for i in want:
            assert "[" in cells[i] and "]" in cells[i], line
    with_intervals = [line for line in rows if line.count("[") >= 4]
    assert len(with_intervals) >= len(rows) - 4 - sum(
        line.startswith("| canonical_coords /") for line in rows
    )
    assert "Targets met:" in md and "seeds 0, 1" in md and "3 cross-instance and 3 cross-view" in md
    assert "featurenerf fit --config configs/toy_cars.yaml" in md and "--model.coord_weight 0" in md


def data_md(study: dict) -> str:
    return (study["work"] / "docs" / "results.md").read_text()


def test_results_json_keeps_per_pair_values_and_intervals(study):
    data = json.loads((study["work"] / "docs" / "results.json").read_text())
    table = data["categories"]["toy_cars"]["table"]
    ci = table["part_seg_3d"]["cross_inst/mIoU"]["featurenerf"]
    assert ci["seeds"] == 2 and ci["lo"] <= ci["mean"] <= ci["hi"]
    per_seed = data["per_pair"]["toy_cars"]["part_seg_3d"]["cross_inst/mIoU"]["featurenerf"]
    assert set(per_seed) == {"0", "1"} and all(3 < len(v) <= 5 for v in per_seed.values())
    in_2d = data["per_pair"]["toy_cars"]["part_seg_2d"]["cross_inst/mIoU"]["featurenerf"]
    assert all(len(v) <= 3 for v in in_2d.values())  # --task-pairs part_seg_3d=5: the 2D task keeps 3
    assert "part_seg_3d: 5 of each (a task's first 3 are the other tasks' pairs)" in data_md(study)
    # teacher_2d does not depend on the training seed: only seed 0's evaluation computes it, and both
    # seeds get its per-pair values (the paired differences cover both seeds).
    teacher = data["per_pair"]["toy_cars"]["part_seg_2d"]["cross_inst/mIoU"]["teacher_2d"]
    assert teacher["0"] == teacher["1"]
    runs = study["work"] / "out" / "runs"
    for seed, has in ((0, True), (1, False)):
        per_pair = json.loads(
            (runs / f"toy_cars-featurenerf-s{seed}" / "tasks" / "per_pair.json").read_text()
        )
        assert ("teacher_2d" in per_pair["tasks"]["part_seg_2d"]) is has
    assert data["budget"]["steps"] == 3 and data["bootstrap"]["replicates"] == 200
    assert data["wall_times"]["per_job"]["fit-toy_cars-pixelnerf-s1"] > 0
    # Each per-pair list keeps the indices of its pairs, and the paired differences are computed on them.
    pair_ids = data["pair_ids"]["toy_cars"]["part_seg_3d"]["cross_inst"]["featurenerf"]
    assert {s: len(v) for s, v in pair_ids.items()} == {s: len(v) for s, v in per_seed.items()}
    paired = data["categories"]["toy_cars"]["paired"]["part_seg_3d / cross_inst/mIoU"]["pixelnerf"]
    pixel = data["per_pair"]["toy_cars"]["part_seg_3d"]["cross_inst/mIoU"]["pixelnerf"]
    mean_diff = (
        sum(sum(per_seed[s]) / len(per_seed[s]) - sum(pixel[s]) / len(pixel[s]) for s in ("0", "1")) / 2
    )  # every pair is finite here, so the paired mean is the difference of the means
    assert paired["mean"] == pytest.approx(mean_diff) and paired["seeds"] == 2
    md = (study["work"] / "docs" / "results.md").read_text()
    assert "### toy_cars: paired differences" in md and "| featurenerf minus | pixelnerf |" in md
    digests = data["digests"]["toy_cars"]
    assert len(digests["pairs"]) == 64 and len(digests["test_data"]) == 64
    # Every evaluation recorded what its fields were rendered in (auto: bf16 on a bf16 CPU), and the
    # budget says so in one line.
    evals = [k for k in data["wall_times"]["per_job"] if k.startswith("eval-")]
    precisions = data["render_precisions"]
    assert set(precisions) <= {"32", "bf16"} and sum(precisions.values()) == len(evals)
    words = {"32": "float32", "bf16": "bf16 autocast"}
    listed = ", ".join(f"{words[k]} in {n}" for k, n in sorted(precisions.items()))
    assert f"- evaluation renders: {listed} of {len(evals)} evaluation(s)" in md
    # Each variant's loss weights as its fits' saved configs record them (the baseline's are zero).
    weights = data["loss_weights"]
    assert weights["pixelnerf"] == [
        {"rgb_weight": 1.0, "distill_weight": 0.0, "coord_weight": 0.0, "coord_loss": "release",
         "lr": TINY_MODEL["lr"], "teacher": "PoolTeacher"}
    ]  # fmt: skip
    assert [(w["distill_weight"], w["coord_weight"]) for w in weights["featurenerf_nocoord"]] == [(0.25, 0.0)]
    assert (
        f"featurenerf: rgb 1.0, distill 0.25, coord 0.25 (release), lr {TINY_MODEL['lr']}, teacher PoolTeacher;"
        in md
    )


def test_compare_of_a_study_with_itself_finds_no_difference(study, capsys):
    from featurenerf.cli import main

    report = str(study["work"] / "docs" / "results.json")
    assert main(["results", "compare", report, report, "--replicates", "50"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| part_seg_3d")]
    assert rows and all(cell.strip() == "+0.0 [+0.0, +0.0]" for row in rows for cell in row.split("|")[2:-1])


def test_second_invocation_trains_and_evaluates_nothing(study):
    out = study["second"].stdout
    assert "start" not in out  # every job was skipped
    logs = {p.name: p.stat().st_mtime for p in (study["work"] / "out" / "logs").glob("*.log")}
    assert logs == study["logs"]
    # Same per-pair values, same bootstrap seed: the same table.
    table = lambda md: [line for line in md.splitlines() if line.startswith("| ")]  # noqa: E731
    assert table((study["work"] / "docs" / "results.md").read_text()) == table(study["md_first"])


def test_killed_fit_resumes_from_its_checkpoint(study, tmp_path):
    from featurenerf.results.plan import CATEGORIES, Budget, make_plan
    from featurenerf.results.runner import fit_state, is_done, launch_argv

    work = study["work"]
    jobs = make_plan(
        [CATEGORIES["toy_cars"]], Budget(steps=3, seeds=(0,), pairs=3, task_pairs=TASK_PAIRS), work / "out"
    )
    fit = next(j for j in jobs if j.kind == "fit")
    assert is_done(fit)
    marker = fit.run_dir / "done.json"
    saved = marker.read_text()
    marker.unlink()  # as if the process had been killed after its last checkpoint
    try:
        assert fit_state(fit) == "resume"
        assert launch_argv(fit)[-2:] == ["--ckpt_path", str(fit.run_dir / "checkpoints" / "last.ckpt")]
    finally:
        marker.write_text(saved)
    longer = make_plan([CATEGORIES["toy_cars"]], Budget(steps=2, seeds=(0,), pairs=3), work / "out")
    from featurenerf.results.runner import PlanError

    with pytest.raises(PlanError, match="trained for 3 steps but --steps is 2"):
        fit_state(next(j for j in longer if j.kind == "fit"))


def test_an_evaluation_overwritten_by_a_later_validate_is_not_reused(study):
    """A ``validate`` of a study run with other tasks rewrites its ``tasks/`` folder: the study must
    notice (and re-evaluate) instead of reporting that run's values as the study's."""
    from featurenerf.results.plan import CATEGORIES, Budget, make_plan
    from featurenerf.results.runner import is_done

    work = study["work"]
    jobs = make_plan(
        [CATEGORIES["toy_cars"]], Budget(steps=3, seeds=(0, 1), pairs=3, task_pairs=TASK_PAIRS), work / "out"
    )
    evals = [j for j in jobs if j.kind == "eval"]
    assert evals and all(is_done(j) for j in evals)  # untrained evaluations too (they skip novel views)
    job = next(j for j in evals if j.variant == "featurenerf")
    per_pair = job.run_dir / "tasks" / "per_pair.json"
    saved = per_pair.read_text()
    data = json.loads(saved)
    per_pair.write_text(
        json.dumps({**data, "tasks": {"canonical_coords": data["tasks"]["canonical_coords"]}})
    )
    try:
        assert not is_done(job)
    finally:
        per_pair.write_text(saved)
    assert is_done(job)


def test_a_longer_study_on_the_same_runs_continues_the_fits_and_reevaluates_them(study):
    """``--steps`` raised on a finished study: each fit resumes from its checkpoint, and the evaluation
    of its earlier checkpoint is stale (it measured step 3), not reused as the longer study's."""
    from featurenerf.results.plan import CATEGORIES, Budget, make_plan
    from featurenerf.results.runner import fit_state, is_done

    work = study["work"]
    jobs = make_plan(
        [CATEGORIES["toy_cars"]], Budget(steps=5, seeds=(0, 1), pairs=3, task_pairs=TASK_PAIRS), work / "out"
    )
    assert {fit_state(j) for j in jobs if j.kind == "fit"} == {"resume"}
    trained = [j for j in jobs if j.kind == "eval" and j.variant != "untrained"]
    assert trained and not any(is_done(j) for j in trained)
    # The untrained model does not depend on the steps: its evaluation stays valid.
    assert all(is_done(j) for j in jobs if j.kind == "eval" and j.variant == "untrained")


def test_the_report_cites_the_last_invocation_that_ran_jobs_even_when_rewritten(study):
    """The second invocation skipped everything and ``--report-only`` runs nothing: both keep citing the
    first invocation's command and wall time rather than dropping the line or citing a no-op."""
    import os
    import subprocess

    work = study["work"]
    first_command = json.loads((work / "out" / "last_run.json").read_text())["command"]
    assert (
        first_command.startswith("featurenerf results --categories toy_cars")
        and "--report-only" not in first_command
    )
    argv = [sys.executable, "-m", "featurenerf.results", "--categories", "toy_cars", "--seeds", "0", "1"]
    argv += ["--steps", "3", "--pairs", "3", "--val-objects", "1", "--replicates", "200", "--report-only"]
    argv += ["--task-pairs", "none", "part_seg_3d=5"]
    argv += ["--config-dir", "configs", "--data-dir", "data", "--out", "out", "--docs", "docs"]
    env = dict(os.environ, PYTHONPATH=str(work), OMP_NUM_THREADS="1")
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    md = (work / "docs" / "results.md").read_text()
    line = next(
        x for x in md.splitlines() if x.startswith("- wall time of the last invocation that ran jobs")
    )
    assert line.endswith(f"min (`{first_command}`)") and float(line.split(": ")[1].split(" min")[0]) > 0
    assert "--report-only" in md.splitlines()[2]  # the rewrite itself is still named as the generator
    commands = md.split("## Commands")[1].splitlines()
    assert commands[2] == f"    {first_command}"  # but the command to rerun is the one that ran the jobs
    assert json.loads((work / "docs" / "results.json").read_text())["last_run"]["command"] == first_command
