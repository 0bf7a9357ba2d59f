from pathlib import Path

import pytest

from featurenerf.data.json_file import read_json
from featurenerf.errors import DataError


def test_read_json_parses_and_names_the_file_when_missing_or_malformed(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good) == {"a": [1, 2]}
    with pytest.raises(DataError, match=r"^.*nope\.json: missing \(copy it here\)$"):
        read_json(tmp_path / "nope.json", "copy it here")
    with pytest.raises(DataError, match=r"nope\.json: missing$"):
        read_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON \("):
        read_json(bad)
