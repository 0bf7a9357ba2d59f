"""Third-party teachers: a throwaway plugin distribution (its own pyproject and entry point) is installed
with pip into a temporary folder, and a fresh interpreter that sees that folder lists, builds, runs and
caches its teacher without any change to featurenerf. A second plugin that fails to import is reported
in one line and skipped.

(Training with the plugin teacher is covered at the fit level by the LightningCLI tests.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
import torch
import torch.nn.functional as F

from featurenerf.teachers import Teacher, register_teacher


@register_teacher("mine")
class MyTeacher(Teacher):
    """Grey levels pooled to a 4-px grid, repeated ``width`` times."""

    def __init__(self, width: int = 5) -> None:
        super().__init__()
        self.width = width
        self.gain = torch.nn.Parameter(torch.ones(1))

    feature_dim = property(lambda self: self.width)
    stride = property(lambda self: 4)
    input_size = property(lambda self: 24)
    mean = property(lambda self: (0.0, 0.0, 0.0))
    std = property(lambda self: (1.0, 1.0, 1.0))
    weights_source = property(lambda self: "none (plugin)")

    def cache_fields(self):
        return {"width": self.width}

    def extract(self, images):
        grey = F.avg_pool2d(images.mean(1, keepdim=True), 4)
        return self.gain * grey.repeat(1, self.width, 1, 1)
'''


def pyproject(name: str, entry: str, module: str) -> str:
    return textwrap.dedent(
        f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.0.1"

        [project.entry-points."featurenerf.teachers"]
        {entry}

        [tool.setuptools]
        py-modules = ["{module}"]
        """
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding two installed plugin distributions (pip --target, so the shared venv is untouched)."""
    root = tmp_path_factory.mktemp("plugins")
    good, broken = root / "good", root / "broken"
    good.mkdir()
    broken.mkdir()
    (good / "pyproject.toml").write_text(
        pyproject("fn-test-plugin", 'mine = "fn_test_plugin:MyTeacher"', "fn_test_plugin")
    )
    (good / "fn_test_plugin.py").write_text(PLUGIN)
    (broken / "pyproject.toml").write_text(
        pyproject("fn-test-broken", 'broken = "fn_test_broken:Thing"', "fn_test_broken")
    )
    (broken / "fn_test_broken.py").write_text('raise ImportError("needs libfoo, which is not installed")\n')
    target = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*cmd, "--target", str(target), str(good), str(broken)], check=True, capture_output=True)
    assert any(p.name.startswith("fn_test_plugin") and p.suffix == ".dist-info" for p in target.iterdir())
    return target


def run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"  # tiny tensors; spinning threads only slow a shared machine down
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_plugin_is_listed_built_and_run(site):
    code = textwrap.dedent(
        """
        import json, torch
        from featurenerf.teachers import build_teacher, list_teachers, resolve_teacher
        t = build_teacher("mine", width=3)
        out = t(torch.full((2, 3, 40, 40), 0.25))
        same = resolve_teacher({"name": "mine", "width": 3}).cache_key() == t.cache_key()
        print(json.dumps({
            "names": list_teachers(), "shape": list(out.shape), "declared": [t.feature_dim, *t.output_size(40, 40)],
            "value": out.mean().item(), "frozen": not any(p.requires_grad for p in t.parameters()), "same": same,
        }))
        """
    )
    proc = run(site, "-c", code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"mine", "hed_vgg16", "dino_vits8"} <= set(result["names"])
    assert "broken" not in result["names"]
    assert result["shape"] == [2, 3, 6, 6] and result["declared"] == [3, 6, 6]  # 24 px / stride 4
    assert result["value"] == pytest.approx(0.25) and result["frozen"] and result["same"]
    # The broken plugin costs one line on stderr, naming it and why.
    lines = [ln for ln in proc.stderr.splitlines() if "broken" in ln]
    assert lines == [
        "featurenerf: skipped teacher plugin 'broken' (fn_test_broken:Thing): "
        "ImportError: needs libfoo, which is not installed"
    ]


def test_plugin_in_the_command_line(site, toy_root, tmp_path):
    listed = run(site, "-m", "featurenerf.cli", "teachers", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["mine"][1:5] == ["5", "4", "24", "none"]
    assert "hed_vgg16" in rows
    assert sum("skipped teacher plugin 'broken'" in ln for ln in listed.stderr.splitlines()) == 1
    cached = run(
        site, "-m", "featurenerf.cli", "teachers", "cache", "--teacher", "mine", "--set", "width=2",
        "--data", str(toy_root), "--size", "32", "--cache-dir", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    assert "0 hit, 6 built" in cached.stdout
    assert len(list(tmp_path.rglob("*.safetensors"))) == 6
