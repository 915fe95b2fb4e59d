"""One integer-list grammar for `calibrate --tiles`, `train --real-tiles` and `sweep --seeds` (hwloop.intlist)."""

from __future__ import annotations

import pytest

from hwloop.chip.factory import parse_real_tiles
from hwloop.cli.calibrate_cmd import _parse_tiles
from hwloop.errors import ConfigError
from hwloop.intlist import parse_int_list
from hwloop.sweep import parse_seeds


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("5", [5]),
        ("0,3,7", [0, 3, 7]),
        ("7,", [7]),
        ("10-14", [10, 11, 12, 13, 14]),
        ("0-1,4", [0, 1, 4]),
        (" 2 - 3 , 9 ", [2, 3, 9]),
        ("[0,5]", [0, 5]),
        ("4,1", [4, 1]),
    ],
)
def test_grammar(spec: str, want: list[int]) -> None:
    assert parse_int_list(spec, "--x") == want


@pytest.mark.parametrize("spec", ["", ",", "x", "3-1", "1,1", "0-2,2", "-1", "1.5", "1-", "2,,3"])
def test_bad_lists_are_refused_naming_the_option(spec: str) -> None:
    with pytest.raises(ConfigError, match="--opt"):
        parse_int_list(spec, "--opt")


def test_upper_bound() -> None:
    assert parse_int_list("0-3", "--x", upper=4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match=r"out of range 0\.\.3"):
        parse_int_list("2-4", "--x", upper=4)


@pytest.mark.parametrize("spec", ["5", "0,3", "2-4", "0-1,6"])
def test_the_three_options_read_a_list_the_same_way(spec: str) -> None:
    want = parse_int_list(spec, "--x")
    assert parse_seeds(spec) == want
    assert list(_parse_tiles(spec)) == sorted(want)  # calibrate measures its tiles in index order
    assert parse_real_tiles(spec, n_tiles=8, bench_tiles=8) == want


def test_real_tiles_default_and_bench_size() -> None:
    assert parse_real_tiles(None, n_tiles=5, bench_tiles=2) == [0, 1]
    assert parse_real_tiles("3", n_tiles=5, bench_tiles=1) == [3]  # a number is a tile, not a count
    with pytest.raises(ConfigError, match="bench holds 1"):
        parse_real_tiles("0,1", n_tiles=5, bench_tiles=1)
    with pytest.raises(ConfigError, match="out of range"):
        parse_real_tiles("5", n_tiles=5, bench_tiles=8)
