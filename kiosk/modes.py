"""Putting the device in a slot into a mode: the gentlest way first, and say which way worked.

Every operation first looks at what is on the slot's USB port, then tries a control request (no
button touched), then the buttons (through the hazard guard), and finally checks the mode the device
actually reached: a request that was acknowledged but not obeyed (old Gen2 firmware) is not success.
Times are device seconds on the slot's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hw.clock import ClockEvent
from hw.control import ControlChannel, ControlFailure, DeviceMode
from hw.device_timing import CONTROL_RESET_DELAY_S, DFU_ENUMERATE_S
from hw.hazard import HazardRefused
from hw.usb_identity import ParticleUsbDevice, find_particle_devices
from kiosk.bench import Slot

FIND_TIMEOUT_S = 5.0  # a device that just booted enumerates within ~2.5 s (P2 is the slowest)
SWITCH_TIMEOUT_S = 8.0  # control request reply + 1 s + reset + boot or DFU enumeration
#: Request 50: the reply, 1 s, the reset, the bootloader's DFU enumeration (0.2 s; up to ~1 s on some hosts):
#: a device not in DFU by then ignored the request, and the buttons are quicker than waiting on.
DFU_SWITCH_TIMEOUT_S = CONTROL_RESET_DELAY_S + DFU_ENUMERATE_S + 0.8
DFU_REQUEST_IGNORED = "acknowledged, but the device did not enter DFU"
LISTEN_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 5.0


RELEASED_BY = {
    "led": "released when the LED showed the stage",
    "clock": "released on time (no LED sensor)",
    "led-not-seen": "the LED never showed the stage's colour; released at the last safe moment",
}


class DeviceNotFound(Exception):
    """Nothing Particle on the slot's USB port (exit status 3)."""


@dataclass
class Attempt:
    method: str  # "control-request", "buttons", "power"
    outcome: str  # what happened, in words


@dataclass
class ModeResult:
    """What a mode command did: what was asked, what was reached, and how."""

    requested: str
    reached: str | None
    via: str | None  # "already", "control-request", "buttons", "power", or None when nothing worked
    attempts: list[Attempt] = field(default_factory=list)
    device_id: str | None = None
    platform: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reached == self.requested

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "reached": self.reached,
            "ok": self.ok,
            "via": self.via,
            "device_id": self.device_id,
            "platform": self.platform,
            "attempts": [vars(a) for a in self.attempts],
            "elapsed_s": round(self.elapsed_s, 3),
        }


def devices_on(slot: Slot) -> list[ParticleUsbDevice]:
    """Particle devices on this slot's port (every one, when the slot names no port)."""
    return find_particle_devices(backend=slot.usb_backend, port=slot.usb_port)


def wait_for_device(slot: Slot, timeout: float, mode: str | None = None, cancel: ClockEvent | None = None,
                    not_address: int | None = None) -> ParticleUsbDevice | None:  # fmt: skip
    """The slot's device once it shows (in ``mode`` if given; re-enumerated if ``not_address``)."""
    found: list[ParticleUsbDevice] = []

    def present() -> bool:
        found[:] = [
            d for d in devices_on(slot)
            if (mode is None or d.mode == mode) and (not_address is None or d.address != not_address)
        ]  # fmt: skip
        return bool(found)

    return found[0] if slot.clock.wait_for(present, timeout, cancel, poll=0.1) else None


def identify(slot: Slot, cancel: ClockEvent | None = None) -> ParticleUsbDevice:
    device = wait_for_device(slot, FIND_TIMEOUT_S, cancel=cancel)  # UsbAccessError goes to the caller
    if device is None:
        where = f"on USB port {slot.usb_port}" if slot.usb_port else "on USB"
        raise DeviceNotFound(
            f"no Particle device {where} of {slot.name}: check the cable; a device with no LED at all may need an "
            "SWD restore"
        )
    return device


def _channel(slot: Slot, device: ParticleUsbDevice) -> ControlChannel:
    return ControlChannel(device.usb_device, slot.clock, device.platform.quirks)


def _listening(slot: Slot, device: ParticleUsbDevice) -> bool | None:
    try:
        return _channel(slot, device).device_mode(timeout_s=REQUEST_TIMEOUT_S) == DeviceMode.LISTENING
    except ControlFailure:
        return None


def _result(requested: str, device: ParticleUsbDevice, started: float, slot: Slot) -> ModeResult:
    return ModeResult(requested, None, None, device_id=device.device_id, platform=device.platform.name,
                      elapsed_s=slot.clock.now() - started)  # fmt: skip


def _finish(result: ModeResult, reached: str | None, via: str | None, slot: Slot, started: float) -> ModeResult:
    result.reached, result.via = reached, via
    result.elapsed_s = slot.clock.now() - started
    return result


def enter_dfu(slot: Slot, cancel: ClockEvent | None = None, *, ask: bool = True) -> ModeResult:
    """DFU mode: by control request 50 when ``ask`` (old Gen2 firmware may ignore it), else the buttons."""
    started = slot.clock.now()
    device = identify(slot, cancel)
    result = _result("dfu", device, started, slot)
    if device.mode == "dfu":
        return _finish(result, "dfu", "already", slot, started)
    if not ask:
        result.attempts.append(Attempt("control-request", "skipped: this firmware may not obey it"))
        return _by_buttons(slot, result, "dfu", started, cancel)
    try:
        _channel(slot, device).enter_dfu(timeout_s=REQUEST_TIMEOUT_S, cancel=cancel)
        if wait_for_device(slot, DFU_SWITCH_TIMEOUT_S, "dfu", cancel) is not None:
            result.attempts.append(Attempt("control-request", "DFU mode request (50) obeyed"))
            return _finish(result, "dfu", "control-request", slot, started)
        result.attempts.append(Attempt("control-request", DFU_REQUEST_IGNORED))
    except ControlFailure as exc:
        result.attempts.append(Attempt("control-request", f"failed: {exc}"))
    return _by_buttons(slot, result, "dfu", started, cancel)


def enter_safe_mode(slot: Slot, cancel: ClockEvent | None = None, *, ask: bool = True) -> ModeResult:
    """Safe mode: by control request 60 when ``ask`` (the caller knows a request would go unanswered
    when the device hangs or panics), else by the buttons."""
    started = slot.clock.now()
    device = identify(slot, cancel)
    result = _result("safe-mode", device, started, slot)
    if device.mode == "normal" and not ask:
        result.attempts.append(Attempt("control-request", "skipped: the device does not answer requests or panics"))
    elif device.mode == "normal":
        asked = _restart_by_control(slot, device, result, lambda c: c.enter_safe_mode(REQUEST_TIMEOUT_S, cancel),
                                    "safe mode request (60)", "safe-mode", started, cancel)  # fmt: skip
        if asked is not None:
            return asked
    else:
        result.attempts.append(Attempt("control-request", "skipped: the device is in DFU mode"))
    return _by_buttons(slot, result, "safe-mode", started, cancel)


def _restart_by_control(slot: Slot, device: ParticleUsbDevice, result: ModeResult,
                        ask: Callable[[ControlChannel], None], what: str, reached: str, started: float,
                        cancel: ClockEvent | None) -> ModeResult | None:  # fmt: skip
    """Ask for a restart by control request; it counts only once the device is back in normal mode."""
    try:
        ask(_channel(slot, device))
        if _back_in_normal(slot, device, cancel) is not None:
            result.attempts.append(Attempt("control-request", f"{what} obeyed"))
            return _finish(result, reached, "control-request", slot, started)
        result.attempts.append(Attempt("control-request", "acknowledged, but the device did not restart"))
    except ControlFailure as exc:
        result.attempts.append(Attempt("control-request", f"failed: {exc}"))
    return None


def _back_in_normal(slot: Slot, before: ParticleUsbDevice, cancel: ClockEvent | None) -> ParticleUsbDevice | None:
    """The device after a reset it was asked for: gone from the bus, then back in normal mode."""
    return wait_for_device(slot, SWITCH_TIMEOUT_S, "normal", cancel, not_address=before.address)


def _by_buttons(slot: Slot, result: ModeResult, stage: str, started: float, cancel: ClockEvent | None) -> ModeResult:
    try:
        pressed = slot.buttons.enter_bootloader_stage(stage, cancel)
    except HazardRefused as exc:
        result.attempts.append(Attempt("buttons", str(exc)))
        return _finish(result, None, None, slot, started)
    how = RELEASED_BY[pressed.by]
    want_usb = "dfu" if stage == "dfu" else "normal"
    device = wait_for_device(slot, SWITCH_TIMEOUT_S, want_usb, cancel)
    if device is None:
        result.attempts.append(
            Attempt("buttons", f"MODE held {pressed.held_s:.2f} s ({how}); the device did not show up")
        )
        return _finish(result, None, None, slot, started)
    result.attempts.append(Attempt("buttons", f"MODE held {pressed.held_s:.2f} s through RESET ({how})"))
    return _finish(result, result.requested, "buttons", slot, started)


def enter_listening(slot: Slot, cancel: ClockEvent | None = None) -> ModeResult:
    started = slot.clock.now()
    device = identify(slot, cancel)
    result = _result("listening", device, started, slot)
    if device.mode != "normal":
        result.attempts.append(Attempt("control-request", "skipped: listening mode needs Device OS running"))
        return _finish(result, "dfu", None, slot, started)
    if _listening(slot, device):
        return _finish(result, "listening", "already", slot, started)
    try:
        _channel(slot, device).start_listening(timeout_s=REQUEST_TIMEOUT_S, cancel=cancel)
        if _listening(slot, device):
            result.attempts.append(Attempt("control-request", "start listening request (70) obeyed"))
            return _finish(result, "listening", "control-request", slot, started)
        result.attempts.append(Attempt("control-request", "acknowledged, but the device is not listening"))
    except ControlFailure as exc:
        result.attempts.append(Attempt("control-request", f"failed: {exc}"))
    try:
        slot.buttons.enter_listening(cancel)
    except HazardRefused as exc:
        result.attempts.append(Attempt("buttons", str(exc)))
        return _finish(result, None, None, slot, started)
    if _listening(slot, device):
        result.attempts.append(Attempt("buttons", "MODE held 3.3 s"))
        return _finish(result, "listening", "buttons", slot, started)
    result.attempts.append(Attempt("buttons", "MODE held 3.3 s; the device did not confirm listening mode"))
    return _finish(result, None, None, slot, started)


def reset(slot: Slot, cancel: ClockEvent | None = None) -> ModeResult:
    started = slot.clock.now()
    device = identify(slot, cancel)
    result = _result("normal", device, started, slot)
    if device.mode == "normal":
        asked = _restart_by_control(slot, device, result, lambda c: c.reset(REQUEST_TIMEOUT_S, cancel),
                                    "reset request (40)", "normal", started, cancel)  # fmt: skip
        if asked is not None:
            return asked
    slot.buttons.tap_reset(cancel)
    back = wait_for_device(slot, SWITCH_TIMEOUT_S, None, cancel, not_address=device.address)
    if back is None:
        result.attempts.append(Attempt("buttons", "RESET tapped; the device did not come back on USB"))
        return _finish(result, None, None, slot, started)
    result.attempts.append(Attempt("buttons", "RESET tapped"))
    return _finish(result, back.mode, "buttons", slot, started)


def cold_boot(slot: Slot, cancel: ClockEvent | None = None, find_timeout_s: float = FIND_TIMEOUT_S) -> ModeResult:
    """Power off, drain, power on; says when the device kept running (a LiPo) as far as it can tell.
    ``find_timeout_s``: how long to wait for it on USB afterwards (0 when the caller looks itself)."""
    started = slot.clock.now()
    result = ModeResult("normal", None, None)
    if slot.power is None:
        result.attempts.append(Attempt("power", "this slot has no power switch wired; unplug the device by hand"))
        return result
    lit_during_drain: bool | None = None
    if slot.led.available:
        slot.led.start()
    off_at = slot.clock.now()
    seconds = slot.power.cold_boot(cancel)
    if slot.led.available:
        samples = [s for s in slot.led.samples_since(off_at + 0.5) if s.t < off_at + seconds]
        lit_during_drain = any(s.r or s.g or s.b for s in samples)
    if lit_during_drain:
        advice = "EN is pulled low too" if slot.power.en is not None else "unplug its battery"
        result.attempts.append(Attempt("power", f"VBUS off {seconds:.1f} s, but the LED stayed lit: a battery keeps "
                                       f"the device running ({advice})"))  # fmt: skip
        return _finish(result, None, None, slot, started)
    device = wait_for_device(slot, find_timeout_s, None, cancel)
    note = (
        "" if lit_during_drain is not None else " (no LED sensor: the kiosk cannot tell whether a battery kept it on)"
    )
    result.attempts.append(Attempt("power", f"power off {seconds:.1f} s, then on{note}"))
    if device is None:
        return _finish(result, None, "power", slot, started)
    result.device_id, result.platform = device.device_id, device.platform.name
    return _finish(result, device.mode, "power", slot, started)
