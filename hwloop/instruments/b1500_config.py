"""The ``[b1500]`` section of a bench file and the B1500A module table (ranges per model).

A Keysight B1500A holds up to ten plug-in modules; the bench file names the slot and the expected model
of the word-line SMU (``wl_slot``, ``wl_module``) and of the bit-line SMU (``bl_slot``, ``bl_module``).
The bit-line SMU is bounded by ``[limits] smu_max_v`` / ``smu_max_current_a`` / ``smu_max_width_s``; the
word-line SMU (the gate) by ``wl_max_v`` / ``wl_max_current_a`` here and by ``[limits] max_v_wl``. Every
limit must lie inside the module's own range (``MODULES``): a bench that asks for more is refused when
it is loaded, before anything is sent. ``check_modules`` compares the models against the instrument's
``UNT?`` answer when the driver connects. Format: ``docs/bench-config.md``, commands: ``docs/flex.md``.

This module imports nothing from the rest of hwloop except the error classes, so ``bench.py`` can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwloop.errors import ConfigError


@dataclass(frozen=True)
class ModuleSpec:
    """Output range of one B1500A module model (data sheet figures; SI units)."""

    kind: str  # PyMeasure's / Keysight's short name: HRSMU, MPSMU, SPGU ...
    is_smu: bool
    max_v: float = 0.0  # largest |V| the module can force
    max_current_a: float = 0.0  # largest |I| (DC) it can force or use as compliance
    min_pulse_s: float = 0.0  # shortest SMU pulse (PT width)
    max_pulse_s: float = 0.0  # longest SMU pulse


#: The B1500A modules hwloop knows. SMUs can serve as word- or bit-line channel; the others are listed so
#: that ``UNT?`` can name them, and are refused as a WL/BL slot. Nanosecond pulses need the B1525A SPGU or
#: the B1530A WGFMU; hwloop keeps those on the FPGA board (``docs/flex.md``).
MODULES: dict[str, ModuleSpec] = {
    "B1517A": ModuleSpec("HRSMU", True, 100.0, 0.1, 500e-6, 2.0),
    "B1511A": ModuleSpec("MPSMU", True, 100.0, 0.1, 500e-6, 2.0),
    "B1511B": ModuleSpec("MPSMU", True, 100.0, 0.1, 500e-6, 2.0),
    "B1510A": ModuleSpec("HPSMU", True, 200.0, 1.0, 500e-6, 2.0),
    "B1514A": ModuleSpec("MCSMU", True, 30.0, 0.1, 10e-6, 1e-3),
    "B1520A": ModuleSpec("MFCMU", False),
    "B1525A": ModuleSpec("SPGU", False),
    "B1530A": ModuleSpec("WGFMU", False),
}
N_SLOTS = 10


@dataclass(frozen=True)
class B1500Config:
    """``[b1500]``: slots and models of the two SMUs, and the word-line SMU's limits."""

    wl_slot: int = 0  # 0: not given (refused when [smu] driver = "b1500")
    bl_slot: int = 0
    wl_module: str = ""
    bl_module: str = ""
    wl_max_v: float = 5.0  # |V| the word-line SMU may force (also <= [limits] max_v_wl)
    wl_max_current_a: float = 1e-3
    spot: str = "ti"  # SMU reads: "ti" (high-speed spot TI) or "xe" (spot MM 1 + XE)
    integration_s: float = 200e-6  # high-speed ADC integration time (AIT 0,3,...)

    def validate(
        self, where: str, *, smu_max_v: float, smu_max_current_a: float, smu_max_width_s: float, max_v_wl: float
    ) -> None:
        """Refuse a missing slot, an unknown or non-SMU model, or a limit past the module's range."""
        w = f"{where}: [b1500]"
        for name in ("wl_slot", "bl_slot"):
            slot = getattr(self, name)
            if slot == 0:
                raise ConfigError(
                    f"{w} {name} is missing: give the B1500A slot (1..{N_SLOTS}) of the "
                    f"{'word' if name[0] == 'w' else 'bit'}-line SMU"
                )
            if not 1 <= slot <= N_SLOTS:
                raise ConfigError(f"{w} {name} = {slot} is not a B1500A slot (1..{N_SLOTS})")
        if self.wl_slot == self.bl_slot:
            raise ConfigError(f"{w} wl_slot and bl_slot are both {self.wl_slot}: use two SMUs")
        for name in ("wl_module", "bl_module"):
            spec_of(getattr(self, name), f"{w} {name}")
        if self.spot not in ("ti", "xe"):
            raise ConfigError(f'{w} spot = {self.spot!r}: use "ti" (high-speed spot) or "xe" (spot)')
        if not (math.isfinite(self.integration_s) and 2e-6 <= self.integration_s <= 20e-3):
            raise ConfigError(f"{w} integration_s = {self.integration_s!r} is outside [2e-6, 0.02] s")
        wl, bl = spec_of(self.wl_module, w), spec_of(self.bl_module, w)
        checks = [
            ("wl_max_v", self.wl_max_v, wl.max_v, self.wl_module),
            ("wl_max_current_a", self.wl_max_current_a, wl.max_current_a, self.wl_module),
            ("[limits] smu_max_v", smu_max_v, bl.max_v, self.bl_module),
            ("[limits] smu_max_current_a", smu_max_current_a, bl.max_current_a, self.bl_module),
            ("[limits] smu_max_width_s", smu_max_width_s, bl.max_pulse_s, self.bl_module),
        ]
        for name, value, cap, model in checks:
            if not (math.isfinite(value) and 0 < value <= cap):
                raise ConfigError(
                    f"{w} {name} = {value!r} is past the {model} {MODULES[model].kind}'s range (0, {cap:g}]: lower it"
                )
        if not self.wl_max_v <= max_v_wl:
            raise ConfigError(f"{w} wl_max_v = {self.wl_max_v} V is above [limits] max_v_wl = {max_v_wl} V")


def spec_of(model: str, where: str) -> ModuleSpec:
    """The SMU spec of ``model``; ``ConfigError`` if it is empty, unknown or not an SMU."""
    if not model:
        raise ConfigError(f'{where}: the module model is missing (e.g. "B1517A" or "B1511B")')
    spec = MODULES.get(model)
    if spec is None:
        raise ConfigError(f"{where}: unknown B1500A module {model!r}; known: {sorted(MODULES)}")
    if not spec.is_smu:
        raise ConfigError(f"{where}: {model} is a {spec.kind}, not an SMU; give the slot of an SMU")
    return spec


def parse_unt(text: str) -> dict[int, str]:
    """``UNT?`` answer -> {slot: model} of the occupied slots (``"B1517A,0;B1511B,0;0,0;..."``)."""
    out: dict[int, str] = {}
    for slot, entry in enumerate(text.strip().split(";"), start=1):
        model = entry.split(",")[0].strip()
        if model and model != "0":
            out[slot] = model
    return out


def check_modules(cfg: B1500Config, installed: dict[int, str], resource: str) -> None:
    """Refuse a bench whose WL/BL slots do not hold the models it names (``UNT?`` as parsed)."""
    for role, slot, model in (("word-line", cfg.wl_slot, cfg.wl_module), ("bit-line", cfg.bl_slot, cfg.bl_module)):
        found = installed.get(slot)
        if found is None:
            raise ConfigError(
                f"B1500A {resource}: slot {slot} ({role} SMU) is empty according to UNT?; "
                f"installed: {installed or 'none'}; fix [b1500] {role[0]}l_slot"
            )
        if found not in MODULES:
            raise ConfigError(
                f"B1500A {resource}: slot {slot} holds {found!r}, a module hwloop does not "
                f"know (known: {sorted(MODULES)}); nothing was sent"
            )
        if found != model:
            raise ConfigError(
                f"B1500A {resource}: slot {slot} ({role} SMU) holds a {found}, but the bench "
                f"file says {model}; fix [b1500] {role[0]}l_module or the slot"
            )
