"""The emulated FPGA addressing board on a pseudo-terminal, speaking the exact protocol of the driver.

It paces its byte stream at the configured baud rate (8N1: 10 bit times per byte) in both directions,
because a pty has no baud rate: a request is acted on no earlier than its last byte would have arrived
on a real UART, and an answer is delivered no earlier than its last byte would have left. It also spends
the board's own execution time (pulse width plus ``settle_ns`` per batch entry).

It answers a retransmission (same sequence number and bytes as one of its last 8 requests) from its cache
without executing again; its receiver runs beside the executor (a UART is full duplex). It
re-checks every condition against the bench limits: a request past a limit is NAKed (``LIMIT``) and
counted in ``violations``, never applied. ``log`` records every operation that reached the board.
"""

from __future__ import annotations

import os
import queue
import select
import struct
import threading
import time
import tty
from dataclasses import dataclass, field

import numpy as np

from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.faults import Faults
from hwloop.errors import SafetyLimitError
from hwloop.instruments.bench import BoardOp, Condition, Limits
from hwloop.instruments.fpga_protocol import (
    DAC,
    IDENT,
    PROTOCOL_VERSION,
    PULSE,
    ROW_CELLS,
    BadCrc,
    Cmd,
    Frame,
    FrameParser,
    Nak,
    decode_batch,
    decode_condition,
    encode_frame,
)

BOARD_ID = "hwloop virtual FPGA board (emulated), fw 1.0"
#: answers the board keeps for retransmissions (a host keeps at most 2 requests in flight)
CACHE_DEPTH = 8


@dataclass
class BoardLog:
    """What reached the board: one (op, condition, n_cells) per executed group; refused requests too."""

    ops: list[tuple[int, Condition, int]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    frames_in: int = 0
    frames_executed: int = 0
    cache_hits: int = 0
    bad_crc_in: int = 0


class BoardEmulator:
    def __init__(
        self,
        chip: EmulatedChip,
        limits: Limits,
        *,
        baud: int = 921_600,
        pace: bool = True,
        faults: Faults | None = None,
        max_batch_ops: int = 8192,
        settle_ns: int = 200,
    ) -> None:
        self.chip = chip
        self.limits = limits
        self.baud = baud
        self.pace = pace
        self.faults = faults or Faults()
        self.max_batch_ops = max_batch_ops
        self.settle_ns = settle_ns
        self.log = BoardLog()
        self.violations = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cache: dict[int, tuple[bytes, bytes]] = {}  # seq -> (request bytes, answer bytes), last 8
        self._inbox: queue.Queue[tuple[Frame | BadCrc, float]] = queue.Queue()
        self._fd_lock = threading.Lock()
        self._rx_thread: threading.Thread | None = None
        self._rx_free = 0.0
        self._tx_free = 0.0
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        tty.setraw(self.master_fd)
        self.port = os.ttyname(self.slave_fd)
        self.connected = True

    # ------------------------------------------------------------------ lifetime
    def start(self) -> BoardEmulator:
        self._rx_thread = threading.Thread(target=self._rx_loop, name="hwloop-board-rx", daemon=True)
        self._thread = threading.Thread(target=self._work_loop, name="hwloop-board", daemon=True)
        self._rx_thread.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in (self._thread, self._rx_thread):
            if t is not None:
                t.join(timeout=5)
        self._disconnect()
        if self.slave_fd >= 0:
            os.close(self.slave_fd)
            self.slave_fd = -1

    def _disconnect(self) -> None:
        with self._fd_lock:
            fd, self.master_fd = self.master_fd, -1
            self.connected = False
            if fd >= 0:
                os.close(fd)

    # ------------------------------------------------------------------ byte pump with UART pacing
    def _byte_time(self, n: int) -> float:
        return n * 10.0 / self.baud if self.pace else 0.0

    def _rx_loop(self) -> None:
        """Receive side (a UART receives while the board works): time-stamp frames as the wire delivers them."""
        parser = FrameParser()
        while not self._stop.is_set():
            fd = self.master_fd
            if fd < 0:
                return
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
            except (OSError, ValueError):
                return
            if self.master_fd != fd:
                return  # disconnected meanwhile (the number may already belong to another file)
            if not ready:
                if parser.buf:  # a frame cut short: drop it after the inter-frame gap (50 ms)
                    parser.buf.clear()
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                if self.master_fd < 0:
                    return
                time.sleep(0.01)  # no slave open at the moment (EIO): keep listening
                continue
            if not data:
                continue
            self._rx_free = max(time.monotonic(), self._rx_free) + self._byte_time(len(data))
            for item in parser.feed(data):
                self._inbox.put((item, self._rx_free))

    def _work_loop(self) -> None:
        while not self._stop.is_set() and self.master_fd >= 0:
            try:
                item, t_arrived = self._inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            self._handle(item, t_arrived)

    def _sleep_until(self, t: float) -> None:
        dt = t - time.monotonic()
        if dt > 0:
            time.sleep(dt)

    def _send(self, frame: bytes) -> None:
        if self.master_fd < 0:
            return
        self._tx_free = max(time.monotonic(), self._tx_free) + self._byte_time(len(frame))
        self._sleep_until(self._tx_free)
        view = memoryview(frame)
        while view:
            try:
                n = os.write(self.master_fd, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            view = view[n:]

    # ------------------------------------------------------------------ frames
    def _handle(self, item: Frame | BadCrc, t_arrived: float) -> None:
        self.log.frames_in += 1
        fault = self.faults.board_fault()
        after = self.faults.disconnect_after
        if fault == "disconnect" or (after and self.log.frames_in > after):
            self._disconnect()
            return
        self._sleep_until(t_arrived)  # the request's last byte arrives now
        if fault == "drop_request":
            return
        if isinstance(item, BadCrc) or fault == "garble_request":
            self.log.bad_crc_in += 1
            self._send(encode_frame(item.seq, Cmd.NAK, bytes([item.cmd & 0xFF, Nak.BAD_CRC])))
            return
        raw = item.encode()
        if item.cmd == Cmd.IDENT:
            self._cache.clear()  # a (new) host session starts with IDENT: forget the previous session's
        cached = self._cache.get(item.seq)
        if cached is not None and cached[0] == raw:
            self.log.cache_hits += 1
            answer = cached[1]
        else:
            answer = self._execute(item)
            self._cache.pop(item.seq, None)
            self._cache[item.seq] = (raw, answer)
            while len(self._cache) > CACHE_DEPTH:
                self._cache.pop(next(iter(self._cache)))
        if self.faults.delay_s > 0 or fault == "delay":
            time.sleep(self.faults.delay_s if self.faults.delay_s > 0 else 0.4)
        if fault == "drop_answer":
            return
        if fault == "garble_answer":
            answer = self.faults.garble(answer)
        self._send(answer)

    def _ack(self, seq: int, cmd: int, data: bytes = b"") -> bytes:
        return encode_frame(seq, Cmd.ACK, bytes([cmd]) + data)

    def _nak(self, seq: int, cmd: int, reason: Nak) -> bytes:
        return encode_frame(seq, Cmd.NAK, bytes([cmd & 0xFF, reason]))

    def _checked(self, op: int, cond: Condition) -> bool:
        try:
            self.limits.check(BoardOp(op), cond)
        except (SafetyLimitError, ValueError) as exc:
            self.violations += 1
            self.log.refused.append(str(exc))
            return False
        return True

    def _execute(self, f: Frame) -> bytes:
        chip = self.chip
        try:
            cmd = Cmd(f.cmd)
        except ValueError:
            return self._nak(f.seq, f.cmd, Nak.UNKNOWN_CMD)
        p = f.payload
        n_tiles = chip.sim.n_tiles
        if cmd is Cmd.IDENT:
            lsb_pa = round(chip.physics.adc_lsb_a * 1e12)
            return self._ack(
                f.seq, cmd, IDENT.pack(PROTOCOL_VERSION, n_tiles, lsb_pa, self.max_batch_ops) + BOARD_ID.encode()
            )
        if cmd is Cmd.SELECT:
            if len(p) != 3:
                return self._nak(f.seq, cmd, Nak.BAD_LENGTH)
            t, r, c = p
            if t >= n_tiles or r >= ROW_CELLS or c >= ROW_CELLS:
                return self._nak(f.seq, cmd, Nak.BAD_PARAM)
            with chip.lock:
                chip.selected = int(chip.flat(np.array([t]), np.array([r]), np.array([c]))[0])
            return self._ack(f.seq, cmd)
        if cmd is Cmd.SET_DAC:
            if len(p) != DAC.size:
                return self._nak(f.seq, cmd, Nak.BAD_LENGTH)
            wl, bl, sl = (x / 1000.0 for x in DAC.unpack(p))
            lim = self.limits
            bl_max = max(lim.max_v_bl, lim.max_v_form)
            if not (abs(wl) <= lim.max_v_wl and abs(bl) <= bl_max and abs(sl) <= lim.max_v_sl):
                self.violations += 1
                self.log.refused.append(f"SET_DAC {wl} {bl} {sl}")
                return self._nak(f.seq, cmd, Nak.LIMIT)
            with chip.lock:
                chip.dac = (wl, bl, sl)
                chip.outputs_on = any(v != 0 for v in chip.dac)
            return self._ack(f.seq, cmd)
        if cmd is Cmd.PULSE:
            if len(p) != PULSE.size:
                return self._nak(f.seq, cmd, Nak.BAD_LENGTH)
            op, width = PULSE.unpack(p)
            if chip.selected is None:
                return self._nak(f.seq, cmd, Nak.NOT_SELECTED)
            cond = Condition(*chip.dac, width)
            if op > BoardOp.READ or not self._checked(op, cond):
                return self._nak(f.seq, cmd, Nak.LIMIT)
            self.log.ops.append((op, cond, 1))
            self._busy(width)
            chip.pulse(np.array([chip.selected]), cond)
            self.log.frames_executed += 1
            return self._ack(f.seq, cmd)
        if cmd is Cmd.READ_ROW:
            if len(p) != 2:
                return self._nak(f.seq, cmd, Nak.BAD_LENGTH)
            t, r = p
            if t >= n_tiles or r >= ROW_CELLS:
                return self._nak(f.seq, cmd, Nak.BAD_PARAM)
            cond = Condition(*chip.dac, 1)
            if not self._checked(BoardOp.READ, cond):
                return self._nak(f.seq, cmd, Nak.LIMIT)
            self.log.ops.append((BoardOp.READ, cond, ROW_CELLS))
            idx = chip.flat(np.full(ROW_CELLS, t), np.full(ROW_CELLS, r), np.arange(ROW_CELLS))
            return self._ack(f.seq, cmd, chip.adc_codes(idx, cond).tobytes())
        if cmd is Cmd.BATCH:
            return self._batch(f)
        if cmd is Cmd.SAFE:
            with chip.lock:
                chip.dac = (0.0, 0.0, 0.0)
                chip.outputs_on = False
                chip.selected = None
            return self._ack(f.seq, cmd)
        if cmd is Cmd.STATUS:
            sel = chip.selected if chip.selected is not None else 0
            t, r, c = sel // (ROW_CELLS * ROW_CELLS), (sel // ROW_CELLS) % ROW_CELLS, sel % ROW_CELLS
            return self._ack(f.seq, cmd, struct.pack("<BBBBB", int(chip.outputs_on), t, r, c, f.seq))
        return self._nak(f.seq, f.cmd, Nak.UNKNOWN_CMD)

    def _busy(self, width_ns: float) -> None:
        if self.pace:
            time.sleep((width_ns + self.settle_ns) * 1e-9)

    def _batch(self, f: Frame) -> bytes:
        try:
            conds_raw, ops = decode_batch(f.payload)
        except ValueError:
            return self._nak(f.seq, Cmd.BATCH, Nak.BAD_LENGTH)
        n_tiles = self.chip.sim.n_tiles
        if ops.size > self.max_batch_ops:
            return self._nak(f.seq, Cmd.BATCH, Nak.BAD_LENGTH)
        if ops.size and (
            ops["tile"].max() >= n_tiles
            or ops["row"].max() >= ROW_CELLS
            or ops["col"].max() >= ROW_CELLS
            or ops["op"].max() > BoardOp.READ
            or ops["cond"].max() >= conds_raw.size
        ):
            return self._nak(f.seq, Cmd.BATCH, Nak.BAD_PARAM)
        conds = [decode_condition(c) for c in conds_raw]
        carr = np.array([(c.v_wl, c.v_bl, c.v_sl, c.width_ns) for c in conds], dtype=float).reshape(-1, 4)
        bad = self.limits.refused(ops["op"].astype(np.int64), carr[ops["cond"].astype(np.int64)])
        if bad.any():  # the board's own check, each entry on its own values, before any pulse of the batch
            k = int(np.flatnonzero(bad)[0])
            self.violations += int(np.count_nonzero(bad))
            self.log.refused.append(f"BATCH entry {k}: op {int(ops['op'][k])} {conds[int(ops['cond'][k])]}")
            return self._nak(f.seq, Cmd.BATCH, Nak.LIMIT)
        key = ops["op"].astype(np.int64) * 256 + ops["cond"]  # grouping only (cond < 256 on the wire)
        idx = self.chip.flat(ops["tile"], ops["row"], ops["col"])
        # The board executes entries in order. When every cell appears once, entries on different cells
        # commute, so the emulator applies each (op, condition) group in one array call; otherwise it
        # walks runs of consecutive equal (op, condition) in order.
        if np.unique(idx).size == idx.size:
            order = np.argsort(key, kind="stable")
        else:
            order = np.arange(key.size)
        skey = key[order]
        cut = np.flatnonzero(np.diff(skey)) + 1
        starts = np.concatenate([[0], cut])
        stops = np.concatenate([cut, [skey.size]])
        codes = np.zeros(ops.size, dtype="<u2")
        is_read = ops["op"] == BoardOp.READ
        busy_ns = 0.0
        for a, b in zip(starts, stops, strict=True):
            sel = order[a:b]
            op, cond = int(ops["op"][sel[0]]), conds[int(ops["cond"][sel[0]])]
            self.log.ops.append((op, cond, int(b - a)))
            busy_ns += (b - a) * (cond.width_ns + self.settle_ns)
            if op == BoardOp.READ:
                codes[sel] = self.chip.adc_codes(idx[sel], cond)
            else:
                self.chip.pulse(idx[sel], cond)
        t_done = time.monotonic() + (busy_ns * 1e-9 if self.pace else 0.0)
        self.log.frames_executed += 1
        data = struct.pack("<H", ops.size) + codes[is_read].tobytes()
        self._sleep_until(t_done)
        return self._ack(f.seq, Cmd.BATCH, data)
