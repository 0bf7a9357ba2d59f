"""``benchmarks/run.py --quick`` runs end to end and writes the JSON the issue asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_bench_writes_json_and_table(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    assert not result["errors"], result["errors"]
    assert {"environment", "flops_method", "timing_method", "train_step", "render", "summary"} <= set(result)
    toy = result["train_step"]["toy"]
    assert {"naive", "fast", "fast_bf16"} <= set(toy["rows"])
    for row in toy["rows"].values():
        for key in ("step_s", "rays_per_s", "samples_per_s", "flops", "gflops_per_s", "matmul_fraction",
                    "step_ratio_vs_naive", "peak_rss_bytes"):  # fmt: skip
            assert key in row, key
        assert row["step_s"] > 0 and row["flops"] > 0
    assert toy["rows"]["naive"]["step_ratio_vs_naive"] == 1.0
    # Fine reuse and the fast field do less work than pixelNeRF's way: fewer samples and FLOPs per step.
    assert toy["rows"]["fast"]["samples_per_step"] < toy["rows"]["naive"]["samples_per_step"]
    assert toy["rows"]["fast"]["flops"] < 0.6 * toy["rows"]["naive"]["flops"]
    assert toy["matmul_baseline"]["float32"]["gflops_per_s"] > 0
    spread = result["summary"]["train_step"]["toy"]["matmul_baseline_spread"]["float32"]
    assert spread["n"] >= 10 and 0 < spread["min"] <= spread["median"] <= spread["max"]
    assert toy["fast_alone"]["matmul_baseline_spread"]["n"] >= 10
    # Any fraction above 1 is flagged in the JSON and the table (and only those).
    errors = result["summary"]["train_step"]["toy"].get("fraction_errors", {})
    fractions = {k: v["matmul_fraction"] for k, v in toy["rows"].items()}
    fractions["fast_alone"] = toy["fast_alone"]["matmul_fraction"]
    assert set(errors) == {k for k, f in fractions.items() if f > 1}
    assert ("**measurement error**" in (out / "bench.md").read_text()) == bool(errors)
    assert ("⚠ > 1" in (out / "bench.md").read_text()) == any(f > 1 for f in fractions.values())
    assert toy["rows"]["fast_bf16"]["matmul_dtype"] == "bfloat16"  # bf16 rows are compared with bf16 GEMMs
    assert abs(sum(toy["profile"]["fraction"].values()) - 1.0) < 1e-6
    render = result["render"]["toy"]["rows"]
    assert {"naive", "exhaustive", "skip", "skip_box"} <= set(render)
    assert render["exhaustive"]["samples_per_ray"] < render["naive"]["samples_per_ray"]
    assert "Training step" in (out / "bench.md").read_text()
