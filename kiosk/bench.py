"""The bench: its slots, each with buttons, power, LED sensor and USB, real or simulated.

This is the one place that knows both the real drivers and their simulated twins: a real bench is
built from the TOML config on gpiozero's default pin factory and libusb; a simulated bench from
scenario names (``app-crash@p2,healthy``) on the virtual clock, gpiozero mock pins, the simulated USB
bus and simulated devices. The drivers are the same code either way.

    >>> with simulated_bench("app-crash@boron") as bench:   # doctest: +SKIP
    ...     bench.slot(1).buttons.enter_bootloader_stage("safe-mode")
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from gpiozero import DigitalOutputDevice

from hw.clock import Clock, RealClock, VirtualClock
from hw.gpio import ButtonLine, Buttons, EdgeLedSensor, LedSensor, NoLedSensor, PowerSwitch
from hw.hazard import GuardLimits, HazardGuard
from hw.ports import ButtonsPort, LedPort, PowerPort
from hw.swd import PyocdSwd
from kiosk.config import BenchConfig, SlotConfig

MAX_SIM_SLOTS = 8  # a simulated bench for the CLI and the benchmarks; the touchscreen shows at most 4
_SIM_PINS_PER_SLOT = 7  # reset, mode, vbus, en, red, green, blue: 4 slots fill GPIO 0-27 of one pin factory
_SIM_SLOTS_PER_FACTORY = 4


class HardwareNotFound(Exception):
    """No bench hardware here (no GPIO, no config): exit status 3."""


@dataclass
class Slot:
    """One device position: its drivers, its USB port, and on a simulated bench its device."""

    index: int  # 1-based, as technicians count
    name: str
    clock: Clock
    buttons: ButtonsPort
    power: PowerPort | None
    led: LedPort
    usb_port: str | None
    usb_backend: object | None = None  # a pyusb backend; None means libusb
    device: object | None = None  # the simulated device (hw.sim.device.SimDevice) on a simulated bench
    scenario: str | None = None
    serial_lister: object | None = None  # lists serial ports: pyserial's by default, the simulator's pty
    swd: object | None = None  # the SWD port (hw.swd.SwdPort): pyOCD on a real bench, a fake probe in the sim
    swd_probe_id: str | None = None  # the debugger this slot's device is wired to
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.buttons.release_all()
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()


class Bench:
    """The slots of one kiosk. Close it (or use ``with``) to release buttons and stop samplers."""

    def __init__(self, slots: list[Slot], clock: Clock, *, simulated: bool):
        self.slots = slots
        self.clock = clock
        self.simulated = simulated

    def slot(self, number: int) -> Slot:
        if not 1 <= number <= len(self.slots):
            raise LookupError(f"slot {number} does not exist; this bench has slots 1-{len(self.slots)}")
        return self.slots[number - 1]

    def close(self) -> None:
        for slot in self.slots:
            slot.close()
        close_clock = getattr(self.clock, "close", None)  # a simulated bench's paced clock stops its pacer
        if close_clock is not None:
            close_clock()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _slot_drivers(cfg: SlotConfig, clock: Clock, limits: GuardLimits, led_rate_hz: float, factory,
                  led_sensor: type[LedSensor] = LedSensor) -> tuple:  # fmt: skip
    guard = HazardGuard(clock, limits)
    reset = ButtonLine(cfg.reset_pin, wiring=cfg.button_wiring, active_high=cfg.button_active_high,
                       pin_factory=factory, name="RESET")  # fmt: skip
    mode = ButtonLine(cfg.mode_pin, wiring=cfg.button_wiring, active_high=cfg.button_active_high,
                      pin_factory=factory, name="MODE")  # fmt: skip
    if cfg.led_pins is not None:
        led = led_sensor(cfg.led_pins, clock, active_high=cfg.led_active_high, rate_hz=led_rate_hz,
                         pin_factory=factory)  # fmt: skip
    else:
        led = NoLedSensor()
    power = None
    closers = [reset.close, mode.close, led.close]
    if cfg.vbus_pin is not None:
        # initial_value None leaves VBUS as it is: a restarted kiosk must not cut a cold boot's drain short
        vbus = DigitalOutputDevice(cfg.vbus_pin, active_high=cfg.vbus_active_high, initial_value=None,
                                   pin_factory=factory)  # fmt: skip
        en = None
        if cfg.en_pin is not None:
            en = ButtonLine(cfg.en_pin, wiring=cfg.button_wiring, active_high=cfg.button_active_high,
                            pin_factory=factory, name="EN")  # fmt: skip
            closers.append(en.close)
        power = PowerSwitch(vbus, clock, guard, en)
        closers.append(vbus.close)
    buttons = Buttons(reset, mode, clock, guard, led if led.available else None)
    return buttons, power, led, closers


def hardware_bench(config: BenchConfig) -> Bench:
    """The real bench from its config. HardwareNotFound when this machine has no GPIO."""
    from gpiozero.exc import BadPinFactory, PinFactoryFallback

    clock = RealClock()
    limits = GuardLimits(drain_s=config.drain_s)
    slots = []
    try:
        with warnings.catch_warnings(record=True) as fallbacks:
            # gpiozero warns once per pin library it cannot load; the reasons go into our message instead
            warnings.simplefilter("always", PinFactoryFallback)
            for cfg in config.slots:
                buttons, power, led, closers = _slot_drivers(cfg, clock, limits, config.led_rate_hz, None)
                slots.append(Slot(cfg.index + 1, cfg.name, clock, buttons, power, led, cfg.usb_port, None,
                                  swd=PyocdSwd(clock), swd_probe_id=cfg.swd_probe, _closers=closers))  # fmt: skip
    except _pin_errors() as exc:
        for slot in slots:
            slot.close()
        if not isinstance(exc, BadPinFactory) and _line_busy(exc):
            raise HardwareNotFound(
                f"a GPIO line of the bench is in use by another program ({exc}): most likely the kiosk service "
                "itself. Stop it first (sudo systemctl stop particle-kiosk), or use the touchscreen"
            ) from None
        tried = "; ".join(str(w.message) for w in fallbacks if issubclass(w.category, PinFactoryFallback))
        raise HardwareNotFound(
            f"no usable GPIO on this machine ({exc}{' ' + tried if tried else ''}); the kiosk needs a Raspberry "
            f"Pi with the bench wired as {config.source} says. To try it without hardware, add --simulate SCENARIO"
        ) from None
    return Bench(slots, clock, simulated=False)


def _pin_errors() -> tuple[type[BaseException], ...]:
    """What opening the bench's pins can raise: gpiozero's errors, the OS's, and lgpio's own (a plain
    Exception subclass, raised for a line another program holds)."""
    from gpiozero.exc import BadPinFactory, GPIOZeroError

    errors: tuple[type[BaseException], ...] = (BadPinFactory, GPIOZeroError, OSError, RuntimeError)
    try:
        import lgpio
    except ImportError:
        return errors
    return (*errors, lgpio.error)


def _line_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "busy" in text or "in use" in text


def simulated_bench(spec: str, speed: float | None = None) -> Bench:
    """A bench of simulated devices, one scenario per slot: ``SCENARIO[@PLATFORM][,...]``.

    ``speed`` paces device time to at most that many device seconds per real second (None: as fast
    as the host can). Every slot has VBUS switching and an LED sensor; EN is wired where the
    scenario says so.
    """
    # The simulator is imported here and nowhere else outside hw/sim.
    from hw.sim.device_serial import attach_serial, serial_lister
    from hw.sim.pins import SimPinFactory
    from hw.sim.scenarios import build_device, parse_simulate
    from hw.sim.swd_probe import SimSwdProbe
    from hw.sim.usb_backend import SimUsbBackend, SimUsbBus
    from hw.sim.wiring import attach

    wanted = parse_simulate(spec)
    if len(wanted) > MAX_SIM_SLOTS:
        raise ValueError(f"a simulated bench has at most {MAX_SIM_SLOTS} slots, not {len(wanted)}")
    clock = VirtualClock(speed=speed)
    factories = [SimPinFactory(clock) for _ in range(0, len(wanted), _SIM_SLOTS_PER_FACTORY)]
    bus = SimUsbBus(clock)
    backend = SimUsbBackend(bus)
    slots = []
    for n, (scenario, platform) in enumerate(wanted):
        factory = factories[n // _SIM_SLOTS_PER_FACTORY]  # (a Pi's pin header has room for 4 slots' lines)
        base = (n % _SIM_SLOTS_PER_FACTORY) * _SIM_PINS_PER_SLOT
        device = build_device(scenario, platform, clock, slot=n)
        cfg = SlotConfig(
            index=n, name=f"slot {n + 1}", usb_port=f"1-1.{n + 1}", reset_pin=base, mode_pin=base + 1,
            vbus_pin=base + 2, en_pin=base + 3 if device.faults.en_wired else None,
            led_pins=(base + 4, base + 5, base + 6),
        )  # fmt: skip
        with clock.lock:
            attach(device, factory, cfg, bus)
        attach_serial(device)  # its thread joins the clock as an actor: not under the clock's lock
        # the simulated pins report their edges: the LED is read from them, not sampled by a thread
        buttons, power, led, closers = _slot_drivers(cfg, clock, GuardLimits(), 50.0, factory, EdgeLedSensor)
        power.on()  # the device is plugged in when the bench starts
        probe_id = f"sim-swd-{n + 1:04d}"
        # Device OS in protected mode sets an nRF52's UICR.APPROTECT: its debug port opens only by a mass erase
        # (reference: led-buttons-restore.md, SWD), which the kiosk never asks for; the simulator locks it too.
        swd_faults = ("dead",) * device.faults.dead + ("locked",) * _locked_over_swd(device)
        probe = SimSwdProbe(
            clock, unique_id=probe_id, faults=swd_faults,
            device_platform=device.platform, is_powered=device.swd_powered, on_erased=device.swd_erased,
            on_programmed=device.swd_programmed, on_reset=device.swd_reset,
        )  # fmt: skip
        closers.append(device.serial.close)
        slots.append(Slot(n + 1, cfg.name, clock, buttons, power, led, cfg.usb_port, backend, device, scenario,
                          serial_lister=serial_lister(device), swd=probe, swd_probe_id=probe_id,
                          _closers=closers))  # fmt: skip
    return Bench(slots, clock, simulated=True)


def _locked_over_swd(device) -> bool:
    """A protected nRF52 (Gen3): Device Protection leaves its debug port locked (APPROTECT)."""
    return device.faults.protected and device.platform.mcu.name == "nrf52840"
