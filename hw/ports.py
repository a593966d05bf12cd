"""The ports: what the kiosk needs from each kind of hardware, as small protocols.

Real drivers implement them (``hw.gpio``, ``hw.usb_identity``, ``hw.control``); on the simulated bench the
same drivers run against simulated hardware through their libraries' seams (gpiozero mock pins, a pyusb
backend), so the code paths are the production ones. All durations are device seconds on the slot's
clock; every wait can be cancelled with a clock event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from hw.clock import ClockEvent
from hw.control import DeviceMode, ModuleInfo
from hw.gpio import StageResult
from hw.led_classifier import LedReading, LedSample
from hw.usb_identity import ParticleUsbDevice


@runtime_checkable
class ButtonsPort(Protocol):
    """RESET and MODE, only through choreographies the hazard guard has checked."""

    def tap_reset(self, cancel: ClockEvent | None = None) -> None: ...
    def hold_mode(self, seconds: float, cancel: ClockEvent | None = None) -> None: ...
    def enter_listening(self, cancel: ClockEvent | None = None) -> None: ...
    def enter_bootloader_stage(self, stage: str, cancel: ClockEvent | None = None) -> StageResult: ...
    def release_all(self) -> None: ...


@runtime_checkable
class PowerPort(Protocol):
    """VBUS (and EN where wired); power stays off at least the drain time."""

    @property
    def is_on(self) -> bool: ...
    def on(self) -> None: ...
    def off(self) -> None: ...
    def cold_boot(self, cancel: ClockEvent | None = None) -> float: ...


@runtime_checkable
class LedPort(Protocol):
    """The status LED as seen by the sensor; ``available`` is False on a slot without one."""

    available: bool

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def watch(self, seconds: float, cancel: ClockEvent | None = None) -> LedReading: ...


class LedSamplesPort(LedPort, Protocol):
    def samples_since(self, t: float) -> list[LedSample]: ...


class UsbPort(Protocol):
    """Particle devices on USB (``find_particle_devices`` with a slot's backend)."""

    def __call__(self, backend: object | None = None) -> Sequence[ParticleUsbDevice]: ...


@runtime_checkable
class ControlPort(Protocol):
    """Control requests to a device in normal mode (``hw.control.ControlChannel``)."""

    def device_id(self, timeout_s: float = ..., fallback: bool = ..., cancel: ClockEvent | None = ...) -> str: ...
    def system_version(self, timeout_s: float = ..., fallback: bool = ..., cancel: ClockEvent | None = ...) -> str: ...
    def reset(self, timeout_s: float = ..., cancel: ClockEvent | None = ...) -> None: ...
    def enter_dfu(self, timeout_s: float = ..., cancel: ClockEvent | None = ...) -> None: ...
    def enter_safe_mode(self, timeout_s: float = ..., cancel: ClockEvent | None = ...) -> None: ...
    def start_listening(self, timeout_s: float = ..., cancel: ClockEvent | None = ...) -> None: ...
    def device_mode(self, timeout_s: float = ..., cancel: ClockEvent | None = ...) -> DeviceMode | int: ...
    def module_info(self, timeout_s: float = ..., cancel: ClockEvent | None = ...) -> list[ModuleInfo]: ...
