"""Instrument layer: bench configuration with safety limits, the SMU driver and the FPGA board driver.

Every request is checked against the bench's safety limits here, before a byte leaves the process.
"""

from hwloop.instruments.bench import BenchConfig, Condition, Limits, load_bench
from hwloop.instruments.fpga import FpgaBoard
from hwloop.instruments.smu import Keithley2600, Smu

__all__ = ["BenchConfig", "Condition", "FpgaBoard", "Keithley2600", "Limits", "Smu", "load_bench"]
