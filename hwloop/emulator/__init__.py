"""The virtual bench: emulated FPGA board and SMU that speak the real protocols, backed by ``SimChip``."""

from hwloop.emulator.bench import VirtualBench
from hwloop.emulator.device import DevicePhysics, EmulatedChip
from hwloop.emulator.faults import Faults

__all__ = ["DevicePhysics", "EmulatedChip", "Faults", "VirtualBench"]
