"""Declarative instrument properties over a PyVISA resource, in the manner of PyMeasure.

A driver class lists its settings as ``Control`` descriptors that read like the manual::

    source_voltage = Control("print({ch}.source.levelv)", "{ch}.source.levelv = {value:.6g}",
                             "Source voltage (V).", values="v_bounds")

Setting a value outside ``values`` *refuses* it (``SafetyLimitError`` or ``ConfigError``, nothing sent);
it never clips it into range, because a silently clipped setting is a different experiment. ``values``
may be a tuple, or the name of an attribute of the instance (limits that come from the bench file).

``VisaAdapter`` wraps the resource: timeouts and I/O errors become ``InstrumentError`` and, when
``transcript`` is a list, every exchange is recorded as ``("write", text)`` / ``("read", text)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

from hwloop.errors import ConfigError, HwloopError, InstrumentError, SafetyLimitError


class VisaAdapter:
    """A text resource (TCPIP socket, GPIB, USB...) opened through PyVISA."""

    def __init__(
        self,
        resource: str,
        *,
        visa_library: str = "@py",
        timeout_ms: int = 2000,
        termination: str = "\n",
        transcript: list[tuple[str, str]] | None = None,
    ) -> None:
        import pyvisa

        self.resource_name = resource
        self.transcript = transcript
        try:
            self.rm = pyvisa.ResourceManager(visa_library) if visa_library else pyvisa.ResourceManager()
            self.res = self.rm.open_resource(
                resource, timeout=timeout_ms, read_termination=termination, write_termination=termination
            )
        except (pyvisa.Error, OSError, ValueError) as exc:
            lib = visa_library or "system VISA"
            raise InstrumentError(f"cannot open VISA resource {resource!r} ({lib}): {exc}") from None
        self._visa_error = pyvisa.Error
        self.timeout_ms = timeout_ms

    def write(self, command: str) -> None:
        if self.transcript is not None:
            self.transcript.append(("write", command))
        try:
            self.res.write(command)
        except (self._visa_error, OSError) as exc:
            raise InstrumentError(f"{self.resource_name}: writing {command!r} failed: {exc}") from None

    def read(self) -> str:
        try:
            text = self.res.read().strip()
        except (self._visa_error, OSError) as exc:
            raise InstrumentError(
                f"{self.resource_name}: no answer within {self.timeout_ms} ms or link lost: {exc}"
            ) from None
        if self.transcript is not None:
            self.transcript.append(("read", text))
        return text

    def ask(self, command: str) -> str:
        self.write(command)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.res.close()


def strict_range(value: float, bounds: tuple[float, float]) -> float:
    """Accept ``value`` only if ``bounds[0] <= value <= bounds[1]`` (refuse, never clip)."""
    v = float(value)
    if not (math.isfinite(v) and bounds[0] <= v <= bounds[1]):
        raise ValueError(f"{value!r} is outside [{bounds[0]:.6g}, {bounds[1]:.6g}]")
    return v


def strict_discrete_set(value: Any, allowed: tuple[Any, ...]) -> Any:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {list(allowed)}")
    return value


class Control:
    """A readable and writable setting (``get_cmd``/``set_cmd`` formatted with ``ch`` and ``value``)."""

    def __init__(
        self,
        get_cmd: str | None,
        set_cmd: str | None,
        doc: str,
        *,
        validator: Callable[[Any, Any], Any] = strict_range,
        values: Any = None,
        set_map: dict[Any, str] | None = None,
        get_map: dict[float, Any] | None = None,
        cast: Callable[[str], Any] = float,
        error: type[HwloopError] = SafetyLimitError,
    ) -> None:
        self.get_cmd, self.set_cmd = get_cmd, set_cmd
        self.__doc__ = doc
        self.validator, self.values = validator, values
        self.set_map, self.get_map, self.cast, self.error = set_map, get_map, cast, error
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _values(self, obj: Any) -> Any:
        return getattr(obj, self.values) if isinstance(self.values, str) else self.values

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        if self.get_cmd is None:
            raise AttributeError(f"{self.name} is write-only")
        text = obj.ask(self.get_cmd.format(ch=obj.ch))
        try:
            raw = self.cast(text)
        except ValueError:
            raise InstrumentError(f"{self.name}: instrument answered {text!r}, not a number") from None
        if self.get_map is not None:
            if raw not in self.get_map:
                raise InstrumentError(f"{self.name}: unexpected value {text!r}")
            return self.get_map[raw]
        return raw

    def __set__(self, obj: Any, value: Any) -> None:
        if self.set_cmd is None:
            raise AttributeError(f"{self.name} is read-only")
        values = self._values(obj)
        if values is not None:
            try:
                value = self.validator(value, values)
            except ValueError as exc:
                raise self.error(
                    f"{type(obj).__name__}.{self.name} = {value!r} refused, nothing was sent: {exc}"
                ) from None
        literal: Any = value
        if self.set_map is not None:
            literal = self.set_map[value].format(ch=obj.ch)
        obj.write(self.set_cmd.format(ch=obj.ch, value=literal))


class Measurement:
    """A read-only instrument quantity (``print(...)`` of a TSP function)."""

    def __init__(self, get_cmd: str, doc: str, cast: Callable[[str], Any] = float) -> None:
        self.get_cmd, self.cast = get_cmd, cast
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        text = obj.ask(self.get_cmd.format(ch=obj.ch))
        try:
            return self.cast(text)
        except ValueError:
            raise InstrumentError(f"{self.name}: instrument answered {text!r}, not a number") from None


__all__ = ["ConfigError", "Control", "Measurement", "VisaAdapter", "strict_discrete_set", "strict_range"]
