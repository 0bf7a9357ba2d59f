"""Start-up cost of the console script: `featurenerf --help` and `featurenerf teachers list` under 3 s.

Time is measured as the child's CPU time (user + system): that is what the command costs, while wall
time on a shared machine also counts waiting for a core. Heavy libraries must not be imported at all.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("featurenerf")
BUDGET_S = 3.0
HEAVY = ("lightning", "transformers", "diffusers", "wandb", "tensorboard", "jsonargparse")


def _timed(args: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run the console script; return the result, its CPU seconds and its wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res, cpu, wall


def _imported(argv: list[str]) -> set[str]:
    """Top-level packages loaded by running the CLI with ``argv`` in a fresh interpreter."""
    code = (
        "import sys, contextlib, io\n"
        "from featurenerf.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main({argv!r})\n"
        "print(rc, ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rc, modules = res.stdout.split(" ", 1)
    assert rc == "0"
    return set(modules.split())


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")
@pytest.mark.parametrize("args", [["--help"], ["teachers", "list"]], ids=" ".join)
def test_command_starts_within_budget(args):
    res, cpu, wall = _timed(args)
    assert res.returncode == 0, res.stderr
    print(f"featurenerf {' '.join(args)}: {cpu:.2f} s CPU, {wall:.2f} s wall")
    assert cpu < BUDGET_S, f"featurenerf {' '.join(args)} used {cpu:.2f} s CPU (budget {BUDGET_S} s)"


def test_help_lists_every_command_with_a_description():
    res, _, _ = _timed(["--help"]) if SCRIPT.exists() else (None, 0, 0)
    if res is None:
        pytest.skip("console script not installed")
    rows = [line.split(None, 1) for line in res.stdout.splitlines() if line.startswith("  ")]
    described = {name: text for name, text in rows}
    for name in ("fit", "validate", "test", "predict", "data", "teachers", "render", "export"):
        assert described.get(name, "").strip(), f"{name} is missing from --help or has no description"
    assert all("\n" not in text for text in described.values())


def test_help_imports_no_torch():
    loaded = _imported(["--help"])
    assert "torch" not in loaded and not loaded & set(HEAVY)


def test_teachers_list_imports_no_heavy_library():
    loaded = _imported(["teachers", "list"])
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("command", ["render", "export"])
def test_render_and_export_help_import_no_torch(command):
    code = (
        "import sys, contextlib, io\n"
        f"from featurenerf.commands.{command} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
