"""The FPGA addressing board's framed binary protocol (both ends: the driver and the emulator).

Specification: ``docs/fpga-protocol.md``. In short, every frame is::

    A5 5A | seq u8 | cmd u8 | len u16 LE | payload (len bytes) | CRC-16/CCITT-FALSE u16 LE

The CRC covers ``seq .. payload`` (poly 0x1021, init 0xFFFF, no reflection, no final xor). The board
answers every request with ACK (payload: echoed command, then data) or NAK (echoed command, reason), in a
frame carrying the request's sequence number. Retransmissions reuse the sequence number, and the board
answers a repeated sequence number from its cache without executing again: a retry never pulses twice.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass

import numpy as np

from hwloop.instruments.bench import BoardOp, Condition

SOF = b"\xa5\x5a"
HEADER = struct.Struct("<2sBBH")  # sof, seq, cmd, len
HEADER_SIZE = HEADER.size  # 6
CRC_SIZE = 2
OVERHEAD = HEADER_SIZE + CRC_SIZE  # 8 bytes of framing per frame
MAX_PAYLOAD = 65_535
PROTOCOL_VERSION = 1
ROW_CELLS = 128

#: One batch condition: V_WL, V_BL, V_SL in mV (int16), width in ns (uint32).
COND_DTYPE = np.dtype([("v_wl_mv", "<i2"), ("v_bl_mv", "<i2"), ("v_sl_mv", "<i2"), ("width_ns", "<u4")])
#: One batch operation: address, op code, condition index.
OP_DTYPE = np.dtype([("tile", "u1"), ("row", "u1"), ("col", "u1"), ("op", "u1"), ("cond", "u1")])
#: Bytes per batch entry on the wire: the unit of the link-efficiency figure.
OP_ENTRY_BYTES = OP_DTYPE.itemsize  # 5
MAX_CONDITIONS = 255
IDENT = struct.Struct("<BBIH")  # protocol version, tiles, ADC LSB (pA), max batch ops; then ASCII id
DAC = struct.Struct("<hhh")
PULSE = struct.Struct("<BI")


class Cmd(enum.IntEnum):
    IDENT = 0x01
    SELECT = 0x02
    SET_DAC = 0x03
    PULSE = 0x04
    READ_ROW = 0x05
    BATCH = 0x06
    SAFE = 0x07
    STATUS = 0x08
    ACK = 0x80
    NAK = 0x81


class Nak(enum.IntEnum):
    BAD_CRC = 1
    BAD_LENGTH = 2
    UNKNOWN_CMD = 3
    BAD_PARAM = 4
    LIMIT = 5
    NOT_SELECTED = 6


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF). ``crc16(b"123456789") == 0x29B1``."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class Frame:
    seq: int
    cmd: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_frame(self.seq, self.cmd, self.payload)


def encode_frame(seq: int, cmd: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte frame limit")
    body = HEADER.pack(SOF, seq & 0xFF, cmd & 0xFF, len(payload)) + payload
    return body + struct.pack("<H", crc16(memoryview(body)[2:]))


class BadCrc(Exception):
    def __init__(self, seq: int, cmd: int) -> None:
        super().__init__(f"bad CRC on a frame (seq {seq}, cmd 0x{cmd:02x})")
        self.seq, self.cmd = seq, cmd


class FrameParser:
    """Incremental frame parser: feed bytes, get frames. Resynchronises on the SOF after garbage.

    ``feed`` returns a list of ``Frame`` or ``BadCrc`` items (a complete frame whose CRC failed).
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[Frame | BadCrc]:
        self.buf += data
        out: list[Frame | BadCrc] = []
        while True:
            i = self.buf.find(SOF)
            if i < 0:
                keep = 1 if self.buf[-1:] == SOF[:1] else 0
                self.skipped += len(self.buf) - keep
                del self.buf[: len(self.buf) - keep]
                return out
            if i:
                self.skipped += i
                del self.buf[:i]
            if len(self.buf) < HEADER_SIZE:
                return out
            _, seq, cmd, n = HEADER.unpack_from(self.buf)
            total = HEADER_SIZE + n + CRC_SIZE
            if len(self.buf) < total:
                return out
            body = bytes(self.buf[2 : HEADER_SIZE + n])
            (crc,) = struct.unpack_from("<H", self.buf, HEADER_SIZE + n)
            if crc16(body) == crc:
                out.append(Frame(seq, cmd, bytes(self.buf[HEADER_SIZE : HEADER_SIZE + n])))
                del self.buf[:total]
            else:
                out.append(BadCrc(seq, cmd))
                # Drop only the SOF: the length may itself be garbled, so rescan from the next byte.
                self.skipped += 2
                del self.buf[:2]


# ---------------------------------------------------------------------- payload codecs
def to_mv(v: float) -> int:
    return round(v * 1000.0)


def encode_conditions(conds: list[Condition]) -> np.ndarray:
    arr = np.zeros(len(conds), dtype=COND_DTYPE)
    for k, c in enumerate(conds):
        arr[k] = (to_mv(c.v_wl), to_mv(c.v_bl), to_mv(c.v_sl), int(c.width_ns))
    return arr


def decode_condition(row: np.void) -> Condition:
    return Condition(
        int(row["v_wl_mv"]) / 1000.0, int(row["v_bl_mv"]) / 1000.0, int(row["v_sl_mv"]) / 1000.0, int(row["width_ns"])
    )


def encode_batch(conds: np.ndarray, ops: np.ndarray) -> bytes:
    """BATCH payload: n_cond u8, conditions, n_ops u16, operations."""
    if not 1 <= conds.size <= MAX_CONDITIONS:
        raise ValueError(f"a batch carries 1..{MAX_CONDITIONS} conditions, got {conds.size}")
    return (
        bytes([conds.size])
        + conds.astype(COND_DTYPE, copy=False).tobytes()
        + struct.pack("<H", ops.size)
        + ops.astype(OP_DTYPE, copy=False).tobytes()
    )


def decode_batch(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_batch``; raises ``ValueError`` if the lengths do not add up."""
    if not payload:
        raise ValueError("empty batch payload")
    n_cond = payload[0]
    off = 1 + n_cond * COND_DTYPE.itemsize
    if n_cond == 0 or len(payload) < off + 2:
        raise ValueError("batch payload too short for its condition table")
    conds = np.frombuffer(payload, dtype=COND_DTYPE, count=n_cond, offset=1)
    (n_ops,) = struct.unpack_from("<H", payload, off)
    if len(payload) != off + 2 + n_ops * OP_DTYPE.itemsize:
        raise ValueError(f"batch payload length {len(payload)} does not match {n_cond} conditions, {n_ops} ops")
    ops = np.frombuffer(payload, dtype=OP_DTYPE, count=n_ops, offset=off + 2)
    return conds, ops


def batch_frame_bytes(n_ops: int, n_cond: int = 1) -> int:
    """Bytes on the wire of one BATCH request frame."""
    return OVERHEAD + 1 + n_cond * COND_DTYPE.itemsize + 2 + n_ops * OP_ENTRY_BYTES


__all__ = [
    "COND_DTYPE",
    "MAX_CONDITIONS",
    "MAX_PAYLOAD",
    "OP_DTYPE",
    "OP_ENTRY_BYTES",
    "OVERHEAD",
    "SOF",
    "BadCrc",
    "BoardOp",
    "Cmd",
    "Frame",
    "FrameParser",
    "Nak",
    "crc16",
    "decode_batch",
    "encode_batch",
    "encode_frame",
]
