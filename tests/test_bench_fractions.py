"""Honest matmul fractions: the baseline's spread is reported and a fraction above 1 is flagged."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # benchmarks/ is a folder of scripts, not a package
    import harness
    import report

    return harness, report


def _result(fraction: float, alone: float) -> dict:
    row = {"matmul_fraction": fraction, "matmul_dtype": "float32", "step_ratio_vs_naive": 1.0, "step_s": 1.0}
    return {
        "train_step": {
            "toy": {
                "rows": {"naive": dict(row, matmul_fraction=0.5), "fast": row},
                "matmul_baseline": {"float32": {"gflops_per_s": 230.0, "all": [185.0, 230.0, 275.0]}},
                "fast_alone": {
                    "matmul_fraction": alone,
                    "step_s": 1.0,
                    "matmul_baseline_spread": {"min": 190.0, "median": 200.0, "max": 210.0, "n": 3},
                },
            }
        }
    }


def test_spread_and_error_note(bench):
    harness, _ = bench
    assert harness.gflops_spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    assert harness.gflops_spread([])["n"] == 0
    assert harness.fraction_error(0.99) is None and harness.fraction_error(None) is None
    note = harness.fraction_error(1.11, harness.gflops_spread([185.0, 275.0]))
    assert "1.11 > 1 is a measurement error" in note and "185.0-275.0 GFLOP/s over 2 timings" in note


def test_fraction_above_one_is_flagged_in_json_and_table(bench):
    _, report = bench
    r = _result(fraction=1.11, alone=0.9)
    s = report.summary(r)["train_step"]["toy"]
    assert s["matmul_baseline_spread"]["float32"] == {"min": 185.0, "median": 230.0, "max": 275.0, "n": 3}
    assert set(s["fraction_errors"]) == {"fast"} and "1.11" in s["fraction_errors"]["fast"]
    table = "\n".join(report.headlines(r))
    assert "**measurement error** (fast)" in table and "185.0 / 230.0 / 275.0 GFLOP/s" in table
    clean = report.summary(_result(fraction=0.8, alone=0.7))["train_step"]["toy"]
    assert "fraction_errors" not in clean
    assert "measurement error" not in "\n".join(report.headlines(_result(0.8, 0.7)))
    assert set(report.summary(_result(0.8, 1.2))["train_step"]["toy"]["fraction_errors"]) == {"fast_alone"}


def test_baseline_keeps_every_timing_and_the_median_of_bests(bench):
    harness, _ = bench
    base = harness.MatmulBaseline(64, 16, repeats=3)
    assert base.samples == [] and base.bests == []  # warm-up forgotten
    best = base.measure()
    base.measure()
    assert len(base.samples) == 6 and len(base.bests) == 2 and best == max(base.samples[:3])
    assert base.gflops == pytest.approx(sum(base.bests) / 2)
    sp = base.spread()
    assert sp["n"] == 6 and sp["min"] <= sp["median"] <= sp["max"] == max(base.bests)


def test_row_table_flags_a_fraction_above_one_where_it_stands(bench):
    _, report = bench
    row = {"step_s": 1.0, "steps_per_s": 1.0, "step_ratio_vs_naive": 1.0, "rays_per_s": 10.0, "samples_per_s": 100.0, "flops": 2e9,
           "gflops_per_s": 2.0, "peak_rss_bytes": 2**20}  # fmt: skip
    rows = {"naive": dict(row, matmul_fraction=0.5), "fast": dict(row, matmul_fraction=1.11)}
    for on_cuda in (False, True):
        table = report.train_table(rows, on_cuda)
        naive, fast = (next(line for line in table if line.startswith(f"| {k} |")) for k in ("naive", "fast"))
        assert "| 1.11 ⚠ > 1 |" in fast and "⚠" not in naive
    alone = _result(fraction=0.8, alone=1.2)["train_step"]["toy"]
    alone["fast_alone"].update(gflops_per_s=240.0, matmul_baseline_gflops_per_s=200.0, step_s_all=[1.0])
    assert "**1.20 ⚠ > 1**" in "\n".join(report.fast_alone_lines(alone))
