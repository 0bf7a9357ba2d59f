"""benchmarks/run.py's plan (which sections, which rows) and train_step's compile guard, without timing."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # benchmarks/ is a folder of scripts, not a package
    import run
    import train_step

    return run, train_step


def _plan(run, argv: list[str], device: str) -> tuple[dict, dict[str, tuple]]:
    """(skipped sections, {section name: (function name, args) of the work it runs})."""
    args = run.parse_args(argv)
    sections, skipped = run.choose_sections(args, device)
    work = {}
    for name, fill in run.section_plan(args, device, sections):
        work[name] = (fill.compute.func.__name__, fill.compute.args, fill.compute.keywords)
    return skipped, work


def test_cpu_plans_quick_and_full(bench):
    run, _ = bench
    skipped, quick = _plan(run, ["--quick"], "cpu")
    assert not skipped and list(quick) == ["train toy", "render toy"]
    assert quick["train toy"][1][:3] == ("toy", ["naive", "fast", "fast_bf16"], 1)
    _, full = _plan(run, ["--no-compile", "--repeats", "3"], "cpu")
    assert list(full) == [
        "train toy",
        "train srn_cars",
        "render toy",
        "render srn_cars",
        "psnr",
        "occupancy",
        "cache",
        "data",
        "scaling",
    ]
    assert full["train srn_cars"][1] == ("srn_cars", ["naive", "reuse", "fast", "fast_bf16"], 3)
    assert "fast_compile" in _plan(run, [], "cpu")[1]["train toy"][1][1]


def test_gpu_plan_skips_cpu_only_sections_unless_named(bench):
    run, _ = bench
    skipped, work = _plan(run, [], "cuda")
    assert set(skipped) == {"psnr", "occupancy", "cache", "scaling"}
    assert list(work)[:4] == [
        "train toy (cuda)",
        "train srn_cars_x4rays (cuda)",
        "train srn_cars (cuda)",
        "train srn_cars_graph (cuda)",  # compile rows last, in their own section, beside naive and fast
    ]
    assert all(kw == {"device": "cuda"} for fn, _, kw in list(work.values())[:4])
    assert "fast_graph" not in work["train srn_cars (cuda)"][1][1]
    assert work["train srn_cars_graph (cuda)"][1][:2] == (
        "srn_cars",
        ["naive", "fast", "fast_graph"],  # on a GPU only the whole-step graph is compiled
    )
    assert "train srn_cars_graph (cuda)" not in _plan(run, ["--no-compile"], "cuda")[1]
    skipped, work = _plan(run, ["--sections", "cache"], "cuda")
    assert not skipped and list(work) == ["cache"]
    # named, the occupancy section renders the trained checkpoint on the GPU
    _, work = _plan(run, ["--sections", "occupancy", "--toy-ckpt", "x.ckpt"], "cuda")
    assert work["occupancy"][1] == ("x.ckpt", None, 1, "cuda")


def test_compile_rows_build_their_own_module_once(bench):
    """Each compile row trains its own module built with its option (the eager rows share one)."""
    _, train_step = bench
    model = dict(feature_dim=4, encoder_layers=2, d_hidden=16, n_coarse=4, n_fine=2, n_fine_depth=2)
    stepper = train_step.Stepper(model, b=1, views=1, size=16, rays=8)
    graph, _ = stepper._target(train_step.ROWS["fast_graph"])
    mlp, _ = stepper._target(train_step.ROWS["fast_compile"])
    assert graph.hparams.compile_step and not graph.hparams.compile
    assert mlp.hparams.compile and not mlp.hparams.compile_step
    assert stepper._target(train_step.ROWS["fast_graph"])[0] is graph
    assert stepper._target(train_step.ROWS["fast"])[0] is stepper.module


def test_gpu_summary_reports_the_graph_row_against_its_targets(bench, monkeypatch):
    import bench_summary

    row = lambda s, **kw: {"step_s": s, "steps_per_s": 1 / s, "matmul_fraction": 0.1, **kw}  # noqa: E731
    rows = {
        "naive": row(0.1, kernel_fraction=0.3),
        "fast": row(0.065, kernel_fraction=0.43),
        "fast_bf16": row(0.06),
        "fast_graph": row(0.026, compile_s=40.0, kernel_fraction=0.9),
    }
    r = {"train_step": {"srn_cars": {"device": "cuda", "device_name": "H200", "rows": rows,
         "sizes": {"objects": 4, "rays_per_object": 128}}}}  # fmt: skip
    g = bench_summary.gpu_summary(r)["configs"]["srn_cars"]
    assert g["graph"] == {"step_s": 0.026, "compile_s": 40.0}
    assert g["graph_vs_fast"] == pytest.approx(0.4) and g["graph_vs_naive"] == pytest.approx(0.26)
    assert g["kernel_fraction"] == {"naive": 0.3, "fast": 0.43, "fast_graph": 0.9}
    import report

    text = "\n".join(report.gpu_block(r))
    assert "whole-step graph ÷ today's fp32 `fast` step **0.400** (target ≤ 0.5)" in text
    assert "fast_graph 0.90" in text


def test_gpu_headlines_judge_the_gpu_targets(bench):
    """The issue's GPU targets appear as headline rows with their targets, from the rows they compare."""
    import bench_summary
    import report

    row = lambda s, **kw: {"step_s": s, "steps_per_s": 1 / s, "matmul_fraction": 0.1, **kw}  # noqa: E731
    sizes = {"objects": 4, "rays_per_object": 128}
    paper = {"naive": row(0.061), "fast": row(0.049), "fast_bf16": row(0.040)}
    graph = {"naive": row(0.064), "fast": row(0.0576), "fast_graph": row(0.0295, kernel_fraction=0.86)}
    wide = {"naive": row(0.205), "fast": row(0.106), "fast_bf16": row(0.0447)}
    r = {
        "train_step": {
            name: {"device": "cuda", "rows": rows, "sizes": sizes}
            for name, rows in (("srn_cars", paper), ("srn_cars_graph", graph), ("srn_cars_x4rays", wide))
        },
        "data": {"wait": {"device": "cuda", "num_workers": 8, "wait_fraction_of_step": 0.005}},
    }
    s = {"train_step": {}, "gpu": bench_summary.gpu_summary(r), "data_wait": None}
    s["data_wait"] = bench_summary.summary({"data": r["data"]})["data_wait"]
    rows = {a: (b, c) for a, b, c in report.gpu_headlines(s)}
    assert rows["GPU whole-step graph ÷ fp32 `fast` step, same run (srn_cars_graph; kernel ÷ wall 0.86)"] == (
        "0.512",
        "≤ 0.5",
    )
    assert rows["GPU `fast` step ÷ `naive` (srn_cars, paper batch)"] == ("0.803", "≤ 0.5")
    assert rows["GPU bf16 step ÷ fp32 step (srn_cars, 4× rays)"] == ("0.422", "≤ 0.55")
    assert rows["data wait ÷ step (toy, 8 loader workers, cuda)"] == ("0.005", "≤ 0.05")
    cpu = bench_summary.summary(
        {"data": {"wait": {"device": "cpu", "num_workers": 1, "wait_fraction_of_step": 0.01}}}
    )
    assert report.gpu_headlines(cpu) == [("data wait ÷ step (toy, 1 loader workers, cpu)", "0.010", "")]


def test_data_section_measures_the_toy_loader(bench, monkeypatch):
    """``make bench``'s data section: the toy loader with its `auto` workers against real steps, in JSON and
    the table (quick: 3 batches on a tiny generated dataset, no teacher to keep it fast)."""
    run, _ = bench
    import harness
    import report

    real = harness.load_config
    monkeypatch.setattr(harness, "load_config", lambda name: {**real(name), "teacher": None})
    from featurenerf.data import workers

    monkeypatch.setattr(workers, "usable_cpus", lambda: 1)  # auto -> 0 workers: no processes in the test
    d = run.data_wait("cpu", quick=True)
    assert d["wait"]["num_workers"] == 0 and d["wait"]["device"] == "cpu" and d["wait"]["step_s"] > 0
    assert d["breakdown_num_workers_0"]["batches"] == 3
    text = "\n".join(report.data_block(d))
    assert "## Data loading" in text and "With 0 loader worker(s) feeding `fast` steps on cpu" in text


def test_compile_guard_records_a_compile_row_and_raises_for_others(bench):
    _, train_step = bench
    guard = train_step.CompileGuard()

    def boom():
        raise RuntimeError("no triton")

    assert guard("fast_compile", boom) is None
    assert guard.failed == {"fast_compile": "RuntimeError: no triton"}
    assert guard.alive(["fast", "fast_compile"]) == ["fast"]
    with pytest.raises(RuntimeError):
        guard("fast", boom)


def test_a_section_stores_its_figures_and_a_broken_one_only_its_error(bench, tmp_path, monkeypatch):
    run, _ = bench
    monkeypatch.setattr(run, "write", lambda out_dir, result: None)  # the partial write is not under test
    result: dict = {"render": {}, "errors": {}}
    run.run_section("render toy", run.Store("render", "toy", compute=lambda: {"rows": 1}), result, tmp_path)

    def broken():
        raise ValueError("bad size")

    run.run_section("cache", run.Store("cache", compute=broken), result, tmp_path)
    assert result == {"render": {"toy": {"rows": 1}}, "errors": {"cache": "ValueError: bad size"}}
