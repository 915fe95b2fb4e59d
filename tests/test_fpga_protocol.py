"""FPGA board protocol: framing, CRC, retries and batches over a real pty pair."""

from __future__ import annotations

import math
import os
import select
import struct
import threading
import time
import tty
from collections.abc import Iterator

import numpy as np
import pytest

from hwloop.chip.sim import SimChip, SimConfig
from hwloop.emulator.board import BoardEmulator
from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.faults import Faults
from hwloop.errors import InstrumentError, ProtocolError, SafetyLimitError
from hwloop.instruments.bench import BoardOp, Condition, Limits
from hwloop.instruments.fpga import FpgaBoard
from hwloop.instruments.fpga_protocol import (
    BadCrc,
    Cmd,
    Frame,
    FrameParser,
    crc16,
    decode_batch,
    encode_batch,
    encode_conditions,
    encode_frame,
)

LIMITS = Limits()
SET = Condition(2.0, 1.8, 0.0, 1000)
RESET = Condition(4.8, 0.0, 2.6, 100)
READ = Condition(3.3, 0.1, 0.0, 1000)


def crc_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE written out bit by bit (independent of the implementation under test)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def test_crc_check_value_and_independent_implementation() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogued check value of CRC-16/CCITT-FALSE
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 300):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc16(data) == crc_bitwise(data)


def test_frame_layout() -> None:
    raw = encode_frame(7, Cmd.SELECT, bytes([0, 1, 2]))
    assert raw[:2] == b"\xa5\x5a"
    assert raw[2] == 7 and raw[3] == Cmd.SELECT
    assert struct.unpack_from("<H", raw, 4)[0] == 3
    assert raw[6:9] == bytes([0, 1, 2])
    assert struct.unpack_from("<H", raw, 9)[0] == crc_bitwise(raw[2:9])
    assert len(raw) == 11


def test_parser_resyncs_after_garbage_and_flags_bad_crc() -> None:
    a = encode_frame(1, Cmd.IDENT)
    b = encode_frame(2, Cmd.SAFE)
    bad = bytearray(encode_frame(3, Cmd.STATUS))
    bad[-1] ^= 0xFF
    p = FrameParser()
    items = []
    stream = b"\x00\xa5\x13junk" + a + bytes(bad) + b
    for k in range(0, len(stream), 3):  # byte dribble
        items += p.feed(stream[k : k + 3])
    assert [type(i) for i in items] == [Frame, BadCrc, Frame]
    assert (items[0].seq, items[0].cmd) == (1, Cmd.IDENT)
    assert (items[2].seq, items[2].cmd) == (2, Cmd.SAFE)


def test_batch_codec_round_trip() -> None:
    conds = encode_conditions([SET, RESET])
    ops = np.zeros(3, dtype=[("tile", "u1"), ("row", "u1"), ("col", "u1"), ("op", "u1"), ("cond", "u1")])
    ops["row"], ops["col"], ops["op"], ops["cond"] = [0, 5, 127], [1, 2, 127], [1, 2, 1], [0, 1, 0]
    payload = encode_batch(conds, ops)
    assert len(payload) == 1 + 2 * 10 + 2 + 3 * 5
    c2, o2 = decode_batch(payload)
    assert c2.tolist() == conds.tolist() and o2.tolist() == ops.tolist()
    with pytest.raises(ValueError):
        decode_batch(payload[:-1])


# ---------------------------------------------------------------------- the driver against a hand-played board
@pytest.fixture
def raw_pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def _read_frame(fd: int, timeout_s: float = 2.0) -> bytes:
    buf = b""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            buf += os.read(fd, 4096)
            if len(buf) >= 6 and len(buf) >= 8 + struct.unpack_from("<H", buf, 4)[0]:
                return buf
    raise AssertionError(f"no complete frame, got {buf!r}")


def test_driver_bytes_on_the_wire_and_retransmission_after_a_bad_crc(raw_pty: tuple[int, str]) -> None:
    master, port = raw_pty
    board = FpgaBoard(port, limits=LIMITS, timeout_s=0.3, retries=2)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(board.select(0, 5, 9)))
    t.start()
    first = _read_frame(master)
    body = bytes([1, Cmd.SELECT]) + struct.pack("<H", 3) + bytes([0, 5, 9])
    assert first == b"\xa5\x5a" + body + struct.pack("<H", crc_bitwise(body))
    # answer with a corrupted ACK: the driver must send the very same frame again
    ack = bytearray(encode_frame(1, Cmd.ACK, bytes([Cmd.SELECT])))
    ack[-2] ^= 0x01
    os.write(master, bytes(ack))
    second = _read_frame(master)
    assert second == first
    os.write(master, encode_frame(1, Cmd.ACK, bytes([Cmd.SELECT])))
    t.join(3)
    assert result == [None]
    assert board.stats.retries == 1 and board.stats.bad_crc == 1
    board.ser.close()


def test_driver_gives_up_after_bounded_retries(raw_pty: tuple[int, str]) -> None:
    _, port = raw_pty
    board = FpgaBoard(port, limits=LIMITS, timeout_s=0.05, retries=2)
    with pytest.raises(ProtocolError, match="3 attempt"):
        board.identify()
    # 3 attempts of IDENT, then (the board's state being unknown) 3 attempts of SAFE, all bounded
    assert board.stats.frames == 6 and board.stats.timeouts == 6
    assert board._dac is None  # nothing is pulsed until the DACs are set again
    board.ser.close()


# ---------------------------------------------------------------------- the driver against the emulated board
@pytest.fixture
def link() -> Iterator[tuple[FpgaBoard, BoardEmulator]]:
    sim = SimChip(n_tiles=1, config=SimConfig.ideal(), seed=3)
    emu = BoardEmulator(EmulatedChip(sim, seed=3), Limits(), pace=False, faults=Faults()).start()
    board = FpgaBoard(emu.port, limits=LIMITS, timeout_s=0.25, retries=3)
    board.identify()
    yield board, emu
    board.close()
    emu.stop()


def _formed(board: FpgaBoard, emu: BoardEmulator, n: int) -> np.ndarray:
    idx = np.arange(n)
    emu.chip.sim.form_idx(idx)
    return idx


def test_identify_select_dac_pulse_read_row(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    assert board.info is not None and board.info.tiles == 1
    assert board.adc_lsb_a == pytest.approx(0.5e-9)
    sim = emu.chip.sim
    _formed(board, emu, 128)
    board.select(0, 0, 3)
    board.set_dac(RESET.v_wl, RESET.v_bl, RESET.v_sl)
    board.pulse(BoardOp.RESET, RESET.width_ns)
    assert sim.reset_count[3] == 1 and sim.level[3] == 0
    board.set_dac(READ.v_wl, READ.v_bl, READ.v_sl)
    i_a = board.read_row(0, 0)
    expected = sim.true_g_us(np.arange(128)) * 1e-6 * READ.v_bl
    np.testing.assert_allclose(i_a, expected, atol=board.adc_lsb_a)
    board.safe()
    assert emu.chip.dac == (0.0, 0.0, 0.0) and emu.chip.selected is None


def test_batch_programs_and_reads_in_one_exchange(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    sim = emu.chip.sim
    idx = _formed(board, emu, 300)
    t, r, c = sim.unflat(idx)
    frames0 = board.stats.frames
    board.batch(t, r, c, BoardOp.RESET, 0, [RESET])
    assert board.stats.frames == frames0 + 1
    assert (sim.level[idx] == 0).all() and (sim.reset_count[idx] == 1).all()
    # SET at two gate voltages mixed in one frame
    cond = np.arange(idx.size) % 2
    board.batch(t, r, c, BoardOp.SET, cond, [Condition(1.4, 1.8, 0.0, 1000), Condition(2.2, 1.8, 0.0, 1000)])
    g = sim.true_g_us(idx)
    assert g[cond == 1].mean() > g[cond == 0].mean() + 40  # 2.2 V gate gives the top level
    i_a = board.batch(t, r, c, BoardOp.READ, 0, [READ])
    np.testing.assert_allclose(i_a, sim.true_g_us(idx) * 1e-6 * READ.v_bl, atol=board.adc_lsb_a)


def test_batch_is_split_at_max_batch_ops(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    board.max_batch_ops = 100
    idx = _formed(board, emu, 250)
    t, r, c = emu.chip.sim.unflat(idx)
    frames0 = board.stats.frames
    i_a = board.batch(t, r, c, BoardOp.READ, 0, [READ])
    assert board.stats.frames == frames0 + 3 and i_a.size == 250


@pytest.mark.parametrize("fault", ["drop_request", "drop_answer", "garble_answer", "garble_request", "delay"])
def test_each_link_fault_gives_a_retry_and_exactly_one_pulse(link: tuple[FpgaBoard, BoardEmulator], fault: str) -> None:
    board, emu = link
    idx = _formed(board, emu, 10)
    t, r, c = emu.chip.sim.unflat(idx)
    emu.faults.inject(fault)
    board.batch(t, r, c, BoardOp.RESET, 0, [RESET])
    assert board.stats.retries >= 1
    assert (emu.chip.sim.reset_count[idx] == 1).all()  # a retransmission never pulses twice
    assert emu.chip.pulses == 10


def test_persistent_faults_end_in_a_clear_error(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    emu.faults.inject(*["drop_request"] * 4)
    with pytest.raises(ProtocolError, match=r"RESET|BATCH"):
        board.batch([0], [0], [0], BoardOp.RESET, 0, [RESET])
    assert emu.chip.pulses == 0


def test_disconnect_is_an_instrument_error(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    emu.faults.inject("disconnect")
    with pytest.raises(InstrumentError):
        board.status()


def test_limits_checked_before_anything_is_sent(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    tx0 = board.stats.bytes_tx
    with pytest.raises(SafetyLimitError, match="max_v_gate_set"):
        board.batch([0], [0], [0], BoardOp.SET, 0, [Condition(3.0, 1.8, 0.0, 1000)])
    with pytest.raises(SafetyLimitError, match="width"):
        board.batch(
            [0, 0], [0, 0], [0, 1], [BoardOp.RESET, BoardOp.SET], [0, 1], [RESET, Condition(2.0, 1.8, 0.0, 50_000)]
        )
    with pytest.raises(SafetyLimitError, match="max_v_read"):
        board.batch([0], [0], [0], BoardOp.READ, 0, [Condition(3.3, 1.0, 0.0, 1000)])
    with pytest.raises(SafetyLimitError):
        board.set_dac(6.0, 0.0, 0.0)
    board.set_dac(2.0, 3.5, 0.0)  # legal levels for a FORM ...
    with pytest.raises(SafetyLimitError, match="max_v_bl"):
        board.pulse(BoardOp.SET, 1000)  # ... but not for a SET pulse
    assert board.stats.bytes_tx == tx0 + len(encode_frame(0, Cmd.SET_DAC, b"\0" * 6))
    assert emu.chip.pulses == 0 and emu.violations == 0


def test_board_refuses_what_its_own_limits_forbid(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    emu.limits = Limits(max_v_gate_set=1.5)  # the board is stricter than the host
    with pytest.raises(SafetyLimitError, match="NAK LIMIT"):
        board.batch([0], [0], [0], BoardOp.SET, 0, [SET])
    assert emu.violations == 1 and emu.chip.pulses == 0


def test_emulated_board_paces_the_link_at_the_baud_rate() -> None:
    """The link-efficiency figure relies on this: a pty is instant, the emulator must not be."""
    sim = SimChip(n_tiles=1, config=SimConfig.ideal(), seed=0)
    emu = BoardEmulator(EmulatedChip(sim), Limits(), baud=115_200, pace=True).start()
    board = FpgaBoard(emu.port, limits=LIMITS, baud=115_200, timeout_s=1.0)
    try:
        board.identify()
        idx = np.arange(400)
        t, r, c = sim.unflat(idx)
        tx0, rx0 = board.stats.bytes_tx, board.stats.bytes_rx
        t0 = time.perf_counter()
        board.batch(t, r, c, BoardOp.READ, 0, [READ])
        elapsed = time.perf_counter() - t0
        wire_s = (board.stats.bytes_tx - tx0 + board.stats.bytes_rx - rx0) * 10 / 115_200
        assert elapsed >= wire_s * 0.98  # request and answer are sent one after the other
        assert elapsed < wire_s + 0.5
    finally:
        board.close()
        emu.stop()


@pytest.mark.parametrize(
    "faults",
    [
        (),
        ("drop_request",),
        ("drop_answer",),
        ("garble_answer",),
        ("garble_request",),
        ("delay",),
        ("drop_request", "drop_answer"),
        ("drop_answer", "garble_request"),
    ],
)
def test_pipelined_frames_survive_faults_with_one_pulse_per_cell(
    link: tuple[FpgaBoard, BoardEmulator], faults: tuple[str, ...]
) -> None:
    board, emu = link
    board.max_batch_ops = 50
    idx = _formed(board, emu, 200)  # 4 frames, two in flight at a time
    t, r, c = emu.chip.sim.unflat(idx)
    emu.faults.inject(*faults)
    board.batch(t, r, c, BoardOp.RESET, 0, [RESET])
    np.testing.assert_array_equal(emu.chip.sim.reset_count[idx], 1)
    assert emu.chip.pulses == 200
    i_a = board.batch(t, r, c, BoardOp.READ, 0, [READ])
    np.testing.assert_allclose(i_a, emu.chip.sim.true_g_us(idx) * 1e-6 * READ.v_bl, atol=board.adc_lsb_a)
    assert board.stats.retries >= len(faults)


def test_batches_that_touch_a_cell_twice_stay_in_order(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    board.max_batch_ops = 50
    idx = _formed(board, emu, 60)
    t, r, c = emu.chip.sim.unflat(np.concatenate([idx, idx]))
    op = np.r_[np.full(60, BoardOp.SET), np.full(60, BoardOp.RESET)]  # SET then RESET, split over 3 frames
    cond = np.r_[np.zeros(60, int), np.ones(60, int)]
    emu.faults.inject("drop_request")  # the first frame is lost and retransmitted
    board.batch(t, r, c, op, cond, [SET, RESET])
    assert (emu.chip.sim.level[idx] == 0).all()  # RESET came last for every cell


# ---------------------------------------------------------------------- host state after a lost ACK (issue 12)
def test_lost_acks_make_the_dac_state_unknown_until_set_again(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    _formed(board, emu, 8)
    board.select(0, 0, 3)
    board.set_dac(1.4, 1.8, 0.0)  # SET levels, known to the host
    # The RESET levels reach the board, but every answer is lost and the retries run out.
    emu.faults.inject(*["drop_answer"] * (board.retries + 1))
    with pytest.raises(ProtocolError):
        board.set_dac(RESET.v_wl, RESET.v_bl, RESET.v_sl)
    assert board._dac is None
    assert emu.chip.dac == (0.0, 0.0, 0.0)  # the driver sent SAFE at once
    n_ops = len(emu.log.ops)
    # Before: the host checked this SET pulse against its stale (SET) levels while the board held the
    # RESET ones, V_WL 4.8 V with V_BL > V_SL never checked. Now: refused, nothing sent.
    board.select(0, 0, 3)
    with pytest.raises(InstrumentError, match="unknown"):
        board.pulse(BoardOp.SET, 1000)
    with pytest.raises(InstrumentError, match="unknown"):
        board.read_row(0, 0)
    assert len(emu.log.ops) == n_ops
    board.set_dac(1.4, 1.8, 0.0)
    board.select(0, 0, 3)
    board.pulse(BoardOp.SET, 1000)
    assert emu.log.ops[-1][1] == Condition(1.4, 1.8, 0.0, 1000)


def test_lost_acks_and_a_lost_safe_still_refuse_the_next_pulse(link: tuple[FpgaBoard, BoardEmulator]) -> None:
    board, emu = link
    board.select(0, 0, 3)
    # SET_DAC's answers are lost, then the SAFE requests: the board keeps the RESET levels
    emu.faults.inject(*["drop_answer"] * (board.retries + 1), *["drop_request"] * (board.retries + 1))
    with pytest.raises(ProtocolError):
        board.set_dac(RESET.v_wl, RESET.v_bl, RESET.v_sl)
    assert emu.chip.dac == (RESET.v_wl, RESET.v_bl, RESET.v_sl)
    n_ops = len(emu.log.ops)
    with pytest.raises(InstrumentError, match="sent to SAFE"):  # this time SAFE gets through
        board.pulse(BoardOp.SET, 1000)
    assert emu.chip.dac == (0.0, 0.0, 0.0) and len(emu.log.ops) == n_ops


def test_batch_entries_are_checked_on_their_own_values_in_large_condition_tables(
    link: tuple[FpgaBoard, BoardEmulator],
) -> None:
    board, emu = link
    # 70,000 conditions: with the old (op * 65536 + cond) key, SET entry 65,536 + k aliased to RESET k.
    conds = [RESET] * 70_000
    conds[65_536] = Condition(1.6, 3.5, 0.0, 1000)  # a FORM level: 3.5 V on the bit line is past max_v_bl
    n_ops = len(emu.log.ops)
    with pytest.raises(SafetyLimitError, match="max_v_bl"):
        board.batch([0, 0], [0, 0], [1, 2], [BoardOp.RESET, BoardOp.SET], [0, 65_536], conds)
    assert len(emu.log.ops) == n_ops
    board.batch([0, 0], [0, 0], [1, 2], [BoardOp.RESET, BoardOp.FORM], [0, 65_536], conds)  # fine as FORM
    assert len(emu.log.ops) > n_ops and emu.violations == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, "2.0", True])
def test_bad_values_in_pulses_and_dacs_are_refused(link: tuple[FpgaBoard, BoardEmulator], bad: object) -> None:
    board, _emu = link
    frames = board.stats.frames
    with pytest.raises(SafetyLimitError):
        board.set_dac(bad, 0.0, 0.0)  # type: ignore[arg-type]
    with pytest.raises(SafetyLimitError):
        board.batch([0], [0], [1], BoardOp.SET, 0, [Condition(bad, 1.8, 0.0, 1000)])  # type: ignore[arg-type]
    assert board.stats.frames == frames


def test_a_nan_limit_refuses_everything() -> None:
    lim = Limits(max_v_gate_set=math.nan)
    with pytest.raises(SafetyLimitError, match="max_v_gate_set"):
        lim.check(BoardOp.SET, Condition(4.9, 1.8, 0.0, 1000))
    with pytest.raises(SafetyLimitError):
        lim.check(BoardOp.SET, Condition(1.4, 1.8, 0.0, 1000))
    assert lim.refused(np.array([BoardOp.SET]), np.array([[1.4, 1.8, 0.0, 1000]])).all()
