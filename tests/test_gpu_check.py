"""``benchmarks/gpu_check.sh``, the script a leased GPU machine runs: it must import featurenerf from the
source tree (not an installed copy), and a phase past the overall deadline is skipped and recorded, not run.
(The phases themselves run on the CPU with ``--dry-run``; that takes minutes and is not part of the suite.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PY": sys.executable,
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=full, capture_output=True, text=True, timeout=300
    )


def test_imports_come_from_the_source_tree(tmp_path):
    done = _run(tmp_path, PHASES="none")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("featurenerf", "featurenerf.teachers", "featurenerf.tasks"):
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(name + " "))
        assert "/featurenerf-src." in line  # the temporary folder of links, not site-packages
    assert not (tmp_path / "out" / "times.txt").exists()  # no phase asked for, none run


def test_a_phase_past_the_deadline_is_skipped_and_recorded(tmp_path):
    done = _run(tmp_path, PHASES="bench", TOTAL_TIMEOUT="0")
    assert done.returncode == 1  # a skipped phase is a failed check
    assert "bench: skipped (TOTAL_TIMEOUT reached)" in (tmp_path / "out" / "times.txt").read_text()
    assert not (tmp_path / "work" / "bench").exists()
