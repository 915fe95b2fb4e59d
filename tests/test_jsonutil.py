"""``hwloop.jsonutil.read_json_record``: the one reader of hwloop's JSON record files (sweep.json, the
reproduce folder's record), through the two callers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwloop.errors import ConfigError
from hwloop.jsonutil import read_json_record
from hwloop.sweep import load_manifest


def test_a_record_reads_and_a_bad_one_is_one_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"format": "x-record", "a": 1}))
    assert read_json_record(p, "x-record", "an x record") == {"format": "x-record", "a": 1}
    for text, want in (
        ("{not json", "is unreadable"),
        ("[1, 2]", "is not an x record (format 'list'); use another --out"),
        (json.dumps({"format": "other"}), "is not an x record (format 'other')"),
    ):
        p.write_text(text)
        with pytest.raises(ConfigError, match=want.replace("(", r"\(").replace(")", r"\)")):
            read_json_record(p, "x-record", "an x record", "use another --out")


def test_a_sweep_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sweep.json").write_text("[]")  # was an AttributeError (a traceback)
    with pytest.raises(ConfigError, match="is not an hwloop sweep manifest"):
        load_manifest(tmp_path)
