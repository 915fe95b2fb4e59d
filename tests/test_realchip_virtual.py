"""RealChip end to end through the virtual bench (emulated FPGA board on a pty + emulated SMU on TCP)."""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hwloop.chip.default_table import default_table
from hwloop.chip.real import RealChip
from hwloop.chip.sim import SimConfig
from hwloop.emulator import Faults, VirtualBench
from hwloop.errors import InstrumentError, SafetyLimitError

BENCH = Path(__file__).resolve().parents[1] / "instruments" / "virtual.toml"
TABLE = default_table()


@pytest.fixture
def vb() -> Iterator[VirtualBench]:
    with VirtualBench(BENCH, seed=1, sim_config=SimConfig.ideal(), pace=False, faults=Faults()) as bench:
        yield bench


@pytest.fixture
def chip(vb: VirtualBench) -> Iterator[RealChip]:
    with RealChip.from_bench_file(vb.bench_path, table=TABLE) as c:
        yield c


def test_form_set_reset_read_follow_the_emulated_physics(vb: VirtualBench, chip: RealChip) -> None:
    sim = vb.sim
    assert sim is not None
    cols = np.arange(32)
    zeros = np.zeros_like(cols)
    formed = chip.form(zeros, zeros, cols)
    idx = chip.flat(zeros, zeros, cols)
    np.testing.assert_array_equal(formed, sim.formed[idx])  # host mask == what the chip did
    assert formed.all()  # ideal forming yield, ramp up to 4 V reaches every device
    assert (chip.form_count[idx] == 1).all()
    # SET at the top and bottom levels, read back through the board ADC
    chip.set_idx(idx[:16], level=8)
    chip.set_idx(idx[16:], level=1)
    g = chip.read_idx(idx)
    lsb_us = 0.5e-9 / 0.1 * 1e6
    np.testing.assert_allclose(g, sim.true_g_us(idx), atol=lsb_us)
    assert g[:16].mean() > g[16:].mean() + 50
    chip.reset_idx(idx)
    g0 = chip.read_idx(idx)
    assert (sim.level[idx] == 0).all() and g0.max() < g[16:].min()
    assert (chip.set_count[idx] == 1).all() and (chip.reset_count[idx] == 1).all()
    np.testing.assert_array_equal(chip.set_count[idx], sim.set_count[idx])


def test_set_by_gate_voltage_and_the_gate_limit(vb: VirtualBench, chip: RealChip) -> None:
    idx = np.arange(8)
    chip.form_idx(idx)
    chip.set_idx(idx, v_gate=np.linspace(1.4, 2.2, 8))
    g = chip.read_idx(idx)
    assert np.corrcoef(np.linspace(1.4, 2.2, 8), g)[0, 1] > 0.9
    assert vb.board is not None
    n_ops = len(vb.board.log.ops)
    with pytest.raises(SafetyLimitError, match="max_v_gate_set"):
        chip.check_v_gate([2.0, 2.5])
    with pytest.raises(SafetyLimitError):
        chip.set_idx(idx, v_gate=2.41)
    assert len(vb.board.log.ops) == n_ops  # nothing reached the board
    assert (chip.set_count[idx] == 1).all()


def test_smu_read_matches_the_board_read(vb: VirtualBench, chip: RealChip) -> None:
    idx = np.arange(3)
    chip.form_idx(idx)
    chip.set_idx(idx, level=6)
    g_board = chip.read_idx(idx)
    g_smu = chip.read_smu(idx)
    np.testing.assert_allclose(g_smu, g_board, rtol=1e-3, atol=0.02)
    assert vb.chip is not None and vb.chip.dac == (0.0, 0.0, 0.0)  # left safe


def test_ctrl_c_during_a_batch_leaves_the_outputs_safe(vb: VirtualBench, chip: RealChip) -> None:
    assert vb.board is not None and vb.chip is not None and vb.smu is not None
    idx = np.arange(4)
    chip.form_idx(idx)
    # every answer now takes 1.5 s, so the batch (and its resends) is still waiting for the board when
    # Ctrl-C arrives, even on a loaded machine where the timer thread runs late
    vb.faults.delay_s = 1.5
    # Ctrl-C semantics even when pytest was started with SIGINT ignored (e.g. as a background job of a
    # non-interactive shell): interrupt_main does nothing unless Python's own handler is installed
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = threading.Timer(0.1, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            chip.set_idx(idx, level=8)
        timer.join()
    finally:
        signal.signal(signal.SIGINT, old_handler)
    assert vb.chip.dac == (0.0, 0.0, 0.0) and not vb.chip.outputs_on and vb.chip.selected is None
    assert vb.smu.state.attrs["smua.source.output"] == 0.0 and vb.smu.state.attrs["smua.source.levelv"] == 0.0


def test_smu_error_is_raised_with_its_text(vb: VirtualBench, chip: RealChip) -> None:
    chip.form_idx([0])
    vb.faults.inject("smu_error")
    with pytest.raises(InstrumentError, match="injected fault"):
        chip.read_smu([0])
    assert vb.smu is not None and vb.smu.state.attrs["smua.source.output"] == 0.0


def test_fpga_disconnect_is_an_instrument_error(vb: VirtualBench, chip: RealChip) -> None:
    vb.faults.inject("disconnect")
    with pytest.raises(InstrumentError):
        chip.read_idx([0, 1])


def test_lossy_link_still_programs_every_cell_exactly_once() -> None:
    faults = Faults(drop_rate=0.1, drop_answer_rate=0.1, garble_rate=0.1, garble_request_rate=0.1, seed=5)
    with (
        VirtualBench(BENCH, seed=2, sim_config=SimConfig.ideal(), pace=False, faults=faults) as vb,
        RealChip.from_bench_file(vb.bench_path, table=TABLE) as chip,
    ):
        assert chip.board is not None and vb.sim is not None
        chip.board.timeout_s, chip.board.retries = 0.1, 8
        idx = np.arange(40)
        chip.form_idx(idx)
        for _ in range(5):
            chip.reset_idx(idx)
            chip.set_idx(idx, level=4)
        assert chip.board.stats.retries > 0
        np.testing.assert_array_equal(vb.sim.set_count[idx], 5)
        np.testing.assert_array_equal(vb.sim.reset_count[idx], 5)


def test_snapshot_keeps_the_formed_mask(vb: VirtualBench, chip: RealChip) -> None:
    chip.form_idx([3, 4])
    snap = chip.snapshot()
    chip.formed_mask()[:] = False
    chip.restore(snap)
    assert chip.formed_mask()[[3, 4]].all() and chip.formed_mask().sum() == 2
