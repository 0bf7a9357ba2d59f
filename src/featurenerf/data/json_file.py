"""Reading a JSON data file (meta, keypoints, splits, transforms) with the data errors' one-line messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from featurenerf.errors import DataError


def read_json(path: Path, hint: str | None = None) -> Any:
    """The parsed content of the JSON file ``path``.

    Raises:
        DataError: ``"<path>: missing"`` (with `` (<hint>)`` when given: what the file is for or where it
            comes from) when it is not a file, ``"<path>: malformed JSON (<why>)"`` when it does not parse.
    """
    if not path.is_file():
        raise DataError(f"{path}: missing" + (f" ({hint})" if hint else ""))
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from err
