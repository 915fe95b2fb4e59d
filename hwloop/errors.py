"""The hwloop error hierarchy.

Every error a user can cause (bad input, bad files, instrument trouble) is a ``HwloopError``.
The CLI turns each one into a single line on stderr and exit code 2.
"""

from __future__ import annotations


class HwloopError(Exception):
    """Base of every error hwloop reports to a user. The message says what is wrong and what to do."""


class SafetyLimitError(HwloopError):
    """A request would exceed a bench safety limit; nothing was sent to the instrument."""


class InstrumentError(HwloopError):
    """An instrument reported an error, did not answer in time, or disconnected."""


class ProtocolError(InstrumentError):
    """A frame on the FPGA link was garbled or out of sequence beyond the retry budget."""


class ChipError(HwloopError):
    """An operation on the chip is invalid: address out of range, device not formed, bad level."""


class CdfTableError(HwloopError):
    """A conductance CDF table (or calibration used as one) is malformed."""


class CalibrationError(HwloopError):
    """Calibration could not run or its result is unusable."""


class RunLogError(HwloopError):
    """A run log is missing, corrupt, foreign, or does not match the requested configuration."""


class DataError(HwloopError):
    """A data set is missing or corrupt."""


class ConfigError(HwloopError):
    """A configuration (bench file, training options) is invalid."""
