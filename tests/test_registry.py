"""Registry: decorator registration, duplicate and unknown names, create, lazy entry-point plugins."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import pytest

from featurenerf.registry import Registry, UnknownNameError


class Base:
    def __init__(self, width: int = 1) -> None:
        self.width = width


def test_register_get_list_create():
    reg: Registry[Base] = Registry("teacher")

    @reg.register("b")
    class B(Base):
        pass

    @reg.register("a")
    class A(Base):
        pass

    assert reg.get("a") is A and reg.get("b") is B
    assert A.registry_name == "a"
    assert reg.list() == ["a", "b"]  # sorted, not registration order
    assert "a" in reg and "zzz" not in reg
    obj = reg.create("b", width=7)
    assert isinstance(obj, B) and obj.width == 7


def test_duplicate_name_from_another_class_is_an_error():
    reg: Registry[Base] = Registry("teacher")

    @reg.register("dino")
    class First(Base):
        pass

    with pytest.raises(ValueError, match=r"'dino' is already registered by .*First"):

        @reg.register("dino")
        class Second(Base):
            pass

    assert reg.get("dino") is First
    # Registering the same class again (e.g. a module imported twice) is harmless.
    assert reg.register("dino")(First) is First


def test_reloaded_class_with_same_qualified_name_replaces_entry():
    reg: Registry[Base] = Registry("task")

    def make() -> type[Base]:
        class Same(Base):
            pass

        return Same

    old, new = make(), make()  # same module + qualname, different objects: what importlib.reload gives
    reg.register("x")(old)
    reg.register("x")(new)
    assert reg.get("x") is new


def test_unknown_name_lists_known_names():
    reg: Registry[Base] = Registry("task")
    reg.register("parts2d")(type("P", (Base,), {}))
    reg.register("keypoints3d")(type("K", (Base,), {}))
    with pytest.raises(UnknownNameError) as err:
        reg.get("part2d")
    assert isinstance(err.value, KeyError)
    # A plain line (KeyError would otherwise quote it) with the known names, sorted.
    assert str(err.value) == "unknown task 'part2d'; known tasks: keypoints3d, parts2d"
    with pytest.raises(UnknownNameError, match="known teachers: none"):
        Registry("teacher").create("dino")


@dataclass
class FakeEntryPoint:
    """Duck-types ``importlib.metadata.EntryPoint``: name, value and load()."""

    name: str
    value: str
    loader: object

    def load(self):
        return self.loader()


def test_entry_point_plugins_load_lazily_once_and_broken_ones_are_skipped(monkeypatch, capsys):
    reg: Registry[Base] = Registry("teacher", entry_point_group="featurenerf.teachers")
    calls: list[str] = []

    def good():
        @reg.register("plugged")
        class Plugged(Base):
            pass

        return Plugged

    def broken():
        raise ImportError("No module named 'missing_dependency'\nsecond line of a long traceback message")

    eps = [
        FakeEntryPoint("bad", "broken_pkg.teachers:Bad", broken),
        FakeEntryPoint("good", "good_pkg.teachers:Plugged", good),
    ]

    def fake_entry_points(*, group: str):
        calls.append(group)
        return eps

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)

    @reg.register("builtin")
    class Builtin(Base):
        pass

    assert calls == []  # neither construction nor registration touches entry points
    # The broken plugin (listed first) does not stop the good one loading.
    assert reg.list() == ["builtin", "plugged"]
    assert calls == ["featurenerf.teachers"]
    assert reg.create("plugged", width=3).width == 3
    assert reg.get("builtin") is Builtin
    assert calls == ["featurenerf.teachers"]  # loaded once
    err_lines = capsys.readouterr().err.splitlines()
    assert len(err_lines) == 1
    assert "'bad'" in err_lines[0] and "broken_pkg.teachers:Bad" in err_lines[0]
    assert "ImportError: No module named 'missing_dependency'" in err_lines[0]
    assert "second line" not in err_lines[0]
    assert reg.plugin_errors == {"bad": "ImportError: No module named 'missing_dependency'"}


def test_real_entry_point_object_with_missing_module(monkeypatch, capsys):
    reg: Registry[Base] = Registry("task", entry_point_group="featurenerf.tasks")
    ep = metadata.EntryPoint(
        name="ghost", value="featurenerf_no_such_module_xyz:Task", group="featurenerf.tasks"
    )
    monkeypatch.setattr(
        metadata, "entry_points", lambda *, group: [ep] if group == "featurenerf.tasks" else []
    )
    with pytest.raises(UnknownNameError, match="known tasks: none"):
        reg.get("ghost")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ModuleNotFoundError" in err and "'ghost'" in err
    assert "ghost" not in reg


def test_registry_without_group_never_queries_entry_points(monkeypatch):
    def fail(**_kwargs):
        raise AssertionError("entry points queried")

    monkeypatch.setattr(metadata, "entry_points", fail)
    reg: Registry[Base] = Registry("teacher")
    assert reg.list() == []
