"""Shared fixtures. Keep this file small: other test modules add their own fixtures locally."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import settings

from hwloop.chip.cdf import CdfTable, Level
from hwloop.chip.default_table import default_table

# Property tests explore new random examples on every local run (that is how they find bugs). CI loads the
# "ci" profile (.ci/run sets HYPOTHESIS_PROFILE=ci): the same examples on every run, so a landing is not
# decided by the draw. A failure found locally goes into the test as an explicit @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture(scope="session")
def default_cdf() -> CdfTable:
    """The shipped synthetic default table (loaded once per session)."""
    return default_table()


def make_sample_table(seed: int = 0, n: int = 500, n_hcs: int = 3, shift_us: float = 0.0) -> CdfTable:
    """A small raw-sample table: lognormal LCS and Gaussian HCS levels 30, 60, 90... µS (+ ``shift_us``)."""
    rng = np.random.default_rng(seed)
    levels = [Level("LCS", "LCS", 4.8, 0.0, samples_us=rng.lognormal(np.log(3.0), 0.4, n))]
    for k in range(n_hcs):
        levels.append(
            Level(
                f"HCS{k + 1}",
                "HCS",
                1.4 + 0.2 * k,
                20.0 * (k + 1),
                samples_us=rng.normal(30.0 * (k + 1) + shift_us, 3.0, n),
            )
        )
    return CdfTable(levels=levels, read_voltage_v=0.1, provenance="unit-test samples", chip_id="test")


@pytest.fixture
def sample_table() -> CdfTable:
    return make_sample_table()


@pytest.fixture
def make_table() -> Callable[..., CdfTable]:
    """Factory fixture: ``make_table(seed=..., n=..., n_hcs=..., shift_us=...)``."""
    return make_sample_table


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    """A data folder with synthetic 'mnist' and 'fashion-mnist' IDX sets (load with verify_data=False)."""
    from _synthdata import make_idx_dataset

    root = tmp_path_factory.mktemp("data")
    make_idx_dataset(root, "mnist", seed=1)
    make_idx_dataset(root, "fashion-mnist", seed=2)
    return root


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


RunCli = Callable[..., CliResult]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """``run_cli("chip", "info", ...)``: run ``hwloop`` in-process the way the console script does
    (``hwloop.cli.main``: one-line errors, exit codes) and return ``(code, stdout, stderr)``."""
    from hwloop.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # drop what came before
        with pytest.raises(SystemExit) as ei:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = ei.value.code
        return CliResult(0 if code is None else int(code), out, err)

    return run
