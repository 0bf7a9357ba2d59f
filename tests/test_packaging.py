"""Packaging: pyproject lists every package folder, and teachers/ and tasks/ import as featurenerf.*."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # requires-python allows 3.10, which has no tomllib
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
SOURCE_ROOTS = {
    "featurenerf": "src/featurenerf",
    "featurenerf.teachers": "teachers",
    "featurenerf.tasks": "tasks",
}


def _package_folders() -> dict[str, Path]:
    """Package name -> folder, for every folder with an ``__init__.py`` under the three source roots."""
    found = {}
    for package, rel in SOURCE_ROOTS.items():
        base = ROOT / rel
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            found[".".join((package, *parts))] = init.parent
    return found


def _folder_of(package: str) -> Path:
    """Where setuptools looks for ``package`` given ``package-dir`` (longest mapped prefix wins)."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in PACKAGE_DIR:
            return ROOT / PACKAGE_DIR[prefix] / Path(*parts[n:])
    return ROOT / Path(*parts)


def test_package_dir_maps_the_three_source_roots():
    assert PACKAGE_DIR == SOURCE_ROOTS


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(SETUPTOOLS["packages"])
    missing = sorted(set(_package_folders()) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists():
    for package in SETUPTOOLS["packages"]:
        assert (_folder_of(package) / "__init__.py").is_file(), (
            f"{package}: no {_folder_of(package)}/__init__.py"
        )


def test_no_python_folder_without_init():
    # A folder of modules without __init__.py would be a namespace package that setuptools skips.
    for rel in SOURCE_ROOTS.values():
        for py in (ROOT / rel).rglob("*.py"):
            assert (py.parent / "__init__.py").is_file(), f"{py.parent}: has modules but no __init__.py"


@pytest.mark.parametrize("package", ["featurenerf.teachers", "featurenerf.tasks"])
def test_top_level_folders_import_as_subpackages(package):
    module = importlib.import_module(package)
    folder = ROOT / SOURCE_ROOTS[package]
    assert Path(module.__file__).resolve() == (folder / "__init__.py").resolve()


def test_listed_packages_import_from_their_folders():
    for package in SETUPTOOLS["packages"]:
        module = importlib.import_module(package)
        assert Path(module.__file__).resolve().parent == _folder_of(package).resolve(), package


def test_wheel_contains_every_module(tmp_path):
    # A normal (non-editable) install: build a wheel from a copy of the sources (keeps the repo clean).
    src = tmp_path / "src_tree"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for rel in SOURCE_ROOTS.values():
        shutil.copytree(ROOT / rel, src / rel, ignore=ignore)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path),
    ]
    subprocess.run([*cmd, str(src)], check=True, capture_output=True, timeout=120)
    (wheel,) = tmp_path.glob("featurenerf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # The SPDX license string (PEP 639), not the deprecated table setuptools warns about on every install.
    metadata = zipfile.ZipFile(wheel).read("featurenerf-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    for package, rel in SOURCE_ROOTS.items():
        for py in (ROOT / rel).rglob("*.py"):
            inside = Path(*package.split("."), py.relative_to(ROOT / rel)).as_posix()
            assert inside in names, f"{py.relative_to(ROOT)} missing from the wheel as {inside}"
