"""Numeric ranges of configuration arguments, as types the config parser checks, and their one-line errors.

Class signatures (the model, the datamodule, the task suite) annotate their numbers with these types, so
jsonargparse refuses an out-of-range value when the config is parsed (before anything is built) and
``--help`` shows the range. The parser hands over values as instances of the restricted subclasses of
``int``/``float``; :func:`plain_numbers` turns them back into plain numbers where they are stored
(checkpoints must hold plain types to load with ``weights_only=True``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

__all__ = [
    "ClosedUnitInterval",
    "EncoderLayers",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "UnitIntervalBelowOne",
    "plain_numbers",
    "range_error_message",
]

#: ResNet-34 feature levels the encoder keeps (conv1 + layer1..layer4).
EncoderLayers = restricted_number_type("EncoderLayers", int, [(">=", 1), ("<=", 5)])
#: A fraction that must stay below 1 (a transmittance cut-off of 1 would stop every ray at once).
UnitIntervalBelowOne = restricted_number_type("UnitIntervalBelowOne", float, [(">=", 0), ("<", 1)])


def plain_numbers(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with restricted ints/floats as plain ``int``/``float`` (bools and others unchanged)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, int) and not isinstance(value, bool) and type(value) is not int:
            value = int(value)
        elif isinstance(value, float) and type(value) is not float:
            value = float(value)
        out[key] = value
    return out


_KEY = re.compile(r'Parser key "([^"]+)"')
_RULE = re.compile(
    r"does not conform to restriction (v\s*[<>=!]+\s*\S+(?:\s+(?:and|or)\s+v\s*[<>=!]+\s*\S+)*)"
)
_VALUE = re.compile(r"Not of type \w+: (.+?) does not conform|Given value: (\S+)\s*$")


def range_error_message(message: str) -> str | None:
    """jsonargparse's refusal of an out-of-range number as ``key: value is out of range; it must be …``.

    ``None`` when ``message`` is not such a refusal (other parse errors keep jsonargparse's wording).
    Handles plain restricted types and ``Optional`` ones (whose message lists every union member).
    """
    text = " ".join(message.split())
    key, rule = _KEY.search(text), _RULE.search(text)
    if key is None or rule is None:
        return None
    found = _VALUE.search(text)
    value = next((g for g in found.groups() if g), "?") if found else "?"
    bound = re.sub(r"v\s*([<>=!]+)\s*", r"\1 ", rule.group(1))
    return f"{key.group(1)}: {value} is out of range; it must be {bound}"
