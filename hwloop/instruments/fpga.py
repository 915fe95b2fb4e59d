"""Driver of the FPGA addressing board: row/column select, WL/BL/SL DACs, pulses, ADC reads, batches.

The protocol is in ``hwloop.instruments.fpga_protocol`` and ``docs/fpga-protocol.md``. Every request is
checked against the bench limits before it is framed; a timeout or a bad CRC (either direction) gives a
bounded number of retransmissions with the same sequence number, which the board answers from its cache
without pulsing again. The board's own refusals (NAK) are raised at once.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import serial

from hwloop.errors import InstrumentError, ProtocolError, SafetyLimitError
from hwloop.instruments.bench import BenchConfig, BoardOp, Condition, Limits, _finite, conditions_array
from hwloop.instruments.fpga_protocol import (
    DAC,
    IDENT,
    MAX_CONDITIONS,
    OP_DTYPE,
    PULSE,
    ROW_CELLS,
    BadCrc,
    Cmd,
    Frame,
    FrameParser,
    Nak,
    encode_batch,
    encode_conditions,
    encode_frame,
)

SerialFactory = Callable[..., Any]

try:  # a vanished pty/USB port raises termios.error from tcdrain
    import termios

    _LINK_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # pragma: no cover
    _LINK_ERRORS = (serial.SerialException, OSError)


@dataclass
class BoardInfo:
    protocol_version: int
    tiles: int
    adc_lsb_a: float
    max_batch_ops: int
    ident: str


@dataclass
class LinkStats:
    frames: int = 0
    retries: int = 0
    bytes_tx: int = 0
    bytes_rx: int = 0
    timeouts: int = 0
    bad_crc: int = 0


class FpgaBoard:
    """The addressing board over a serial port (pyserial URL or device path)."""

    def __init__(
        self,
        port: str,
        *,
        limits: Limits,
        baud: int = 921_600,
        timeout_s: float = 0.5,
        retries: int = 3,
        max_batch_ops: int = 4096,
        serial_factory: SerialFactory | None = None,
    ) -> None:
        self.limits = limits
        self.port = port
        self.baud = int(baud)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.max_batch_ops = int(max_batch_ops)
        #: batch frames in flight at once when they commute (1: stop-and-wait)
        self.pipeline_window = 2
        self.stats = LinkStats()
        self._seq = 0
        self._parser = FrameParser()
        self._items: deque[Frame | BadCrc] = deque()
        #: DAC levels the board holds, as the host knows them; None after a failed exchange (unknown)
        self._dac: tuple[float, float, float] | None = (0.0, 0.0, 0.0)
        self._recovering = False
        self.info: BoardInfo | None = None
        factory = serial_factory or serial.serial_for_url
        try:
            self.ser = factory(port, baudrate=self.baud, timeout=self.timeout_s, write_timeout=max(self.timeout_s, 5.0))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise InstrumentError(f"FPGA board: cannot open serial port {port!r}: {exc}") from None

    @classmethod
    def from_bench(cls, bench: BenchConfig, **kw: Any) -> FpgaBoard:
        f = bench.fpga
        return cls(
            f.port,
            limits=bench.limits,
            baud=f.baud,
            timeout_s=f.timeout_s,
            retries=f.retries,
            max_batch_ops=f.max_batch_ops,
            **kw,
        )

    # ------------------------------------------------------------------ link
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _read_frame(self, deadline: float) -> Frame | BadCrc | None:
        while not self._items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.ser.timeout = remaining
            try:
                data = self.ser.read(max(1, self.ser.in_waiting))
            except _LINK_ERRORS as exc:
                raise InstrumentError(f"FPGA board on {self.port}: link lost ({exc})") from None
            if not data:
                return None
            self.stats.bytes_rx += len(data)
            self._items.extend(self._parser.feed(data))
        return self._items.popleft()

    def exchange(self, cmd: Cmd, payload: bytes = b"", *, timeout_s: float | None = None) -> bytes:
        """Send one request and return the ACK data.

        Retransmits the same frame (same sequence number) on a timeout, an answer with a bad CRC or a NAK
        for a corrupted request, at most ``retries`` times; raises ``ProtocolError`` after that. Other
        NAKs are raised at once (``SafetyLimitError`` for the board's own limit check).
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return self.exchange_many(cmd, [payload], [timeout], window=1)[0]

    def _write(self, frame: bytes) -> None:
        try:
            self.ser.write(frame)
            self.ser.flush()
        except _LINK_ERRORS as exc:
            raise InstrumentError(f"FPGA board on {self.port}: write failed ({exc})") from None
        self.stats.frames += 1
        self.stats.bytes_tx += len(frame)

    def exchange_many(
        self,
        cmd: Cmd,
        payloads: Sequence[bytes],
        timeouts_s: Sequence[float],
        window: int = 1,
        on_answer: Callable[[int, bytes], None] | None = None,
    ) -> list[bytes]:
        """Several requests of one command, up to ``window`` of them in flight (the link is full duplex).

        With ``window=2`` the next request travels while the board executes the previous one and sends
        its answer back. Answers are matched by sequence number; the board keeps its last answers, so a
        retransmitted request is answered from its cache and never executed twice. The caller allows a
        window > 1 only when the requests commute (e.g. batches on distinct cells), because a request lost
        on the way is executed after the ones behind it. ``on_answer(k, payload)`` sees each answer, in
        request order, as soon as it is checked.
        """
        try:
            return self._exchange_many(cmd, payloads, timeouts_s, window, on_answer)
        except BaseException:
            # The board may have executed a request whose answer was lost: its DAC levels are unknown now.
            # Nothing is pulsed until the host has sent SAFE and set the DACs again (``set_dac``).
            self._dac = None
            if cmd != Cmd.SAFE and not self._recovering:
                self._try_safe()
            raise

    def _try_safe(self) -> bool:
        """Best effort: send SAFE once (its own bounded retries). True if the board acknowledged it."""
        self._recovering = True
        try:
            self._exchange_many(Cmd.SAFE, [b""], [self.timeout_s], 1)
            return True
        except Exception:
            return False
        finally:
            self._recovering = False

    def _exchange_many(
        self,
        cmd: Cmd,
        payloads: Sequence[bytes],
        timeouts_s: Sequence[float],
        window: int = 1,
        on_answer: Callable[[int, bytes], None] | None = None,
    ) -> list[bytes]:
        n = len(payloads)
        seqs = [self._next_seq() for _ in range(n)]
        frames = [encode_frame(q, cmd, p) for q, p in zip(seqs, payloads, strict=True)]
        pos = {q: k for k, q in enumerate(seqs)}
        answers: dict[int, Frame] = {}
        attempts = [0] * n
        try:
            self.ser.reset_input_buffer()
        except _LINK_ERRORS as exc:
            raise InstrumentError(f"FPGA board on {self.port}: link lost ({exc})") from None
        self._parser = FrameParser()
        self._items.clear()
        sent = 0
        out: list[bytes] = []
        for k in range(n):
            while sent < n and sent - k < max(window, 1):
                self._write(frames[sent])
                sent += 1
            deadline = time.monotonic() + timeouts_s[k]
            while seqs[k] not in answers:
                item = self._read_frame(deadline)
                problem = ""
                if item is None:
                    self.stats.timeouts += 1
                    problem = f"no answer within {timeouts_s[k]:.3g} s"
                elif isinstance(item, BadCrc):
                    self.stats.bad_crc += 1
                    problem = "answer with a bad CRC"
                elif item.cmd == Cmd.NAK and item.payload[1:2] == bytes([Nak.BAD_CRC]):
                    j = pos.get(item.seq, k)
                    if j > k:  # a later request arrived corrupted: send it again now
                        self._retransmit(cmd, frames, attempts, j, "request arrived corrupted (NAK BAD_CRC)")
                        continue
                    problem = "the board received the request corrupted (NAK BAD_CRC)"
                elif item.seq in pos and pos[item.seq] >= k:
                    answers[item.seq] = item  # this answer, or one to a request behind it
                    continue
                else:
                    continue  # a late answer to an earlier request: ignore it
                self._retransmit(cmd, frames, attempts, k, problem)
                deadline = time.monotonic() + timeouts_s[k]
            out.append(self._check_answer(cmd, answers.pop(seqs[k])))
            if on_answer is not None:
                on_answer(k, out[-1])
        return out

    def _retransmit(self, cmd: Cmd, frames: list[bytes], attempts: list[int], k: int, problem: str) -> None:
        attempts[k] += 1
        if attempts[k] > self.retries:
            raise ProtocolError(
                f"FPGA board on {self.port}: {cmd.name} failed after {self.retries + 1} attempt(s): {problem}"
            )
        self.stats.retries += 1
        self._write(frames[k])

    def _check_answer(self, cmd: Cmd, item: Frame) -> bytes:
        if item.cmd == Cmd.NAK:
            reason = item.payload[1] if len(item.payload) > 1 else 0
            name = Nak(reason).name if reason in Nak._value2member_map_ else f"code {reason}"
            if reason == Nak.LIMIT:
                raise SafetyLimitError(f"FPGA board refused {cmd.name}: past its own limits (NAK {name})")
            raise ProtocolError(f"FPGA board refused {cmd.name}: NAK {name}")
        if item.cmd != Cmd.ACK or not item.payload or item.payload[0] != cmd:
            raise ProtocolError(f"FPGA board answered {cmd.name} with an unexpected frame (cmd 0x{item.cmd:02x})")
        return item.payload[1:]

    # ------------------------------------------------------------------ commands
    def identify(self) -> BoardInfo:
        data = self.exchange(Cmd.IDENT)
        if len(data) < IDENT.size:
            raise ProtocolError("FPGA board: IDENT answer too short")
        ver, tiles, lsb_pa, max_ops = IDENT.unpack_from(data)
        ident = data[IDENT.size :].decode("ascii", "replace")
        self.info = BoardInfo(ver, tiles, lsb_pa * 1e-12, max_ops, ident)
        return self.info

    @property
    def adc_lsb_a(self) -> float:
        if self.info is None:
            self.identify()
        assert self.info is not None
        return self.info.adc_lsb_a

    def select(self, tile: int, row: int, col: int) -> None:
        self._check_address(np.array([tile]), np.array([row]), np.array([col]))
        self.exchange(Cmd.SELECT, bytes([tile, row, col]))

    def set_dac(self, v_wl: float, v_bl: float, v_sl: float) -> None:
        """Set the three terminal DACs (V). Checked against the per-terminal limits."""
        lim = self.limits
        if not all(_finite(v) for v in (v_wl, v_bl, v_sl)):
            raise SafetyLimitError(
                f"SET_DAC refused, nothing was sent: non-finite level ({v_wl!r}, {v_bl!r}, {v_sl!r})"
            )
        bl_max = max(lim.max_v_bl, lim.max_v_form)
        bad = [f"|V_WL| {abs(v_wl)} V > {lim.max_v_wl} V" for _ in [0] if not abs(v_wl) <= lim.max_v_wl]
        bad += [f"|V_BL| {abs(v_bl)} V > {bl_max} V" for _ in [0] if not abs(v_bl) <= bl_max]
        bad += [f"|V_SL| {abs(v_sl)} V > {lim.max_v_sl} V" for _ in [0] if not abs(v_sl) <= lim.max_v_sl]
        if bad:
            raise SafetyLimitError("SET_DAC refused, nothing was sent: " + "; ".join(bad))
        self.exchange(Cmd.SET_DAC, DAC.pack(_mv(v_wl), _mv(v_bl), _mv(v_sl)))
        self._dac = (v_wl, v_bl, v_sl)

    def _known_dac(self, what: str) -> tuple[float, float, float]:
        """The DAC levels the board holds; refuses (after sending SAFE) when a failed exchange left them unknown."""
        if self._dac is None:
            sent = self._try_safe()
            raise InstrumentError(
                f"FPGA board on {self.port}: {what} refused, nothing was sent: an earlier exchange failed, so "
                f"the board's DAC levels are unknown; {'it was sent to SAFE' if sent else 'SAFE got no answer'}. "
                "Set the DACs again (set_dac) before the next pulse."
            )
        return self._dac

    def pulse(self, op: BoardOp, width_ns: int) -> None:
        """One pulse of ``width_ns`` on the selected cell at the present DAC levels, checked as ``op``."""
        if not (_is_int(width_ns) or (isinstance(width_ns, float) and width_ns.is_integer())):
            raise SafetyLimitError(f"PULSE refused, nothing was sent: width {width_ns!r} ns is not an integer")
        cond = Condition(*self._known_dac("PULSE"), int(width_ns))
        self.limits.check(BoardOp(op), cond)
        self.exchange(Cmd.PULSE, PULSE.pack(int(op), int(width_ns)))

    def read_row(self, tile: int, row: int) -> np.ndarray:
        """ADC currents (A) of the 128 cells of a row, at the present DAC levels (checked as a READ)."""
        self.limits.check(BoardOp.READ, Condition(*self._known_dac("READ_ROW"), 1))
        self._check_address(np.array([tile]), np.array([row]), np.array([0]))
        data = self.exchange(Cmd.READ_ROW, bytes([tile, row]))
        codes = np.frombuffer(data, dtype="<u2")
        if codes.size != ROW_CELLS:
            raise ProtocolError(f"FPGA board: READ_ROW answered {codes.size} values, expected {ROW_CELLS}")
        return codes * self.adc_lsb_a

    def safe(self) -> None:
        """All DACs to 0 V, outputs disconnected."""
        self.exchange(Cmd.SAFE)
        self._dac = (0.0, 0.0, 0.0)

    def status(self) -> dict[str, int]:
        data = self.exchange(Cmd.STATUS)
        flags, tile, row, col, last_seq = struct.unpack_from("<BBBBB", data)
        return {"outputs_on": flags & 1, "tile": tile, "row": row, "col": col, "last_seq": last_seq}

    # ------------------------------------------------------------------ batch
    def _check_address(self, tile: np.ndarray, row: np.ndarray, col: np.ndarray) -> None:
        n_tiles = self.info.tiles if self.info else 255
        if tile.size and (
            tile.min() < 0
            or tile.max() >= n_tiles
            or row.min() < 0
            or row.max() >= ROW_CELLS
            or col.min() < 0
            or col.max() >= ROW_CELLS
        ):
            raise ProtocolError(f"FPGA board: address outside {n_tiles} tile(s) of {ROW_CELLS}x{ROW_CELLS}")

    def batch(
        self,
        tile: np.ndarray,
        row: np.ndarray,
        col: np.ndarray,
        op: np.ndarray | int,
        cond: np.ndarray | int,
        conditions: Sequence[Condition],
        on_ack: Callable[[int, int, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Apply ``(address, op, conditions[cond])`` entries in as few frames as possible.

        Every entry is checked against the limits on its own (op, condition values) before the first frame
        is sent. Returns the ADC currents (A) of the READ entries, in entry order. ``on_ack(start, stop,
        i_read_a)`` is called as each frame is acknowledged, with its entry range and the currents of its
        READ entries (the run and calibration logs record real operations per frame, not per array call).
        """
        tile, row, col = (np.asarray(a, dtype=np.int64).ravel() for a in (tile, row, col))
        n = tile.size
        op_a = np.broadcast_to(np.asarray(op, dtype=np.int64), (n,))
        cond_a = np.broadcast_to(np.asarray(cond, dtype=np.int64), (n,))
        if n == 0:
            return np.zeros(0)
        if cond_a.min() < 0 or cond_a.max() >= len(conditions):
            raise ProtocolError("batch: condition index outside the condition list")
        if op_a.min() < 0 or op_a.max() > max(BoardOp):
            raise ProtocolError("batch: unknown operation code")
        self._check_address(tile, row, col)
        carr = conditions_array(conditions)
        bad = self.limits.refused(op_a, carr[cond_a])  # the safety gate: each entry on its own values
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            self.limits.check(BoardOp(int(op_a[k])), conditions[int(cond_a[k])].quantized())
            raise SafetyLimitError(
                f"batch entry {k} ({BoardOp(int(op_a[k])).name}, condition {int(cond_a[k])}) refused, nothing was sent"
            )
        qconds = [Condition(float(r[0]), float(r[1]), float(r[2]), int(r[3])) for r in carr[np.unique(cond_a)]]
        qmap = dict(zip(np.unique(cond_a).tolist(), qconds, strict=True))
        entries = np.empty(n, dtype=OP_DTYPE)
        entries["tile"], entries["row"], entries["col"], entries["op"] = tile, row, col, op_a
        lsb = self.adc_lsb_a
        out: list[np.ndarray] = []
        step = self.max_batch_ops
        if self.info is not None:
            step = min(step, self.info.max_batch_ops)
        payloads: list[bytes] = []
        timeouts: list[float] = []
        sizes: list[tuple[int, int]] = []
        start = 0
        while start < n:
            stop = min(start + step, n)
            chunk_cond = cond_a[start:stop]
            used, local = np.unique(chunk_cond, return_inverse=True)
            if used.size > MAX_CONDITIONS:
                # too many distinct conditions: shorten the chunk to the first MAX_CONDITIONS of them
                first = np.unique(chunk_cond, return_index=True)[1]
                cut = np.sort(first)[MAX_CONDITIONS]
                stop = start + int(cut)
                chunk_cond = cond_a[start:stop]
                used, local = np.unique(chunk_cond, return_inverse=True)
            ent = entries[start:stop].copy()
            ent["cond"] = local
            payloads.append(encode_batch(encode_conditions([qmap[int(u)] for u in used]), ent))
            timeouts.append(self._batch_timeout(len(payloads[-1]), ent))
            sizes.append((ent.size, int(np.count_nonzero(ent["op"] == BoardOp.READ))))
            start = stop
        # frames commute when no cell appears twice (or nothing but reads): then keep two in flight
        flat = (tile * ROW_CELLS + row) * ROW_CELLS + col
        commute = bool(np.all(op_a == BoardOp.READ)) or np.unique(flat).size == n
        window = self.pipeline_window if commute else 1
        firsts = np.concatenate([[0], np.cumsum([sz[0] for sz in sizes])]).astype(int)

        def answered(k: int, data: bytes) -> None:
            n_ent, n_read = sizes[k]
            (n_done,) = struct.unpack_from("<H", data)
            if n_done != n_ent:
                raise ProtocolError(f"FPGA board executed {n_done} of {n_ent} batch entries")
            codes = np.frombuffer(data, dtype="<u2", offset=2)
            if codes.size != n_read:
                raise ProtocolError(f"FPGA board returned {codes.size} ADC values for {n_read} READ entries")
            out.append(codes * lsb)
            if on_ack is not None:  # this frame is acknowledged: its operations really happened
                on_ack(int(firsts[k]), int(firsts[k + 1]), out[-1])

        self.exchange_many(Cmd.BATCH, payloads, timeouts, window, on_answer=answered)
        return np.concatenate(out)

    def _batch_timeout(self, n_bytes: int, ent: np.ndarray) -> float:
        """Timeout for a batch: the link time of both directions at the baud rate, plus the base timeout."""
        n_read = int(np.count_nonzero(ent["op"] == BoardOp.READ))
        wire_s = (n_bytes + 2 * n_read + 32) * 10.0 / self.baud
        return self.timeout_s + 2.0 * wire_s

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Put the board in its safe state (best effort) and close the port. Safe to call twice."""
        if getattr(self, "ser", None) is None:
            return
        try:
            if self.ser.is_open:
                self.safe()
        except Exception:
            pass
        finally:
            try:
                self.ser.close()
            finally:
                self.ser = None

    def __enter__(self) -> FpgaBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _mv(v: float) -> int:
    return round(v * 1000.0)
