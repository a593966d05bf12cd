"""Wiring a simulated device into a slot: its lines follow the slot's GPIO outputs, its LED drives the
slot's sensor inputs, and it joins the simulated USB bus. Call with the clock's lock held."""

from __future__ import annotations

from hw.sim.control_server import ControlServer, Fault, every_nth
from hw.sim.device import Rgb, SimDevice
from hw.sim.device_control import control_handler
from hw.sim.dfu_device import SimDfuDevice, facts_for
from hw.sim.pins import SimPin, SimPinFactory

#: What a faulty LED sensor reports, whatever the device shows (fault matrix).
SENSOR_FAULTS: dict[str, Rgb] = {"dark": (False, False, False), "stuck": (True, False, False)}


def _pressed(pin: SimPin, active_high: bool, wiring: str) -> bool:
    """Is the device line pulled low? Transistor wiring: the GPIO at its active level. Direct wiring:
    the GPIO is an output driving low (released = input, floating, so the device's pull-up wins)."""
    if pin.function != "output":
        return False
    return bool(pin.state) == active_high if wiring == "transistor" else not pin.state


def attach(device: SimDevice, factory: SimPinFactory, cfg, bus) -> None:
    """Connect ``device`` to the slot described by ``cfg`` (a kiosk SlotConfig) and to ``bus``."""
    wiring, active = cfg.button_wiring, cfg.button_active_high
    factory.listen(cfg.reset_pin, lambda pin, t, s: device.set_reset_low(_pressed(pin, active, wiring)))
    factory.listen(cfg.mode_pin, lambda pin, t, s: device.set_mode_low(_pressed(pin, active, wiring)))
    if cfg.vbus_pin is not None:
        factory.listen(
            cfg.vbus_pin,
            lambda pin, t, s: device.set_vbus(pin.function == "output" and bool(pin.state) == cfg.vbus_active_high),
        )
    else:
        device.set_vbus(True)  # no VBUS switch: the device is powered whenever it is plugged in
    if cfg.en_pin is not None:
        factory.listen(cfg.en_pin, lambda pin, t, s: device.set_en_low(_pressed(pin, active, wiring)))
    if cfg.led_pins is not None:
        leds = [factory.pin(p) for p in cfg.led_pins]

        def show(rgb: Rgb) -> None:
            sensor = device.faults.led_sensor  # a fault of the bench's sensor, not of the device
            if sensor is not None:
                rgb = SENSOR_FAULTS[sensor]
            for pin, lit in zip(leds, rgb, strict=True):
                (pin.drive_high if lit == cfg.led_active_high else pin.drive_low)()

        device.led_out = show
        show(device.rgb)
    device.usb_port_path = cfg.usb_port or ""
    handler = control_handler(device)
    flaky = device.faults.flaky_transfer_every
    garbled = every_nth(flaky, Fault.DROP) if flaky else None

    def fault(bm: int, request: int, value: int, index: int) -> Fault | None:
        if device.faults.control_silent:  # read on every transfer: the fault matrix sets it after wiring
            return Fault.TIMEOUT
        return garbled(bm, request, value, index) if garbled else None

    server = ControlServer(handler, device.clock, quirks=device.platform.quirks, on_done=handler.on_done,
                           fault=fault)  # fmt: skip
    device.control_server = server
    device.usb_handlers["normal"] = server.usb_control
    version = device.bootloader_version  # what the DFU side offers follows the bootloader installed
    protected = device.faults.protected and facts_for(device.platform, version).protection
    dfu = SimDfuDevice(device.platform, device.clock, device.flash, protected=protected, bootloader_version=version,
                       on_manifest=device.dfu_left, on_safe_mode=device.dfu_safe_mode)  # fmt: skip
    device.dfu = dfu
    device.usb_handlers["dfu"] = device.dfu_transfer(dfu.usb_control)
    bus.attach(device)


def plug_in_beside(bus, clock, usb_port: str, scenario: str = "healthy", platform: str = "boron") -> SimDevice:
    """A second device on the same slot's USB port (a hub in the slot, a device left plugged in): powered,
    on the bus, with no buttons, power switch or LED sensor of its own. For the fault matrix."""
    from types import SimpleNamespace

    from hw.sim.pins import SimPinFactory
    from hw.sim.scenarios import build_device

    device = build_device(scenario, platform, clock, slot=9)
    cfg = SimpleNamespace(usb_port=usb_port, reset_pin=0, mode_pin=1, vbus_pin=None, en_pin=None, led_pins=None,
                          button_wiring="transistor", button_active_high=True)  # fmt: skip
    with clock.lock:
        attach(device, SimPinFactory(clock), cfg, bus)
    return device
