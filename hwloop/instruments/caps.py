"""Hard caps per instrument model: the ceiling no bench file may set its limits above.

A bench file's ``[limits]`` are the lab's own, tighter, limits. The caps here are what the instrument
(or the FPGA link) can do at all, from the manuals; a limit above its cap is a typo or a hostile file,
and the bench is refused when it loads. Each SMU driver has its own table of models, looked up by the
``[smu] driver`` and ``[smu] model`` keys (``SMU_MODEL_CAPS[driver][model]``); a new driver adds its
table here.

Keithley 2600B figures (Series 2600B Reference Manual, ``smuX.source.limitY`` and the range tables):

====================  ==============  ======================  ==========================
model                 largest V range current compliance       channels
====================  ==============  ======================  ==========================
2601B, 2602B, 2604B   40 V            10 nA to 3 A             2601B: a; others: a, b
2611B, 2612B, 2614B   200 V           10 nA to 3 A             2611B: a; others: a, b
2634B, 2635B, 2636B   200 V           100 pA to 1.5 A          2635B: a; others: a, b
====================  ==============  ======================  ==========================

The 2600B is not a pulse generator: its trigger-model pulses are 100 us or longer. hwloop caps them at
1 s (a DC stress, not a pulse, past that).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SmuModelCaps:
    """What one SMU model can source at most, and its smallest current limit (compliance)."""

    model: str
    max_v: float  # largest source-voltage range (V)
    max_current_a: float  # largest current limit (A)
    min_current_limit_a: float  # smallest current limit the instrument accepts (A)
    channels: tuple[str, ...]  # channel letters the model has
    min_width_s: float = 100e-6  # shortest trigger-model pulse
    max_width_s: float = 1.0  # hwloop's cap on one trigger-model pulse


@dataclass(frozen=True)
class BoardCaps:
    """What the FPGA link protocol can carry (docs/fpga-protocol.md)."""

    max_v: float = 32.767  # DAC levels are int16 mV
    max_width_ns: int = 2**32 - 1  # pulse widths are u32 ns
    max_batch_ops: int = 8192
    max_tiles: int = 255  # tile addresses are u8


def _k(model: str, max_v: float, max_i: float, min_i: float, channels: str) -> SmuModelCaps:
    return SmuModelCaps(model, max_v, max_i, min_i, tuple(channels))


#: The TSP 2600B family models hwloop's Keithley driver supports (identify() accepts only these).
KEITHLEY_2600B: dict[str, SmuModelCaps] = {
    m.model: m
    for m in (
        _k("2601B", 40.0, 3.0, 10e-9, "a"),
        _k("2602B", 40.0, 3.0, 10e-9, "ab"),
        _k("2604B", 40.0, 3.0, 10e-9, "ab"),
        _k("2611B", 200.0, 3.0, 10e-9, "a"),
        _k("2612B", 200.0, 3.0, 10e-9, "ab"),
        _k("2614B", 200.0, 3.0, 10e-9, "ab"),
        _k("2634B", 200.0, 1.5, 100e-12, "ab"),
        _k("2635B", 200.0, 1.5, 100e-12, "a"),
        _k("2636B", 200.0, 1.5, 100e-12, "ab"),
    )
}

#: The Keysight B1500A mainframe: what its SMU modules can do at most (the B1510A HPSMU: 200 V, 1 A; the
#: smallest compliance of the B1517A HRSMU, 1 pA; SMU pulses 500 µs .. 2 s). The modules in the slots
#: narrow this further: ``b1500_config.MODULES`` checks the word- and bit-line slots' own ranges.
KEYSIGHT_B1500: dict[str, SmuModelCaps] = {
    "B1500A": SmuModelCaps("B1500A", 200.0, 1.0, 1e-12, ("a",), min_width_s=500e-6, max_width_s=2.0),
}

#: driver name (``[smu] driver``) -> model -> caps. A second SMU driver adds its own table here.
SMU_MODEL_CAPS: dict[str, dict[str, SmuModelCaps]] = {"keithley2600": KEITHLEY_2600B, "b1500": KEYSIGHT_B1500}

#: the model a bench file means when its ``[smu]`` table names none
DEFAULT_MODEL: dict[str, str] = {"keithley2600": "2636B", "b1500": "B1500A"}

BOARD_CAPS = BoardCaps()


def smu_caps(driver: str, model: str) -> SmuModelCaps:
    """The caps of ``model`` under ``driver``; ``KeyError`` with no message if either is unknown."""
    return SMU_MODEL_CAPS[driver][model]
