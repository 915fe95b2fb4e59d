"""Calibration: forming, gate-voltage (I_CC) sweeps, CDF extraction, selection of the HCS levels plus LCS,
and the calibration file that the trainer (weight levels Q) and the simulator (``--cdf``) read.

Written against the ``Chip`` interface only, so it runs on ``SimChip`` and ``RealChip`` alike.
"""

from hwloop.calibration.fileio import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CalibrationFile,
    load_calibration,
    write_calibration,
)
from hwloop.calibration.oplog import OpLog, read_oplog
from hwloop.calibration.procedure import CalibrationConfig, CalibrationResult, calibrate
from hwloop.calibration.select import CRITERION, Selection, select_levels

__all__ = [
    "CRITERION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CalibrationConfig",
    "CalibrationFile",
    "CalibrationResult",
    "OpLog",
    "Selection",
    "calibrate",
    "load_calibration",
    "read_oplog",
    "select_levels",
    "write_calibration",
]
