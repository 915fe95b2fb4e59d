"""Training layer: the IDX data sets (parsing, checksums, where they are looked for) and task lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwloop.errors import DataError
from hwloop.training.data import load_dataset, parse_idx, parse_tasks, write_idx


# ---------------------------------------------------------------------------- data
def test_idx_round_trip_and_truncation(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", a, gz=False)
    raw = (tmp_path / "x.idx").read_bytes()
    np.testing.assert_array_equal(parse_idx(raw), a)
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:-3])


def test_missing_data_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWLOOP_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path / "given")
    msg = str(exc.value)
    assert str(tmp_path / "given") in msg and str(tmp_path / "env") in msg
    assert "/usr/share/datasets/mnist" in msg and str(tmp_path / "cache") in msg


def test_checksum_is_verified(tiny_data: Path) -> None:
    with pytest.raises(DataError, match="checksum"):
        load_dataset("mnist", tiny_data)
    assert load_dataset("mnist", tiny_data, verify=False).x_train.shape[1] == 784


def test_task_parsing() -> None:
    assert parse_tasks("mnist, fashion-mnist") == ["mnist", "fashion-mnist"]
    assert parse_tasks("permuted-mnist:3") == ["permuted-mnist-1", "permuted-mnist-2", "permuted-mnist-3"]
    with pytest.raises(DataError, match="unknown task"):
        parse_tasks("cifar10")


def test_pixels_are_standardised_with_the_data_sets_mean_and_std(tiny_data: Path) -> None:
    """(pixel / 255 - mean) / std in float32, as written in docs/training.md (the in-place code must give
    exactly this, bit for bit)."""
    from hwloop.training.data import NORMALISATION, load_task

    for name in ("mnist", "fashion-mnist"):
        raw = load_dataset(name, tiny_data, verify=False)
        task = load_task(name, tiny_data, verify=False)
        mean, std = NORMALISATION[name]
        for got, x in ((task.x_train, raw.x_train), (task.x_test, raw.x_test)):
            assert got.dtype == np.float32 and got.shape == x.shape
            np.testing.assert_array_equal(got, ((x.astype(np.float32) / 255.0) - mean) / std)
